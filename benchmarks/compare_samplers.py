"""What a sampler does to the products, on the tuning tiles: the best guess and the drawn map's coverage.

Endpoint accuracy against cost is part 3 of `make bench` (benchmarks/bench_solvers.py). This measures what an
analyst sees instead, on the default model and the tuning tiles (build/earth-tiles, `make default-model`):
  guess  the best guess from protocol.GUESS_SAMPLES draws at guidance protocol.GUESS_CFG, per sampler: its
         distance to the truth (share within 750 / 2500 km, median, GeoScore), and how far it moves from the
         first sampler's guess
  maps   the server's drawn map (1,024 draws at each photo's guidance, chosen as the server does, 0.25 deg
         raster) per sampler: the share of truths inside its 50 / 90 / 99 % regions and its NLL at the truths
         (evaluation.map_scores)
A sampler is SOLVER:STEPS, or SOLVER:STEPS:full to evaluate the unguided field at every stage instead of holding
it over each step (sampling.sample's hold_unguided).

Run: .venv/server/bin/python benchmarks/compare_samplers.py guess --tiles 0:300 --samplers euler:32,euler:16,rk3:6
     .venv/server/bin/python benchmarks/compare_samplers.py maps --tiles 0:300 --samplers euler:32,rk3:6,rk3:7
     [--data build/earth-tiles/report.csv] [--record docs/results/]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geoplonk_service import protocol as P  # noqa: E402
from model_server.engine.model import load_model  # noqa: E402
from model_server.engine.sampling import sample  # noqa: E402
from model_server.engine.sphere import uniform_sphere  # noqa: E402
from model_server.evaluation.flow_scores import best_guesses  # noqa: E402
from model_server.evaluation.map_scores import score_maps  # noqa: E402
from model_server.geodesy import latlon_distance_km, xyz_to_degrees  # noqa: E402
from model_server.photo_guidance import cfgs_for_photos  # noqa: E402

WORK = ROOT / "build" / "earth-tiles"


def tiles_of(model, data: Path, tiles: slice) -> tuple[torch.Tensor, np.ndarray]:
    """Embeddings (E, cond) and truths (E, 2) degrees of the tiles `tiles` of `data` (a split's CSV of
    build/earth-tiles); its cache emb-SPLIT-rot4.npz is filled for tiles it lacks."""
    from model_server.engine.datasets import embed_rows

    emb, photos = embed_rows(data, tiles, model.encoder, data.parent / f"emb-{data.stem}-rot4.npz")
    return emb.float(), photos.latlon


def compare_guesses(flow, emb, truth, samplers, chunk: int = 25) -> list[dict]:
    x0 = uniform_sphere(P.GUESS_SAMPLES, generator=torch.Generator().manual_seed(3))
    rows, first = [], None
    for solver, steps in samplers:
        start = time.perf_counter()
        guesses = np.concatenate([best_guesses(sample(
            flow, emb[i : i + chunk], P.GUESS_SAMPLES, steps=steps, solver=solver, cfg=P.GUESS_CFG, x0=x0,
            precision=P.DEFAULT_OPTIONS["precision"]).numpy()) for i in range(0, len(emb), chunk)])
        deg = xyz_to_degrees(guesses)
        first = deg if first is None else first
        km, moved = latlon_distance_km(deg, truth), latlon_distance_km(deg, first)
        rows.append({"solver": solver, "steps": steps, "seconds": time.perf_counter() - start,
                     "acc_750km": float(np.mean(km <= 750)), "acc_2500km": float(np.mean(km <= 2500)),
                     "median_km": float(np.median(km)), "geoscore": float(np.mean(5000 * np.exp(-km / 1492.7))),
                     "moved_median_km": float(np.median(moved)), "moved_over_750km": float(np.mean(moved > 750))})
        r = rows[-1]
        print(f"{solver} {steps}: within 750 km {r['acc_750km']:.1%}, 2500 km {r['acc_2500km']:.1%}, median "
              f"{r['median_km']:.0f} km, GeoScore {r['geoscore']:.0f}; from the first sampler's guess: median "
              f"{r['moved_median_km']:.0f} km, {r['moved_over_750km']:.1%} over 750 km ({r['seconds']:.0f} s)",
              flush=True)
    return rows


def compare_maps(flow, emb, truth, samplers, cfg: np.ndarray) -> list[dict]:
    rows, first = [], None
    for solver, steps, hold in samplers:
        start = time.perf_counter()
        scores = score_maps(flow, emb, truth[:, 0], truth[:, 1], cfg=cfg, steps=steps, solver=solver,
                            hold_unguided=hold)
        first = scores.inside if first is None else first
        gained = (scores.inside & ~first).sum(axis=0).tolist()
        lost = (first & ~scores.inside).sum(axis=0).tolist()
        rows.append({"solver": solver, "steps": steps, "hold_unguided": hold,
                     "cfg_counts": {str(w): int((cfg == w).sum()) for w in np.unique(cfg)},
                     "seconds": time.perf_counter() - start,
                     **{f"coverage_{k}": v for k, v in scores.shares().items()},
                     "nll_mean": float(-scores.log_density.mean()),
                     "tiles_gained_per_level": gained, "tiles_lost_per_level": lost})
        r = rows[-1]
        cover = " / ".join(f"{v:.1%}" for k, v in scores.shares().items())
        label = f"{solver} {steps}{'' if hold else ' full'}"
        print(f"{label}: coverage 50/90/99 {cover}, NLL {r['nll_mean']:.4f} nats/sr; against the first "
              f"sampler, truths gained {gained}, lost {lost} ({r['seconds']:.0f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("guess", "maps"))
    parser.add_argument("--data", type=Path, default=WORK / "test.csv", help="the split's CSV (default: the tuning "
                        "tiles, build/earth-tiles/test.csv)")
    parser.add_argument("--tiles", default="0:300", help="tiles START:STOP of --data")
    parser.add_argument("--samplers", default="euler:32,euler:16,rk3:6", help="SOLVER:STEPS[:full],...")
    parser.add_argument("--record", metavar="PATH", help="also write the figures as JSON (a file, or a folder)")
    args = parser.parse_args()
    start, stop = (int(v) for v in args.tiles.split(":"))
    specs = [item.split(":") for item in args.samplers.split(",")]
    if any(len(spec) not in (2, 3) or spec[2:] not in ([], ["full"]) for spec in specs):
        raise SystemExit(f"--samplers: SOLVER:STEPS or SOLVER:STEPS:full, got {args.samplers!r}")
    if args.part == "guess" and any(spec[2:] for spec in specs):
        raise SystemExit("--samplers: the guess draws at guidance 2, where nothing is held; leave out ':full'")
    samplers = [(spec[0], int(spec[1]), not spec[2:]) for spec in specs]
    model = load_model(device="cpu")
    flow = model.flow.eval()
    emb, truth = tiles_of(model, args.data, slice(start, stop))
    print(f"{args.part}: default model, {args.data.name} tiles {start}-{stop - 1} ({len(emb)})", flush=True)
    if args.part == "guess":
        rows = compare_guesses(flow, emb, truth, [(solver, steps) for solver, steps, _ in samplers])
    else:
        rows = compare_maps(flow, emb, truth, samplers, cfgs_for_photos(model, emb))
    if args.record:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
        out = Path(args.record)
        out = out / f"compare_samplers-{args.part}-{stamp}.json" if out.is_dir() else out
        command = "benchmarks/compare_samplers.py " + " ".join(sys.argv[1:])
        out.write_text(json.dumps({"benchmark": "compare_samplers", "part": args.part, "command": command,
                                   "date": stamp, "data": str(args.data), "tiles": [start, stop],
                                   "model_sha256": model.weights_sha256, "rows": rows}, indent=1) + "\n")
        print(f"recorded {out}")


if __name__ == "__main__":
    main()
