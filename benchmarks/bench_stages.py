"""Time per stage for one photo through a real `geoplonk serve` (default options unless told).

Without --model it builds a random flow of the default model's size (dim 256, depth 6, on
EfficientNet-Lite0 features) in a temporary folder: the timings do not depend on the weights.
Sends the photo once to warm up, then --repeat times, and prints the server's stage timings, for each
sampler precision (bf16, the default, against fp32) and each distribution guidance
(--cfg model,0: the model's calibrated w, which costs a second network pass per step, against none).

  .venv/server/bin/python benchmarks/bench_stages.py [--model DIR] [--photo JPG] [--samples 1024] ...
      [--record benchmarks/results/]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from geoplonk_service import protocol as P  # noqa: E402
from geoplonk_service.client import GeoPlonkClient  # noqa: E402
from geoplonk_service.launcher import start_local_server  # noqa: E402


def random_model(folder: Path) -> Path:
    import torch

    from model_server.engine.checkpoint import save_model_dir
    from model_server.engine.network import FlowConfig, GeoAdaLNMLP

    torch.manual_seed(0)
    net = GeoAdaLNMLP(FlowConfig(cond_dim=1280, depth=6, dim=256))
    return save_model_dir(folder / "bench-model", net, {"name": "bench-random", "encoder": "efficientnet-lite0"})


def photo_bytes(path: str | None) -> bytes:
    if path:
        return Path(path).read_bytes()
    from PIL import Image

    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--photo")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--samples", type=int, default=P.SAMPLES.default)
    ap.add_argument("--steps", type=int, default=P.STEPS.default)
    ap.add_argument("--solver", choices=P.SOLVERS, default=P.DEFAULT_SOLVER)
    ap.add_argument("--resolution", type=float, default=P.RESOLUTION.default)
    ap.add_argument("--precision", default="bf16,fp32",
                    help="sampler precisions to time, comma-separated; the first is compared with the others")
    ap.add_argument("--cfg", default="model",
                    help="distribution guidance values, comma-separated; 'model' sends none (the model's calibrated)")
    ap.add_argument("--record", metavar="PATH",
                    help="also write the figures as JSON (a file, or a folder: benchmarks/results/); "
                         "then run benchmarks/render_doc.py")
    args = ap.parse_args()
    variants = [(precision, cfg) for cfg in args.cfg.split(",") for precision in args.precision.split(",")]
    runs: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(random_model(Path(tmp)))
        srv = start_local_server(f"{sys.executable} -m model_server.cli serve --model {model}",
                                 env={"PYTHONPATH": str(REPO)})
        try:
            base = {"samples": args.samples, "steps": args.steps, "solver": args.solver, "resolution": args.resolution}
            data = photo_bytes(args.photo)
            with GeoPlonkClient(srv.endpoint, timeout_s=120) as client:
                info = client.info()
                for precision, cfg in variants:
                    options = {**base, "precision": precision, **({} if cfg == "model" else {"cfg": float(cfg)})}
                    client.geolocate([("warm-up.jpg", data)], options)
                    rows = []
                    for i in range(args.repeat):
                        t = time.perf_counter()
                        result = client.geolocate([(f"photo-{i}.jpg", data)], options)[0]
                        assert result.ok, result.error
                        rows.append((time.perf_counter() - t, result.summary["timings"]))
                    ran = f"{result.summary['options']['cfg']:g}"
                    runs[f"precision {precision}, cfg {ran}" + (" (the model's)" if cfg == "model" else "")] = rows
        finally:
            srv.stop()
    print(f"model {model}, device {info['device']}, options {base}, {args.repeat} runs after a warm-up each")
    figures = []
    for label, rows in runs.items():
        print(f"{label}:")
        for stage in rows[0][1]:
            seconds = statistics.median(r[1][stage] for r in rows)
            print(f"  {stage:15s} {seconds:7.3f} s")
            figures.append({"what": f"{label}: {stage}", "value": round(seconds, 3), "unit": "s"})
        seconds = statistics.median(r[0] for r in rows)
        print(f"  {'round trip':15s} {seconds:7.3f} s (client-side, one photo)")
        figures.append({"what": f"{label}: round trip (client side, one photo)", "value": round(seconds, 3),
                        "unit": "s"})
    first, *others = runs
    for other in others:
        sample_ratio = (statistics.median(r[1]["sample"] for r in runs[first])
                        / statistics.median(r[1]["sample"] for r in runs[other]))
        trip_ratio = statistics.median(r[0] for r in runs[first]) / statistics.median(r[0] for r in runs[other])
        print(f"{first}: sampling {sample_ratio:.2f}x, round trip {trip_ratio:.2f}x the time of {other}")
        figures += [{"what": f"sampling time, {first} over {other}", "value": round(sample_ratio, 2), "unit": "x"},
                    {"what": f"round trip time, {first} over {other}", "value": round(trip_ratio, 2), "unit": "x"}]
    if args.record:
        from render_doc import write_record

        write_record(args.record, "bench_stages", f"One photo through the server, model {Path(model).name}", figures,
                     device=info["device"], notes=[f"Options: {base}; median of {args.repeat} runs after a warm-up."])


if __name__ == "__main__":
    main()
