"""Build datasets: `geoplonk data earth-tiles --out DIR` cuts geotagged tiles from NASA Blue Marble."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    p = sub.add_parser("earth-tiles", help="geotagged JPEG tiles cut from NASA Blue Marble (bmng.jpg)")
    p.add_argument("--out", required=True, type=Path, help="output folder (train/, test/, *.csv)")
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--n-report", type=int, default=0,
                   help="also a report split of this many held-out tiles, centres uniform by area (report/)")
    p.add_argument("--n-land", type=int, default=0,
                   help="also a report split of this many held-out tiles centred on land (land/)")
    p.add_argument("--n-train-land", type=int, default=0,
                   help="also this many more training tiles centred on land, away from every held-out tile "
                        "(train-land/; train on train.csv and train-land.csv)")
    p.add_argument("--n-tune-land", type=int, default=0,
                   help="also this many tuning tiles centred on land, away from every other tile (tune-land/; "
                        "for the settings `geoplonk calibrate` chooses on land views)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=224, help="tile size in pixels")
    p.add_argument("--min-distance-km", type=float, default=75.0,
                   help="held-out centres are at least this far from every training centre")
    p.add_argument("--samples", type=Path, default=None, help="also write the fixed sample tiles to this folder")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from model_server.data.earth_tiles import build_earth_tiles, write_samples

    try:
        info = build_earth_tiles(args.out, args.n_train, args.n_test, seed=args.seed, size=args.size,
                                 min_distance_km=args.min_distance_km, progress=not args.quiet,
                                 n_report=args.n_report, n_land=args.n_land,
                                 n_train_land=args.n_train_land, n_tune_land=args.n_tune_land)
    except ValueError as exc:
        print(f"geoplonk data: {exc}", file=sys.stderr)
        return 2
    if args.samples is not None:
        write_samples(args.samples, size=args.size)
    print(json.dumps(info, indent=2))
    return 0
