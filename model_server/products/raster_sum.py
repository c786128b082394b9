"""Sums of von Mises-Fisher kernels at the cell centres of a lat/lon grid, within a stated error.

S[r, c] = sum_i exp(log_w_i + kappa_i (x_rc . mu_i - 1)).  Every kernel is evaluated one of two ways,
whichever its estimated work makes cheaper:

- direct: the grid is cut into tiles of TILE_ROWS x TILE_COLS cells, and each tile sums the kernels whose
  reach meets it.  A sharp kernel touches a few tiles only.
- Fourier: along row r the kernel is exp(log_w_i + a_ir) exp(-B_ir (1 - cos(lon - lon_i))) with
  a_ir = kappa_i (cos(lat_r - lat_i) - 1) and B_ir = kappa_i cos lat_r cos lat_i, and
  exp(-B (1 - cos d)) = ive_0(B) + 2 sum_m ive_m(B) cos(m d) (ive: the exponentially scaled Bessel
  functions, terms in [0, 1]).  The coefficients of all such kernels add up per row and one inverse real
  FFT gives every column of the row: a wide kernel needs a few dozen terms instead of a whole row of
  exponentials.  This needs the columns to be regular around the whole circle (360 / resolution whole).

Error: `cuts` (per kernel, in the exponent) say what may be dropped.  A kernel is left out where
kappa_i (x . mu_i - 1) < -cut_i, and its Fourier series is cut after the M terms that leave a tail of
at most exp(-cut_i) of its peak, so every kernel is off by at most exp(log_w_i - cut_i) at any cell;
the rest is float64 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .grid import Grid

TILE_ROWS = 8
TILE_COLS = 32
# Cost of one (row, kernel, Fourier term) in units of one (cell, kernel) exponential of a tile.  Timed
# with numpy 2.4 on x86-64: 2-5 ns per tile element, 3-9 ns per Fourier element; totals on diffuse, mixed
# and concentrated samples were flat between 2 and 3.  It only moves the split between the two ways.
FOURIER_COST = 2.5
# Elements of work per block (row chunk x kernels x terms, or tile cells x kernels): ~10 ms each, so
# `check` runs often and the buffers stay a few MB.
BLOCK_WORK = 1 << 19
# Kernels planned at once (fewer, over fewer rows, when the map is sharp).
PLAN_CHUNK = 128
# (kernel, tile) pairs listed (and sorted, ~25 ms) at once by the direct way; more go in further runs.
MAX_PAIRS = 1 << 18
# Extra terms of the backward recurrence above the last one kept.
RECURRENCE_MARGIN = 4
# Fourier terms are kept at least this large: far below any tolerance, and it keeps the products of ratios
# and weights out of the subnormal floats, which the CPU computes many times slower.
TINY = 1e-150


def fourier_terms(b: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """How many terms M keep 2 sum_{m > M} ive_m(b) <= exp(-cut): sqrt(2 b cut) for wide b (the Gaussian
    tail), more for small b; tests/server/test_raster_sum.py checks the bound against scipy's ive."""
    cut = np.asarray(cut, dtype=np.float64)
    c = cut / 6.0
    return np.ceil(np.sqrt(2.0 * np.asarray(b) * cut + c * c) + c).astype(np.int64)


def _reach(kappas: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Angle from its centre beyond which a kernel is below exp(-cut) of its peak (pi: nowhere)."""
    q = cuts / kappas
    return np.where(q >= 2.0, math.pi, 2.0 * np.arcsin(np.sqrt(np.clip(q, 0.0, 2.0) / 2.0)))


def kernel_sums(
    centres: np.ndarray,
    kappas: np.ndarray,
    log_weights: np.ndarray,
    grid: Grid,
    cuts: np.ndarray,
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """S (grid.height, grid.width) for unit centres (n, 3), bandwidths and log weights (n,), and the
    exponent cut of each kernel (n,); see the module's docstring for the error.  check, when given, is
    called between blocks of about BLOCK_WORK elements (it may raise to stop)."""
    mu = np.asarray(centres, dtype=np.float64)
    kappa = np.asarray(kappas, dtype=np.float64)
    log_w = np.asarray(log_weights, dtype=np.float64)
    cut = np.broadcast_to(np.asarray(cuts, dtype=np.float64), kappa.shape)
    keep = cut > 0  # a kernel whose peak is within the tolerance adds nothing
    mu, kappa, log_w, cut = mu[keep], kappa[keep], log_w[keep], cut[keep]
    out = np.zeros((grid.height, grid.width))
    if len(mu) == 0:
        return out
    layout = _Layout(grid)
    k_lat = np.arcsin(np.clip(mu[:, 2], -1.0, 1.0))
    k_lon = np.arctan2(mu[:, 1], mu[:, 0])
    plan = _plan(layout, k_lat, kappa, cut, check)
    direct = np.flatnonzero(~plan.fourier)
    # kernels in runs of at most MAX_PAIRS (kernel, tile) pairs, which bounds the memory of the tile lists
    pairs = np.cumsum(plan.direct_work[direct]) // (TILE_ROWS * TILE_COLS)
    bounds = np.searchsorted(pairs, np.arange(MAX_PAIRS, pairs[-1] if len(pairs) else 0, MAX_PAIRS), side="right")
    for run in np.split(direct, bounds):
        if len(run):
            _direct(layout, out, mu[run], kappa[run], log_w[run], plan.half_cols[run], k_lon[run], check)
    if plan.fourier.any():
        f = plan.fourier
        _fourier(layout, out, k_lat[f], k_lon[f], kappa[f], log_w[f], cut[f], plan.terms[f],
                 plan.row_lo[f], plan.row_hi[f], check)
    return out


class _Layout:
    """The grid's rows and columns in radians, its tiles and whether its columns go round the circle."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.height, self.width = grid.height, grid.width
        self.lat = np.deg2rad(grid.lat_centers())
        self.dlon = math.radians(grid.resolution)
        self.lon0 = math.radians(grid.west) + self.dlon / 2  # column 0's centre
        lon = self.lon0 + self.dlon * np.arange(self.width)
        self.cos_lon, self.sin_lon = np.cos(lon), np.sin(lon)
        self.period = 2 * math.pi / self.dlon  # columns around the circle
        self.circle = round(self.period)
        self.regular = abs(self.period - self.circle) < 1e-9 and self.width <= self.circle
        self.blocks = -(-self.height // TILE_ROWS)
        self.tiles = -(-self.width // TILE_COLS)


@dataclass
class _Plan:
    """Per kernel: the way chosen, its rows, its Fourier terms, and its column half-width per row block."""

    fourier: np.ndarray  # bool
    terms: np.ndarray  # Fourier terms for its widest row
    row_lo: np.ndarray  # the rows it reaches: row_lo..row_hi
    row_hi: np.ndarray
    half_cols: np.ndarray  # (n, blocks): columns either side of its centre, -1 where the block is not reached
    direct_work: np.ndarray  # tile cells to evaluate
    fourier_work: np.ndarray  # rows x terms, before FOURIER_COST


def _plan(layout: _Layout, k_lat, kappa, cut, check) -> _Plan:
    """Reach, Fourier terms and the work of both ways for every kernel; each takes the cheaper way."""
    n, height = len(kappa), layout.height
    rho = _reach(kappa, cut)
    # rows run north to south: lat decreasing
    neg_lat = -layout.lat
    row_lo = np.searchsorted(neg_lat, -(k_lat + rho) - 1e-12, side="left")
    row_hi = np.searchsorted(neg_lat, -(k_lat - rho) + 1e-12, side="right") - 1
    half_cols = np.full((n, layout.blocks), -1.0)
    rows_reached = np.zeros(n)
    max_cos_lat = np.zeros(n)
    cos_lat = np.cos(layout.lat)
    # Kernels in order of their first row, a chunk at a time over the row blocks its kernels reach: a sharp map's
    # chunks span a few dozen rows of the hundreds (rows outside a kernel's row_lo..row_hi are never reached).
    order = np.argsort(row_lo, kind="stable")
    chunk = max(1, min(PLAN_CHUNK, BLOCK_WORK // height))
    for start in range(0, n, chunk):
        if check is not None:
            check()
        s = order[start : start + chunk]
        first, last = int(row_lo[s].min()), int(row_hi[s].max())
        if last < first:
            continue  # none of them reaches a row's centre
        b0, b1 = first // TILE_ROWS, last // TILE_ROWS + 1
        rows = slice(b0 * TILE_ROWS, min(b1 * TILE_ROWS, height))
        lat_r = layout.lat[None, rows]
        a = -2.0 * kappa[s, None] * np.sin((lat_r - k_lat[s, None]) / 2) ** 2  # kappa (cos(dlat) - 1)
        reached = a >= -cut[s, None]
        b = kappa[s, None] * cos_lat[None, rows] * np.cos(k_lat[s, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            q = (cut[s, None] + a) / b  # the window: b (1 - cos dlon) <= cut + a
        half = np.where(q >= 2.0, np.inf, 2.0 * np.arcsin(np.sqrt(np.clip(q, 0.0, 2.0) / 2.0)) / layout.dlon)
        half = np.where(reached, half, -1.0)
        half = np.pad(half, ((0, 0), (0, (b1 - b0) * TILE_ROWS - half.shape[1])), constant_values=-1.0)
        half_cols[s, b0:b1] = half.reshape(len(half), b1 - b0, TILE_ROWS).max(axis=2)
        rows_reached[s] = reached.sum(axis=1)
        max_cos_lat[s] = np.where(reached, cos_lat[None, rows], 0.0).max(axis=1)
    tiles_touched = np.minimum(layout.tiles, np.floor(2 * half_cols / TILE_COLS) + 2)
    direct_work = np.where(half_cols >= 0, tiles_touched, 0.0).sum(axis=1) * (TILE_ROWS * TILE_COLS)
    # half the tolerance for the terms left out, half for the normalisation they leave uncorrected
    terms = fourier_terms(kappa * np.maximum(np.cos(k_lat), 0.0) * max_cos_lat, cut + math.log(2.0))
    fourier_work = rows_reached * (terms + RECURRENCE_MARGIN + 1)
    fourier = FOURIER_COST * fourier_work < direct_work
    fourier &= layout.regular & (terms <= (layout.circle - 1) // 2)  # no folding of aliased terms
    return _Plan(fourier, terms, row_lo, row_hi, half_cols, direct_work, fourier_work)


def _direct(layout: _Layout, out, mu, kappa, log_w, half, k_lon, check) -> None:
    """Add the kernels tile by tile: each tile's cells against the kernels whose reach meets it (half: the
    kernels' column half-widths per row block, as in _Plan)."""
    centre = (k_lon - layout.lon0) / layout.dlon  # the centre in column units
    kernel, block = np.nonzero(half >= 0)
    h = half[kernel, block]
    tiles = layout.tiles
    # tile ranges [lo, hi] of every (kernel, block): all tiles, or the window and its copies a circle away
    full = 2 * h + 1 >= layout.period
    ranges = [(kernel[full], block[full], np.zeros(full.sum(), np.int64), np.full(full.sum(), tiles - 1))]
    part = ~full
    for shift in (-layout.period, 0.0, layout.period):
        c = centre[kernel[part]] + shift
        lo = np.maximum(np.ceil(c - h[part]), 0)
        hi = np.minimum(np.floor(c + h[part]), layout.width - 1)
        ok = lo <= hi
        ranges.append((kernel[part][ok], block[part][ok], lo[ok].astype(np.int64) // TILE_COLS,
                       hi[ok].astype(np.int64) // TILE_COLS))
    kernel, block, lo, hi = (np.concatenate(x) for x in zip(*ranges, strict=True))
    count = hi - lo + 1
    kernel, block = np.repeat(kernel, count), np.repeat(block, count)
    tile = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(count.sum())
    key = np.sort((block * tiles + tile) * len(mu) + kernel)  # by tile, then kernel
    if len(key) == 0:
        return
    key = key[np.r_[True, key[1:] != key[:-1]]]  # a tile met twice across the antimeridian: once
    tile_key, kernel = np.divmod(key, len(mu))
    # one step per tile, and per BLOCK_WORK elements of a tile with many kernels
    new_tile = np.r_[True, tile_key[1:] != tile_key[:-1]]
    first = np.maximum.accumulate(np.where(new_tile, np.arange(len(key)), 0))
    per_step = max(1, BLOCK_WORK // (TILE_ROWS * TILE_COLS))
    starts = np.flatnonzero(new_tile | ((np.arange(len(key)) - first) % per_step == 0))
    ends = np.r_[starts[1:], len(key)]
    # exponent at (row r, column c) = A[r, k] + cos lat_r T[c, k], the kernel's parts split by row and column:
    # A = kappa mu_z sin lat_r + log_w - kappa, T = kappa (mu_x cos lon_c + mu_y sin lon_c).  Elementwise numpy
    # rather than a matmul with an inner size of 4, which BLAS threads make slow and unsteady.
    kx, ky, kz, k0 = kappa * mu[:, 0], kappa * mu[:, 1], kappa * mu[:, 2], log_w - kappa
    cos_lat, sin_lat = np.cos(layout.lat), np.sin(layout.lat)
    work = 0
    for start, end in zip(starts, ends, strict=True):
        b, t = divmod(int(tile_key[start]), tiles)
        rows = slice(b * TILE_ROWS, min((b + 1) * TILE_ROWS, layout.height))
        cols = slice(t * TILE_COLS, min((t + 1) * TILE_COLS, layout.width))
        k = kernel[start:end]
        a = sin_lat[rows, None] * kz[k] + k0[k]  # (rows, k)
        col_part = layout.cos_lon[cols, None] * kx[k] + layout.sin_lon[cols, None] * ky[k]  # (cols, k)
        e = cos_lat[rows, None, None] * col_part  # (rows, cols, k)
        e += a[:, None, :]
        np.exp(e, out=e)
        out[rows, cols] += e.sum(axis=2)
        work += e.size
        if check is not None and work >= BLOCK_WORK:
            check()
            work = 0


def _fourier(layout: _Layout, out, k_lat, k_lon, kappa, log_w, cut, terms, row_lo, row_hi, check) -> None:
    """Add the kernels row by row through their Fourier coefficients and one inverse real FFT per row."""
    spectrum = np.zeros((layout.height, int(terms.max()) + 1), dtype=np.complex128)  # irfft pads the rest
    cos_k = np.cos(k_lat)
    phase = layout.lon0 - k_lon
    # groups of kernels whose term counts (plus 32) are within a factor 1.25, so few terms are computed in
    # vain, and small enough for one row of them to be at most BLOCK_WORK
    order = np.argsort(terms, kind="stable")
    bucket = np.floor(np.log(terms[order] + 32.0) / math.log(1.25)).astype(np.int64)
    first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    cuts_at = []
    for lo, hi in zip(first, np.r_[first[1:], len(order)], strict=True):
        most = max(1, BLOCK_WORK // (int(terms[order[hi - 1]]) + RECURRENCE_MARGIN + 1))
        cuts_at.extend(range(lo, hi, most))
    groups = np.split(order, cuts_at[1:])
    rows_any = np.zeros(layout.height, dtype=bool)
    for group in groups:
        m_top = int(terms[group].max())
        lo, hi = int(row_lo[group].min()), int(row_hi[group].max())
        if lo > hi:
            continue
        mp = np.arange(1, m_top + 1)[:, None] * phase[group]
        trig = np.stack([np.cos(mp), np.sin(mp)], axis=2)  # (m_top, k, 2): e^{i m phase_k}
        step = max(1, BLOCK_WORK // (len(group) * (m_top + RECURRENCE_MARGIN + 1)))
        for r0 in range(lo, hi + 1, step):
            if check is not None:
                check()
            r1 = min(r0 + step, hi + 1)
            here = (row_lo[group] < r1) & (row_hi[group] >= r0)
            sel = group[here]
            if len(sel) == 0:
                continue
            lat_r = layout.lat[r0:r1, None]
            a = -2.0 * kappa[sel] * np.sin((lat_r - k_lat[sel]) / 2) ** 2
            w = np.where(a >= -cut[sel], np.exp(log_w[sel] + a), 0.0)
            b = kappa[sel] * np.cos(lat_r) * cos_k[sel]
            # the terms these rows need (fewer than the group's towards the poles, where b is small)
            m_sel = int(min(terms[sel].max(), fourier_terms(b.max(), cut[sel].max() + math.log(2.0))))
            i0, coef = _bessel_terms(b, m_sel)
            w *= i0
            coef *= w
            # sum_k coef[m, r, k] e^{i m phase_k}: one small matmul per m (below OpenBLAS's threading size)
            g = coef @ (trig[:m_sel] if here.all() else trig[:m_sel, here])  # (m_sel, rows, 2)
            spectrum[r0:r1, 0] += w.sum(axis=1)
            spectrum[r0:r1, 1 : m_sel + 1] += (g[..., 0] + 1j * g[..., 1]).T
            rows_any[r0:r1] = True
    rows = np.flatnonzero(rows_any)
    spectrum *= layout.circle  # numpy's irfft divides by the length
    step = max(1, BLOCK_WORK // layout.circle)
    for start in range(0, len(rows), step):
        if check is not None:
            check()
        some = rows[start : start + step]
        out[some] += np.fft.irfft(spectrum[some], n=layout.circle, axis=1)[:, : layout.width]


def _bessel_terms(b: np.ndarray, m_top: int) -> tuple[np.ndarray, np.ndarray]:
    """(ive_0(b), ive_m(b) / ive_0(b) for m = 1..m_top as (m_top, *b.shape), kept at least TINY).

    The ratios r_m = I_m / I_{m-1} = 1 / (2 m / b + r_{m+1}) come from a backward recurrence (stable
    downwards; b = 0 gives 0), their running products are I_m / I_0, and ive_0 + 2 sum_m ive_m = 1 gives
    ive_0 (Miller's normalisation): the terms left out are what fourier_terms bounds.
    """
    with np.errstate(divide="ignore"):
        inv = 2.0 / b
    products = np.empty((m_top, *b.shape))
    r = np.zeros_like(b)
    tmp = np.empty_like(b)
    for m in range(m_top + RECURRENCE_MARGIN, 0, -1):
        np.multiply(inv, float(m), out=tmp)
        tmp += r
        r = products[m - 1] if m <= m_top else r
        np.divide(1.0, tmp, out=r)
    np.maximum(products[0], TINY, out=products[0])
    total = products[0].copy()
    for m in range(1, m_top):  # running products (np.cumprod along the first axis is ~20x slower)
        products[m] *= products[m - 1]
        np.maximum(products[m], TINY, out=products[m])
        total += products[m]
    total *= 2.0
    total += 1.0
    return np.divide(1.0, total, out=total), products


def _reference_sums(centres, kappas, log_weights, grid: Grid, rows=None) -> np.ndarray:
    """Every kernel at every cell of `rows` (default all), in float64 and without any cut: the sums that
    kernel_sums approximates, for the tests."""
    mu = np.asarray(centres, dtype=np.float64)
    kappa = np.asarray(kappas, dtype=np.float64)
    log_w = np.asarray(log_weights, dtype=np.float64)
    rows = range(grid.height) if rows is None else rows
    out = np.empty((len(rows), grid.width))
    for j, row in enumerate(rows):
        x = grid.row_xyz(row)
        half_chord2 = ((x[:, None, :] - mu[None]) ** 2).sum(axis=2) / 2  # 1 - x . mu, without cancellation
        out[j] = np.exp(log_w - kappa * half_chord2).sum(axis=1)
    return out
