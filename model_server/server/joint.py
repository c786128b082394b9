"""The combined map of a `joint` request: its photos' maps kept as they are made, multiplied once the
last photo is done, then written like a photo's result (the `joint` message).

Runs in the worker thread, as the request's last unit of work (scheduler.FairQueue.put), so every photo of
the request has been through run_photo when it starts; a cancel stops it between stages.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoplonk_service import protocol as P

from .. import __version__
from ..products.aoi import aoi_mask, aoi_weights
from ..products.claims import Claim
from ..products.grid import Grid
from ..products.joint import JOINT_ALPHA, JointAccumulator, contributions, joint_exponent, map_localizability
from ..products.maps import apply_prior
from ..products.report import map_products, summary_fields, write_products
from .pipeline import Cancelled, area_of_interest

log = logging.getLogger("geoplonk.server")

Emit = Callable[..., None]
METHOD = ("product of the photos' kernel density maps (each with its 1e-4 uniform floor) raised to the power "
          f"n^-{JOINT_ALPHA:g} for n photos, renormalised on the sphere; regions by the product's own mass")


@dataclass
class JointState:
    """What a joint request keeps between its units: the running product and each photo's EXIF position."""

    grid: Grid
    accumulator: JointAccumulator = field(init=False)
    exif: list[Claim] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.accumulator = JointAccumulator(self.grid)

    def collect(self, index: int, name: str, products, draws: np.ndarray, gps: tuple[float, float] | None) -> None:
        with self.lock:
            self.accumulator.add(index, name, products.own_map, draws)
            if gps is not None:
                self.exif.append(Claim(gps[0], gps[1], "exif", f"EXIF GPS of {name}"))


def run_joint(model, device: str, state: JointState, names: list[str], options: dict[str, Any], emit: Emit,
              is_cancelled: Callable[[], bool]) -> None:
    """Emit ("joint", status, summary, error, blobs) once: ok, failed (no photo located) or cancelled."""
    try:
        _run_joint(model, device, state, names, options, emit, is_cancelled)
    except Cancelled:
        emit("joint", P.STATUS_CANCELLED, None, {"code": P.E_CANCELLED, "message": "cancelled by the client"}, None)
    except Exception as exc:  # noqa: BLE001 - the joint map fails alone, never the server
        log.error("joint map failed:\n%s", traceback.format_exc())
        emit("joint", P.STATUS_FAILED, None, {"code": P.E_INTERNAL, "message": f"{type(exc).__name__}: {exc}"},
             None)


def _run_joint(model, device, state, names, options, emit, is_cancelled) -> None:
    from ..engine.sampling import supported_precision

    def check() -> None:
        if is_cancelled():
            raise Cancelled

    def on_stage(label: str) -> None:
        check()
        emit("progress", label, None, None)

    parts = state.accumulator.parts
    if not parts:
        emit("joint", P.STATUS_FAILED, None, {"code": P.E_BAD_IMAGE,
                                              "message": "no photo of the request could be located"}, None)
        return
    t = time.perf_counter()
    on_stage("joint")
    guidance = model.guidance
    options = {**options, "precision": supported_precision(options["precision"], model.device)}  # what the photos ran
    if options.get("cfg") is None and not guidance.needs_land_share:  # else each photo's own w (run_photo)
        options = {**options, "cfg": guidance.cfg}
    pmap = state.accumulator.combined()
    aoi = area_of_interest(options)
    aoi_fields = None
    if aoi is not None:
        mask = aoi_mask(aoi.geometry, state.grid)
        prior_mass = float(pmap.raster.prob[mask].sum())
        pmap, _ = apply_prior(pmap, aoi_weights(mask, aoi.outside_weight), None)
        aoi_fields = aoi.summary(state.grid, mask, prior_mass)
    timings = {"joint": time.perf_counter() - t}
    claims = [Claim(c["lat"], c["lon"], c["source"], c["label"]) for c in options.get("claims") or []]
    if options.get("claim_exif"):
        claims += state.exif
    products = map_products(pmap, options["levels"], options["top_k"], options["crop"], None, None, on_stage,
                            claims=claims, timings=timings)
    products.aoi = aoi_fields
    localizability = map_localizability(pmap)
    check()
    emit("progress", "write", None, None)
    t = time.perf_counter()
    cfg = options["cfg"] if options.get("cfg") is not None else f"each photo's, {guidance.describe()}"
    tags = {"model": model.name, "encoder": model.encoder_name, "solver": options["solver"],
            "steps": options["steps"], "precision": options["precision"], "cfg": cfg, "samples": options["samples"],
            "seed": options["seed"],
            "software_version": __version__, "joint_photos": str(len(parts)), "kernel": METHOD,
            "kernel_kappa": f"{products.raster.kappa:.6g}"}
    tiff, gpkg = write_products(products, localizability, tags)
    combined = {p.index for p in parts}
    summary = {
        "model": model.name, "model_sha256": getattr(model, "weights_sha256", None), "encoder": model.encoder_name,
        "device": device, "software_version": __version__, "options": options,
        "joint": {
            "method": METHOD,
            "exponent": joint_exponent(len(parts)),
            "photos": [{"index": p.index, "name": p.name} for p in sorted(parts, key=lambda p: p.index)],
            "left_out": [{"index": i, "name": n} for i, n in enumerate(names) if i not in combined],
            "contributions": sorted(contributions(pmap, products.best, parts), key=lambda c: c["index"]),
        },
        **summary_fields(products, localizability),
        "localizability_method": "the product map's mean log-density (negative entropy) / (4 pi ln 2)",
        "warnings": products.warnings + ([f"{len(names) - len(combined)} photo(s) could not be located and are "
                                          "left out of the joint map"] if len(combined) < len(names) else []),
        "timings": {**{k: round(v, 4) for k, v in products.timings.items()},
                    "write": round(time.perf_counter() - t, 4)},
    }
    emit("joint", P.STATUS_OK, summary, None, [tiff, gpkg])
