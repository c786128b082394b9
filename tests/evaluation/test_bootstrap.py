"""Bootstrap intervals over tiles: they hold the estimate, shrink with more tiles, are reproducible, and the
paired interval tells a method from itself and from a clearly different one."""

from __future__ import annotations

import numpy as np
import pytest

from model_server.evaluation.bootstrap import (
    bootstrap_interval,
    bootstrap_statistics,
    column_intervals,
    paired_difference_interval,
)
from model_server.evaluation.metrics import geoscore


def scores(n: int, seed: int = 0) -> np.ndarray:
    """Per-tile GeoScores of errors spread like a weak model's (exponential, mean 3,000 km)."""
    return geoscore(np.random.default_rng(seed).exponential(3000.0, n))


def test_interval_holds_the_estimate_and_shrinks_with_more_tiles():
    widths = []
    for n in (100, 1000):
        g = scores(n)
        lo, hi = bootstrap_interval(g)
        assert lo < g.mean() < hi
        widths.append(hi - lo)
    # the width goes as 1 / sqrt(n): ten times the tiles, about a third of the width
    assert widths[1] < 0.45 * widths[0]


def test_median_interval_and_0_1_hits():
    d = np.random.default_rng(1).exponential(3000.0, 500)
    lo, hi = bootstrap_interval(d, "median")
    assert lo < np.median(d) < hi
    hits = (d <= 2500).astype(float)
    lo, hi = bootstrap_interval(hits)
    assert 0 <= lo < hits.mean() < hi <= 1
    assert bootstrap_interval(np.zeros(50)) == (0.0, 0.0)


def test_intervals_are_reproducible_and_columns_share_their_resamples():
    g = scores(300)
    assert bootstrap_interval(g) == bootstrap_interval(g)
    assert bootstrap_interval(g, seed=1) != bootstrap_interval(g)
    both = column_intervals({"geoscore": g, "twice": 2 * g})
    assert np.allclose(both["geoscore_ci"], bootstrap_interval(g), rtol=1e-12)  # the same tiles, summed apart
    assert np.allclose(both["twice_ci"], 2 * np.array(both["geoscore_ci"]))
    assert bootstrap_statistics(np.stack([g, g], 1), resamples=300).shape == (300, 2)


def test_paired_interval_of_a_method_against_itself_is_zero():
    g = scores(300)
    assert paired_difference_interval(g, g) == (0.0, 0.0)


def test_paired_interval_excludes_zero_for_a_clearly_better_method():
    rng = np.random.default_rng(2)
    d = rng.exponential(3000.0, 300)
    better = d * rng.uniform(0.6, 0.9, 300)  # nearer on every tile
    lo, hi = paired_difference_interval(geoscore(better), geoscore(d))
    assert 0 < lo < geoscore(better).mean() - geoscore(d).mean() < hi
    # unpaired, tile-to-tile spread would hide much of the same gain: the paired interval is narrower
    a, b = bootstrap_interval(geoscore(better)), bootstrap_interval(geoscore(d))
    assert hi - lo < 0.5 * ((a[1] - a[0]) ** 2 + (b[1] - b[0]) ** 2) ** 0.5


def test_bad_input():
    with pytest.raises(ValueError):
        bootstrap_interval(np.array([]))
    with pytest.raises(ValueError):
        paired_difference_interval(np.ones(3), np.ones(4))
