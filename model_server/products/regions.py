"""Credible regions: highest-density regions (HDR) of the raster, as polygons with their area.

The p-HDR is the set of cells of highest density (probability per steradian, so small
polar cells are not favoured) that a fresh draw of the model falls in with probability p:
its threshold is the (1 - p) quantile of the density at the model's own samples (Hyndman's
density-quantile rule, 1996), each taken without its own kernel (leave-one-out).  Adding up
the smoothed raster's probability instead misses both ways where one bandwidth cannot fit a
tight and a broad cluster at once: the kernel spreads the tight one's mass, its 50 % region
grows and the 90 / 99 % ones shrink (tests/server/test_products.py measures both rules on such a
mixture).  Without samples, or where more than 1 - p of them stand alone
(leave-one-out density at the uniform floor, so the threshold would take the whole globe), the
raster's probability is added up instead; regions are kept nested.

Regions are polygonised in lon/lat with rasterio.features.shapes: the global raster spans exactly [-180, 180], so a
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


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q quantile of `values` drawn with probabilities proportional to `weights` (the lowest value whose
    cumulative weight reaches q)."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][min(int(np.searchsorted(cum, q * cum[-1])), len(order) - 1)])


def hdr_masks(
    density_sr: np.ndarray,
    prob: np.ndarray,
    levels: list[float],
    at_samples: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None,
) -> list[np.ndarray]:
    """One boolean mask per level: the cells at least as dense as the densest `level` share of the
    samples' (leave-one-out) densities `at_samples` (weighted by `sample_weights`, the draws' importance
    weights under a prior); without them, the densest cells until their probability reaches the level."""
    if at_samples is not None and len(at_samples):
        at_samples = np.asarray(at_samples, dtype=np.float64)
        floor = float(density_sr.min())
        masks = []
        for level in levels:
            if sample_weights is None:  # as evaluation.metrics.hpd_thresholds
                threshold = float(np.quantile(at_samples, 1.0 - level))
            else:
                threshold = weighted_quantile(at_samples, np.asarray(sample_weights, np.float64), 1.0 - level)
            # More than 1 - level of the samples stand alone (their density, less their own kernel, is the
            # uniform floor): the rule would take the whole globe. The raster's mass rule keeps their kernels.
            masks.append(density_sr >= threshold if threshold > 1.01 * floor
                         else hdr_masks(density_sr, prob, [level])[0])
        for lower, higher in zip(np.argsort(levels)[:-1], np.argsort(levels)[1:], strict=True):
            masks[higher] |= masks[lower]  # nested even when one level fell back to the mass rule
        return masks
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


def region_masks(raster: DensityRaster, levels: list[float], samples: np.ndarray | None = None) -> list[np.ndarray]:
    """hdr_masks of a raster made from `samples` (n, 3), ranked by their leave-one-out densities; without
    samples, by the raster's probability."""
    at_samples = raster.density_at_own_samples(samples) if samples is not None else None
    return hdr_masks(raster.density_sr(), raster.prob, levels, at_samples)


def polygonize(mask: np.ndarray, transform) -> MultiPolygon:
    """The cells where mask is True, as one valid MultiPolygon in the transform's coordinates."""
    from rasterio import features
    from rasterio.transform import Affine

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return MultiPolygon()
    # Only the mask's bounding box is traced (a region is usually a small part of the global grid), in the whole
    # grid's cell coordinates, which are whole numbers; the grid's transform then gives the same coordinates, to
    # the last bit, as tracing the whole grid would.
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    box = mask[r0:r1, c0:c1]
    cells = [
        shape(geom)
        for geom, value in features.shapes(box.astype(np.uint8), mask=box, transform=Affine.translation(c0, r0),
                                           connectivity=4)
        if value == 1
    ]

    def to_grid(xy: np.ndarray) -> np.ndarray:  # GDAL's sum, in GDAL's order
        x, y = xy[:, 0], xy[:, 1]
        t = transform
        return np.column_stack([t.c + x * t.a + y * t.b, t.f + x * t.d + y * t.e])

    polys = shapely.transform(cells, to_grid)
    merged = shapely.make_valid(shapely.union_all(polys))
    parts = [g for g in getattr(merged, "geoms", [merged]) if isinstance(g, Polygon) and not g.is_empty]
    return MultiPolygon(parts)


def credible_regions(
    raster: DensityRaster, levels: list[float], samples: np.ndarray | None = None,
    masks: list[np.ndarray] | None = None,
) -> list[CredibleRegion]:
    """The HDR of each level as a (Multi)Polygon with its area in km2; `samples` (n, 3) are the unit
    vectors the raster was made from, or `masks` the regions already cut (maps.ProbabilityMap.masks)."""
    grid = raster.grid
    areas = grid.cell_areas_km2()[:, None]
    regions = []
    if masks is None:
        masks = region_masks(raster, levels, samples)
    for level, mask in zip(levels, masks, strict=True):
        geometry = polygonize(mask, grid.transform())
        area = float((mask * areas).sum())
        regions.append(CredibleRegion(float(level), geometry, area, mask))
    return regions

