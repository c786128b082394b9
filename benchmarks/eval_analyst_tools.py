"""Figures of the analyst tools with the default model (docs/analyst-tools.md):

1. the claim check: on the held-out earth tiles, each tile's true location against a false claim (another
   tile's location, a shuffle that moves every tile); ROC AUC of the credible level the check reports;
2. the joint map: groups of held-out tiles cut around one place (new tiles, centres within --offset-km of a
   place at least --offset-km + 75 km from every training tile), each tile's own map against the group's
   joint map: how often the 90 % region holds the place, and its area.

    nice -n 19 .venv/server/bin/python benchmarks/eval_analyst_tools.py [--data CSV] [--claims 500] [--groups 60]
        [--per-group 3] [--samples 1024] [--resolution 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_server.evaluation.analyst_tools import (  # noqa: E402
    claim_figures,
    claim_levels,
    derangement,
    draw_maps,
    joint_figures,
)
from model_server.photo_guidance import cfgs_for_photos  # noqa: E402

TILES = ROOT / "build" / "earth-tiles"


def tile_cfgs(model, emb: torch.Tensor, args: argparse.Namespace) -> np.ndarray:
    """Each tile's w as the server would choose it for these samples and seed; prints how many took each."""
    cfgs = cfgs_for_photos(model, emb, samples=args.samples, seed=args.seed)
    print(json.dumps({"w": {f"{w:g}": int((cfgs == w).sum()) for w in np.unique(cfgs)}}), flush=True)
    return cfgs


def held_out_tiles(model, data: Path, limit: int) -> tuple[torch.Tensor, np.ndarray]:
    """Embeddings and (lat, lon) of the first `limit` tiles of `data`; its cache (emb-<split>-rot4.npz beside it)
    is filled for tiles it lacks."""
    from model_server.engine.datasets import embed_rows

    emb, photos = embed_rows(data, slice(limit), model.encoder, data.with_name(f"emb-{data.stem}-rot4.npz"))
    return emb.float(), photos.latlon


def offset(lat: float, lon: float, km: float, bearing: float) -> tuple[float, float]:
    """The point km away from (lat, lon) along the bearing (radians from north), on the sphere."""
    from model_server.geodesy import EARTH_RADIUS_KM

    d = km / EARTH_RADIUS_KM
    p1, l1 = math.radians(lat), math.radians(lon)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(bearing))
    l2 = l1 + math.atan2(math.sin(bearing) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), (math.degrees(l2) + 540) % 360 - 180


def group_tiles(model, groups: int, per_group: int, offset_km: float, seed: int):
    """Embeddings of new held-out tiles, per_group around each of `groups` places; the places (lat, lon)."""
    from model_server.data.earth_tiles import distant_centres, load_bmng, random_specs, render_tile

    rng = np.random.default_rng(seed)
    with open(TILES / "train.csv", newline="") as fh:
        train = np.array([[float(r["latitude"]), float(r["longitude"])] for r in csv.DictReader(fh)])
    places = distant_centres(groups, train, rng, min_distance_km=75.0 + offset_km)
    centres = np.array([offset(lat, lon, offset_km * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi))
                        for lat, lon in places for _ in range(per_group)])
    image = load_bmng()
    tiles = [render_tile(image, spec) for spec in random_specs(centres, rng)]
    return model.encoder.embed(tiles), places


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=500, help="held-out tiles for the claim check")
    parser.add_argument("--data", type=Path, default=TILES / "report.csv",
                        help="the claim check's tiles (default: the report split, held out from the committed model)")
    parser.add_argument("--groups", type=int, default=60, help="places for the joint map")
    parser.add_argument("--per-group", type=int, default=3, help="tiles cut around each place")
    parser.add_argument("--offset-km", type=float, default=25.0, help="tile centres within this of the place")
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--resolution", type=float, default=1.0, help="map cell, degrees")
    parser.add_argument("--alphas", type=lambda t: [float(v) for v in t.split(",")], default=[0.0, 0.5, 0.75, 1.0],
                        help="tempering exponents of the joint map to score (products.joint.JOINT_ALPHA)")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()

    from model_server.engine.model import load_model

    torch.manual_seed(args.seed)
    model = load_model(None, device="cpu")
    data = args.data.resolve()
    out: dict = {"model": model.name, "model_sha256": model.weights_sha256,
                 "data": str(data.relative_to(ROOT) if data.is_relative_to(ROOT) else data),
                 "cfg": f"each tile's, as the server chooses it: {model.guidance.describe()}",
                 "samples": args.samples, "resolution": args.resolution}
    t = time.perf_counter()
    if args.claims:
        emb, truth = held_out_tiles(model, data, args.claims)
        maps = draw_maps(model.flow, emb, cfg=tile_cfgs(model, emb, args), samples=args.samples,
                         resolution=args.resolution, seed=args.seed)
        false = truth[derangement(len(truth), np.random.default_rng(args.seed))]
        levels = np.array([claim_levels(pmap, [tuple(truth[i]), tuple(false[i])]) for i, (pmap, _) in
                           enumerate(maps)])
        out["claims"] = asdict(claim_figures(levels[:, 0], levels[:, 1]))
        out["claims"]["seconds"] = round(time.perf_counter() - t, 1)
        print(json.dumps({"claims": out["claims"]}), flush=True)
    t = time.perf_counter()
    if args.groups:
        emb, places = group_tiles(model, args.groups, args.per_group, args.offset_km, args.seed)
        maps = draw_maps(model.flow, emb, cfg=tile_cfgs(model, emb, args), samples=args.samples,
                         resolution=args.resolution, seed=args.seed)
        groups = [list(range(g * args.per_group, (g + 1) * args.per_group)) for g in range(args.groups)]
        truths = [tuple(p) for p in places]
        out["joint"] = {f"alpha {alpha:g}": asdict(joint_figures(maps, groups, truths, alpha))
                        for alpha in args.alphas}
        out["joint"]["offset_km"] = args.offset_km
        out["joint"]["seconds"] = round(time.perf_counter() - t, 1)
        print(json.dumps({"joint": out["joint"]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
