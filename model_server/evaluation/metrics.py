"""Geolocation metrics as pure numpy functions (the definitions of the PLONK / OSV-5M papers).

Distances are great-circle (geodesy.haversine_km, R = 6371 km); GeoScore = 5000 exp(-d / 1492.7);
NLL is in nats per steradian (uniform on the sphere = log 4 pi = 2.531 nats).
"""

from __future__ import annotations

import math

import numpy as np

GEOSCORE_SCALE_KM = 1492.7
THRESHOLDS_KM = (1, 25, 200, 750, 2500)
COVERAGE_LEVELS = (0.5, 0.9, 0.99)
UNIFORM_NLL = math.log(4 * math.pi)


def geoscore(distance_km) -> np.ndarray:
    return 5000.0 * np.exp(-np.asarray(distance_km, dtype=np.float64) / GEOSCORE_SCALE_KM)


def accuracy_within(distance_km, thresholds=THRESHOLDS_KM) -> dict[str, float]:
    """Share of predictions within each threshold, keyed 'acc_<km>km'."""
    d = np.asarray(distance_km, dtype=np.float64)
    return {f"acc_{t}km": float(np.mean(d <= t)) for t in thresholds}


def distance_summary(distance_km) -> dict[str, float]:
    """Mean/median error (km), accuracy at every threshold and mean GeoScore."""
    d = np.asarray(distance_km, dtype=np.float64)
    return {
        "n": int(d.size),
        "mean_km": float(d.mean()),
        "median_km": float(np.median(d)),
        **accuracy_within(d),
        "geoscore": float(geoscore(d).mean()),
    }


def nll_summary(log_density) -> dict[str, float]:
    """Negative log-likelihood of the truths, nats per steradian (lower is better; uniform = 2.531)."""
    nll = -np.asarray(log_density, dtype=np.float64)
    return {"nll_mean": float(nll.mean()), "nll_median": float(np.median(nll)), "nll_unit": "nats/sr"}


def hpd_thresholds(sample_log_density: np.ndarray, levels=COVERAGE_LEVELS) -> np.ndarray:
    """Per image, the log-density above which the p-highest-density region lies.

    The region {x : log p(x) >= c_p} holds mass p exactly when c_p is the (1 - p) quantile of
    log p over the model's own samples. sample_log_density: (E, n) -> (E, len(levels)).
    """
    s = np.asarray(sample_log_density, dtype=np.float64)
    return np.stack([np.quantile(s, 1.0 - p, axis=-1) for p in levels], axis=-1)


def inside_regions(truth_log_density, sample_log_density, levels=COVERAGE_LEVELS) -> np.ndarray:
    """Per image, whether its truth lies inside each p-HPD credible region: (E, len(levels)) bool."""
    truth = np.asarray(truth_log_density, dtype=np.float64)
    return truth[:, None] >= hpd_thresholds(sample_log_density, levels)


def coverage_shares(inside: np.ndarray, levels=COVERAGE_LEVELS) -> dict[str, float]:
    """Share of truths inside each level's region, keyed 'coverage_<percent>'."""
    share = np.mean(np.asarray(inside, dtype=np.float64), axis=0)
    return {f"coverage_{round(p * 100)}": float(share[i]) for i, p in enumerate(levels)}


def coverage(truth_log_density, sample_log_density, levels=COVERAGE_LEVELS) -> dict[str, float]:
    """Share of truths inside each p-HPD credible region (calibrated: coverage == p)."""
    return coverage_shares(inside_regions(truth_log_density, sample_log_density, levels), levels)


def spearman(a, b) -> float:
    """Rank correlation (ties averaged), e.g. between localizability and error."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a), np.asarray(b)).statistic)

