"""Main modes of the density raster: the probability of lying near each, and the mass of its basin.

Every cell points to its densest neighbour (8-neighbourhood, longitude wrapping round the
antimeridian, the top and bottom rows also seeing the densest cell of their row, i.e. the
neighbours across the pole).  Following the pointers to their fixed points (pointer
jumping) is a steepest-ascent watershed: fixed points are the local maxima (the modes),
and the basin share of a mode is the probability of all the cells that climb to it.  The basin share is
not the chance of being near the place (a basin can span a continent): `mass_within` gives that, the
share of the model's draws within a stated great-circle radius of the mode, for WITHIN_RADII_KM. Counted on
the draws rather than summed over the raster's cells, it does not depend on the cell size (a cell can be
wider than the radius) and costs one dot product per draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..geodesy import EARTH_RADIUS_KM, latlon_to_xyz
from .density import DensityRaster
from .kde import log_kernel_sums, max_kappa_for, select_kappa

# The radii of the top places' "probability of lying within R km of the place" (summary, GeoPackage, labels).
WITHIN_RADII_KM = (100.0, 500.0)


@dataclass
class Mode:
    lat: float
    lon: float
    probability: float  # the basin share: the mass of all cells that climb to this mode
    row: int
    col: int
    within: dict[float, float] = field(default_factory=dict)  # radius km -> probability of lying within it

    @property
    def basin_share(self) -> float:
        return self.probability


def within_field(radius_km: float) -> str:
    """The summary key and GeoPackage field of the probability within `radius_km`: 'p_within_100km'."""
    return f"p_within_{radius_km:g}km"


def mass_within(samples: np.ndarray, lat: float, lon: float, radii_km=WITHIN_RADII_KM,
                weights: np.ndarray | None = None) -> dict[float, float]:
    """Share of the draws `samples` (n, 3 unit vectors) within each radius (great-circle km) of (lat, lon);
    `weights`: the draws' importance weights under a prior (None: equal)."""
    centre = latlon_to_xyz(np.array([lat]), np.array([lon]))[0]
    distance = EARTH_RADIUS_KM * np.arccos(np.clip(np.asarray(samples, dtype=np.float64) @ centre, -1.0, 1.0))
    if weights is None:
        return {float(r): float(np.mean(distance <= r)) for r in radii_km}
    total = float(np.sum(weights))
    return {float(r): float(np.sum(weights[distance <= r]) / total) for r in radii_km}


def raster_mass_within(raster: DensityRaster, lat: float, lon: float, radii_km=WITHIN_RADII_KM) -> dict[float, float]:
    """The raster's probability in the cells whose centres lie within each radius of (lat, lon): for a map
    without draws (the product of several photos' maps)."""
    grid = raster.grid
    centre = latlon_to_xyz(np.array([lat]), np.array([lon]))[0]
    lat_c = np.deg2rad(grid.lat_centers())[:, None]
    lon_c = np.deg2rad(grid.lon_centers())[None, :]
    cos = np.cos(lat_c) * np.cos(lon_c) * centre[0] + np.cos(lat_c) * np.sin(lon_c) * centre[1] \
        + np.sin(lat_c) * centre[2]
    distance = EARTH_RADIUS_KM * np.arccos(np.clip(cos, -1.0, 1.0))
    return {float(r): float(np.minimum(raster.prob[distance <= r].sum(), 1.0)) for r in radii_km}


def ascent_roots(density: np.ndarray) -> np.ndarray:
    """For each cell (flat index), the flat index of the local maximum it climbs to."""
    h, w = density.shape
    idx = np.arange(h * w).reshape(h, w)
    best_val = density.copy()
    best_idx = idx.copy()
    # one padded copy each, wrapped across the antimeridian and -inf beyond the poles: the neighbours are views
    padded_val = np.pad(np.pad(density, ((0, 0), (1, 1)), mode="wrap"), ((1, 1), (0, 0)), constant_values=-np.inf)
    padded_idx = np.pad(np.pad(idx, ((0, 0), (1, 1)), mode="wrap"), ((1, 1), (0, 0)), constant_values=-1)
    better = np.empty((h, w), dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            val = padded_val[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
            np.greater(val, best_val, out=better)
            np.copyto(best_val, val, where=better)
            np.copyto(best_idx, padded_idx[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w], where=better)
    for row in (0, h - 1):  # across the pole: every cell of a polar row neighbours the others
        top = int(np.argmax(density[row]))
        better = density[row, top] > best_val[row]
        best_val[row] = np.where(better, density[row, top], best_val[row])
        best_idx[row] = np.where(better, idx[row, top], best_idx[row])
    parent = best_idx.ravel()
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def find_modes(
    raster: DensityRaster, top_k: int, min_probability: float = 1e-3, samples: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None, within_on_raster: bool = False,
) -> list[Mode]:
    """The top_k modes by probability mass (each holding at least min_probability); with the draws the raster
    was made from, each mode's `within` holds the share of them (importance-weighted by `sample_weights`)
    within WITHIN_RADII_KM of it; with within_on_raster, the raster's mass there instead."""
    density = raster.density_sr()
    roots = ascent_roots(density)
    mass = np.bincount(roots, weights=raster.prob.ravel(), minlength=roots.size)
    # Summed in another order than the raster's normalisation: a lone mode's mass can round a few ulps over 1.
    np.minimum(mass, 1.0, out=mass)
    candidates = np.flatnonzero(mass >= min_probability)
    candidates = candidates[np.argsort(mass[candidates])[::-1]][:top_k]
    lats = raster.grid.lat_centers()
    lons = raster.grid.lon_centers()
    modes = []
    for flat in candidates:
        row, col = divmod(int(flat), raster.grid.width)
        mode = Mode(float(lats[row]), float(lons[col]), float(mass[flat]), row, col)
        if samples is not None:
            mode.within = mass_within(samples, mode.lat, mode.lon, weights=sample_weights)
        elif within_on_raster:
            mode.within = raster_mass_within(raster, mode.lat, mode.lon)
        modes.append(mode)
    return modes


# The coarse kernel of the best guess: kappa 30 is a ~1,200 km standard deviation, the scale of GeoScore's
# exp(-d / 1492.7 km). The guess lies within REGION_KM of the coarse mode.
REGION_KAPPA = 30.0
REGION_KM = 1000.0


def best_of_samples(samples: np.ndarray, kappa: float, weights: np.ndarray | None = None) -> int:
    """Index of the best single guess among the samples (n, 3): coarse to fine.

    The region holding the most mass at GeoScore's scale is found first (the plain finest mode can be a
    small, tight cluster beside a larger spread-out one); within REGION_KM of it the sample of highest
    density under `kappa` is the guess.  `weights` (a prior's weight at each sample, some positive): the
    densities are those of the weighted draws, times the prior at the candidate.
    """
    x = np.asarray(samples, dtype=np.float64)
    if weights is None:
        log_w = None
        log_prior = 0.0
    else:
        with np.errstate(divide="ignore"):
            log_w = np.log(np.asarray(weights, dtype=np.float64))
        log_prior = log_w
    centre = x[int(np.argmax(log_kernel_sums(x, x, REGION_KAPPA, log_w) + log_prior))]
    fine = log_kernel_sums(x, x, kappa, log_w) + log_prior
    fine[x @ centre < np.cos(REGION_KM / EARTH_RADIUS_KM)] = -np.inf
    return int(np.argmax(fine))


def best_guess(samples: np.ndarray, resolution: float, weights: np.ndarray | None = None) -> np.ndarray:
    """The single best guess among one photo's samples (n, 3), as a unit vector (3,): best_of_samples with
    the kernel the density raster of `resolution` degrees would fit to them (select_kappa, at most a cell
    wide). The server's summary and `geoplonk eval` both report this guess. `weights`: a prior's weight at
    each sample (an area of interest), at least one positive."""
    x = np.asarray(samples, dtype=np.float64)
    return x[best_of_samples(x, select_kappa(x, max_kappa_for(resolution)), weights)]
