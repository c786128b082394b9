"""Baselines the flow is compared with: the uniform prior and nearest-neighbour retrieval over the training
photos' embeddings (the top-1 neighbour's location, and a kernel density over the top-k neighbours')."""

from __future__ import annotations

import math

import numpy as np

from ..geodesy import EARTH_RADIUS_KM, degrees_to_xyz, latlon_distance_km, xyz_to_degrees
from ..products.kde import mixture_log_density
from .metrics import UNIFORM_NLL
from .report import MethodScores, method_row

RETRIEVAL_K = 32


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardise with the training statistics and L2-normalise (cosine retrieval)."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    out = []
    for a in (train, *others):
        z = (a - mean) / std
        out.append(z / np.linalg.norm(z, axis=1, keepdims=True))
    return out


def topk(query: np.ndarray, gallery: np.ndarray, k: int, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Indices and similarities (Q, k) of each query's k most similar gallery rows, most similar first."""
    sims = query @ gallery.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    k = min(k, gallery.shape[0])
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(sims, idx, 1)
    order = np.argsort(-s, axis=1)
    return np.take_along_axis(idx, order, 1), np.take_along_axis(s, order, 1)


def retrieval_kde(sims: np.ndarray, gallery_xyz: np.ndarray, idx: np.ndarray, tau: float):
    """Softmax(sim / tau) weights over the k neighbours' positions: (E, k, 3) centres, (E, k) weights."""
    w = np.exp((sims - sims.max(1, keepdims=True)) / tau)
    return gallery_xyz[idx], w / w.sum(1, keepdims=True)


def fit_kde(train_z: np.ndarray, train_xyz: np.ndarray, n: int = 500, min_km: float = 75.0, seed: int = 0):
    """(tau, kappa) maximising the leave-one-out likelihood on n training photos, neighbours nearer
    than min_km excluded (as the held-out split is built)."""
    rng = np.random.default_rng(seed)
    q = rng.choice(len(train_z), size=min(n, len(train_z)), replace=False)
    sims = train_z[q] @ train_z.T
    close = np.einsum("qd,nd->qn", train_xyz[q], train_xyz) > math.cos(min_km / EARTH_RADIUS_KM)
    sims[close] = -np.inf
    k = min(RETRIEVAL_K, len(train_z))
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(sims, idx, 1)
    s = np.where(np.isfinite(s), s, s[np.isfinite(s)].min() - 100.0)  # fewer than k allowed neighbours
    best = None
    for tau in (0.01, 0.02, 0.05, 0.1, 0.2):
        centres, w = retrieval_kde(s, train_xyz, idx, tau)
        for kappa in (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0):
            ll = mixture_log_density(train_xyz[q][:, None], centres, w, kappa).mean()
            if best is None or ll > best[0]:
                best = (ll, tau, kappa)
    return best[1], best[2]


def baseline_scores(train_emb: np.ndarray, train_deg: np.ndarray, emb: np.ndarray, truth_deg: np.ndarray, *,
                    seed: int) -> list[MethodScores]:
    """The uniform prior (a uniform draw as its guess), retrieval top-1, and the retrieval kernel density (its
    densest neighbour as the guess), scored per photo for photos `emb` at truth_deg against the training set."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(len(emb), 3))
    methods = [MethodScores("uniform", "uniform prior", latlon_distance_km(xyz_to_degrees(u), truth_deg),
                            np.full(len(emb), -UNIFORM_NLL))]
    train_xyz = degrees_to_xyz(train_deg)
    tz, qz = standardise(train_emb, emb)
    idx, sims = topk(qz, tz, RETRIEVAL_K)
    methods.append(MethodScores("retrieval_top1", "retrieval top-1",
                                latlon_distance_km(train_deg[idx[:, 0]], truth_deg)))
    tau, kappa = fit_kde(tz, train_xyz, seed=seed)
    centres, w = retrieval_kde(sims, train_xyz, idx, tau)
    logp = mixture_log_density(degrees_to_xyz(truth_deg)[:, None], centres, w, kappa)[:, 0]
    dens_at_centres = mixture_log_density(centres, centres, w, kappa)
    guess = centres[np.arange(len(emb)), dens_at_centres.argmax(1)]
    methods.append(MethodScores("retrieval_kde", f"retrieval top-{RETRIEVAL_K} kernel density",
                                latlon_distance_km(xyz_to_degrees(guess), truth_deg), logp,
                                extra={"kde": {"tau": tau, "kappa": kappa}}))
    return methods


def baseline_rows(train_emb: np.ndarray, train_deg: np.ndarray, emb: np.ndarray, truth_deg: np.ndarray, *,
                  seed: int) -> list[dict]:
    """The baselines' rows on all photos (baseline_scores)."""
    return [method_row(m) for m in baseline_scores(train_emb, train_deg, emb, truth_deg, seed=seed)]
