"""An area of interest from QGIS polygon features (a selected country, a coastline strip) as the protocol's
`aoi`: a GeoJSON MultiPolygon in EPSG:4326, built by geoplonk_service.geojson like `geoplonk locate --aoi`.

A detailed outline (Canada in QGIS's own world map has 38,000 vertices) is over the protocol's vertex limit:
it is simplified, topology kept, with the smallest tolerance from SIMPLIFY_DEG that fits, far below a raster
cell, and the tolerance is reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsProject,
    QgsWkbTypes,
)

from geoplonk_service import protocol as P
from geoplonk_service.geojson import AoiFileError, aoi_from_geojson

WGS84 = "EPSG:4326"
# Coordinates kept in the GeoJSON: ~1 cm, far below a raster cell, and a header that stays small.
PRECISION = 7
# Simplification tolerances tried in turn (degrees) when the outline has too many vertices.
SIMPLIFY_DEG = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


@dataclass
class Area:
    """An area of interest: the `aoi` option, its polygon count, and the simplification it needed (degrees)."""

    geometry: dict[str, Any]
    polygons: int
    simplified_deg: float = 0.0

    def describe(self, layer_name: str) -> str:
        text = f"'{layer_name}' ({self.polygons} polygon{'s' if self.polygons != 1 else ''}"
        return text + (f", outline simplified to {self.simplified_deg:g}°)" if self.simplified_deg else ")")


class AoiError(ValueError):
    """No usable area of interest, with the reason in words for the analyst."""


def aoi_from_features(features: Iterable, crs, layer_name: str, wkb_type: int) -> Area:
    """The polygons of `features` (in `crs`) as one GeoJSON MultiPolygon in lon/lat; AoiError names the problem."""
    geometry_type = QgsWkbTypes.geometryType(wkb_type)
    if geometry_type != QgsWkbTypes.PolygonGeometry:
        kind = QgsWkbTypes.geometryDisplayString(geometry_type).lower()
        raise AoiError(f"'{layer_name}' holds {kind} features, not polygons: an area of interest is made of "
                       "polygons (a country, a coastline strip)")
    transform = None
    if crs is not None and crs.isValid() and crs.authid() != WGS84:
        transform = QgsCoordinateTransform(crs, QgsCoordinateReferenceSystem(WGS84), QgsProject.instance())
    geometries = []
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
        geometries.append(geometry)
    if not geometries:
        raise AoiError(f"no polygon selected in '{layer_name}': select the polygons of the area of interest first")
    tolerance = 0.0
    if sum(g.constGet().nCoordinates() for g in geometries) > P.MAX_AOI_VERTICES:
        for tolerance in SIMPLIFY_DEG:
            simpler = [g for g in (g.simplify(tolerance) for g in geometries) if not g.isEmpty()]
            if sum(g.constGet().nCoordinates() for g in simpler) <= P.MAX_AOI_VERTICES:
                geometries = simpler
                break
    collection = [{"type": "Feature", "geometry": json.loads(g.asJson(PRECISION))} for g in geometries]
    try:
        aoi = aoi_from_geojson({"type": "FeatureCollection", "features": collection})
    except AoiFileError as exc:
        raise AoiError(f"'{layer_name}': {exc}") from None
    return Area(aoi, len(aoi["coordinates"]), tolerance)


def aoi_from_layer(layer, selected_only: bool = True) -> Area:
    """The area of interest of a vector layer's selected (or all) polygons."""
    from qgis.core import QgsVectorLayer

    if not isinstance(layer, QgsVectorLayer):
        raise AoiError("the active layer is not a vector layer: pick a polygon layer for the area of interest")
    features = layer.getSelectedFeatures() if selected_only else layer.getFeatures()
    return aoi_from_features(features, layer.crs(), layer.name(), layer.wkbType())
