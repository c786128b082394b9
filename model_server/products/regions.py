"""Credible regions: highest-density regions (HDR) of the raster, as polygons with their area.

The p-HDR is the set of cells of highest density (probability per steradian, so small
polar cells are not favoured) whose probabilities add up to p.  It is polygonised in
lon/lat with rasterio.features.shapes: the global raster spans exactly [-180, 180], so a
region crossing the antimeridian comes out as parts that meet at +-180 (valid in
EPSG:4326), and a region covering a pole is closed by the raster's edge along lat +-90.
Areas are exact sums of the cells' spherical areas (R = 6371 km).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

from .density import DensityRaster


@dataclass
class CredibleRegion:
    level: float
    geometry: MultiPolygon
    area_km2: float
    mask: np.ndarray  # (height, width) bool, on the raster's grid

    @property
    def label(self) -> str:
        return f"{self.level * 100:g} %"


def hdr_masks(density_sr: np.ndarray, prob: np.ndarray, levels: list[float]) -> list[np.ndarray]:
    """One boolean mask per level: the densest cells until their probability reaches the level."""
    flat_d = density_sr.ravel()
    flat_p = prob.ravel()
    order = np.argsort(flat_d, kind="stable")[::-1]
    csum = np.cumsum(flat_p[order])
    total = csum[-1]
    masks = []
    for level in levels:
        count = int(np.searchsorted(csum, level * total)) + 1
        mask = np.zeros(flat_d.size, dtype=bool)
        mask[order[: min(count, flat_d.size)]] = True
        masks.append(mask.reshape(density_sr.shape))
    return masks


def polygonize(mask: np.ndarray, transform) -> MultiPolygon:
    """The cells where mask is True, as one valid MultiPolygon in the transform's coordinates."""
    from rasterio import features

    polys = [
        shape(geom)
        for geom, value in features.shapes(mask.astype(np.uint8), mask=mask, transform=transform, connectivity=4)
        if value == 1
    ]
    if not polys:
        return MultiPolygon()
    merged = shapely.make_valid(shapely.union_all(polys))
    parts = [g for g in getattr(merged, "geoms", [merged]) if isinstance(g, Polygon) and not g.is_empty]
    return MultiPolygon(parts)


def credible_regions(raster: DensityRaster, levels: list[float]) -> list[CredibleRegion]:
    """The HDR of each level as a (Multi)Polygon with its area in km2."""
    grid = raster.grid
    areas = grid.cell_areas_km2()[:, None]
    regions = []
    for level, mask in zip(levels, hdr_masks(raster.density_sr(), raster.prob, levels), strict=True):
        geometry = polygonize(mask, grid.transform())
        area = float((mask * areas).sum())
        regions.append(CredibleRegion(float(level), geometry, area, mask))
    return regions


def fraction_inside(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    """Share of points (given by their cells) that fall inside a region mask."""
    return float(mask[rows, cols].mean()) if len(rows) else 0.0
