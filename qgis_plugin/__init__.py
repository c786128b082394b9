"""GeoPlonk QGIS plugin. Importing this package needs no QGIS: classFactory imports it lazily."""


def classFactory(iface):  # noqa: N802 - QGIS's entry point name
    from .plugin import GeoPlonkPlugin

    return GeoPlonkPlugin(iface)
