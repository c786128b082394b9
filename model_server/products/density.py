"""Density raster from samples: a von Mises-Fisher kernel density estimate on the lat/lon grid.

p(x) = (1 - eps) * mean_i vMF(x; mu_i, kappa) + eps / (4 pi), per steradian, with
vMF(x; mu, kappa) = kappa / (2 pi (1 - exp(-2 kappa))) * exp(kappa (mu . x - 1)).
kappa is chosen by leave-one-out likelihood cross-validation on the samples themselves
(the bandwidth that best predicts held-out samples of the same distribution), capped so
that the kernel is never narrower than a grid cell.  By default each sample then gets its
own kappa_i by Abramson's square-root law (1982): kernel variance inversely proportional to
the pilot (fixed-kappa) density at the sample, so a tight mode stays tight while stray draws
of a broad one are smoothed out (adaptive_kappas).  The probability of a cell is the
density at its centre times its exact solid angle, renormalised to sum to 1 (the
renormalisation only corrects the midpoint quadrature; it is within a fraction of a
percent of 1 at the default bandwidths).  `eps` keeps every cell strictly positive so
the log-likelihood of any location stays finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from .grid import Grid

KAPPA_GRID = np.geomspace(2.0, 2.0e5, 41)
# exp(-CUTOFF) is negligible next to the kernel's peak: contributions beyond are skipped.
CUTOFF = 30.0
DEFAULT_UNIFORM_WEIGHT = 1e-4
# The raster's `kernel` tag: kernel_kappa is the pilot bandwidth the per-sample ones scale.
KERNEL_NAME = "adaptive von Mises-Fisher KDE (Abramson)"
# The widest adaptive kernel: kappa0 / 20, about 4.5 times the pilot kernel's standard deviation.
ADAPTIVE_WIDEST = 20.0


def vmf_log_norms(kappas: np.ndarray | float) -> np.ndarray:
    """log of kappa / (2 pi (1 - exp(-2 kappa))), the vMF constant in the exp(kappa (mu.x - 1)) form."""
    k = np.asarray(kappas, dtype=np.float64)
    return np.log(k) - math.log(2 * math.pi) - np.log(-np.expm1(-2.0 * k))


def vmf_log_norm(kappa: float) -> float:
    """vmf_log_norms of one kappa."""
    return float(vmf_log_norms(kappa))


def max_kappa_for(resolution_deg: float) -> float:
    """The sharpest kernel a grid can carry: standard deviation about one cell."""
    return 1.0 / math.radians(resolution_deg) ** 2


def loo_log_likelihood(samples: np.ndarray, kappas: np.ndarray) -> np.ndarray:
    """Mean leave-one-out log-likelihood of the samples under the KDE of the others, per kappa."""
    x = np.asarray(samples, dtype=np.float64)
    n = len(x)
    if n < 2:
        return np.zeros(len(kappas))
    d = np.clip(x @ x.T, -1.0, 1.0) - 1.0  # (n, n), <= 0
    np.fill_diagonal(d, -np.inf)
    out = np.empty(len(kappas))
    for i, kappa in enumerate(kappas):
        a = kappa * d
        m = a.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(a - m).sum(axis=1))
        out[i] = float(np.mean(lse - math.log(n - 1) + vmf_log_norm(kappa)))
    return out


def select_kappa(samples: np.ndarray, max_kappa: float | None = None, max_points: int = 2048) -> float:
    """Bandwidth by leave-one-out likelihood over KAPPA_GRID (on at most max_points samples)."""
    x = np.asarray(samples, dtype=np.float64)
    if len(x) > max_points:
        x = x[np.linspace(0, len(x) - 1, max_points).astype(int)]
    kappas = KAPPA_GRID if max_kappa is None else KAPPA_GRID[KAPPA_GRID <= max_kappa]
    if len(kappas) == 0:
        return float(max_kappa)
    scores = loo_log_likelihood(x, kappas)
    return float(kappas[int(np.argmax(scores))])


def adaptive_kappas(samples: np.ndarray, kappa0: float, max_kappa: float | None = None,
                    chunk: int = 1024) -> np.ndarray:
    """Per-sample kappa_i = kappa0 * f_i / g (Abramson's law: bandwidth^2 proportional to 1 / f).

    f_i is the leave-one-out density at sample i under the pilot kernel kappa0 and g the geometric
    mean of the f_i, so kappa0 stays the typical width. Clipped to [kappa0 / ADAPTIVE_WIDEST, max_kappa].
    A fixed kernel wide enough for a broad mode's stray draws blurs a tight one; on held-out Earth tiles
    the adaptive one made the drawn map likelier at the same coverage (docs/default-model.md).
    """
    x = np.asarray(samples, dtype=np.float64)
    n = len(x)
    upper = np.inf if max_kappa is None else float(max_kappa)
    if n < 3:
        return np.full(n, min(float(kappa0), upper))
    log_f = np.empty(n)
    for start in range(0, n, chunk):  # in row blocks: n x n at once is 800 MB for 10,000 draws
        a = kappa0 * (np.clip(x[start : start + chunk] @ x.T, -1.0, 1.0) - 1.0)
        a[np.arange(len(a)), np.arange(start, start + len(a))] = -np.inf  # leave each draw out
        log_f[start : start + chunk] = logsumexp(a, axis=1)
    log_f = np.maximum(log_f, np.max(log_f) - 50.0)  # an isolated draw: floored, then clipped below
    kappas = kappa0 * np.exp(log_f - log_f.mean())
    return np.clip(kappas, kappa0 / ADAPTIVE_WIDEST, max(upper, kappa0 / ADAPTIVE_WIDEST))


def kde_log_density(
    points: np.ndarray, samples: np.ndarray, kappa: float | np.ndarray, uniform_weight: float
) -> np.ndarray:
    """log p(points) per steradian under the KDE (same formula as the raster, without gridding);
    kappa is one bandwidth or one per sample."""
    p = np.asarray(points, dtype=np.float64)
    s = np.asarray(samples, dtype=np.float64)
    k = np.broadcast_to(np.asarray(kappa, dtype=np.float64), (len(s),))
    a = k * (np.clip(p @ s.T, -1.0, 1.0) - 1.0) + vmf_log_norms(k)
    m = a.max(axis=1, keepdims=True)
    log_kde = m[:, 0] + np.log(np.exp(a - m).mean(axis=1))
    log_u = -math.log(4 * math.pi)
    return np.logaddexp(np.log1p(-uniform_weight) + log_kde, math.log(uniform_weight) + log_u)


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
        from .geodesy import latlon_to_xyz, xyz_to_latlon

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
) -> DensityRaster:
    """The KDE of unit-vector samples (n, 3) integrated over the cells of a global `grid`.

    kappa: the (pilot) bandwidth, by leave-one-out likelihood when None; adaptive: per-sample
    bandwidths around it (adaptive_kappas), else the one kappa for all.
    """
    s = np.asarray(samples, dtype=np.float64)
    s = s / np.linalg.norm(s, axis=1, keepdims=True)
    max_kappa = max_kappa_for(grid.resolution)
    if kappa is None:
        kappa = select_kappa(s, max_kappa)
    kappas = adaptive_kappas(s, kappa, max(max_kappa, kappa)) if adaptive else np.full(len(s), float(kappa))
    lat_s = np.arcsin(np.clip(s[:, 2], -1.0, 1.0))
    order = np.argsort(lat_s)
    lat_sorted = lat_s[order]
    s_sorted = s[order].astype(np.float32)
    k_sorted = kappas[order].astype(np.float32)
    log_c_sorted = vmf_log_norms(kappas[order]).astype(np.float32)
    # Beyond this angle from its centre a kernel is negligible (exp(-CUTOFF) of its peak).
    reach = np.arccos(np.maximum(-1.0, 1.0 - CUTOFF / kappas[order]))
    widest = float(reach.max()) if len(reach) else 0.0
    lats = np.deg2rad(grid.lat_centers())
    density = np.zeros((grid.height, grid.width))
    for row in range(grid.height):
        lo, hi = np.searchsorted(lat_sorted, [lats[row] - widest, lats[row] + widest])
        near = np.arange(lo, hi)[np.abs(lat_sorted[lo:hi] - lats[row]) <= reach[lo:hi]]
        if len(near) == 0:
            continue
        a = grid.row_xyz(row).astype(np.float32) @ s_sorted[near].T  # (width, k)
        a -= 1.0
        a *= k_sorted[near]
        a += log_c_sorted[near]
        np.exp(a, out=a)
        density[row] = a.sum(axis=1, dtype=np.float64)
    density /= len(s)
    density = (1.0 - uniform_weight) * density + uniform_weight / (4 * math.pi)
    prob = density * grid.cell_areas_sr()[:, None]
    total = float(prob.sum())
    prob /= total
    return DensityRaster(grid, prob, float(kappa), uniform_weight, total, kappas if adaptive else None)


def crop_window(prob: np.ndarray, mass: float = 0.999) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the smallest lat band x lon span holding the top-`mass` cells.

    Columns are chosen circularly (the largest empty gap of columns is cut away); when the
    kept columns would wrap across the antimeridian the full longitude range is kept, since
    a GeoTIFF cannot wrap.
    """
    flat = prob.ravel()
    order = np.argsort(flat)[::-1]
    csum = np.cumsum(flat[order])
    keep = order[: int(np.searchsorted(csum, mass * csum[-1])) + 1]
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
