"""Figures of the analyst tools on held-out tiles: how well the claim check tells a true claim from a false
one, and what the joint map of several photos of one place gains over each photo's own map.

Both draw each photo's map as the server does (the same draws, kernel map and credible regions, products/),
at a coarser cell than the server's default to keep a run within minutes on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from geoplonk_service import protocol as P

from ..engine.sampling import sample, start_points, supported_precision
from ..photo_guidance import rows_by_cfg
from ..products.claims import Claim, check_claims
from ..products.grid import Grid
from ..products.joint import JOINT_ALPHA, JointAccumulator
from ..products.maps import ProbabilityMap, sample_map

LEVELS = (0.5, 0.9, 0.99)


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a negative scores above a positive), ties counted half (the Mann-Whitney statistic)."""
    pos = np.asarray(positive, dtype=np.float64)[:, None]
    neg = np.asarray(negative, dtype=np.float64)[None, :]
    return float(np.mean((neg > pos) + 0.5 * (neg == pos)))


def draw_maps(flow, emb: torch.Tensor, *, cfg: float | np.ndarray, samples: int, resolution: float,
              steps: int = P.STEPS.default, seed: int = 0, chunk: int = 25,
              on_step: Callable[[int], None] | None = None) -> list[tuple[ProbabilityMap, np.ndarray]]:
    """Each photo's map and draws, as the server makes them (same start points for every photo), at one w or each
    photo's own (E,) (photo_guidance.cfgs_for_photos)."""
    grid = Grid.global_grid(resolution)
    x0 = start_points(samples, seed)
    precision = supported_precision(P.DEFAULT_OPTIONS["precision"], next(flow.parameters()).device)  # as the server
    cfgs = np.broadcast_to(np.asarray(cfg, dtype=np.float64), (len(emb),))
    out = []
    for start in range(0, len(emb), chunk):
        e = emb[start:start + chunk]
        points = np.empty((len(e), samples, 3), dtype=np.float32)
        for w, rows in rows_by_cfg(cfgs[start:start + chunk]):  # each w's photos in one draw
            drawn = sample(flow, e[rows], samples, steps=steps, cfg=w, x0=x0, precision=precision)
            points[rows] = drawn.float().numpy()
        out.extend((sample_map(x, grid), x) for x in points)
        if on_step is not None:
            on_step(start + len(e))
    return out


def claim_levels(pmap: ProbabilityMap, claims: Sequence[tuple[float, float]]) -> np.ndarray:
    """The credible level the claim check reports for each (lat, lon) claim on this map."""
    masks = pmap.masks(LEVELS)
    row, col = np.unravel_index(int(np.argmax(pmap.raster.density_sr())), pmap.raster.prob.shape)
    best = (float(pmap.raster.grid.lat_centers()[row]), float(pmap.raster.grid.lon_centers()[col]))
    checks = check_claims([Claim(lat, lon) for lat, lon in claims], pmap, LEVELS, masks, best)
    return np.array([c.credible_level for c in checks])


@dataclass
class ClaimFigures:
    n: int
    auc: float
    true_inside_90: float  # share of true claims the check puts inside the 90 % region
    false_outside_90: float  # share of false claims it puts outside
    median_level_true: float
    median_level_false: float


def claim_figures(levels_true: np.ndarray, levels_false: np.ndarray) -> ClaimFigures:
    return ClaimFigures(len(levels_true), roc_auc(levels_true, levels_false), float(np.mean(levels_true <= 0.9)),
                        float(np.mean(levels_false > 0.9)), float(np.median(levels_true)),
                        float(np.median(levels_false)))


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A shuffle that moves every index: each photo gets another photo's location as its false claim."""
    return (np.arange(n) + rng.integers(1, n, size=1)[0]) % n if n > 1 else np.zeros(n, dtype=int)


@dataclass
class JointFigures:
    groups: int
    photos_per_group: int
    single_inside_90: float  # share of single maps whose 90 % region holds the place
    joint_inside_90: float
    single_area_90_km2: float  # mean 90 % region area of the single maps
    joint_area_90_km2: float
    single_median_area_90_km2: float
    joint_median_area_90_km2: float


def joint_figures(maps: list[tuple[ProbabilityMap, np.ndarray]], groups: list[list[int]],
                  truths: Sequence[tuple[float, float]], alpha: float = JOINT_ALPHA) -> JointFigures:
    """Coverage and size of the 90 % region, of each photo's own map and of its group's joint map (tempered
    by `alpha`, products.joint), at the group's place."""
    single_in, single_area, joint_in, joint_area = [], [], [], []
    for members, (lat, lon) in zip(groups, truths, strict=True):
        acc = JointAccumulator(maps[members[0]][0].raster.grid)
        for i in members:
            pmap, draws = maps[i]
            inside, area = _inside_and_area(pmap, lat, lon)
            single_in.append(inside)
            single_area.append(area)
            acc.add(i, str(i), pmap, draws)
        inside, area = _inside_and_area(acc.combined(alpha), lat, lon)
        joint_in.append(inside)
        joint_area.append(area)
    return JointFigures(len(groups), len(groups[0]) if groups else 0, float(np.mean(single_in)),
                        float(np.mean(joint_in)), float(np.mean(single_area)), float(np.mean(joint_area)),
                        float(np.median(single_area)), float(np.median(joint_area)))


def _inside_and_area(pmap: ProbabilityMap, lat: float, lon: float) -> tuple[bool, float]:
    (mask,) = pmap.masks([0.9])
    grid = pmap.raster.grid
    rows, cols = grid.cell_of(np.array([lat]), np.array([lon]))
    return bool(mask[rows[0], cols[0]]), float((mask * grid.cell_areas_km2()[:, None]).sum())
