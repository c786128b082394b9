"""GeoPlonk QGIS plugin. Importing this package needs no QGIS: classFactory imports it lazily.

The torch-free service layer (`geoplonk_service`: wire protocol, client, launcher, output files) is
shared with the model server. In a repository checkout it is a top-level package; the plugin zip
bundles it under `libs/`, which is put on `sys.path` here, before any module of the plugin imports it.
"""

import os
import sys

_BUNDLED_LIBS = os.path.join(os.path.dirname(__file__), "libs")
if os.path.isdir(_BUNDLED_LIBS) and _BUNDLED_LIBS not in sys.path:
    sys.path.insert(0, _BUNDLED_LIBS)


def classFactory(iface):  # noqa: N802 - QGIS's entry point name
    from .plugin import GeoPlonkPlugin

    return GeoPlonkPlugin(iface)
