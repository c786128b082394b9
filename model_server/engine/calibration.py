"""Choosing a model's distribution guidance on held-out photos.

A flow trained with embedding noise on 20,000 places came out over-confident: its 50 % credible
regions held 37-40 % of held-out truths (docs/default-model.md). Sampling the guided field
(1 + w) v(x, c) - w v(x, 0) with a small negative w moves it towards the unconditional flow and widens
it, and its likelihood stays exact (the same ODE with another field). w is picked from a grid, either
by the held-out truths' mean NLL (a proper score, cheap: one likelihood per photo) or by how near the
credible regions hold their share of truths: the exact density's, or those and the drawn map's too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .likelihood import log_density, truth_and_draws_log_density
from .network import GeoAdaLNMLP

# w in [-1, 0]: -1 is the unconditional flow, below it the field points away from the photo.
MIN_CFG = -1.0


def checked_inputs(emb: torch.Tensor, truth_xyz: torch.Tensor, grid: Sequence[float]) -> torch.Tensor:
    """The truths as float32 (E, 3), or ValueError naming a wrong shape or a w outside [-1, 0]."""
    truth_xyz = torch.as_tensor(truth_xyz, dtype=torch.float32)
    if truth_xyz.shape != (len(emb), 3):
        raise ValueError(f"truth must be ({len(emb)}, 3) unit vectors, got {tuple(truth_xyz.shape)}")
    outside = [w for w in grid if not MIN_CFG <= w <= 0]
    if outside:
        raise ValueError(f"calibration guidance must lie in [{MIN_CFG:g}, 0], got {outside[0]:g}")
    return truth_xyz


def truth_nll_by_cfg(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    truth_xyz: torch.Tensor,
    grid: Sequence[float],
    *,
    method: str = "rk4",
    steps: int = 16,
    chunk: int = 64,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[float, float]:
    """Mean NLL (nats per steradian) of each photo's true location (E, 3) under guidance w, per w."""
    truth_xyz = checked_inputs(emb, truth_xyz, grid)
    out, done, total = {}, 0, len(grid) * len(emb)
    for w in grid:
        nll = []
        for start in range(0, len(emb), chunk):
            e, x = emb[start : start + chunk], truth_xyz[start : start + chunk, None]
            nll.append(-log_density(flow, e, x, cfg=w, method=method, steps=steps)[:, 0].numpy())
            done += len(e)
            if on_step is not None:
                on_step(done, total)
        out[float(w)] = float(np.concatenate(nll).mean())
    return out


def best_cfg(nll_by_cfg: dict[float, float]) -> float:
    """The w of least NLL; ties go to the one nearest 0 (the model as trained)."""
    return min(nll_by_cfg, key=lambda w: (nll_by_cfg[w], abs(w)))


def calibration_scores(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    truth_xyz: torch.Tensor,
    grid: Sequence[float],
    *,
    samples: int = 32,
    steps: int = 32,
    method: str = "rk4",
    likelihood_steps: int = 16,
    levels: Sequence[float] = (0.5, 0.9, 0.99),
    seed: int = 0,
    chunk: int = 20,
    precision: str = "bf16",
    on_step: Callable[[int, int], None] | None = None,
) -> dict[float, dict]:
    """Per w: the truths' mean NLL and the share of truths inside the distribution's credible regions.

    A truth is inside the p-region when its density is above the (1 - p) quantile of the density at
    `samples` of the model's own draws (metrics.coverage), all under the same guided field.
    """
    from .metrics import coverage

    truth_xyz = checked_inputs(emb, truth_xyz, grid)
    out, done, total = {}, 0, len(grid) * len(emb)
    for w in grid:
        gen = torch.Generator().manual_seed(seed)  # the same draws for every w
        truth_lp, sample_lp = [], []
        for start in range(0, len(emb), chunk):
            e = emb[start : start + chunk]
            at_truth, at_draws = truth_and_draws_log_density(
                flow, e, truth_xyz[start : start + chunk], samples, cfg=w, steps=steps, precision=precision,
                generator=gen, method=method, likelihood_steps=likelihood_steps)
            truth_lp.append(at_truth.numpy())
            sample_lp.append(at_draws.numpy())
            done += len(e)
            if on_step is not None:
                on_step(done, total)
        truth_lp, sample_lp = np.concatenate(truth_lp), np.concatenate(sample_lp)
        out[float(w)] = {"nll": float(-truth_lp.mean()), **coverage(truth_lp, sample_lp, tuple(levels))}
    return out


def map_scores(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    truth_xyz: torch.Tensor,
    grid: Sequence[float],
    *,
    samples: int = 1024,
    resolution: float = 0.25,
    steps: int = 32,
    levels: Sequence[float] = (0.5, 0.9, 0.99),
    seed: int = 0,
    chunk: int = 20,
    precision: str = "bf16",
    on_step: Callable[[int, int], None] | None = None,
) -> dict[float, dict]:
    """Per w: the map the server would draw (kernel density of `samples` draws on a `resolution` raster),
    its mean NLL at the truths' cells and the share of truths inside its drawn credible regions.

    The map is what an analyst sees, and its kernel smooths the flow's density: its regions can hold
    more or fewer truths than the exact density's (docs/default-model.md).
    """
    from ..products.geodesy import xyz_to_latlon
    from ..products.grid import Grid
    from ..products.regions import truth_on_map
    from .sampling import sample

    truth_xyz = checked_inputs(emb, truth_xyz, grid)
    raster_grid = Grid.global_grid(resolution)
    lat, lon = xyz_to_latlon(truth_xyz.double().numpy())
    out, done, total = {}, 0, len(grid) * len(emb)
    for w in grid:
        gen = torch.Generator().manual_seed(seed + 1)  # the same draws for every w (not the exact part's)
        logp, inside = [], []
        for start in range(0, len(emb), chunk):
            e = emb[start : start + chunk]
            points = sample(flow, e, samples, steps=steps, cfg=w, generator=gen, precision=precision).numpy()
            for i, x in enumerate(points, start):
                scored = truth_on_map(x, float(lat[i]), float(lon[i]), raster_grid, list(levels))
                logp.append(scored.log_density)
                inside.append(scored.inside)
            done += len(e)
            if on_step is not None:
                on_step(done, total)
        share = np.mean(np.array(inside, dtype=float), axis=0)
        out[float(w)] = {"map_nll": float(-np.mean(logp)),
                         **{f"map_coverage_{round(100 * lv)}": float(v) for lv, v in zip(levels, share, strict=True)}}
    return out


def coverage_error(score: dict, levels: Sequence[float] = (0.5, 0.9), kinds: Sequence[str] = ("coverage",)) -> float:
    """Sum of squared misses of the nominal levels (coverage_50 against 0.5, ...), over each kind of
    region scored ("coverage": the exact density's, "map_coverage": the drawn map's)."""
    return sum((score[f"{kind}_{round(100 * lv)}"] - lv) ** 2 for kind in kinds for lv in levels)


def best_cfg_by_coverage(
    scores: dict[float, dict], levels: Sequence[float] = (0.5, 0.9), kinds: Sequence[str] = ("coverage",)
) -> float:
    """The w whose credible regions hold nearest their level of truths; ties by NLL, then nearest 0."""
    return min(scores, key=lambda w: (round(coverage_error(scores[w], levels, kinds), 9), scores[w]["nll"], abs(w)))
