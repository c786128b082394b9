"""Geolocate an archive of photos on a Ray cluster into one GeoParquet dataset (one row per photo).

SOURCE is a folder tree, or a Parquet or CSV manifest with a column of paths (local paths, or any URI pyarrow
reads). Connect to a cluster with --address (e.g. the head node's HOST:6379), else Ray starts a local one.
A rerun skips the photos whose content (sha256) is already located with the same model and options.
"""

from __future__ import annotations

import argparse
import sys

from geoplonk_service import protocol as P

from .locate import levels_type, number_type, options_from, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..batch import LOCATE_BATCH

    parser.add_argument("source", help="folder of photos (searched at every depth), or a .parquet / .csv manifest")
    parser.add_argument("--out", required=True, help="output dataset folder (local path or URI)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to run on (HOST:PORT of the head node, or 'auto'); default: a local one")
    parser.add_argument("--model", help="model name or folder (default: the default model)")
    parser.add_argument("--path-column", default="path", help="the manifest's column of paths (default %(default)s)")
    parser.add_argument("--actors", type=positive_int, default=None,
                        help="model actors (default: one per GPU of the cluster, else 1 CPU actor)")
    parser.add_argument("--embed-workers", type=positive_int, default=1,
                        help="CPU actors that decode and embed (default %(default)s)")
    parser.add_argument("--embed-threads", type=positive_int, default=1,
                        help="torch threads (and CPUs) of each embedding actor; CPU embeddings equal a server's "
                        "running with as many threads (default %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=LOCATE_BATCH,
                        help="photos per call of a model actor (default %(default)s)")
    parser.add_argument("--files", action="store_true",
                        help="also write each photo's GeoTIFF and GeoPackage, named by its sha256, under OUT/files")
    parser.add_argument("--force", action="store_true", help="locate every photo again, also those already done")
    for option in P.NUMBER_OPTIONS.values():
        default = "%(default)s" if option.default is not None else "the model's calibrated w"
        parser.add_argument(f"--{option.name.replace('_', '-')}", type=number_type(option), default=option.default,
                            help=f"{option.label}: {option.describe()} (default {default})")
    parser.add_argument("--solver", choices=P.SOLVERS, default=P.DEFAULT_OPTIONS["solver"])
    parser.add_argument("--precision", choices=P.PRECISIONS, default=P.DEFAULT_OPTIONS["precision"])
    parser.add_argument("--levels", type=levels_type, default=P.DEFAULT_OPTIONS["levels"],
                        help="credible region levels, comma separated")
    parser.add_argument("--crop", action="store_true", help="crop rasters to the area holding 99.9 %% of the mass")


def run(args: argparse.Namespace) -> int:
    try:
        from ..batch.job import describe, run_job
    except ImportError as exc:
        print(f"geoplonk batch: {exc.name} is missing: install the scale extra (pip install -e '.[scale]')",
              file=sys.stderr)
        return 2
    options = {k: v for k, v in options_from(args).items() if k != "model"}
    result = run_job(args.source, args.out, args.model, options, actors=args.actors,
                     embed_workers=args.embed_workers, embed_threads=args.embed_threads, batch_size=args.batch_size,
                     path_column=args.path_column, write_files=args.files, force=args.force, address=args.address)
    print(describe(result))
    return 0 if result.counts.get(P.STATUS_OK, 0) > 0 or result.skipped else 1
