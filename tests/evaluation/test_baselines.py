"""The baselines: uniform prior and nearest-neighbour retrieval on a task where embeddings tell the place."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_server.evaluation.baselines import RETRIEVAL_K, baseline_rows, fit_kde, standardise, topk
from model_server.evaluation.metrics import UNIFORM_NLL
from model_server.geodesy import degrees_to_xyz


def places(rng, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """n photos of 12 regions: (n, 16) embeddings (the region's code plus noise) and (n, 2) lat/lon near it."""
    centres = np.array([[lat, lon] for lat in (-30.0, 10.0, 50.0) for lon in (-120.0, -20.0, 60.0, 150.0)])
    codes = np.random.default_rng(99).normal(size=(len(centres), 16))
    k = rng.integers(0, len(centres), n)
    latlon = centres[k] + rng.normal(0, 2.0, (n, 2))
    return codes[k] + noise * rng.normal(size=(n, 16)), latlon


def test_retrieval_finds_the_neighbours_of_the_same_place():
    rng = np.random.default_rng(0)
    train_emb, train_deg = places(rng, 400, 0.1)
    emb, truth_deg = places(rng, 60, 0.1)
    tz, qz = standardise(train_emb, emb)
    assert np.allclose(np.linalg.norm(qz, axis=1), 1.0)
    idx, sims = topk(qz, tz, 5)
    assert idx.shape == (60, 5) and np.all(np.diff(sims, axis=1) <= 0)  # most similar first
    self_idx, _ = topk(tz[:10], tz[:10], 1, exclude_self=True)
    assert not np.any(self_idx[:, 0] == np.arange(10))
    tau, kappa = fit_kde(tz, degrees_to_xyz(train_deg))
    assert tau in (0.01, 0.02, 0.05, 0.1, 0.2) and kappa in (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)

    uniform, top1, kde = baseline_rows(train_emb, train_deg, emb, truth_deg, seed=0)
    assert uniform["method"] == "uniform prior" and uniform["nll_mean"] == pytest.approx(UNIFORM_NLL)
    assert uniform["nll_mean"] == pytest.approx(math.log(4 * math.pi)) and uniform["median_km"] > 3000
    assert top1["method"] == "retrieval top-1" and top1["median_km"] < 800 and "nll_mean" not in top1
    assert kde["method"] == f"retrieval top-{RETRIEVAL_K} kernel density" and kde["kde"] == {"tau": tau, "kappa": kappa}
    assert kde["median_km"] < 800 and kde["nll_mean"] < UNIFORM_NLL - 2  # far likelier than uniform
