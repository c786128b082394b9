"""Which guidance w a photo's distribution is drawn at: the request's, else the model's calibration
(engine.guidance), which may depend on where the photo's best-guess draws fall. Shared by the server, the
command line, `geoplonk eval` and `geoplonk calibrate`, so that all of them draw a photo at the same w."""

from __future__ import annotations

import numpy as np
import torch

from geoplonk_service import protocol as P

from .engine.guidance import Guidance
from .engine.sampling import sample, start_points, supported_precision
from .products.place_names import land_share


def guess_draws(flow, emb: torch.Tensor, *, x0: torch.Tensor | None = None,
                generator: torch.Generator | None = None, precision: str = P.DEFAULT_OPTIONS["precision"],
                on_step=None) -> torch.Tensor:
    """The best guess's draws (E, m, 3): the server's guess sampler at its guidance, from x0 (m, 3) or
    GUESS_SAMPLES fresh points, in `precision` where the device runs it natively (as the server draws them)."""
    samples = P.GUESS_SAMPLES if x0 is None else x0.shape[-2]
    precision = supported_precision(precision, next(flow.parameters()).device)
    return sample(flow, emb, samples, steps=P.GUESS_STEPS, solver=P.GUESS_SOLVER, cfg=P.GUESS_CFG, x0=x0,
                  generator=generator, on_step=on_step, precision=precision)


def land_shares(guesses: torch.Tensor | np.ndarray) -> np.ndarray:
    """(E, m, 3) guess draws -> (E,) share of each photo's draws on land."""
    guesses = guesses.float().cpu().numpy() if isinstance(guesses, torch.Tensor) else np.asarray(guesses)
    return land_share(guesses)


def photo_cfgs(guidance: Guidance, guesses: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Each photo's w (E,) under `guidance`, and the land shares it was chosen by (None when it needs none)."""
    if not guidance.needs_land_share:
        return np.full(len(guesses), guidance.cfg), None
    shares = land_shares(guesses)
    return np.array([guidance.for_land_share(s) for s in shares]), shares


def rows_by_cfg(cfgs: np.ndarray, start: int = 0):
    """(w, rows) for each distinct w of `cfgs` (E,), in first-seen order, rows offset by `start`: each w's photos
    drawn or solved together (one group when every photo has the same w)."""
    for w in dict.fromkeys(np.asarray(cfgs).tolist()):
        yield w, start + np.flatnonzero(cfgs == w)


def cfg_for_photo(model, emb: torch.Tensor, precision: str = P.DEFAULT_OPTIONS["precision"]) -> float:
    """The model's w for one photo's embedding (1, d): cfgs_for_photos of that photo alone."""
    return float(cfgs_for_photos(model, emb[:1], precision)[0])


def cfgs_for_photos(model, emb: torch.Tensor, precision: str = P.DEFAULT_OPTIONS["precision"],
                    chunk: int = 25, *, samples: int = P.SAMPLES.default, seed: int = P.SEED.default) -> np.ndarray:
    """The model's w (E,) for photos' embeddings (E, d), drawing their guesses (`chunk` photos at a time) only
    when the calibration needs them, from the start points the server's guess takes for `samples` and `seed`
    (so the same w)."""
    guidance = model.guidance
    if not guidance.needs_land_share:
        return np.full(len(emb), guidance.cfg)
    x0 = start_points(samples, seed)[: min(P.GUESS_SAMPLES, samples)]
    return np.concatenate([photo_cfgs(guidance, guess_draws(model.flow, emb[i : i + chunk], x0=x0,
                                                            precision=precision))[0]
                           for i in range(0, len(emb), chunk)])
