"""An area of interest from QGIS polygon features (a selected country, a coastline strip) as the protocol's
`aoi`: a GeoJSON MultiPolygon in EPSG:4326, built by geoplonk_service.geojson like `geoplonk locate --aoi`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsProject,
    QgsWkbTypes,
)

from geoplonk_service.geojson import AoiFileError, aoi_from_geojson

WGS84 = "EPSG:4326"
# Coordinates kept in the GeoJSON: ~1 cm, far below a raster cell, and a header that stays small.
PRECISION = 7


class AoiError(ValueError):
    """No usable area of interest, with the reason in words for the analyst."""


def aoi_from_features(features: Iterable, crs, layer_name: str, wkb_type: int) -> dict[str, Any]:
    """The polygons of `features` (in `crs`) as one GeoJSON MultiPolygon in lon/lat; AoiError names the problem."""
    geometry_type = QgsWkbTypes.geometryType(wkb_type)
    if geometry_type != QgsWkbTypes.PolygonGeometry:
        kind = QgsWkbTypes.geometryDisplayString(geometry_type).lower()
        raise AoiError(f"'{layer_name}' holds {kind} features, not polygons: an area of interest is made of "
                       "polygons (a country, a coastline strip)")
    transform = None
    if crs is not None and crs.isValid() and crs.authid() != WGS84:
        transform = QgsCoordinateTransform(crs, QgsCoordinateReferenceSystem(WGS84), QgsProject.instance())
    collection: list[dict[str, Any]] = []
    for feature in features:
        geometry = feature.geometry()
        if geometry is None or geometry.isEmpty():
            continue
        geometry = type(geometry)(geometry)  # a copy: the layer's own feature stays as it is
        if transform is not None:
            try:
                geometry.transform(transform)
            except QgsCsException:
                raise AoiError(f"a polygon of '{layer_name}' cannot be placed on the globe from "
                               f"{crs.authid()}") from None
        collection.append({"type": "Feature", "geometry": json.loads(geometry.asJson(PRECISION))})
    if not collection:
        raise AoiError(f"no polygon selected in '{layer_name}': select the polygons of the area of interest first")
    try:
        return aoi_from_geojson({"type": "FeatureCollection", "features": collection})
    except AoiFileError as exc:
        raise AoiError(f"'{layer_name}': {exc}") from None


def aoi_from_layer(layer, selected_only: bool = True) -> dict[str, Any]:
    """The area of interest of a vector layer's selected (or all) polygons."""
    from qgis.core import QgsVectorLayer

    if not isinstance(layer, QgsVectorLayer):
        raise AoiError("the active layer is not a vector layer: pick a polygon layer for the area of interest")
    features = layer.getSelectedFeatures() if selected_only else layer.getFeatures()
    return aoi_from_features(features, layer.crs(), layer.name(), layer.wkbType())
