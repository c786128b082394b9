"""Choose a model's distribution guidance on held-out geotagged photos and record it in its manifest.

`geoplonk calibrate --model DIR --data CSV_OR_FOLDER [--skip N] [--limit M]` scores the photos' true
locations under guidance w for each w of a grid (exact likelihood), keeps the w of least mean NLL (or,
with --criterion coverage, the w whose credible regions hold nearest their share of truths; with
--criterion map, the exact density's and the drawn map's regions together) and
writes it to DIR/geoplonk.json as calibration.distribution_cfg, which the server and `geoplonk eval`
then use for the distribution (engine/calibration.py says why). Use photos the model was not trained
on, and not the ones you report figures on. A running server reads the new value when it next loads
the model (restart it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .sample import CommandError, run_guarded

CRITERIA = {
    "nll": "nll: least mean NLL (nats/sr) of the held-out true locations",
    "coverage": "coverage: the 50 and 90 % credible regions (exact density) holding nearest their share of truths; "
                "ties by NLL",
    "map": "map: the 50 and 90 % credible regions of the exact density and of the drawn map (the server's kernel "
           "density raster) holding nearest their share of truths, both together; ties by NLL",
}
# which regions each coverage criterion scores (engine.calibration.coverage_error)
COVERAGE_KINDS = {"coverage": ("coverage",), "map": ("coverage", "map_coverage")}
# Guidance values tried by default: the over-confidence seen so far is mended well inside this range.
DEFAULT_GRID = (-0.3, -0.25, -0.2, -0.15, -0.1, -0.05, 0.0)


def _grid(text: str) -> list[float]:
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or not all(-1.0 <= v <= 0.0 for v in values):
        raise argparse.ArgumentTypeError(f"guidance values must lie in [-1, 0], got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="model folder: its geoplonk.json is updated")
    parser.add_argument("--data", required=True, type=Path, help="held-out CSV (path, latitude, longitude) or folder")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache for --data")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N photos (e.g. the report split)")
    parser.add_argument("--limit", type=int, default=None, help="then use at most M photos")
    parser.add_argument("--grid", type=_grid, default=list(DEFAULT_GRID),
                        help="guidance values w to try, in [-1, 0] (default %(default)s)")
    parser.add_argument("--criterion", choices=tuple(CRITERIA), default="nll",
                        help="nll: least mean NLL of the truths (one likelihood per photo); coverage: the 50 and "
                             "90 %% credible regions holding nearest their share of truths (--samples own draws "
                             "per photo: 9.5 min against 1 min for 200 photos and 5-7 values), ties by NLL; map: "
                             "the same for the exact density and the drawn map together (--map-samples draws and "
                             "a raster per photo and value: slower again)")
    parser.add_argument("--samples", type=int, default=32, help="own draws per photo for --criterion coverage/map")
    parser.add_argument("--map-samples", type=int, default=1024,
                        help="draws per map for --criterion map (the server's default)")
    parser.add_argument("--map-resolution", type=float, default=0.25,
                        help="cell size of those maps, degrees (the server's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--likelihood-method", default="rk4", help="fixed-step ODE method of the likelihood")
    parser.add_argument("--likelihood-steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dry-run", action="store_true", help="print the scores, leave the manifest alone")
    parser.add_argument("--quiet", action="store_true")


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from model_server.commands.evaluate import unit
    from model_server.engine.calibration import (
        best_cfg,
        best_cfg_by_coverage,
        calibration_scores,
        map_scores,
        truth_nll_by_cfg,
    )
    from model_server.engine.checkpoint import ModelNotFoundError, read_manifest, verify_files, write_manifest
    from model_server.engine.datasets import embed_dataset, read_dataset
    from model_server.engine.model import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.samples < 2 or args.likelihood_steps < 1:
        raise CommandError(f"--samples must be at least 2 and --likelihood-steps at least 1, got {args.samples} "
                           f"and {args.likelihood_steps}")
    if args.criterion == "map":
        from model_server.products.grid import Grid

        if args.map_samples < 16:
            raise CommandError(f"--map-samples must be at least 16, got {args.map_samples}")
        try:
            Grid.global_grid(args.map_resolution)
        except ValueError as exc:
            raise CommandError(f"--map-resolution: {exc}") from None
    if not args.model.is_dir():
        raise CommandError(f"model folder not found: {args.model}")
    try:
        model = load_model(args.model, device="cpu")
    except ModelNotFoundError as exc:
        raise CommandError(str(exc)) from None
    if read_manifest(model.path) is None:
        raise CommandError(f"{model.path} has no geoplonk.json to record a calibration in")
    problems = verify_files(model.path)  # the manifest is rewritten with fresh hashes: they must be right now
    if problems:
        raise CommandError(f"{model.path} does not match its manifest ({'; '.join(problems)}); not calibrating it")
    if not args.data.exists():
        raise CommandError(f"data not found: {args.data}")
    progress = not args.quiet
    data = read_dataset(args.data, progress=progress)
    stop = len(data) if args.limit is None else min(len(data), args.skip + args.limit)
    if args.skip < 0 or stop <= args.skip:
        raise CommandError(f"no photos left: {len(data)} in {args.data}, --skip {args.skip}, --limit {args.limit}")
    data = data.subset(np.arange(args.skip, stop))
    emb, data = embed_dataset(data, model.encoder, cache_path=args.cache, progress=progress)
    parts = 2 if args.criterion == "map" else 1
    bar = tqdm(total=parts * len(args.grid) * len(data), desc="calibrate", disable=not progress, file=sys.stderr)
    offset = 0

    def on_step(done: int, total: int) -> None:
        bar.update(offset + done - bar.n)

    truth = torch.from_numpy(unit(data.latlon)).float()
    if args.criterion == "nll":
        nll = truth_nll_by_cfg(model.flow, emb, truth, args.grid, method=args.likelihood_method,
                               steps=args.likelihood_steps, on_step=on_step)
        scores = {w: {"nll": v} for w, v in nll.items()}
        chosen = best_cfg(nll)
    else:
        scores = calibration_scores(model.flow, emb, truth, args.grid, samples=args.samples, seed=args.seed,
                                    method=args.likelihood_method, likelihood_steps=args.likelihood_steps,
                                    on_step=on_step)
        if args.criterion == "map":
            offset = len(args.grid) * len(data)
            drawn = map_scores(model.flow, emb, truth, args.grid, samples=args.map_samples,
                               resolution=args.map_resolution, seed=args.seed, on_step=on_step)
            scores = {w: {**score, **drawn[w]} for w, score in scores.items()}
        chosen = best_cfg_by_coverage(scores, kinds=COVERAGE_KINDS[args.criterion])
    bar.close()
    for w, score in scores.items():
        print(f"w = {w:+.3f}: NLL {score['nll']:.4f} nats/sr{_coverage_text(score)}"
              f"{'   <- chosen' if w == chosen else ''}")
    if args.dry_run:
        return 0
    manifest = dict(read_manifest(model.path))
    manifest.pop("files", None)
    manifest["calibration"] = {
        "distribution_cfg": chosen + 0.0,
        "criterion": CRITERIA[args.criterion],
        "nll_by_cfg": {f"{w + 0.0:g}": round(v["nll"], 6) for w, v in scores.items()},  # + 0.0: no "-0" key
        "data": str(args.data), "skip": args.skip, "n": len(data),
        "likelihood": f"{args.likelihood_method}, {args.likelihood_steps} steps",
    }
    if args.criterion in COVERAGE_KINDS:
        manifest["calibration"]["coverage_by_cfg"] = {f"{w + 0.0:g}": {k: v for k, v in score.items() if k != "nll"}
                                                      for w, score in scores.items()}
        manifest["calibration"].update(samples=args.samples, seed=args.seed)
    if args.criterion == "map":
        manifest["calibration"].update(map_samples=args.map_samples, map_resolution=args.map_resolution)
    write_manifest(model.path, manifest)
    print(f"recorded distribution guidance w = {chosen:g} in {model.path / 'geoplonk.json'}")
    return 0


def _coverage_text(score: dict) -> str:
    """", coverage 50/90/99 ... %" for the exact regions, and "; map ..." for the drawn map's when scored."""
    text = ""
    for kind, label in (("coverage", "coverage"), ("map_coverage", "map")):
        shares = [v for k, v in score.items() if k.startswith(f"{kind}_")]
        if shares:
            text += f"{'; ' if text else ', '}{label} 50/90/99 {' / '.join(f'{100 * v:.1f}' for v in shares)} %"
    if "map_nll" in score:
        text += f" (map NLL {score['map_nll']:.4f})"
    return text


def run(args: argparse.Namespace) -> int:
    return run_guarded(_run, args)
