"""How well the density raster matches the exact likelihood: NLL of held-out true locations.

Trains a small conditional flow on a synthetic task (photo codes -> locations drawn from
vMF clusters of different spreads, some bimodal) unless --model and --data are given, then,
for held-out (embedding, true location) pairs, compares
  exact : -log p(x_true) from engine.likelihood.log_density (probability-flow ODE; rk4, 64 steps
          by default: dopri5 at 1e-5 took ~100 s per point here)
  kde   : -log of the samples' vMF kernel density at x_true (the raster's formula, no grid)
  raster: -log of the raster cell's density (probability / cell solid angle)
all in nats per steradian (uniform = log 4 pi = 2.531).  Prints the figures; asserts nothing.

  .venv/server/bin/python benchmarks/bench_raster_nll.py [--model DIR --data held_out.npz] [--record PATH]
  (held_out.npz: `emb` (N, cond_dim) float32 as the flow expects, `latlon` (N, 2) degrees)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_server.engine.likelihood import log_density  # noqa: E402
from model_server.engine.network import FlowConfig, GeoAdaLNMLP  # noqa: E402
from model_server.engine.sampling import sample  # noqa: E402
from model_server.engine.sphere import normalize  # noqa: E402
from model_server.engine.training import train_flow  # noqa: E402
from model_server.geodesy import latlon_to_xyz  # noqa: E402
from model_server.products.density import kde_raster  # noqa: E402
from model_server.products.grid import Grid  # noqa: E402
from model_server.products.kde import kde_log_density  # noqa: E402


def synthetic_task(n_codes: int, cond_dim: int, seed: int):
    """Each code: 1 or 2 cluster centres and a spread; returns a sampler of (emb, xyz)."""
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(n_codes, cond_dim)).astype(np.float32)
    centres = [latlon_to_xyz(rng.uniform(-60, 70, 1 + (k % 3 == 0)), rng.uniform(-180, 180, 1 + (k % 3 == 0)))
               for k in range(n_codes)]
    spreads = np.deg2rad(rng.uniform(2, 12, n_codes))

    def draw(n: int, rng: np.random.Generator):
        k = rng.integers(0, n_codes, n)
        out = np.empty((n, 3))
        for i, code in enumerate(k):
            c = centres[code][rng.integers(0, len(centres[code]))]
            v = rng.normal(size=3) * spreads[code]
            v -= v.dot(c) * c  # tangent Gaussian, then exp map
            norm = np.linalg.norm(v)
            out[i] = np.cos(norm) * c + np.sin(norm) * v / max(norm, 1e-12)
        emb = codes[k] + 0.05 * rng.normal(size=(n, cond_dim)).astype(np.float32)
        return torch.from_numpy(emb.astype(np.float32)), torch.from_numpy(out.astype(np.float32))

    return draw


def train(draw, cond_dim: int, steps: int, seed: int) -> GeoAdaLNMLP:
    """The project's own trainer on a large fixed draw of the synthetic task."""
    emb, xyz = draw(min(200_000, 512 * steps), np.random.default_rng(seed + 1))
    config = FlowConfig(cond_dim=cond_dim, depth=3, dim=128)

    def report(step: int, total: int, loss: float) -> None:
        if step % 500 == 0 or step == total:
            print(f"  train step {step}: loss {loss:.4f}", flush=True)

    return train_flow(emb, xyz, config, steps=steps, batch_size=512, seed=seed, on_step=report)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a model folder (else a synthetic task is trained)")
    ap.add_argument("--data", help="held-out .npz with emb and latlon (with --model)")
    ap.add_argument("--n", type=int, default=100, help="held-out photos")
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=32, help="sampling steps")
    ap.add_argument("--train-steps", type=int, default=3000)
    ap.add_argument("--resolution", type=float, default=0.25)
    ap.add_argument("--exact-method", default="rk4", help="ODE method of the exact likelihood (dopri5 is very slow)")
    ap.add_argument("--exact-steps", type=int, default=64, help="steps of a fixed-step exact method")
    ap.add_argument("--save", help="with the synthetic task: keep the trained flow in this folder / reuse it")
    ap.add_argument("--record", metavar="PATH",
                    help="also write the figures as JSON (a file, or a folder: benchmarks/results/); "
                         "then run benchmarks/render_doc.py")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.model:
        from model_server.engine.checkpoint import load_flow

        net = load_flow(args.model)
        data = np.load(args.data)
        emb = torch.from_numpy(data["emb"][: args.n].astype(np.float32))
        latlon = data["latlon"][: args.n]
        truth = torch.from_numpy(latlon_to_xyz(latlon[:, 0], latlon[:, 1]).astype(np.float32))
    else:
        draw = synthetic_task(24, 16, seed=0)
        saved = Path(args.save) / "flow.pt" if args.save else None
        if saved is not None and saved.is_file():
            net = GeoAdaLNMLP(FlowConfig(cond_dim=16, depth=3, dim=128))
            net.load_state_dict(torch.load(saved))
            net.eval()
        else:
            t = time.perf_counter()
            net = train(draw, 16, args.train_steps, seed=0)
            print(f"trained a dim-128 depth-3 flow in {time.perf_counter() - t:.0f} s")
            if saved is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                torch.save(net.state_dict(), saved)
        emb, truth = draw(args.n, np.random.default_rng(123))
    grid = Grid.global_grid(args.resolution)
    nll = {"exact": [], "kde": [], "raster": []}
    t_exact = t_raster = 0.0
    for i in range(len(emb)):
        e = emb[i : i + 1]
        x = truth[i : i + 1]
        t = time.perf_counter()
        exact = {"method": args.exact_method, "steps": args.exact_steps, "atol": 1e-5, "rtol": 1e-5}
        nll["exact"].append(-log_density(net, e, x[None], **exact).item())
        t_exact += time.perf_counter() - t
        t = time.perf_counter()
        s = sample(net, e, args.samples, steps=args.steps, generator=torch.Generator().manual_seed(i))[0].numpy()
        raster = kde_raster(s, grid)
        t_raster += time.perf_counter() - t
        xn = normalize(x).numpy().astype(np.float64)
        nll["kde"].append(-kde_log_density(xn, s, raster.sample_kappas(len(s)), raster.uniform_weight)[0])
        lat = math.degrees(math.asin(float(xn[0, 2])))
        lon = math.degrees(math.atan2(float(xn[0, 1]), float(xn[0, 0])))
        nll["raster"].append(-float(raster.log_density_at(np.array([lat]), np.array([lon]))[0]))
        if (i + 1) % 10 == 0:
            ex_m, ra_m = np.mean(nll['exact']), np.mean(nll['raster'])
            print(f"  {i + 1} photos: exact {ex_m:.3f}, raster {ra_m:.3f}", flush=True)
    ex, kd, ra = (np.asarray(nll[k]) for k in ("exact", "kde", "raster"))
    print(f"held-out photos: {len(ex)}, samples {args.samples}, steps {args.steps}, raster {args.resolution} deg")
    print(f"NLL exact  (nats/sr): mean {ex.mean():.3f}  median {np.median(ex):.3f}")
    print(f"NLL kde    (nats/sr): mean {kd.mean():.3f}  median {np.median(kd):.3f}")
    print(f"NLL raster (nats/sr): mean {ra.mean():.3f}  median {np.median(ra):.3f}")
    print(f"gap raster - exact: mean {np.mean(ra - ex):+.3f} nats ({np.mean(ra - ex) / math.log(2):+.3f} bits), "
          f"median {np.median(ra - ex):+.3f}, 90th pct {np.percentile(ra - ex, 90):+.3f}")
    print(f"gap raster - kde (gridding alone): mean {np.mean(ra - kd):+.4f} nats")
    print(f"time per photo: exact likelihood of 1 point {t_exact / len(ex):.2f} s, "
          f"sampling + raster {t_raster / len(ex):.2f} s")
    if args.record:
        from render_doc import write_record

        figures = [{"what": f"{label}, {stat} NLL", "value": f"{fn(v):.3f}", "unit": "nats/sr"}
                   for label, v in (("exact likelihood", ex), ("kernel density of the samples at the exact point", kd),
                                    ("raster cell", ra))
                   for stat, fn in (("mean", np.mean), ("median", np.median))]
        figures += [{"what": f"gap raster - exact, {stat}", "value": f"{fn(ra - ex):+.3f}", "unit": "nats"}
                    for stat, fn in (("mean", np.mean), ("median", np.median),
                                     ("90th percentile", lambda d: np.percentile(d, 90)))]
        figures += [{"what": "gap raster - kernel density (gridding alone), mean", "value": f"{np.mean(ra - kd):+.4f}",
                     "unit": "nats"},
                    {"what": "exact likelihood of 1 point, per photo", "value": round(t_exact / len(ex), 2),
                     "unit": "s"},
                    {"what": "sampling + raster, per photo", "value": round(t_raster / len(ex), 2), "unit": "s"}]
        task = f"model {args.model}" if args.model else "synthetic task"
        write_record(args.record, "bench_raster_nll", f"{task}, {len(ex)} held-out photos", figures, notes=[
            f"{args.samples} samples, {args.steps} sampling steps, {args.resolution} deg raster; exact likelihood: "
            f"{args.exact_method} (--exact-steps {args.exact_steps} for a fixed-step method)."])


if __name__ == "__main__":
    main()
