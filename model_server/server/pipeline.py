"""The photos of one unit through the model, one photo at a time: decode, embed, sample, products, write.

Runs in the worker thread.  `emit` receives ("progress", stage, index, name) and
("result", index, status, summary, error, blobs) events; the socket thread turns them
into protocol messages.  Every photo gets exactly one result, whatever happens.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from geoplonk_service import protocol as P

from .. import __version__
from ..engine.sampling import holds_unguided, start_points, unguided_field
from ..images import ImageError, decode_image, exif_gps
from ..photo_guidance import guess_draws, photo_cfgs
from ..products.aoi import aoi_geometry
from ..products.claims import Claim
from ..products.density import KERNEL_NAME
from ..products.report import AreaOfInterest, compute_products, summary_fields, write_products
from .models import photo_warnings

log = logging.getLogger("geoplonk.server")

Emit = Callable[..., None]
# Localizability: the exact log-density (rk4, LOCALIZABILITY_STEPS steps) of about LOCALIZABILITY_SAMPLES of the
# photo's own samples, with a nearest-neighbour density of all of them as control variate (the paper: the
# exact log-density of 1024 samples, with dopri5). 4 rk4 steps come near 5 or 7, 3 do not (docs/samplers.md); 64
# points split between the two row workers of a 2-core CPU (likelihood.MIN_POINTS_PER_WORKER), 48 would run on one.
# At the |w| where the sampler may hold the unguided field over each step (sampling.holds_unguided), the
# likelihood holds it over each of its own steps too: its accuracy and time are in docs/samplers.md.
LOCALIZABILITY_SAMPLES = 64
LOCALIZABILITY_STEPS = 4
LOCALIZABILITY_DIVERGENCE = "exact"
LOCALIZABILITY_HOLD_UNGUIDED = True


class Cancelled(Exception):
    """Raised from inside a stage (between solver steps, ODE evaluations, raster rows) when the client cancelled."""


def localizability(model, emb: torch.Tensor, samples: torch.Tensor,
                   check: Callable[[], None] | None = None, cfg: float = 0.0) -> tuple[np.ndarray, str]:
    """The paper's localizability: mean log-density (nats/sr) of the model's own samples / (4 pi ln 2).

    engine.likelihood.mean_log_density: the exact likelihood (probability-flow ODE with the exact divergence; rk4,
    LOCALIZABILITY_STEPS steps, bf16 matmuls where the device has them, the unguided field held over each step at a
    small |w|) of about LOCALIZABILITY_SAMPLES of the photo's samples, and the k-nearest-neighbour density of all of
    them as a control variate, stratified: as close to the exact mean over all samples as 8 times as many exact
    points alone (benchmarks/check_localizability.py). The density is that of the field the samples were drawn from
    (guidance cfg), so that the score is the negative entropy of the map shown: the reference takes it without
    guidance, the same at w = 0 (its checkpoints'), but at a negative w the unguided density of wider draws adds
    their divergence from it, which grows with w and would rank a land view drawn at the land rule's wider w below
    open ocean.
    Returns (values (E,), method).

    One photo at a time: the matmuls' blocking depends on the batch, and a photo's localizability must not
    depend on which photos shared its batch. `check` is called before every evaluation of the field (and
    may raise Cancelled).
    """
    from ..engine import likelihood
    from ..engine.sampling import supported_precision

    precision = supported_precision("bf16", model.device)
    values = []
    for row in range(emb.shape[0]):
        mean = likelihood.mean_log_density(model.flow, emb[row : row + 1], samples[row : row + 1],
                                           exact=LOCALIZABILITY_SAMPLES, steps=LOCALIZABILITY_STEPS,
                                           precision=precision, cfg=cfg, on_step=check,
                                           divergence=LOCALIZABILITY_DIVERGENCE,
                                           hold_unguided=LOCALIZABILITY_HOLD_UNGUIDED)
        values.append(likelihood.localizability(mean[:, None]).cpu().numpy())
    at = f"at the draws' w = {cfg:g}" if cfg else ""
    return np.concatenate(values), localizability_method(samples.shape[1], precision, at, localizability_holds(cfg))


def localizability_holds(cfg: float) -> bool:
    """Whether the localizability at the draws' w holds the unguided field over each of its steps."""
    return LOCALIZABILITY_HOLD_UNGUIDED and holds_unguided(cfg, LOCALIZABILITY_STEPS)


def localizability_method(n: int, precision: str, at: str = "", held: bool = False) -> str:
    """The summary's `localizability_method` for n draws; `at` names the w the density was taken at, `held` says
    the unguided field was held over each step."""
    exact = "exact" if LOCALIZABILITY_DIVERGENCE == "exact" else f"{LOCALIZABILITY_DIVERGENCE} divergence"
    exact = f"{exact} {at}" if at else exact
    steps = f"rk4 {LOCALIZABILITY_STEPS} steps {precision}" + (" (unguided field held over each step)" if held else "")
    if n <= LOCALIZABILITY_SAMPLES:
        return f"{exact}, {steps}, all {n} samples"
    return f"{exact}, {steps}, {LOCALIZABILITY_SAMPLES} of {n} samples; kNN-density control variate"


def run_unit(
    model,
    device: str,
    request_names: list[str],
    request_blobs: list[bytes],
    indices: list[int],
    options: dict[str, Any],
    emit: Emit,
    is_cancelled: Callable[[], bool],
    collect: Callable[..., None] | None = None,
) -> None:
    """Process the photos `indices` of a request, emitting progress and one result per photo (`collect`: see
    run_photo)."""
    pending = list(indices)

    def fail(i: int, code: str, message: str, status: str = P.STATUS_FAILED) -> None:
        emit("result", i, status, None, {"code": code, "message": message}, None)
        if i in pending:
            pending.remove(i)

    def cancel_rest() -> bool:
        if is_cancelled():
            for i in list(pending):
                fail(i, P.E_CANCELLED, "cancelled by the client", P.STATUS_CANCELLED)
            return True
        return False

    def check(*_: Any) -> None:
        """Stop inside a stage as soon as the client cancels (solver steps, ODE evaluations, raster rows)."""
        if is_cancelled():
            raise Cancelled

    try:
        _run(model, device, request_names, request_blobs, indices, options, emit, pending, fail, cancel_rest, check,
             collect)
    except Cancelled:
        cancel_rest()
    except Exception as exc:  # noqa: BLE001 - a batch-wide failure fails its photos, never the server
        log.error("batch failed:\n%s", traceback.format_exc())
        for i in list(pending):
            fail(i, P.E_INTERNAL, f"{type(exc).__name__}: {exc}")


def _run(model, device, request_names, request_blobs, indices, options, emit, pending, fail, cancel_rest,
         check, collect=None) -> None:
    """run_unit's stages, photo by photo: each photo's result leaves as soon as it is ready, so the first
    answer of a batch comes after one photo's time.  `check` raises Cancelled inside a stage, `cancel_rest`
    answers between photos."""
    from ..engine.sampling import supported_precision

    precision = supported_precision(options["precision"], model.device)
    x0 = start_points(options["samples"], options["seed"])
    for i in indices:
        if cancel_rest():
            return
        try:
            run_photo(model, device, i, request_names[i], request_blobs[i], options, precision, x0, emit, check,
                      collect)
        except ImageError as exc:
            fail(i, P.E_BAD_IMAGE, str(exc))
            continue
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - one photo fails alone
            log.error("photo %s failed:\n%s", request_names[i], traceback.format_exc())
            fail(i, P.E_INTERNAL, f"{type(exc).__name__}: {exc}")
            continue
        pending.remove(i)


def choose_guidance(model, options: dict[str, Any], guess: torch.Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options with the photo's guidance w filled in (the request's, else the model's calibrated w, which
    may depend on where its best-guess draws `guess` (m, 3) fall), and what chose it, for the summary."""
    if options.get("cfg") is not None:
        return options, {"source": "request"}
    guidance = model.guidance
    cfgs, shares = photo_cfgs(guidance, guess[None])
    chosen = {"source": "model", "rule": guidance.describe()}
    if shares is not None:
        chosen["guess_land_share"] = round(float(shares[0]), 4)
    return {**options, "cfg": float(cfgs[0])}, chosen


def area_of_interest(options: dict[str, Any]) -> AreaOfInterest | None:
    """The options' area-of-interest prior (checked when the request was accepted), or None."""
    if options.get("aoi") is None:
        return None
    return AreaOfInterest(aoi_geometry(options["aoi"]), float(options.get("aoi_weight", 0.0)))


def photo_claims(options: dict[str, Any], gps: tuple[float, float] | None) -> tuple[list[Claim], list[str]]:
    """The claims to check on a photo's map: the request's, then its own EXIF GPS when `claim_exif` asks;
    and a warning when it asks but the photo has no usable GPS."""
    claims = [Claim(c["lat"], c["lon"], c.get("source", "user"), c.get("label", ""))
              for c in options.get("claims") or []]
    if not options.get("claim_exif"):
        return claims, []
    if gps is None:
        return claims, ["no EXIF GPS claim to check: the photo carries no usable GPS position"]
    return [*claims, Claim(gps[0], gps[1], "exif", "EXIF GPS")], []


def run_photo(model, device, i: int, name: str, blob: bytes, options: dict[str, Any], precision: str,
               x0: torch.Tensor, emit: Emit, check: Callable[..., None],
               collect: Callable[..., None] | None = None) -> None:
    """One photo through every stage, then its result.  Photo by photo, a result never depends on which
    photos shared its batch (the encoder's convolutions and the network's matmuls round differently in a
    batch, by about 5e-7).  `collect(i, name, products, draws, gps)`, when given, receives the photo's
    products before its result leaves (a joint request keeps what its combined map needs)."""
    timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(label: str):
        check()
        emit("progress", label, i, name)
        t = time.perf_counter()
        yield
        timings[label] = time.perf_counter() - t

    with stage("decode"):
        image = decode_image(blob, max_bytes=P.MAX_IMAGE_BYTES)
        gps, exif_problem = exif_gps(blob)
        truth = (gps.lat, gps.lon) if gps is not None else None
        try:
            warnings = photo_warnings(model.name, getattr(model, "manifest", None), blob, image.size)
        except Exception:  # noqa: BLE001 - a warning's own trouble must never fail the photo
            log.exception("model-fit warnings of %s", name)
            warnings = []
        if exif_problem:  # out of range or unreadable GPS: never fails the photo, but says why it is ignored
            warnings.append(exif_problem)

    with stage("embed"):
        embed = getattr(model, "embed", None) or model.encoder.embed
        emb = embed([image]).to(model.device)

    from ..engine.sampling import sample

    with stage("sample"):
        n = options["samples"]
        m = min(P.GUESS_SAMPLES, n)
        guess = guess_draws(model.flow, emb, x0=x0[:m], on_step=check, precision=precision)
        options, guidance = choose_guidance(model, options, guess[0])
        samples = sample(model.flow, emb, n, steps=options["steps"], solver=options["solver"], cfg=options["cfg"],
                         x0=x0, on_step=check, precision=precision)
        unguided = unguided_field(options["cfg"], options["steps"], options["solver"])
        if unguided:
            guidance["unguided_field"] = unguided

    with stage("localizability"):
        loc, loc_method = localizability(model, emb, samples, check, cfg=options["cfg"])

    def on_stage(label: str) -> None:
        check()
        emit("progress", label, i, name)

    claims, claim_notes = photo_claims(options, truth)
    warnings.extend(claim_notes)
    draws = samples[0].float().cpu().numpy()
    products = compute_products(
        draws, guess[0].float().cpu().numpy(), options["resolution"],
        options["levels"], options["top_k"], options["crop"], truth, on_stage, check,
        aoi=area_of_interest(options), claims=claims,
    )
    warnings.extend(products.warnings)
    timings.update(products.timings)
    with stage("write"):
        tags = {
            "model": model.name, "encoder": model.encoder_name, "solver": options["solver"],
            "steps": options["steps"], "precision": precision, "cfg": options["cfg"],
            "samples": options["samples"],
            "seed": options["seed"], "software_version": __version__,
            "kernel": KERNEL_NAME, "kernel_kappa": f"{products.raster.kappa:.6g}",
            **({"unguided_field": unguided} if unguided else {}),
            **aoi_tags(products.aoi),
        }
        tiff, gpkg = write_products(products, float(loc[0]), tags)
    summary = {
        "model": model.name,
        "model_sha256": getattr(model, "weights_sha256", None),
        "encoder": model.encoder_name,
        "device": device,
        "software_version": __version__,
        "photo_sha256": hashlib.sha256(blob).hexdigest(),
        "options": {**options, "precision": precision},  # what ran, as the GeoTIFF tag says
        **summary_fields(products, float(loc[0])),
        "localizability_method": loc_method,
        "guidance": guidance,
        "warnings": warnings,
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    if collect is not None:
        collect(i, name, products, draws, truth)
    emit("result", i, P.STATUS_OK, summary, None, [tiff, gpkg])


def aoi_tags(aoi: dict[str, Any] | None) -> dict[str, str]:
    """The GeoTIFF tags of an area-of-interest prior: the raster is the restricted map."""
    if aoi is None:
        return {}
    return {"aoi_weight": f"{aoi['weight']:g}", "aoi_prior_mass": f"{aoi['prior_mass']:.6g}"}
