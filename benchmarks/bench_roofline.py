"""Sampling throughput at the published PLONK size as a share of this machine's bf16 matmul roofline.

The roofline is the fastest bf16 matmul of the same run: 2048 x 2048 x 2048 products on all cores (intra-op
threads), or one 1024 x 2048 x 2048 product per core at once on the row workers, whichever is faster; they are
timed in the same rounds as the sampler, since the speed of a shared machine changes from second to second.
The sampler's FLOPs are counted from the network's matmuls (flop_count). Variants, timed round robin
(best of --repeats): bf16 by autocast over the fp32 module (the engine's bf16 path before network.FastVelocity),
the engine's bf16 and fp32 samplers, and with --reference the authors' sampler.
Run: .venv/server/bin/python benchmarks/bench_roofline.py [--steps 32] [--cfg 0] [--reference] [--record PATH]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_solvers import best_times, random_plonk  # noqa: E402
from suite.engine import reference_sampler  # noqa: E402

from model_server.engine.network import FlowConfig  # noqa: E402
from model_server.engine.runtime import configure_cpu_math, row_workers  # noqa: E402
from model_server.engine.sampling import sample  # noqa: E402
from model_server.engine.solvers import euler_sphere, guided_velocity  # noqa: E402
from model_server.engine.sphere import uniform_sphere  # noqa: E402


def flop_count(config: FlowConfig, n: int, steps: int, cfg: float = 0.0, images: int = 1) -> dict:
    """FLOPs (2 per multiply-add) of the network's matmuls to draw n samples for each of `images` photos.

    Per sample and evaluation: initial_mapper 3 d, the blocks' MLPs depth * 2 * d * (e d), final_linear 3 d.
    Per photo and evaluation (the modulations depend on the image and gamma only): cond_mapper c d, the time
    embedder (d / 4) d + d d, the blocks' ada_map depth * d * 3 d, final_adaln d * 2 d. Guidance (cfg != 0)
    doubles both: the conditional and unconditional fields are evaluated on a doubled batch.
    """
    d, e, c, depth, i = config.dim, config.expansion, config.cond_dim, config.depth, config.input_dim
    per_sample = 2 * (i * d + depth * 2 * d * e * d + d * i)
    per_image = 2 * (c * d + (d // 4) * d + d * d + depth * d * 3 * d + d * 2 * d)
    doubled = 2 if cfg != 0 else 1
    total = steps * doubled * images * (n * per_sample + per_image)
    return {"per_sample": per_sample, "per_image": per_image, "total": total}


def matmul_runs(dtype: torch.dtype, seconds: float = 0.3) -> dict:
    """{way: (run, flops)}: square matmuls on all cores at once (intra-op threads), and one product per core on
    the row workers, each repeated to last about `seconds`."""
    gen = torch.Generator().manual_seed(0)
    cores = torch.get_num_threads()
    a = torch.randn(2048, 2048, generator=gen).to(dtype)
    rows = a[: 2048 // max(1, cores)].contiguous()
    workers = row_workers(cores) if cores > 1 else None

    def intra():
        return a @ a

    def per_core():
        return workers.map(torch.mm, [(rows, a)] * cores)

    runs = {"intra-op": (intra, 2 * 2048**3)}
    if workers is not None:
        runs["row workers"] = (per_core, 2 * rows.shape[0] * 2048 * 2048 * cores)
    out = {}
    for way, (func, flops) in runs.items():
        func()
        start = time.perf_counter()
        func()
        count = max(1, round(seconds / max(time.perf_counter() - start, 1e-6)))
        out[way] = (lambda func=func, count=count: [func() for _ in range(count)], flops * count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--cfg", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3, help="round-robin rounds (best of)")
    parser.add_argument("--reference", action="store_true", help="also time the authors' sampler (fp32)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--record", metavar="PATH", help="also write the figures as JSON (a file, or a folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configure_cpu_math()
    config = FlowConfig()
    flow = random_plonk(smooth=False)
    emb = torch.randn(1, config.cond_dim, generator=torch.Generator().manual_seed(1))
    x0 = uniform_sphere(args.n, generator=torch.Generator().manual_seed(0))
    flops = flop_count(config, args.n, args.steps, args.cfg)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.n} samples x {args.steps} Euler steps, "
          f"cfg {args.cfg:g}: {flops['total'] / 1e12:.3f} TFLOP ({flops['per_sample'] / 1e6:.3f} MFLOP per sample "
          f"and {flops['per_image'] / 1e6:.3f} per photo, per evaluation)")

    def autocast_bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            velocity = guided_velocity(flow, emb.unsqueeze(1), args.cfg)
            return euler_sphere(velocity, x0.unsqueeze(0).clone(), args.steps)

    variants = {
        "bf16, autocast (before)": autocast_bf16,
        "bf16, FastVelocity (after)": lambda: sample(flow, emb, args.n, steps=args.steps, x0=x0, cfg=args.cfg,
                                                    precision="bf16"),
        "fp32, FastVelocity": lambda: sample(flow, emb, args.n, steps=args.steps, x0=x0, cfg=args.cfg),
    }
    if args.reference:
        run = reference_sampler(flow, "cpu")
        if run is not None:
            variants["the authors' sampler, fp32"] = lambda: run(x0, emb, args.steps, args.cfg)
    dtypes = (("bf16", torch.bfloat16), ("fp32", torch.float32))
    roof = {f"{name} matmul, {way}": (func, flops) for name, dtype in dtypes
            for way, (func, flops) in matmul_runs(dtype).items()}
    funcs = {**{key: func for key, (func, _) in roof.items()}, **variants}
    for func in funcs.values():
        func()
    best = best_times(funcs, args.repeats)
    seconds = {name: best[name] for name in variants}
    rates = {key: flops / best[key] / 1e9 for key, (_, flops) in roof.items()}
    peaks = {name: max(rate for key, rate in rates.items() if key.startswith(name)) for name in ("bf16", "fp32")}
    print("\nroofline (the fastest matmul of the run):")
    for name in ("bf16", "fp32"):
        ways = ", ".join(f"{key.split(', ')[1]} {rate:.0f}" for key, rate in rates.items() if key.startswith(name))
        print(f"  {name}: {peaks[name]:.0f} GFLOP/s ({ways})")
    figures = [{"what": f"{name} matmul roofline", "value": round(peaks[name]), "unit": "GFLOP/s"}
               for name in ("bf16", "fp32")]
    print("\nsampling, seconds per photo and share of the roofline of its precision:")
    for name, sec in seconds.items():
        rate = flops["total"] / sec / 1e9
        peak = peaks["bf16" if name.startswith("bf16") else "fp32"]
        share = f"{rate:.0f} GFLOP/s, {rate / peak:.0%} of the {'bf16' if name.startswith('bf16') else 'fp32'} roofline"
        print(f"  {name:<28} {sec:8.3f} s   {share}")
        figures.append({"what": f"{name}, {args.n} samples x {args.steps} steps", "value": round(sec, 3),
                        "unit": "s per photo", "compare": share})
    if not math.isfinite(sum(seconds.values())):
        raise SystemExit("a variant did not run")
    if args.record:
        from render_doc import write_record

        write_record(args.record, "bench_roofline", "Sampling throughput at the PLONK size against the matmul roofline",
                     figures, notes=[f"{torch.get_num_threads()} threads; best of {args.repeats} round-robin rounds; "
                                     f"{flops['total'] / 1e12:.3f} TFLOP per photo counted from the matmuls."])


if __name__ == "__main__":
    main()
