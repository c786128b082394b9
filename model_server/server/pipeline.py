"""One batch of photos through the model: decode, embed, sample, products, write.

Runs in the worker thread.  `emit` receives ("progress", stage, index, name) and
("result", index, status, summary, error, blobs) events; the socket thread turns them
into protocol messages.  Every photo gets exactly one result, whatever happens.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from geoplonk_service import protocol as P

from .. import __version__
from ..images import ImageError, decode_image, exif_gps
from ..products.density import KERNEL_NAME
from ..products.report import compute_products, summary_fields, write_products
from .models import photo_warnings

log = logging.getLogger("geoplonk.server")

Emit = Callable[..., None]
# Own samples whose exact log-density estimates localizability (the paper uses 1024).
LOCALIZABILITY_SAMPLES = 64
LOCALIZABILITY_STEPS = 16


def start_points(n: int, seed: int) -> torch.Tensor:
    """The same seeded uniform start points for every photo: a photo's result does not depend on its batch."""
    from ..engine.sphere import uniform_sphere

    return uniform_sphere(n, generator=torch.Generator().manual_seed(int(seed)))


class Cancelled(Exception):
    """Raised from inside a stage (between solver steps, ODE evaluations, raster rows) when the client cancelled."""


def localizability(model, emb: torch.Tensor, samples: torch.Tensor,
                   check: Callable[[], None] | None = None) -> tuple[np.ndarray, str]:
    """The paper's localizability: mean log-density (nats/sr) of the model's own samples / (4 pi ln 2).

    Estimated on LOCALIZABILITY_SAMPLES of each photo's samples with the engine's exact
    likelihood (probability-flow ODE with the exact divergence), integrated with a fixed-step
    midpoint rule of LOCALIZABILITY_STEPS steps instead of dopri5 to bound the CPU time; the
    density is taken without guidance, as in the reference.  Returns (values (E,), method).

    One photo at a time: the matmuls' blocking depends on the batch, and a photo's localizability must not
    depend on which photos shared its batch (it differed by about 1e-7 between a batch of 4 and alone).
    `check` is called before every evaluation of the field (and may raise Cancelled).
    """
    from ..engine import likelihood

    pts = samples[:, :LOCALIZABILITY_SAMPLES]
    values = []
    for row in range(emb.shape[0]):
        logp = likelihood.log_density(model.flow, emb[row : row + 1], pts[row : row + 1], method="midpoint",
                                      steps=LOCALIZABILITY_STEPS, on_step=check)
        values.append(likelihood.localizability(logp).cpu().numpy())
    return np.concatenate(values), "exact-midpoint"


def run_unit(
    model,
    device: str,
    request_names: list[str],
    request_blobs: list[bytes],
    indices: list[int],
    options: dict[str, Any],
    emit: Emit,
    is_cancelled: Callable[[], bool],
) -> None:
    """Process the photos `indices` of a request, emitting progress and one result per photo."""
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
        _run(model, device, request_names, request_blobs, indices, options, emit, pending, fail, cancel_rest, check)
    except Cancelled:
        cancel_rest()
    except Exception as exc:  # noqa: BLE001 - a batch-wide failure fails its photos, never the server
        log.error("batch failed:\n%s", traceback.format_exc())
        for i in list(pending):
            fail(i, P.E_INTERNAL, f"{type(exc).__name__}: {exc}")


def _run(model, device, request_names, request_blobs, indices, options, emit, pending, fail, cancel_rest,
         check) -> None:
    """run_unit's stages; `check` raises Cancelled inside a stage, `cancel_rest` answers between them."""
    if options.get("cfg") is None:  # the summary and the raster's tags say which guidance ran
        options = {**options, "cfg": model.distribution_cfg}
    timings: dict[int, dict[str, float]] = {i: {} for i in indices}
    images, exif, good = [], {}, []
    warnings: dict[int, list[str]] = {}  # the photo is not the kind of view the model was made for
    for i in indices:
        if cancel_rest():
            return
        emit("progress", "decode", i, request_names[i])
        t = time.perf_counter()
        try:
            image = decode_image(request_blobs[i], max_bytes=P.MAX_IMAGE_BYTES)
        except ImageError as exc:
            fail(i, P.E_BAD_IMAGE, str(exc))
            continue
        gps, exif_problem = exif_gps(request_blobs[i])
        exif[i] = (gps.lat, gps.lon) if gps is not None else None
        try:
            warnings[i] = photo_warnings(model.name, getattr(model, "manifest", None), request_blobs[i], image.size)
        except Exception:  # noqa: BLE001 - a warning's own trouble must never fail the photo
            log.exception("model-fit warnings of %s", request_names[i])
            warnings[i] = []
        if exif_problem:  # out of range or unreadable GPS: never fails the photo, but says why it is ignored
            warnings[i].append(exif_problem)
        images.append(image)
        good.append(i)
        timings[i]["decode"] = time.perf_counter() - t
    if not good or cancel_rest():
        return

    @contextlib.contextmanager
    def batch_stage(stage: str):
        """A stage run once for the whole batch: announce it, then share its time among the photos."""
        emit("progress", stage, None, None)
        t = time.perf_counter()
        yield
        per = (time.perf_counter() - t) / len(good)
        for i in good:
            timings[i][stage] = per

    with batch_stage("embed"):
        embed = getattr(model, "embed", None) or model.encoder.embed
        # One photo at a time: the encoder's convolutions round differently in a batch (about 5e-7), and a
        # photo's result must not depend on which photos shared its batch.  Cancel is checked between photos.
        rows = []
        for image in images:
            check()
            rows.append(embed([image]))
        emb = torch.cat(rows).to(model.device)
    if cancel_rest():
        return

    from ..engine.sampling import sample, supported_precision

    precision = supported_precision(options["precision"], model.device)
    with batch_stage("sample"):
        n = options["samples"]
        x0 = start_points(n, options["seed"])
        kw = {"steps": options["steps"], "solver": options["solver"], "precision": precision}
        m = min(P.GUESS_SAMPLES, n)
        # Photo by photo, for the same reason as the embeddings: in fp32 the network's matmuls round
        # differently for a batch of photos than for one, and the samples must not depend on the batch.
        drawn, guessed = [], []
        for row in range(emb.shape[0]):
            one = emb[row : row + 1]
            drawn.append(sample(model.flow, one, n, cfg=options["cfg"], x0=x0, on_step=check, **kw))
            guessed.append(sample(model.flow, one, m, cfg=P.GUESS_CFG, x0=x0[:m], on_step=check, **kw))
        samples, guess = torch.cat(drawn), torch.cat(guessed)
    if cancel_rest():
        return

    with batch_stage("localizability"):
        loc, loc_method = localizability(model, emb, samples, check)
    if cancel_rest():
        return

    samples_np = samples.float().cpu().numpy()
    guess_np = guess.float().cpu().numpy()
    for row, i in enumerate(good):
        if cancel_rest():
            return
        name = request_names[i]

        def on_stage(stage: str, i: int = i, name: str = name) -> None:
            check()
            emit("progress", stage, i, name)

        try:
            products = compute_products(
                samples_np[row], guess_np[row], options["resolution"], options["levels"],
                options["top_k"], options["crop"], exif[i], on_stage, check,
            )
            timings[i].update(products.timings)
            on_stage("write")
            t = time.perf_counter()
            tags = {
                "model": model.name, "encoder": model.encoder_name, "solver": options["solver"],
                "steps": options["steps"], "precision": precision, "cfg": options["cfg"],
                "samples": options["samples"],
                "seed": options["seed"], "software_version": __version__,
                "kernel": KERNEL_NAME, "kernel_kappa": f"{products.raster.kappa:.6g}",
            }
            tiff, gpkg = write_products(products, float(loc[row]), tags)
            timings[i]["write"] = time.perf_counter() - t
            summary = {
                "model": model.name,
                "encoder": model.encoder_name,
                "device": device,
                "software_version": __version__,
                "options": options,
                **summary_fields(products, float(loc[row])),
                "localizability_method": loc_method,
                "warnings": warnings.get(i, []),
                "timings": {k: round(v, 4) for k, v in timings[i].items()},
            }
            emit("result", i, P.STATUS_OK, summary, None, [tiff, gpkg])
            pending.remove(i)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - one photo fails alone
            log.error("photo %s failed:\n%s", name, traceback.format_exc())
            fail(i, P.E_INTERNAL, f"{type(exc).__name__}: {exc}")
