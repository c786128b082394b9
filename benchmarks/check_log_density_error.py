#!/usr/bin/env python3
"""How far each likelihood solver's log-density is from a converged one, where the model puts much and little.

The model's own draws sit where its density is high; other photos' draws and uniform points sit where it puts
little, as a truth it misses does. The reference is rk4 in 256 steps (its distance to rk4 in 128 is printed):

    .venv/server/bin/python benchmarks/check_log_density_error.py

Prints the signed error (solver minus reference, nats) per kind of point, and rk4 in 16 steps' by the
reference's log p. Settles which solver scores truths (evaluation.criteria.TRUTH_TOLERANCE).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_server.engine.likelihood import log_density  # noqa: E402
from model_server.engine.model import load_model  # noqa: E402
from model_server.engine.sampling import sample  # noqa: E402
from model_server.engine.sphere import uniform_sphere  # noqa: E402

SOLVES = (("midpoint, 8 steps", {"method": "midpoint", "steps": 8}),
          ("rk4, 8 steps", {"method": "rk4", "steps": 8}),
          ("rk4, 16 steps", {"method": "rk4", "steps": 16}),
          ("rk4, 32 steps", {"method": "rk4", "steps": 32}),
          ("dopri5, 1e-4", {"method": "dopri5", "atol": 1e-4, "rtol": 1e-4}),
          ("dopri5, 1e-5", {"method": "dopri5", "atol": 1e-5, "rtol": 1e-5}))
BANDS = ((0, 99), (-5, 0), (-10, -5), (-15, -10), (-20, -15), (-30, -20), (-99, -30))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "model_server/models/earth-tiles"))
    p.add_argument("--own", type=int, default=48, help="own draws per photo")
    p.add_argument("--others", type=int, default=24, help="draws of another photo, per photo")
    p.add_argument("--uniform", type=int, default=16, help="uniform points per photo")
    p.add_argument("--cfg", type=float, default=0.0, help="guidance w of the density")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    photos = sorted((ROOT / "samples").glob("*.jpg"))
    emb = model.encoder.embed([Image.open(path).convert("RGB") for path in photos])
    generator = torch.Generator().manual_seed(0)
    own = sample(model.flow, emb, args.own, steps=32, cfg=args.cfg, generator=generator).float()
    others = own.roll(1, dims=0)[:, : args.others]
    uniform = uniform_sphere(len(photos) * args.uniform, generator=generator).reshape(len(photos), -1, 3)
    points = torch.cat([own, others, uniform], dim=1)
    kinds = {"own draws": slice(0, args.own), "another photo's draws": slice(args.own, args.own + args.others),
             "uniform points": slice(args.own + args.others, None)}
    print(f"{model.name}, {len(photos)} sample photos, w = {args.cfg:g}: "
          + ", ".join(f"{points[:, s].shape[1]} {k}" for k, s in kinds.items()) + " per photo")

    t = time.perf_counter()
    reference = log_density(model.flow, emb, points, cfg=args.cfg, method="rk4", steps=256)
    half = log_density(model.flow, emb, points, cfg=args.cfg, method="rk4", steps=128)
    print(f"reference rk4 256 ({time.perf_counter() - t:.0f} s with rk4 128); |rk4 128 - rk4 256| max: "
          + ", ".join(f"{k} {(half - reference)[:, s].abs().max():.4f}" for k, s in kinds.items()))
    print("reference log p mean: " + ", ".join(f"{k} {reference[:, s].mean():.2f}" for k, s in kinds.items()))
    print(f"\n| solver | {' | '.join(f'{k}: mean, largest' for k in kinds)} | seconds |")
    print(f"|---|{'---|' * len(kinds)}---|")
    errors = {}
    for name, solve in SOLVES:
        t = time.perf_counter()
        errors[name] = log_density(model.flow, emb, points, cfg=args.cfg, **solve) - reference
        cells = [f"{errors[name][:, s].mean():+.3f}, {errors[name][:, s].abs().max():.3f}" for s in kinds.values()]
        print(f"| {name} | {' | '.join(cells)} | {time.perf_counter() - t:.1f} |")
    error, level = errors["rk4, 16 steps"].flatten(), reference.flatten()
    print("\n| reference log p | points | rk4 16 steps: mean error | median |\n|---|---|---|---|")
    for low, high in BANDS:
        inside = (level >= low) & (level < high)
        if inside.any():
            print(f"| [{low}, {high}) | {int(inside.sum())} | {error[inside].mean():+.3f} | "
                  f"{error[inside].median():+.3f} |")


if __name__ == "__main__":
    main()
