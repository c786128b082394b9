"""Inputs of the analyst's tools for the plugin tests: a geotagged photo, claim points, area polygons."""

from __future__ import annotations

from pathlib import Path

# The geotagged photo's EXIF GPS position (Paris, the Eiffel Tower).
EXIF_LATLON = (48.8584, 2.2945)
# An area of interest round western Europe, in lon/lat.
EUROPE = [(-10.0, 36.0), (20.0, 36.0), (20.0, 58.0), (-10.0, 58.0), (-10.0, 36.0)]


def geotagged_photo(source: Path, out: Path) -> Path:
    """A copy of `source` with EXIF GPS at EXIF_LATLON."""
    from PIL import Image  # Debian's Pillow, in QGIS's Python here; the plugin itself never needs it

    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.24), 3: "E", 4: (2.0, 17.0, 40.2), 0: b"\x02\x03\x00\x00"}
    Image.open(source).save(out, "JPEG", exif=exif)
    return out


def memory_layer(kind: str, name: str, rings_or_points: list, crs: str = "EPSG:4326", labels=None):
    """A memory layer of `kind` ("Point", "Polygon", "LineString") with a `name` field, added to the project."""
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsProject, QgsVectorLayer

    layer = QgsVectorLayer(f"{kind}?crs={crs}&field=name:string", name, "memory")
    features = []
    for i, item in enumerate(rings_or_points):
        feature = QgsFeature(layer.fields())
        if kind == "Point":
            geometry = QgsGeometry.fromPointXY(QgsPointXY(*item))
        elif kind == "Polygon":
            geometry = QgsGeometry.fromPolygonXY([[QgsPointXY(x, y) for x, y in item]])
        else:
            geometry = QgsGeometry.fromPolylineXY([QgsPointXY(x, y) for x, y in item])
        feature.setGeometry(geometry)
        feature.setAttributes([labels[i] if labels else f"{name} {i + 1}"])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    return layer


def to_crs(points: list[tuple[float, float]], crs: str) -> list[tuple[float, float]]:
    """lon/lat points in another CRS."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY, QgsProject

    transform = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), QgsCoordinateReferenceSystem(crs),
                                       QgsProject.instance())
    return [(p.x(), p.y()) for p in (transform.transform(QgsPointXY(x, y)) for x, y in points)]


def inside_ring(lon: float, lat: float, ring: list[tuple[float, float]], margin: float = 0.0) -> bool:
    """Within the ring's bounding box, widened by `margin` degrees (the raster's cells)."""
    xs, ys = [x for x, _ in ring], [y for _, y in ring]
    return min(xs) - margin <= lon <= max(xs) + margin and min(ys) - margin <= lat <= max(ys) + margin
