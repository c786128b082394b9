"""The flow's methods of the report: its single sample and its best guess at the guess guidance, and its
distribution (at the distribution guidance) scored by the exact likelihood of the truths and the coverage
of its credible regions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from geoplonk_service import protocol as P

from ..engine.guidance import Guidance
from ..engine.likelihood import localizability, truth_and_draws_log_density
from ..engine.sampling import sample, supported_precision
from ..geodesy import degrees_to_xyz, latlon_distance_km, xyz_to_degrees
from ..photo_guidance import photo_cfgs, rows_by_cfg
from ..products.modes import best_guess
from .criteria import TRUTH_TOLERANCE
from .metrics import inside_regions
from .report import MethodScores


@dataclass(frozen=True)
class FlowScoring:
    """How the flow's rows are drawn and scored: the guess at guidance `cfg` from `guess_samples` draws, the
    distribution at the photo's w under `guidance` from `samples` draws and the exact likelihood, `chunk`
    photos at a time."""

    guidance: Guidance
    cfg: float = P.GUESS_CFG
    guess_samples: int = P.GUESS_SAMPLES
    guess_steps: int = P.GUESS_STEPS
    guess_solver: str = P.GUESS_SOLVER
    samples: int = 64
    steps: int = P.STEPS.default
    solver: str = P.DEFAULT_OPTIONS["solver"]
    precision: str = P.DEFAULT_OPTIONS["precision"]
    likelihood_method: str = "rk4"
    likelihood_steps: int = 16
    truth_tolerance: float | None = TRUTH_TOLERANCE  # the truths by dopri5 (None: by the draws' method)
    seed: int = 0
    chunk: int = 20


def best_guesses(xyz: np.ndarray, resolution: float = P.RESOLUTION.default) -> np.ndarray:
    """(E, n, 3) guess samples -> (E, 3): each photo's best guess as the server picks it on a map of
    `resolution` degrees (products.modes.best_guess)."""
    return np.stack([best_guess(x, resolution) for x in np.asarray(xyz, dtype=np.float64)])


def evaluate_flow(
    flow,
    emb: torch.Tensor,
    truth_deg: np.ndarray,
    scoring: FlowScoring,
    on_step: Callable[[int], None] | None = None,
) -> tuple[list[MethodScores], dict]:
    """The flow's three methods scored per photo (single sample, best guess, distribution) and its per-photo
    figures, for photos `emb` (E, cond_dim) at truth_deg (E, 2).

    Per chunk of photos: `guess_samples` draws at guidance `cfg` (the first is the single sample, the best
    guess is picked among all; they set each photo's w when the guidance has a land rule), then `samples`
    draws at the photo's w whose exact log-densities, with the truth's (by dopri5 at `truth_tolerance`), give its
    NLL, the coverage of its credible regions and the photo's localizability. on_step(done) after each chunk.
    """
    cfg, guess_samples, guidance = scoring.cfg, scoring.guess_samples, scoring.guidance
    steps, chunk = scoring.steps, scoring.chunk
    precision = supported_precision(scoring.precision, next(flow.parameters()).device)  # as the server draws
    likelihood_method = scoring.likelihood_method
    gen = torch.Generator().manual_seed(scoring.seed)
    truth_xyz = degrees_to_xyz(truth_deg)
    single, guess, cfgs, shares = [], [], [], []
    logp_truth, logp_samples = np.zeros(len(emb), np.float32), np.zeros((len(emb), scoring.samples), np.float32)
    for start in range(0, len(emb), chunk):
        e = emb[start : start + chunk]
        guided = sample(flow, e, guess_samples, steps=scoring.guess_steps, solver=scoring.guess_solver, cfg=cfg,
                        generator=gen, precision=precision).numpy()
        single.append(guided[:, 0])
        guess.append(best_guesses(guided))
        chunk_cfgs, chunk_shares = photo_cfgs(guidance, guided)
        cfgs.append(chunk_cfgs)
        shares.append(chunk_shares)
        for w, rows in rows_by_cfg(chunk_cfgs, start):  # each w's photos in one solve
            at_truth, at_draws = truth_and_draws_log_density(
                flow, emb[rows], torch.tensor(truth_xyz[rows]), scoring.samples, cfg=w,
                steps=steps, solver=scoring.solver, precision=precision, generator=gen, method=likelihood_method,
                likelihood_steps=None if likelihood_method == "dopri5" else scoring.likelihood_steps,
                truth_tolerance=scoring.truth_tolerance)
            logp_truth[rows], logp_samples[rows] = at_truth.numpy(), at_draws.numpy()
        if on_step is not None:
            on_step(start + len(e))
    single, guess, cfgs = np.concatenate(single), np.concatenate(guess), np.concatenate(cfgs)
    d_single = latlon_distance_km(xyz_to_degrees(single), truth_deg)
    d_guess = latlon_distance_km(xyz_to_degrees(guess), truth_deg)
    loc = localizability(logp_samples)
    methods = [
        MethodScores("flow_single", f"flow, cfg={cfg:g} single sample", d_single),
        MethodScores("flow_guess", f"flow, cfg={cfg:g} best guess of {guess_samples} samples", d_guess),
        MethodScores("flow_distribution", f"flow, distribution ({guidance.describe()})", d_guess, logp_truth,
                     inside_regions(logp_truth, logp_samples), localizability=loc,
                     extra={"note": "distance figures of the distribution row are those of the best guess"}),
    ]
    per_image = {"localizability": loc.tolist(), "error_km_guess": d_guess.tolist(),
                 "guess_deg": xyz_to_degrees(guess).tolist(), "cfg": cfgs.tolist()}
    if guidance.needs_land_share:
        per_image["guess_land_share"] = np.concatenate(shares).tolist()
    return methods, per_image
