"""Density raster from samples: a von Mises-Fisher kernel density estimate on the lat/lon grid.

p(x) = (1 - eps) * mean_i vMF(x; mu_i, kappa_i) + eps / (4 pi), per steradian: the kernels, their
bandwidths (leave-one-out pilot kappa, then one kappa_i per sample by Abramson's law) and the same density
off the grid are in kde.py.  The probability of a cell is the density at its centre times its exact solid
angle, renormalised to sum to 1 (the renormalisation only corrects the midpoint quadrature; it is within a
fraction of a percent of 1 at the default bandwidths).  `eps` keeps every cell strictly positive so the
log-likelihood of any location stays finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..geodesy import latlon_to_xyz, xyz_to_latlon
from .grid import Grid
from .kde import adaptive_kappas, max_kappa_for, select_kappa, vmf_log_norms
from .raster_sum import kernel_sums

# Each cell's density is exact to this fraction of the uniform floor, so to this fraction of itself.
CELL_TOLERANCE = 1e-8
# Without a uniform floor, a kernel is left out where it is below exp(-CUTOFF) of its peak.
CUTOFF = 30.0
DEFAULT_UNIFORM_WEIGHT = 1e-4
# The raster's `kernel` tag: kernel_kappa is the pilot bandwidth the per-sample ones scale.
KERNEL_NAME = "adaptive von Mises-Fisher KDE (Abramson)"


@dataclass
class DensityRaster:
    """Probability per cell (sums to 1 over the globe) on `grid`, and how it was made."""

    grid: Grid
    prob: np.ndarray  # (height, width) float64
    kappa: float  # the fixed (pilot) bandwidth
    uniform_weight: float
    normaliser: float = 1.0  # the KDE's cell-centre sum that prob was divided by (a quadrature correction)
    kappas: np.ndarray | None = None  # per-sample bandwidths (adaptive kernel), in the samples' order

    def sample_kappas(self, n: int) -> np.ndarray:
        """The bandwidth of each of the n samples the raster was made from."""
        if self.kappas is None:
            return np.full(n, self.kappa)
        if len(self.kappas) != n:
            raise ValueError(f"the raster was made from {len(self.kappas)} samples, not {n}")
        return self.kappas

    def density_sr(self) -> np.ndarray:
        """Probability per steradian of each cell (what the highest-density regions rank by)."""
        return self.prob / self.grid.cell_areas_sr()[:, None]

    def density_at_own_samples(self, samples: np.ndarray) -> np.ndarray:
        """Each of the raster's own samples (n, 3) -> the density per steradian of its cell less its own
        kernel's share: the leave-one-out density, which is what a fresh draw of the model would meet.

        Ranking the samples by the raster's plain density instead puts each one on its own kernel's
        peak, and the regions drawn from those ranks come out too small.
        """
        s = np.asarray(samples, dtype=np.float64)
        lat, lon = xyz_to_latlon(s)
        rows, cols = self.grid.cell_of(lat, lon)
        centres = latlon_to_xyz(self.grid.lat_centers()[rows], self.grid.lon_centers()[cols])
        cos = np.clip(np.sum(s * centres, axis=1) / np.linalg.norm(s, axis=1), -1.0, 1.0)
        k = self.sample_kappas(len(s))
        own = (1.0 - self.uniform_weight) * np.exp(vmf_log_norms(k) + k * (cos - 1.0)) / len(s)
        own /= self.normaliser
        floor = self.uniform_weight / (4 * math.pi) / self.normaliser
        return np.maximum(self.density_at_cells(rows, cols) - own, floor)

    def log_density_at(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """log density per steradian of the cells holding these points (the raster's likelihood)."""
        return np.log(self.density_at_cells(*self.grid.cell_of(lat, lon)))

    def density_at_cells(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """density_sr() of these cells only (without dividing the whole raster)."""
        return self.prob[rows, cols] / self.grid.cell_areas_sr()[rows]


def kde_raster(
    samples: np.ndarray,
    grid: Grid,
    kappa: float | None = None,
    uniform_weight: float = DEFAULT_UNIFORM_WEIGHT,
    adaptive: bool = True,
    check: Callable[[], None] | None = None,
) -> DensityRaster:
    """The KDE of unit-vector samples (n, 3) integrated over the cells of `grid` (global, or a window of one).

    kappa: the (pilot) bandwidth, by leave-one-out likelihood when None; adaptive: per-sample
    bandwidths around it (adaptive_kappas), else the one kappa for all. check, when given, is called
    in the bandwidth selection and between blocks of the evaluation (every few ms); it may raise to stop
    (the server's cancel). Every cell's density is within CELL_TOLERANCE of the exact KDE at its centre,
    relative (_cuts, raster_sum).
    """
    s = np.asarray(samples, dtype=np.float64)
    s = s / np.linalg.norm(s, axis=1, keepdims=True)
    max_kappa = max_kappa_for(grid.resolution)
    if kappa is None:
        kappa = select_kappa(s, max_kappa, check=check)
    if check is not None:
        check()
    if adaptive:
        kappas = adaptive_kappas(s, kappa, max(max_kappa, kappa), check=check)
    else:
        kappas = np.full(len(s), float(kappa))
    density = kernel_sums(s, kappas, vmf_log_norms(kappas), grid, _cuts(kappas, uniform_weight), check)
    density /= len(s)
    density = (1.0 - uniform_weight) * density + uniform_weight / (4 * math.pi)
    prob = density * grid.cell_areas_sr()[:, None]
    total = float(prob.sum())
    prob /= total
    return DensityRaster(grid, prob, float(kappa), uniform_weight, total, kappas if adaptive else None)


def _cuts(kappas: np.ndarray, uniform_weight: float) -> np.ndarray:
    """Per kernel, the exponent kappa_i (x . mu_i - 1) below which its term may be left out.

    A term is dropped only where it is under CELL_TOLERANCE of the uniform floor's share of each sample,
    eps / (4 pi) / (1 - eps) in kernel units: the n kernels together then move no cell by more than
    CELL_TOLERANCE of the floor, so of itself.
    """
    if uniform_weight <= 0:
        return np.full(len(kappas), CUTOFF)
    if uniform_weight >= 1:
        return np.full(len(kappas), -1.0)
    log_floor = math.log(CELL_TOLERANCE * uniform_weight / (4 * math.pi * (1.0 - uniform_weight)))
    return vmf_log_norms(kappas) - log_floor


def crop_window(prob: np.ndarray, mass: float = 0.999) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the smallest lat band x lon span holding the top-`mass` cells.

    Columns are chosen circularly (the largest empty gap of columns is cut away); when the
    kept columns would wrap across the antimeridian the full longitude range is kept, since
    a GeoTIFF cannot wrap.
    """
    flat = prob.ravel()
    total = float(flat.sum())
    if not np.isfinite(total) or total <= 0:
        return 0, prob.shape[0], 0, prob.shape[1]  # no mass to crop to
    # Cells under (1 - mass) total / N hold less than (1 - mass) total together, so the top-`mass` cells are among
    # the others: a few thousand to sort of a million.
    candidates = np.flatnonzero(flat >= (1.0 - mass) * total / flat.size)
    order = candidates[np.argsort(flat[candidates])[::-1]]
    csum = np.cumsum(flat[order])
    keep = order[: int(np.searchsorted(csum, min(mass * total, csum[-1]))) + 1]
    rows, cols = np.unravel_index(keep, prob.shape)
    row0, row1 = int(rows.min()), int(rows.max()) + 1
    used = np.zeros(prob.shape[1], dtype=bool)
    used[cols] = True
    if used.all():
        return row0, row1, 0, prob.shape[1]
    col0, col1 = int(cols.min()), int(cols.max()) + 1
    # Largest circular run of unused columns; if it does not touch the edges the data wraps.
    unused = ~used
    doubled = np.concatenate([unused, unused])
    best_len, best_start, run = 0, 0, 0
    for i, free in enumerate(doubled):
        run = run + 1 if free else 0
        if run > best_len and run <= len(unused):
            best_len, best_start = run, i - run + 1
    gap_start = best_start % len(unused)
    gap_end = gap_start + best_len
    if gap_end <= len(unused) and gap_start > 0 and gap_end < len(unused):
        return row0, row1, 0, prob.shape[1]  # the kept columns wrap round the antimeridian
    return row0, row1, col0, col1
