"""Parts 5-7 through a real `geoplonk serve` and the shared client (geoplonk_service.client), as users run it:
one photo stage by stage (the server's summary["timings"]), a batch with its first streamed result, and how the
time grows with samples, photos and raster resolution."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import REPO, common
from .common import DEFAULT, DEFAULT_MODEL, PHOTO, PLONK, Sizes, log, median


def photos(count: int) -> list[tuple[str, bytes]]:
    """`count` photos from samples/, in turn, each under its own name."""
    files = sorted((REPO / "samples").glob("*.jpg"))
    return [(f"{files[i % len(files)].stem}-{i}.jpg", files[i % len(files)].read_bytes()) for i in range(count)]


def plonk_size_model(folder: Path, layers: int = 24) -> Path:
    """A model folder in the published format: the PLONK-size flow (random weights) and, in its `encoder/`
    subfolder, an encoder of StreetCLIP's shape (CLIP ViT-L/14 at 336 px: hidden 1024, 16 heads, patch 14,
    projection 768; `layers` deep, 24 as published; random weights), written by checkpoint.save_model_dir as
    tests/server/conftest.py's make_tiny_model writes its model, the encoder saved as tests/engine/test_encoders.py
    saves its CLIP folders (save_pretrained, with the image processor's config)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.utils import logging as hf_logging

    from model_server.engine.checkpoint import save_model_dir
    from model_server.engine.network import FlowConfig

    from .engine import random_flow

    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=layers,
                              num_attention_heads=16, patch_size=14, image_size=336, projection_dim=768)
    torch.manual_seed(0)
    hf_logging.disable_progress_bar()
    encoder = folder / "streetclip"
    CLIPVisionModel(config).eval().save_pretrained(encoder)
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers 4.x
        from transformers import CLIPImageProcessor as Processor
    Processor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(encoder)
    manifest = {"name": PLONK, "encoder": {"name": "streetclip", "path": "encoder"},
                "description": f"random weights: the PLONK-size flow behind a {layers}-layer CLIP ViT-L/14 @ 336"}
    return save_model_dir(folder / PLONK, random_flow(FlowConfig(), "cpu"), manifest, extra_files={"encoder": encoder})


@contextlib.contextmanager
def served(model: Path):
    """A `geoplonk serve` of `model` on a free port, and a client connected to it."""
    from geoplonk_service.client import GeoPlonkClient
    from geoplonk_service.launcher import start_local_server

    t = time.perf_counter()
    srv = start_local_server(f"{sys.executable} -m model_server.cli serve --model {model}", ready_timeout=900,
                             env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    try:
        with GeoPlonkClient(srv.endpoint, timeout_s=600) as client:
            info = client.info()
            log(f"  server ready in {time.perf_counter() - t:.1f} s, device {info.get('device')}")
            yield client, info
    finally:
        srv.stop()


def one_photo_runs(client, photo: bytes, options: dict, repeats: int, warmup: bool = True) -> dict:
    """One photo `repeats` times after a warm-up photo: median client round trip and median server stages."""
    if warmup:
        result = client.geolocate([("warm-up.jpg", photo)], options)[0]
        if not result.ok:
            raise RuntimeError(f"the warm-up photo failed: {result.error}")
    rows = []
    for i in range(repeats):
        t = time.perf_counter()
        result = client.geolocate([(f"photo-{i}.jpg", photo)], options)[0]
        elapsed = time.perf_counter() - t
        if not result.ok:
            raise RuntimeError(f"the photo failed: {result.error}")
        rows.append((elapsed, result.summary["timings"]))
    stages = {stage: median(r[1].get(stage, 0.0) for r in rows) for stage in rows[0][1]}
    ran = result.summary.get("options", {})
    return {"round_trip": median(r[0] for r in rows), "stages": stages, "repeats": repeats,
            "options": {k: ran.get(k) for k in ("samples", "steps", "solver", "precision", "cfg", "resolution")}}


def batch_runs(client, count: int, options: dict, repeats: int) -> dict:
    """`count` photos in one job, `repeats` times: median seconds, and median time to the first streamed result."""
    batch = photos(count)
    totals, firsts = [], []
    for _ in range(repeats):
        stamps: list[float] = []
        t = time.perf_counter()
        results = client.geolocate(batch, options,
                                   on_result=lambda _r, stamps=stamps: stamps.append(time.perf_counter()))
        totals.append(time.perf_counter() - t)
        firsts.append(min(stamps) - t)
        bad = [r.error for r in results if not r.ok]
        if bad:
            raise RuntimeError(f"{len(bad)} of {count} photos failed: {bad[0]}")
    return {"photos": count, "seconds": median(totals), "first_result": median(firsts), "repeats": repeats}


def scaling_runs(client, photo: bytes, base: dict, sizes: Sizes, raw: dict) -> dict:
    """One photo at other sample counts and raster cell sizes, and jobs of several photos; what parts 5 and 6
    measured already at the same options is taken from there."""
    from geoplonk_service import protocol as P

    single = (raw.get("one_photo") or {}).get(DEFAULT)
    options = {**P.DEFAULT_OPTIONS, **base}
    out: dict[str, list] = {"samples": [], "resolution": [], "photos": []}
    for samples in sizes.scaling_samples:
        got = single if single and samples == options["samples"] else one_photo_runs(
            client, photo, {**base, "samples": samples}, sizes.scaling_repeats)
        out["samples"].append({"value": samples, "round_trip": got["round_trip"],
                               "sample": got["stages"].get("sample"), "density": got["stages"].get("density")})
        log(f"  {samples:,} samples: {got['round_trip']:.3f} s")
    for resolution in sizes.scaling_resolutions:
        got = single if single and resolution == options["resolution"] else one_photo_runs(
            client, photo, {**base, "resolution": resolution}, sizes.scaling_repeats)
        out["resolution"].append({"value": resolution, "round_trip": got["round_trip"],
                                  "density": got["stages"].get("density")})
        log(f"  {resolution:g} deg raster: {got['round_trip']:.3f} s (raster {got['stages'].get('density', 0):.3f} s)")
    batch = raw.get("batch")
    for count in sizes.scaling_photos:
        if count == 1 and single:
            got = {"seconds": single["round_trip"], "first_result": single["round_trip"]}
        elif batch and count == batch["photos"]:
            got = batch
        else:
            got = batch_runs(client, count, base, sizes.scaling_repeats)
        out["photos"].append({"value": count, "seconds": got["seconds"], "first_result": got["first_result"]})
        log(f"  {count} photo{'s' if count != 1 else ''}: {got['seconds']:.2f} s")
    return out


def stages_text(stages: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in stages.items())


def run(sizes: Sizes, parts: set, raw: dict, failures: list) -> None:
    """Run the server parts asked for into raw: the default model's server for parts 5-7, then the PLONK-size
    model's for part 5. A part that raises is printed, listed in failures and skipped."""
    base = dict(sizes.server_options)
    photo = PHOTO.read_bytes()

    def attempt(part: str, label: str, func):
        return common.attempt(raw, failures, part, label, func)

    if parts & {"one_photo", "batch", "scaling"}:
        log(f"\n[server: the {DEFAULT}, {DEFAULT_MODEL.relative_to(REPO)}]")
        try:
            with served(DEFAULT_MODEL) as (client, info):
                raw["server_device"] = info.get("device")
                # Part 5's photo also warms the server up for parts 6 and 7, and is their single-photo figure.
                result = attempt("one_photo", f", {DEFAULT}",
                                 lambda: one_photo_runs(client, photo, base, sizes.server_repeats))
                if result:
                    raw.setdefault("one_photo", {})[DEFAULT] = result
                    log(f"  round trip {result['round_trip']:.3f} s; stages: {stages_text(result['stages'])}")
                if "batch" in parts:
                    result = attempt("batch", "", lambda: batch_runs(client, sizes.batch_photos, base,
                                                                    sizes.batch_repeats))
                    if result:
                        raw["batch"] = result
                        log(f"  {result['photos']} photos in {result['seconds']:.2f} s, first result after "
                            f"{result['first_result']:.2f} s")
                if "scaling" in parts:
                    result = attempt("scaling", "", lambda: scaling_runs(client, photo, base, sizes, raw))
                    if result:
                        raw["scaling"] = result
        except Exception as exc:  # noqa: BLE001 - the server did not start: recorded; the other parts still run
            traceback.print_exc()
            failures.append(f"the server with the {DEFAULT}: {type(exc).__name__}: {exc}")
    if "one_photo" in parts:
        log(f"\n[server: {PLONK} flow, a {sizes.vit_layers}-layer ViT-L/14 encoder, random weights]")
        try:
            with tempfile.TemporaryDirectory(prefix="geoplonk-bench-") as tmp:
                t = time.perf_counter()
                model = plonk_size_model(Path(tmp), sizes.vit_layers)
                log(f"  model folder written in {time.perf_counter() - t:.1f} s")
                with served(model) as (client, _info):
                    result = attempt("one_photo", f", {PLONK}",
                                     lambda: one_photo_runs(client, photo, base, sizes.server_repeats))
                    if result:
                        raw.setdefault("one_photo", {})[PLONK] = result
                        log(f"  round trip {result['round_trip']:.3f} s; stages: {stages_text(result['stages'])}")
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            failures.append(f"the server with the {PLONK} model: {type(exc).__name__}: {exc}")
