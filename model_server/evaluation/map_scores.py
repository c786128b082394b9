"""Scoring the map the server draws: the kernel density raster of a photo's draws and its credible regions,
looked up at the photo's true location.

The map is what an analyst sees, and its kernel smooths the flow's density: its regions can hold more or
fewer truths than the exact density's, so `geoplonk eval` reports it as a row of its own and `geoplonk
calibrate --criterion map` weighs it in the choice of guidance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from geoplonk_service import protocol as P

from ..engine.sampling import sample, supported_precision
from ..photo_guidance import rows_by_cfg
from ..products.density import kde_raster
from ..products.grid import Grid
from ..products.regions import region_masks
from .metrics import COVERAGE_LEVELS
from .report import MethodScores, method_row


@dataclass
class TruthOnMap:
    """How the map drawn from a photo's samples treats its true location."""

    log_density: float  # of the truth's cell, per steradian
    inside: list[bool]  # inside each level's region, cut as the server cuts them


def truth_on_map(samples: np.ndarray, lat: float, lon: float, grid: Grid, levels: Sequence[float]) -> TruthOnMap:
    """Draw the map of `samples` (n, 3) on `grid` as the server does and look up the truth (lat, lon)."""
    raster = kde_raster(samples, grid)
    rows, cols = grid.cell_of(np.array([lat]), np.array([lon]))
    row, col = int(rows[0]), int(cols[0])
    return TruthOnMap(
        float(np.log(raster.density_at_cells(rows, cols))[0]),
        [bool(m[row, col]) for m in region_masks(raster, list(levels), samples)],
    )


@dataclass
class MapScores:
    """The drawn maps of E photos at their truths."""

    levels: tuple[float, ...]
    log_density: np.ndarray  # (E,) of each truth's cell, per steradian
    inside: np.ndarray  # (E, len(levels)) bool: each truth inside each level's region

    def nll(self) -> float:
        """Mean NLL of the truths' cells, nats per steradian."""
        return float(-np.mean(self.log_density))

    def shares(self, which: np.ndarray | None = None) -> dict[str, float]:
        """Share of truths inside each level's region, keyed '50', '90', '99' (of the truths `which` (E,) bool
        marks, or all)."""
        if which is not None and np.asarray(which).dtype != bool:
            raise ValueError("which must be a bool flag per truth")
        share = np.mean(self.inside if which is None else self.inside[which], axis=0)
        return {f"{round(100 * lv)}": float(v) for lv, v in zip(self.levels, share, strict=True)}


def score_maps(
    flow,
    emb: torch.Tensor,
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    cfg: float | np.ndarray,
    samples: int = P.SAMPLES.default,
    resolution: float = P.RESOLUTION.default,
    levels: Sequence[float] = COVERAGE_LEVELS,
    steps: int = P.STEPS.default,
    solver: str = P.DEFAULT_OPTIONS["solver"],
    precision: str = P.DEFAULT_OPTIONS["precision"],
    seed: int = 0,
    chunk: int = 20,
    on_step: Callable[[int], None] | None = None,
    hold_unguided: bool = True,
) -> MapScores:
    """Draw each photo's map as the server would (`samples` draws under guidance cfg, one w or each photo's
    (E,), a kernel density raster of `resolution` degrees, its credible regions) and look up its truth (lat,
    lon in degrees, (E,) each).

    The draws come from seed + 1 (other draws than those the exact density is scored on, which start from
    seed). on_step(done) after each chunk of photos. hold_unguided: sampling.sample's.
    """
    grid = Grid.global_grid(resolution)
    levels = tuple(levels)
    precision = supported_precision(precision, next(flow.parameters()).device)  # as the server draws
    gen = torch.Generator().manual_seed(seed + 1)
    cfgs = np.broadcast_to(np.asarray(cfg, dtype=np.float64), (len(emb),))
    logp, inside = np.zeros(len(emb)), np.zeros((len(emb), len(levels)), dtype=bool)
    for start in range(0, len(emb), chunk):
        chunk_cfgs = cfgs[start : start + chunk]
        for w, rows in rows_by_cfg(chunk_cfgs, start):  # each w's photos in one draw
            points = sample(flow, emb[rows], samples, steps=steps, solver=solver, cfg=w, generator=gen,
                            precision=precision, hold_unguided=hold_unguided).numpy()
            for i, x in zip(rows, points, strict=True):
                scored = truth_on_map(x, lat[i], lon[i], grid, levels)
                logp[i], inside[i] = scored.log_density, scored.inside
        if on_step is not None:
            on_step(min(start + chunk, len(emb)))
    return MapScores(levels, logp, inside)


def map_method(scores: MapScores, *, guidance: str, samples: int, resolution: float) -> MethodScores:
    """The drawn map scored per photo: its NLL and its regions' coverage (no guess, so no distance figures).
    `guidance` labels the w it was drawn at (engine.guidance.Guidance.describe)."""
    name = f"flow, the server's map ({guidance}, {samples} samples, {resolution:g} deg raster)"
    return MethodScores("flow_map", name, logp=scores.log_density, inside=scores.inside, levels=scores.levels,
                        extra={"note": "no distance figures: this row scores the raster and its credible regions"})


def map_row(scores: MapScores, *, guidance: str, samples: int, resolution: float) -> dict:
    """The report's row of the drawn map on all photos."""
    return method_row(map_method(scores, guidance=guidance, samples=samples, resolution=resolution))
