"""A probability map and what its credible regions rank by: the photo's own kernel density map, the same
map under an area-of-interest prior, or the product of several photos' maps.

The photo's own map keeps its draws' leave-one-out densities, so its regions follow the density-quantile
rule (regions.py).  A prior re-weights the draws (importance weights: a draw outside a hard area of
interest weighs nothing), so the same rule still holds on the restricted map.  A product of maps has no
draws of its own: its regions add up the raster's probability (the mass rule).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..geodesy import xyz_to_latlon
from .density import DensityRaster, kde_raster
from .grid import Grid
from .regions import hdr_masks


@dataclass
class ProbabilityMap:
    """`raster` (probability per cell, summing to 1) with the draws' densities that rank its regions."""

    raster: DensityRaster
    at_samples: np.ndarray | None = None  # density per steradian at each draw, leave-one-out; None: mass rule
    sample_weights: np.ndarray | None = None  # importance weight of each draw under this map; None: equal

    def masks(self, levels: Sequence[float]) -> list[np.ndarray]:
        """The credible region of each level as a boolean mask on the raster's grid."""
        return hdr_masks(self.raster.density_sr(), self.raster.prob, list(levels), self.at_samples,
                         self.sample_weights)

    def density_sr_at(self, lat: float, lon: float) -> float:
        """Density per steradian of the cell holding (lat, lon)."""
        rows, cols = self.raster.grid.cell_of(np.array([lat]), np.array([lon]))
        return float(self.raster.density_at_cells(rows, cols)[0])


def sample_map(samples: np.ndarray, grid: Grid, check: Callable[[], None] | None = None) -> ProbabilityMap:
    """The kernel density map of one photo's draws (n, 3), ranked by their leave-one-out densities."""
    raster = kde_raster(samples, grid, check=check)
    return ProbabilityMap(raster, raster.density_at_own_samples(samples))


def cells_of_points(grid: Grid, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the cells holding unit vectors (n, 3)."""
    lat, lon = xyz_to_latlon(np.asarray(points, dtype=np.float64))
    return grid.cell_of(lat, lon)


def apply_prior(pmap: ProbabilityMap, cell_weights: np.ndarray, samples: np.ndarray | None) -> tuple[
        ProbabilityMap, float]:
    """The map times a prior given per cell (any non-negative weights), renormalised; and the mass the map
    gave the prior's support before (sum of prob x weight, with weight 1 inside).

    The draws `samples` the map was made from take the weight of their cell, so the leave-one-out densities
    still rank the restricted map's regions.
    """
    weights = np.asarray(cell_weights, dtype=np.float64)
    weighted = pmap.raster.prob * weights
    total = float(weighted.sum())
    if not total > 0:
        raise ValueError("the prior gives every cell of the map weight 0")
    raster = replace(pmap.raster, prob=weighted / total, normaliser=pmap.raster.normaliser * total)
    at, w = None, None
    if pmap.at_samples is not None and samples is not None:
        rows, cols = cells_of_points(pmap.raster.grid, samples)
        w = weights[rows, cols] * (1.0 if pmap.sample_weights is None else pmap.sample_weights)
        at = pmap.at_samples * weights[rows, cols] / total
        if not w.sum() > 0:  # no draw left inside: the mass rule
            at, w = None, None
    return ProbabilityMap(raster, at, w), total


def product_map(log_density_sr: np.ndarray, grid: Grid, kappa: float, uniform_weight: float) -> ProbabilityMap:
    """The map proportional to exp(log_density_sr) per steradian on `grid` (the sum of several photos' log
    densities), normalised; its regions follow the mass rule (it has no draws).  `kappa`, `uniform_weight`:
    the kernel of the maps multiplied, for the record."""
    log_prob = log_density_sr + np.log(grid.cell_areas_sr())[:, None]
    log_prob -= log_prob.max()
    prob = np.exp(log_prob)
    total = float(prob.sum())
    prob /= total
    return ProbabilityMap(DensityRaster(grid, prob, kappa, uniform_weight))
