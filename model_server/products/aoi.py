"""An area of interest as a prior on the map: a GeoJSON polygon in lon/lat turned into a weight per cell.

Edges are straight lines in lon/lat (GeoJSON's planar reading), so a polar cap is drawn as it looks on a
plate carree map (a ring running along latitude 90), and a polygon crossing the antimeridian is given
either split at +-180 (as GeoJSON asks) or with longitudes past 180 (170 .. 190): every polygon is also
laid 360 degrees east and west, so both forms cover the same cells.  A cell belongs to the area when its
centre does; an area smaller than every cell it touches takes the cells it touches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.validation import explain_validity

from .grid import Grid


class AoiError(ValueError):
    """An area of interest that cannot be used, with the reason."""


def aoi_geometry(geojson: dict[str, Any]) -> MultiPolygon:
    """The option `aoi` (shape already checked by protocol.validate_aoi) as a valid MultiPolygon; AoiError
    names the first polygon that crosses itself or has no area."""
    try:
        geometry = shape({"type": geojson["type"], "coordinates": geojson["coordinates"]})
    except (KeyError, TypeError, ValueError, shapely.errors.GEOSException) as exc:
        raise AoiError(f"option 'aoi' is not a readable polygon: {exc}") from None
    parts = list(geometry.geoms) if isinstance(geometry, MultiPolygon) else [geometry]
    for i, part in enumerate(parts, 1):
        if not isinstance(part, Polygon) or not part.is_valid:
            why = explain_validity(part) if isinstance(part, Polygon) else part.geom_type
            raise AoiError(f"option 'aoi': polygon {i} is not a valid polygon ({why}); rings must not cross "
                           "themselves or each other")
        if part.area <= 0:
            raise AoiError(f"option 'aoi': polygon {i} has no area")
    return MultiPolygon(parts)


def aoi_mask(geometry: MultiPolygon, grid: Grid) -> np.ndarray:
    """(height, width) bool: the cells of `grid` whose centre lies in the area (or, when none does, the cells
    it touches)."""
    from rasterio import features

    copies = [geometry, affinity.translate(geometry, 360.0), affinity.translate(geometry, -360.0)]
    shapes = [(g, 1) for g in copies if not g.is_empty]
    kw = {"out_shape": (grid.height, grid.width), "transform": grid.transform(), "fill": 0, "dtype": "uint8"}
    mask = features.rasterize(shapes, **kw).astype(bool)
    if not mask.any():
        mask = features.rasterize(shapes, all_touched=True, **kw).astype(bool)
    return mask


def aoi_weights(mask: np.ndarray, outside_weight: float) -> np.ndarray:
    """The prior per cell: 1 inside the area, `outside_weight` (0: hard restriction) outside."""
    return np.where(mask, 1.0, float(outside_weight))
