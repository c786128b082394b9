"""Engine speed on the published model size (dim 512, depth 12, cond 1024), random weights.

Prints seconds per photo to draw 1024 samples with 32 Euler steps: ours (fp32, bf16)
against the authors' riemannian_flow_sampler in the same run, and log_density throughput.
Run: .venv/server/bin/python benchmarks/bench_engine.py [--threads N] [--repeats R] [--record benchmarks/results/]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "engine"))

from model_server.engine.likelihood import log_density  # noqa: E402
from model_server.engine.network import FlowConfig, GeoAdaLNMLP  # noqa: E402
from model_server.engine.sampling import sample  # noqa: E402
from model_server.engine.sphere import uniform_sphere  # noqa: E402


def best_of(func, repeats: int) -> float:
    func()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--density-points", type=int, default=128)
    parser.add_argument("--record", metavar="PATH",
                        help="also write the figures as JSON (a file, or a folder: benchmarks/results/); "
                             "then run benchmarks/render_doc.py")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"n={args.n}, steps={args.steps}, best of {args.repeats}")

    config = FlowConfig()
    net = GeoAdaLNMLP(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / p.shape[-1] ** 0.5 if p.dim() > 1 else 0.05))
    net = net.to(device).eval()
    emb = torch.randn(1, config.cond_dim, generator=gen).to(device)
    x0 = uniform_sphere(args.n, generator=gen).to(device)

    results = {}
    for precision in ("fp32", "bf16"):
        results[f"ours {precision}"] = best_of(
            lambda precision=precision: sample(net, emb, args.n, steps=args.steps, x0=x0, precision=precision),
            args.repeats)

    try:
        import plonk_reference

        mlp = plonk_reference.load("models.networks.mlp")
        sampler = plonk_reference.load("models.samplers.riemannian_flow_sampler")
        schedulers = plonk_reference.load("models.schedulers")
        ref = mlp.GeoAdaLNMLP(3, config.dim, config.depth, config.expansion, config.cond_dim)
        ref.load_state_dict(net.state_dict())
        ref = ref.to(device).eval()
        scheduler = schedulers.SigmoidScheduler(start=-7, end=3)

        def run_reference():
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sampler.riemannian_flow_sampler(ref, {"y": x0.clone(), "emb": emb.expand(args.n, -1)},
                                                conditioning_keys="emb", scheduler=scheduler, num_steps=args.steps)

        results["reference fp32"] = best_of(run_reference, args.repeats)
    except ImportError as exc:
        print(f"(reference not available: {exc})")

    for name, sec in results.items():
        print(f"  measured {name}: {sec:.3f} s", flush=True)
    print(f"\nsampling {args.n} points x {args.steps} Euler steps, seconds per photo:")
    reference = results.get("reference fp32")
    figures = []
    for name, sec in results.items():
        ratio = f"  ({reference / sec:.2f}x the reference's speed)" if reference else ""
        print(f"  {name:<16} {sec:8.3f} s{ratio}")
        figures.append({"what": f"sampling, {name}", "value": round(sec, 3), "unit": "s per photo",
                        "compare": ratio.strip(" ()") or None})

    pts = uniform_sphere(args.density_points, generator=gen).to(device)
    print(f"\nlog_density, {args.density_points} points, one photo:")
    for method, kw in (("rk4", {"steps": 16}), ("dopri5", {"atol": 1e-5, "rtol": 1e-5})):
        sec = best_of(lambda method=method, kw=kw: log_density(net, emb, pts, method=method, **kw), 1)
        print(f"  {method:<7} {str(kw):<30} {sec:8.3f} s  = {args.density_points / sec:8.1f} points/s")
        figures.append({"what": f"log_density, {method} {kw}, {args.density_points} points", "value": round(sec, 3),
                        "unit": "s", "compare": f"{args.density_points / sec:.1f} points/s"})
    if args.record:
        from render_doc import write_record

        write_record(args.record, "bench_engine", f"{args.n} samples x {args.steps} Euler steps at the published size",
                     figures, device=str(device), notes=[f"{torch.get_num_threads()} threads, best of {args.repeats}."])


if __name__ == "__main__":
    main()
