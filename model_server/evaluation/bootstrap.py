"""Bootstrap confidence intervals over tiles, pure numpy.

Tiles are resampled with replacement; an interval is the percentile interval of a statistic over the
resamples. The resamples depend only on the number of tiles and the seed, so every figure of a report on the
same tiles is resampled alike, and two methods scored on the same tiles are compared tile by tile (paired).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
# Resamples drawn at a time: bounds the index matrix at CHUNK x tiles.
CHUNK = 250
STATISTICS = {"mean": np.mean, "median": np.median}


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> Iterator[np.ndarray]:
    """Chunks of (k, n) tile indices drawn with replacement, `resamples` rows in all; the same for the same
    (n, resamples, seed), so figures on the same tiles share their resamples."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one tile")
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, CHUNK):
        yield rng.integers(0, n, size=(min(CHUNK, resamples - start), n))


def bootstrap_statistics(values: np.ndarray, statistic: str = "mean", resamples: int = RESAMPLES,
                         seed: int = SEED) -> np.ndarray:
    """The statistic of each resample of the tiles: values (n,) -> (resamples,), or (n, m) columns resampled
    by the same tiles -> (resamples, m)."""
    v = np.asarray(values, dtype=np.float64)
    reduce = STATISTICS[statistic]
    return np.concatenate([reduce(v[idx], axis=1) for idx in resample_indices(len(v), resamples, seed)])


def percentile_interval(stats: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """The central `level` interval of bootstrap statistics (resamples, ...) -> (2, ...)."""
    tail = (1.0 - level) / 2.0
    return np.quantile(np.asarray(stats, dtype=np.float64), [tail, 1.0 - tail], axis=0)


def bootstrap_interval(values: np.ndarray, statistic: str = "mean", *, resamples: int = RESAMPLES,
                       seed: int = SEED, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of a per-tile statistic (the mean of per-tile GeoScores, of 0/1 hits...)."""
    lo, hi = percentile_interval(bootstrap_statistics(values, statistic, resamples, seed), level)
    return float(lo), float(hi)


def column_intervals(columns: dict[str, np.ndarray], statistic: str = "mean", *, resamples: int = RESAMPLES,
                     seed: int = SEED, level: float = LEVEL) -> dict[str, list[float]]:
    """Intervals of several per-tile columns of the same tiles in one pass, keyed '<name>_ci': [lo, hi]."""
    if not columns:
        return {}
    stacked = np.stack([np.asarray(c, dtype=np.float64) for c in columns.values()], axis=1)
    bounds = percentile_interval(bootstrap_statistics(stacked, statistic, resamples, seed), level)
    return {f"{name}_ci": [float(bounds[0, i]), float(bounds[1, i])] for i, name in enumerate(columns)}


def paired_difference_interval(a: np.ndarray, b: np.ndarray, statistic: str = "mean", *,
                               resamples: int = RESAMPLES, seed: int = SEED,
                               level: float = LEVEL) -> tuple[float, float]:
    """Interval of statistic(a) - statistic(b) for two methods scored on the same tiles, each resample
    taking the same tiles for both: differences that hold tile by tile are not drowned by how tiles vary."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} and {b.shape}")
    stats = bootstrap_statistics(np.stack([a, b], axis=1), statistic, resamples, seed)
    lo, hi = percentile_interval(stats[:, 0] - stats[:, 1], level)
    return float(lo), float(hi)
