"""An area of interest from a GeoJSON document, for the `aoi` option.  Standard library only (the plugin
imports it too).

Analysts hand over whatever their tool saved: a bare Polygon or MultiPolygon, a Feature, a FeatureCollection
(a country layer's selection), a GeometryCollection.  Every polygon in it becomes part of one MultiPolygon;
anything that is not a polygon (points, lines) is refused, naming it, rather than silently dropped.
"""

from __future__ import annotations

import json
import os
from typing import Any

from . import protocol as P


class AoiFileError(ValueError):
    """A GeoJSON document that holds no usable area of interest, with the reason."""


def aoi_from_geojson(doc: Any) -> dict[str, Any]:
    """The polygons of a GeoJSON document as one GeoJSON MultiPolygon geometry (checked by the protocol)."""
    polygons: list[Any] = []
    _collect(doc, polygons, "the document")
    if not polygons:
        raise AoiFileError("the GeoJSON holds no polygon")
    geometry = {"type": "MultiPolygon", "coordinates": polygons}
    try:
        P.validate_aoi(geometry)
    except P.ProtocolError as exc:
        raise AoiFileError(str(exc).replace("option 'aoi'", "the area of interest")) from None
    return geometry


def read_aoi_file(path: str | os.PathLike) -> dict[str, Any]:
    """aoi_from_geojson of a .geojson file; AoiFileError names the file and the problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AoiFileError(f"cannot read {os.fspath(path)} as GeoJSON: {exc}") from None
    try:
        return aoi_from_geojson(doc)
    except AoiFileError as exc:
        raise AoiFileError(f"{os.fspath(path)}: {exc}") from None


def _collect(node: Any, out: list[Any], where: str) -> None:
    if not isinstance(node, dict):
        raise AoiFileError(f"{where} is not a GeoJSON object")
    kind = node.get("type")
    if kind == "FeatureCollection":
        for i, feature in enumerate(node.get("features") or []):
            _collect(feature, out, f"feature {i + 1}")
    elif kind == "Feature":
        if node.get("geometry") is not None:
            _collect(node["geometry"], out, where)
    elif kind == "GeometryCollection":
        for geometry in node.get("geometries") or []:
            _collect(geometry, out, where)
    elif kind == "Polygon":
        out.append(node.get("coordinates"))
    elif kind == "MultiPolygon":
        coordinates = node.get("coordinates")
        if not isinstance(coordinates, list):
            raise AoiFileError(f"{where}: a MultiPolygon without a list of coordinates")
        out.extend(coordinates)
    else:
        raise AoiFileError(f"{where} is a {kind!r}, not a polygon: an area of interest is made of polygons")
