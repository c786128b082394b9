"""von Mises-Fisher kernel density on the sphere, in numpy on scipy's logsumexp: kernel normalisers,
log-densities, leave-one-out scores and bandwidths. The density raster, the best guess and the evaluation's
retrieval baseline all draw on these.

A kernel is written vMF(x; mu, kappa) = kappa / (2 pi (1 - exp(-2 kappa))) * exp(kappa (mu . x - 1)) per
steradian, a form that stays finite for any kappa. The bandwidth kappa is chosen by leave-one-out
likelihood on the samples themselves (the bandwidth that best predicts held-out samples of the same
distribution), capped so that a kernel is never narrower than a grid cell. An adaptive kernel then gives
each sample its own kappa_i by Abramson's square-root law (1982): kernel variance inversely proportional to
the pilot (fixed-kappa) density at the sample, so a tight mode stays tight while stray draws of a broad one
are smoothed out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import logsumexp

KAPPA_GRID = np.geomspace(2.0, 2.0e5, 41)
# The widest adaptive kernel: kappa0 / 20, about 4.5 times the pilot kernel's standard deviation.
ADAPTIVE_WIDEST = 20.0
LOG_SPHERE_AREA = math.log(4 * math.pi)


def vmf_log_norms(kappas: np.ndarray | float) -> np.ndarray:
    """log of kappa / (2 pi (1 - exp(-2 kappa))), the vMF constant in the exp(kappa (mu.x - 1)) form."""
    k = np.asarray(kappas, dtype=np.float64)
    return np.log(k) - math.log(2 * math.pi) - np.log(-np.expm1(-2.0 * k))


def max_kappa_for(resolution_deg: float) -> float:
    """The sharpest kernel a grid can carry: standard deviation about one cell."""
    return 1.0 / math.radians(resolution_deg) ** 2


def log_kernel_sums(
    points: np.ndarray,
    centres: np.ndarray,
    kappa: float | np.ndarray,
    log_weights: np.ndarray | None = None,
    *,
    leave_out_own: bool = False,
    chunk: int = 1024,
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """log sum_j exp(kappa_j (x . c_j - 1) + log_weights_j) at each point x: a kernel sum over the centres.

    points (..., M, 3) and centres (..., n, 3) are unit vectors whose leading axes broadcast (one set of
    centres per photo); kappa is one bandwidth or one per centre (..., n); log_weights (..., n) are added to
    each centre's term (normalisers, mixture weights). leave_out_own: the points are the centres, and each
    one's own kernel is left out. Done in blocks of `chunk` points: n x n terms at once are 800 MB for
    10,000 draws. -> (..., M). check, when given, is called before every block (it may raise to stop).
    """
    p = np.asarray(points, dtype=np.float64)
    c = np.asarray(centres, dtype=np.float64)
    k = np.asarray(kappa, dtype=np.float64)
    if k.ndim:
        k = k[..., None, :]  # one per centre: the same for every point
    if log_weights is not None:
        log_weights = np.asarray(log_weights, dtype=np.float64)[..., None, :]
    c_t = np.swapaxes(c, -1, -2)
    out = []
    for start in range(0, p.shape[-2], chunk):
        if check is not None:
            check()
        a = k * (np.clip(p[..., start : start + chunk, :] @ c_t, -1.0, 1.0) - 1.0)
        if log_weights is not None:
            a += log_weights
        if leave_out_own:
            rows = np.arange(a.shape[-2])
            a[..., rows, start + rows] = -np.inf
        out.append(logsumexp(a, axis=-1))
    return np.concatenate(out, axis=-1) if out else np.zeros(p.shape[:-1])


def kde_log_density(
    points: np.ndarray, samples: np.ndarray, kappa: float | np.ndarray, uniform_weight: float
) -> np.ndarray:
    """log p(points) per steradian of the samples' KDE mixed with the uniform density (the density raster's
    formula, without gridding): p = (1 - eps) mean_i vMF(x; s_i, kappa_i) + eps / (4 pi), eps =
    uniform_weight. points (M, 3), samples (n, 3); kappa is one bandwidth or one per sample."""
    s = np.asarray(samples, dtype=np.float64)
    k = np.broadcast_to(np.asarray(kappa, dtype=np.float64), (len(s),))
    log_kde = log_kernel_sums(points, s, k, vmf_log_norms(k) - math.log(len(s)))
    return np.logaddexp(np.log1p(-uniform_weight) + log_kde, math.log(uniform_weight) - LOG_SPHERE_AREA)


def mixture_log_density(points: np.ndarray, centres: np.ndarray, weights: np.ndarray, kappa: float) -> np.ndarray:
    """log of the vMF mixture sum_j w_j vMF(x; c_j, kappa) per steradian, photo by photo: points (E, M, 3),
    centres (E, K, 3) and weights (E, K) summing to 1 -> (E, M)."""
    log_w = np.log(np.clip(np.asarray(weights, dtype=np.float64), 1e-300, None)) + vmf_log_norms(kappa)
    return log_kernel_sums(points, centres, kappa, log_w)


def loo_log_likelihood(samples: np.ndarray, kappas: np.ndarray,
                       check: Callable[[], None] | None = None) -> np.ndarray:
    """Mean leave-one-out log-likelihood of the samples under the KDE of the others, per kappa."""
    x = np.asarray(samples, dtype=np.float64)
    n = len(x)
    if n < 2:
        return np.zeros(len(kappas))
    d = np.clip(x @ x.T, -1.0, 1.0) - 1.0  # (n, n), <= 0; computed once for every kappa
    np.fill_diagonal(d, -np.inf)
    # logsumexp by hand: each row's largest term is its nearest other sample for every kappa, so the
    # shift is found once and each kappa costs one scaled exp over the matrix, in float32 (several times
    # faster), and its row sums one matrix-vector product: the terms are in [0, 1] with a 1 in every row, so
    # nothing cancels; terms under about 1e-7 of a row's sum fall away, which moves the scores by about 1e-7
    # (tested), far below the grid's gaps between kappas.
    nearest = d.max(axis=1)
    d -= nearest[:, None]
    shifted = d.astype(np.float32)
    terms = np.empty_like(shifted)
    ones = np.ones(n, dtype=np.float32)
    out = np.empty(len(kappas))
    for i, kappa in enumerate(kappas):
        if check is not None:
            check()
        np.multiply(shifted, np.float32(kappa), out=terms)
        np.exp(terms, out=terms)
        row_lse = kappa * nearest + np.log((terms @ ones).astype(np.float64))
        out[i] = float(np.mean(row_lse) - math.log(n - 1) + vmf_log_norms(kappa))
    return out


def select_kappa(samples: np.ndarray, max_kappa: float | None = None, max_points: int = 2048,
                 check: Callable[[], None] | None = None) -> float:
    """Bandwidth by leave-one-out likelihood over KAPPA_GRID (on at most max_points samples)."""
    x = np.asarray(samples, dtype=np.float64)
    if len(x) > max_points:
        x = x[np.linspace(0, len(x) - 1, max_points).astype(int)]
    kappas = KAPPA_GRID if max_kappa is None else KAPPA_GRID[KAPPA_GRID <= max_kappa]
    if len(kappas) == 0:
        return float(max_kappa)
    scores = loo_log_likelihood(x, kappas, check)
    return float(kappas[int(np.argmax(scores))])


def adaptive_kappas(samples: np.ndarray, kappa0: float, max_kappa: float | None = None,
                    chunk: int = 1024, check: Callable[[], None] | None = None) -> np.ndarray:
    """Per-sample kappa_i = kappa0 * f_i / g (Abramson's law: bandwidth^2 proportional to 1 / f).

    f_i is the leave-one-out density at sample i under the pilot kernel kappa0 and g the geometric
    mean of the f_i, so kappa0 stays the typical width. Clipped to [kappa0 / ADAPTIVE_WIDEST, max_kappa].
    A fixed kernel wide enough for a broad mode's stray draws blurs a tight one; the adaptive one fits both.
    """
    x = np.asarray(samples, dtype=np.float64)
    n = len(x)
    upper = np.inf if max_kappa is None else float(max_kappa)
    if n < 3:
        return np.full(n, min(float(kappa0), upper))
    # blocks of at most 2^24 terms (128 MB) for many samples; the default 1024 x 1024 blocks are unchanged
    chunk = max(1, min(chunk, 2**24 // max(n, 1)))
    log_f = log_kernel_sums(x, x, kappa0, leave_out_own=True, chunk=chunk, check=check)
    log_f = np.maximum(log_f, np.max(log_f) - 50.0)  # an isolated draw: floored, then clipped below
    kappas = kappa0 * np.exp(log_f - log_f.mean())
    return np.clip(kappas, kappa0 / ADAPTIVE_WIDEST, max(upper, kappa0 / ADAPTIVE_WIDEST))
