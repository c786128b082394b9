"""Choosing a model's distribution guidance w on held-out photos, and recording it in the model's manifest.

Sampling the guided field (1 + w) v(x, c) - w v(x, 0) with a small negative w moves the flow towards the
unconditional one and widens it, which mends a flow whose credible regions hold fewer truths than their
level (over-confidence, as embedding noise on a small training set gives); its likelihood stays exact (the
same ODE with another field). w is picked from a grid, either by the held-out truths' mean NLL (a proper
score, cheap: one likelihood per photo) or by how near the credible regions hold their share of truths:
the exact density's, or those and the drawn map's too (map_scores.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geoplonk_service import protocol as P

from ..engine.guidance import LAND_SHARE_THRESHOLD, Guidance
from ..engine.likelihood import truth_and_draws_log_density, truth_log_density
from ..engine.network import GeoAdaLNMLP
from ..geodesy import xyz_to_latlon
from ..photo_guidance import guess_draws, land_shares
from .criteria import COVERAGE_KINDS, CRITERIA, MAP_CRITERIA, MIN_CFG, TRUTH_TOLERANCE, best_cfg, best_cfg_by_coverage
from .map_scores import score_maps
from .metrics import COVERAGE_LEVELS, coverage

Progress = Callable[[int, int], None]


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
    truth_tolerance: float | None = TRUTH_TOLERANCE,
    chunk: int = 64,
    on_step: Progress | None = None,
) -> dict[float, float]:
    """Mean NLL (nats per steradian) of each photo's true location (E, 3) under guidance w, per w: by `method` in
    `steps`, or by dopri5 at atol = rtol = `truth_tolerance` (likelihood.truth_log_density)."""
    truth_xyz = checked_inputs(emb, truth_xyz, grid)
    out, done, total = {}, 0, len(grid) * len(emb)
    for w in grid:
        nll = []
        for start in range(0, len(emb), chunk):
            e, x = emb[start : start + chunk], truth_xyz[start : start + chunk]
            nll.append(-truth_log_density(flow, e, x, cfg=w, truth_tolerance=truth_tolerance, method=method,
                                          steps=steps).numpy())
            done += len(e)
            if on_step is not None:
                on_step(done, total)
        out[float(w)] = float(np.concatenate(nll).mean())
    return out


def calibration_scores(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    truth_xyz: torch.Tensor,
    grid: Sequence[float],
    *,
    samples: int = 32,
    steps: int = P.STEPS.default,
    solver: str = P.DEFAULT_OPTIONS["solver"],
    method: str = "rk4",
    likelihood_steps: int = 16,
    truth_tolerance: float | None = TRUTH_TOLERANCE,
    levels: Sequence[float] = COVERAGE_LEVELS,
    seed: int = 0,
    chunk: int = 20,
    precision: str = P.DEFAULT_OPTIONS["precision"],
    land: np.ndarray | None = None,
    on_step: Progress | None = None,
) -> dict[float, dict]:
    """Per w: the truths' mean NLL and the share of truths inside the distribution's credible regions.

    A truth is inside the p-region when its density is above the (1 - p) quantile of the density at
    `samples` of the model's own draws (metrics.coverage), all under the same guided field.  `land` (E,)
    bool: the shares of the truths it marks are added too, keyed land_coverage_50 ...
    """
    truth_xyz = checked_inputs(emb, truth_xyz, grid)
    out, done, total = {}, 0, len(grid) * len(emb)
    for w in grid:
        gen = torch.Generator().manual_seed(seed)  # the same draws for every w
        truth_lp, sample_lp = [], []
        for start in range(0, len(emb), chunk):
            e = emb[start : start + chunk]
            at_truth, at_draws = truth_and_draws_log_density(
                flow, e, truth_xyz[start : start + chunk], samples, cfg=w, steps=steps, solver=solver,
                precision=precision, generator=gen, method=method, likelihood_steps=likelihood_steps,
                truth_tolerance=truth_tolerance)
            truth_lp.append(at_truth.numpy())
            sample_lp.append(at_draws.numpy())
            done += len(e)
            if on_step is not None:
                on_step(done, total)
        truth_lp, sample_lp = np.concatenate(truth_lp), np.concatenate(sample_lp)
        out[float(w)] = {"nll": float(-truth_lp.mean()), **coverage(truth_lp, sample_lp, tuple(levels))}
        if land is not None:
            out[float(w)].update({f"land_{key}": v for key, v in
                                  coverage(truth_lp[land], sample_lp[land], tuple(levels)).items()})
    return out


def map_scores(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    truth_xyz: torch.Tensor,
    grid: Sequence[float],
    *,
    land: np.ndarray | None = None,
    on_step: Progress | None = None,
    **settings,
) -> dict[float, dict]:
    """Per w: the drawn map's mean NLL at the truths' cells and the share of truths inside its credible
    regions, keyed map_nll and map_coverage_50 ... (and land_map_coverage_50 ... for the truths `land` marks):
    map_scores.score_maps, whose keywords `settings` are (samples, resolution, levels, steps, precision, seed,
    chunk)."""
    truth_xyz = checked_inputs(emb, truth_xyz, grid)
    lat, lon = xyz_to_latlon(truth_xyz.double().numpy())
    out = {}
    for k, w in enumerate(grid):
        def progress(done: int, k: int = k) -> None:
            if on_step is not None:
                on_step(k * len(emb) + done, len(grid) * len(emb))

        scored = score_maps(flow, emb, lat, lon, cfg=w, on_step=progress, **settings)
        out[float(w)] = {"map_nll": scored.nll(),
                         **{f"map_coverage_{key}": v for key, v in scored.shares().items()}}
        if land is not None:
            out[float(w)].update({f"land_map_coverage_{key}": v for key, v in scored.shares(land).items()})
    return out


def score_guidance(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    truth_xyz: torch.Tensor,
    grid: Sequence[float],
    *,
    criterion: str,
    samples: int = 32,
    map_samples: int = P.SAMPLES.default,
    map_resolution: float = P.RESOLUTION.default,
    seed: int = 0,
    likelihood_method: str = "rk4",
    likelihood_steps: int = 16,
    truth_tolerance: float | None = TRUTH_TOLERANCE,
    land: np.ndarray | None = None,
    solver: str = P.DEFAULT_SOLVER,
    steps: int = P.STEPS.default,
    on_step: Progress | None = None,
) -> tuple[dict[float, dict], float]:
    """Scores per w of the grid by `criterion` (a key of CRITERIA), and the chosen w.

    Every score holds the truths' mean NLL ("nll"); the coverage criteria add the exact regions' shares and
    "map" the drawn map's too. With `land` (E,) bool, the truths on land, the coverage criteria add their
    shares again for those truths (land_coverage_50 ..., land_map_coverage_50 ...), which "map-land" scores and
    the others only record. The draws are `solver`'s in `steps` (the server's default sampler unless told: w is
    set for the draws the server makes). on_step(done, total) counts photos scored over every part.
    """
    if criterion == "nll":
        nll = truth_nll_by_cfg(flow, emb, truth_xyz, grid, method=likelihood_method, steps=likelihood_steps,
                               truth_tolerance=truth_tolerance, on_step=on_step)
        return {w: {"nll": v} for w, v in nll.items()}, best_cfg(nll)
    if criterion not in COVERAGE_KINDS:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if land is not None and np.asarray(land).dtype != bool:
        raise ValueError(f"land must be a bool flag per photo, got dtype {np.asarray(land).dtype}")
    if (land is not None or criterion == "map-land") and (np.shape(land) != (len(emb),) or not np.any(land)):
        raise ValueError(f"the land shares need a land flag per photo ({len(emb)}), some true")
    parts = 2 if criterion in MAP_CRITERIA else 1
    total = parts * len(grid) * len(emb)

    def exact_part(done: int, _: int) -> None:
        if on_step is not None:
            on_step(done, total)

    def map_part(done: int, _: int) -> None:
        if on_step is not None:
            on_step(len(grid) * len(emb) + done, total)

    scores = calibration_scores(flow, emb, truth_xyz, grid, samples=samples, seed=seed, method=likelihood_method,
                                likelihood_steps=likelihood_steps, truth_tolerance=truth_tolerance, land=land,
                                solver=solver, steps=steps, on_step=exact_part)
    if criterion in MAP_CRITERIA:
        drawn = map_scores(flow, emb, truth_xyz, grid, samples=map_samples, resolution=map_resolution, seed=seed,
                           land=land, solver=solver, steps=steps, on_step=map_part)
        scores = {w: {**score, **drawn[w]} for w, score in scores.items()}
    return scores, best_cfg_by_coverage(scores, kinds=COVERAGE_KINDS[criterion])


@dataclass
class GroupScores:
    """One group of photos of a calibration by land share: which photos, their scores per w and its choice."""

    name: str
    rows: np.ndarray  # (E,) bool: the group's photos
    scores: dict[float, dict]
    chosen: float

    @property
    def n(self) -> int:
        return int(self.rows.sum())


def guess_land_shares(flow: GeoAdaLNMLP, emb: torch.Tensor, *, seed: int = 0, chunk: int = 20,
                      precision: str = P.DEFAULT_OPTIONS["precision"]) -> np.ndarray:
    """(E,) share of each photo's best-guess draws on land, by which the server picks a photo's w. Drawn from
    seeded fresh start points, where the server takes its request's: the shares lie near 0 or 1 for almost
    every photo, so the two split photos alike."""
    gen = torch.Generator().manual_seed(seed)
    return np.concatenate([land_shares(guess_draws(flow, emb[start : start + chunk], generator=gen,
                                                   precision=precision))
                           for start in range(0, len(emb), chunk)])


def score_guidance_by_land_share(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    truth_xyz: torch.Tensor,
    grid: Sequence[float],
    *,
    shares: np.ndarray,
    threshold: float = LAND_SHARE_THRESHOLD,
    land: np.ndarray | None = None,
    on_step: Progress | None = None,
    **settings,
) -> tuple[list[GroupScores], Guidance]:
    """score_guidance on the land-looking photos (guess land share `shares` >= threshold) and on the others
    apart, each choosing its own w: the Guidance the server applies photo by photo (engine/guidance.py).
    `land` (E,) bool, the truths on land, is passed on to each group that has some."""
    looks_land = np.asarray(shares) >= threshold
    if looks_land.all() or not looks_land.any():
        raise ValueError(f"a land rule needs photos on both sides of the land share {threshold:g}: "
                         f"{int(looks_land.sum())} of {len(looks_land)} look like land")
    if settings.get("criterion") == "map-land" and (land is None or not land[looks_land].any()
                                                    or not land[~looks_land].any()):
        raise ValueError("--criterion map-land scores each group's land photos again: both groups need some")
    per_photo = (2 if settings.get("criterion") in MAP_CRITERIA else 1) * len(grid)  # as score_guidance counts
    groups = []
    for name, rows, offset in (("land-looking", looks_land, 0),
                               ("others", ~looks_land, per_photo * int(looks_land.sum()))):
        def progress(done: int, _: int, offset: int = offset) -> None:
            if on_step is not None:
                on_step(offset + done, per_photo * len(looks_land))

        subset_land = None if land is None or not land[rows].any() else land[rows]
        scores, chosen = score_guidance(flow, emb[torch.from_numpy(rows)], truth_xyz[torch.from_numpy(rows)], grid,
                                        land=subset_land, on_step=progress, **settings)
        groups.append(GroupScores(name, rows, scores, chosen))
    return groups, Guidance(groups[1].chosen, groups[0].chosen, threshold)


def likelihood_text(criterion: str, method: str, steps: int, truth_tolerance: float | None) -> str:
    """How the scored densities were solved: "nll" solves the truths alone, the other criteria the draws too."""
    truths = f"the truths by dopri5 at {truth_tolerance:g}" if truth_tolerance else ""
    if criterion == "nll":
        return truths or f"{method}, {steps} steps"
    return f"{method}, {steps} steps" + (f"; {truths}" if truths else "")


def calibration_record(
    scores: dict[float, dict],
    chosen: float,
    *,
    criterion: str,
    data: Path | str,
    skip: int,
    n: int,
    likelihood_method: str,
    likelihood_steps: int,
    samples: int,
    truth_tolerance: float | None = None,
    seed: int,
    map_samples: int,
    map_resolution: float,
    land_tiles: int | None = None,
    sampler: str = f"{P.DEFAULT_SOLVER}, {P.STEPS.default} steps",
) -> dict:
    """The manifest's `calibration` entry: the chosen w, how it was chosen and on what, the scores per w
    (`land_tiles`: how many of the n tiles were scored again as land)."""
    record = {
        "distribution_cfg": chosen + 0.0,
        "criterion": CRITERIA[criterion],
        "nll_by_cfg": {f"{w + 0.0:g}": round(v["nll"], 6) for w, v in scores.items()},  # + 0.0: no "-0" key
        "data": str(data), "skip": skip, "n": n,
        "likelihood": likelihood_text(criterion, likelihood_method, likelihood_steps, truth_tolerance),
        # the draws' sampler (the server's default unless told), whose endpoint errors widen or sharpen the map
        "sampler": sampler,
    }
    if criterion in COVERAGE_KINDS:
        record["coverage_by_cfg"] = {f"{w + 0.0:g}": {k: v for k, v in score.items() if k != "nll"}
                                     for w, score in scores.items()}
        record.update(samples=samples, seed=seed)
    if criterion in MAP_CRITERIA:
        record.update(map_samples=map_samples, map_resolution=map_resolution)
    if criterion in COVERAGE_KINDS and land_tiles:
        record.update(land_tiles=land_tiles)
    return record


GROUP_KEYS = ("distribution_cfg", "nll_by_cfg", "coverage_by_cfg", "n", "land_tiles")


def land_rule_record(groups: list[GroupScores], guidance: Guidance, *, land: np.ndarray | None = None,
                     **settings) -> dict:
    """The manifest's `calibration` entry of a calibration by land share: the rule's two w at the top, where
    the server reads them, and each group's scores (calibration_record's, less the settings they share)."""
    records = {}
    for group in groups:
        land_tiles = None if land is None else int(land[group.rows].sum())
        records[group.name] = calibration_record(group.scores, group.chosen, n=group.n,
                                                 land_tiles=land_tiles, **settings)
    shared = {k: v for k, v in records["others"].items() if k not in GROUP_KEYS}
    return {
        "distribution_cfg": guidance.cfg + 0.0,
        "land_cfg": guidance.land + 0.0,
        "land_share_threshold": guidance.threshold,
        "rule": "w = land_cfg where the share of the photo's best-guess draws on land reaches "
                "land_share_threshold, else distribution_cfg; each chosen on its own group of tuning photos",
        **shared,
        "n": len(groups[0].rows),  # the groups split the photos
        "groups": {name: {k: v for k, v in r.items() if k in GROUP_KEYS} for name, r in records.items()},
    }


def record_calibration(model_dir: Path, record: dict) -> Path:
    """Write `record` as the calibration of the model in model_dir (its manifest's file hashes are refreshed);
    returns the manifest's path."""
    from ..engine.checkpoint import MANIFEST_FILE, read_manifest, write_manifest

    manifest = dict(read_manifest(model_dir))
    manifest.pop("files", None)
    manifest["calibration"] = record
    write_manifest(model_dir, manifest)
    return model_dir / MANIFEST_FILE
