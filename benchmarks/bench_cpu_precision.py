"""Which precision the server samples in on this CPU, and what each would cost, natively and as an AVX2-only CPU.

Most laptops have AVX2 and no bf16 dot products. There oneDNN has no bf16 matmul and torch's fallback is slower
than fp32, so the server samples in fp32 (`sampling.supported_precision`). This times one photo's distribution
draws on the default model (1,024 draws, the server's sampler, the model's w for land-looking photos) through
  forward()          the module itself in fp32 (the fp32 path before network.FastVelocity)
  FastVelocity fp32  the server's fp32 path
  FastVelocity bf16  the server's bf16 path (what it ran for every "bf16" request before it checked the CPU)
in a fresh process per CPU setting: as it is, and limited to AVX2 (oneDNN's ONEDNN_MAX_CPU_ISA, MKL's
MKL_ENABLE_INSTRUCTIONS and ATen's ATEN_CPU_CAPABILITY; the limits must be set before torch loads). Best of
--repeats rounds, the variants in turn, after a warm-up round; the ratios are within one process.

  .venv/server/bin/python benchmarks/bench_cpu_precision.py [--repeats 5] [--record benchmarks/results/]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
SETTINGS = {"as it is": {}, "limited to AVX2": AVX2_ONLY}


def measure(repeats: int) -> dict:
    """In this process: seconds per variant and the server's choice for a "bf16" request."""
    import torch

    sys.path.insert(0, str(ROOT))
    from geoplonk_service import protocol as P
    from model_server.engine.model import load_model
    from model_server.engine.network import fast_velocity
    from model_server.engine.runtime import configure_cpu_math
    from model_server.engine.sampling import start_points, supported_precision
    from model_server.engine.solvers import get_solver, guided_velocity

    configure_cpu_math()  # as sample() does: the main thread, where forward() runs, flushes denormals too
    model = load_model(None, device="cpu")
    flow, options = model.flow.eval(), P.DEFAULT_OPTIONS
    w = model.guidance.for_land_share(1.0)
    emb = torch.randn(1, 1, flow.config.cond_dim, generator=torch.Generator().manual_seed(0))
    x0 = start_points(options["samples"], options["seed"])[None]
    solve = get_solver(options["solver"])
    variants = {"forward() fp32": flow, "FastVelocity fp32": fast_velocity(flow, torch.float32),
                "FastVelocity bf16": fast_velocity(flow, torch.bfloat16)}
    velocities = {name: guided_velocity(network, emb, w) for name, network in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    ends = {}
    for _ in range(repeats + 1):  # round robin, as a shared machine's speed drifts; the first round warms up
        for name, velocity in velocities.items():
            start = time.perf_counter()
            with torch.inference_mode():
                ends[name] = solve(velocity, x0.clone(), options["steps"], None)
            times[name].append(time.perf_counter() - start)
    seconds = {name: min(t[1:]) for name, t in times.items()}
    gap = (ends["FastVelocity fp32"] - ends["forward() fp32"]).abs().max().item()
    return {"seconds": seconds, "server_precision": supported_precision("bf16", "cpu"), "fp32_gap": gap,
            "capability": torch.backends.cpu.get_cpu_capability(), "w": w, "model": model.name,
            "sampler": f"{options['samples']} draws, {options['solver']} {options['steps']} steps"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--record", metavar="PATH", help="also write the figures as JSON (a file, or a folder)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.repeats)))
        return
    runs = {}
    for label, limits in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k not in AVX2_ONLY} | limits
        out = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(args.repeats)], env=env,
                             capture_output=True, text=True, check=True)
        runs[label] = json.loads(out.stdout.strip().splitlines()[-1])
    figures = []
    for label, run in runs.items():
        base = run["seconds"]["forward() fp32"]
        print(f"{label} (ATen {run['capability']}): a \"bf16\" request runs in {run['server_precision']}; "
              f"FastVelocity fp32 ends within {run['fp32_gap']:.1e} of forward()'s")
        for name, s in run["seconds"].items():
            chosen = name == f"FastVelocity {run['server_precision']}"
            mark = "  (the server)" if chosen else ""
            print(f"  {name:18s} {s:7.3f} s  {base / s:5.2f}x forward() fp32's speed{mark}")
            figures.append({"what": f"{label}: {name}", "value": round(s, 3), "unit": "s",
                            "compare": f"{base / s:.2f}x the speed of forward() fp32",
                            "note": "the server's choice for a \"bf16\" request" if chosen else None})
    if args.record:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from render_doc import write_record

        run = runs["as it is"]
        write_record(args.record, "bench_cpu_precision",
                     "The sampler's precisions on this CPU and as an AVX2-only CPU: one photo's draws", figures,
                     device="cpu",
                     conditions=f"{run['model']} at w = {run['w']:g}, {run['sampler']}, one photo; best of "
                                f"{args.repeats}; AVX2 limits: " + " ".join(f"{k}={v}" for k, v in AVX2_ONLY.items()),
                     notes=[f"{label}: a \"bf16\" request runs in {r['server_precision']}; FastVelocity fp32's "
                            f"endpoints within {r['fp32_gap']:.1e} of forward()'s" for label, r in runs.items()])


if __name__ == "__main__":
    main()
