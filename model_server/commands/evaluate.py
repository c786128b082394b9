"""Evaluate a model on geotagged photos: `geoplonk eval --model DIR --data CSV_OR_FOLDER [--out report.json]`.

Reports, for the cfg=2 single guess and the distribution (at the model's calibrated guidance unless
--distribution-cfg says otherwise): mean/median error (km), accuracy within
1/25/200/750/2500 km, GeoScore, NLL of the truth (exact likelihood, nats per steradian), coverage of
the 50/90/99 % credible regions and the localizability/error correlation. With --train-data, the same
figures for the uniform prior and nearest-neighbour retrieval (top-1, top-k kernel density), and the best
guess's GeoScore against the retrieval kernel density's, paired by tile. Every figure has a 95 % bootstrap
interval over tiles; the rows are given again on the tiles whose truth is on land.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from geoplonk_service import protocol as P

from ..evaluation.criteria import TRUTH_TOLERANCE
from .common import jsonable_settings, truth_tolerance_problem

MIN_MAP_SAMPLES = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model folder or name (default: the built-in model)")
    parser.add_argument("--data", required=True, type=Path, help="CSV (path, latitude, longitude) or photo folder")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--train-data", type=Path, default=None, action="append",
                        help="training set: adds the uniform and nearest-neighbour retrieval baselines; repeat "
                             "it as `geoplonk train --data` was")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N photos only")
    parser.add_argument("--samples", type=int, default=64, help="samples per photo for coverage / localizability")
    parser.add_argument("--guess-samples", type=int, default=P.GUESS_SAMPLES,
                        help="samples per photo at --cfg for the best guess (default: the server's, %(default)s)")
    parser.add_argument("--cfg", type=float, default=P.GUESS_CFG,
                        help="guidance of the best guess (default: the server's, %(default)s)")
    parser.add_argument("--distribution-cfg", type=float, default=None,
                        help="guidance w of the distribution for every photo (default: the model's calibrated "
                             "w, each photo's by its land rule if it has one; 0 if none)")
    parser.add_argument("--steps", type=int, default=P.STEPS.default, help="sampler steps")
    parser.add_argument("--solver", choices=P.SOLVERS, default=P.DEFAULT_OPTIONS["solver"],
                        help="sampler ODE solver (default: the server's, %(default)s)")
    parser.add_argument("--precision", choices=P.PRECISIONS, default=P.DEFAULT_OPTIONS["precision"],
                        help="sampler matmul precision")
    parser.add_argument("--likelihood-method", default="rk4",
                        help="the draws' log-density: dopri5 (adaptive) | rk4 | midpoint | euler")
    parser.add_argument("--likelihood-steps", type=int, default=16, help="steps of fixed-step likelihood methods")
    parser.add_argument("--truth-tolerance", type=float, default=TRUTH_TOLERANCE,
                        help="the truths' log-density by dopri5 at this atol = rtol (0: by the draws' method, in "
                             "one solve with them; a fixed-step solve overstates the density at a truth the "
                             "model misses)")
    parser.add_argument("--map-samples", type=int, default=0,
                        help="also score the map the server draws: N samples, KDE raster, its NLL and regions' "
                             f"coverage (0: off; the server draws {P.SAMPLES.default})")
    parser.add_argument("--map-resolution", type=float, default=P.RESOLUTION.default,
                        help="cell size of that raster, degrees")
    parser.add_argument("--chunk", type=int, default=20, help="photos per batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache for --data")
    parser.add_argument("--train-cache", type=Path, default=None, help="embedding cache for --train-data")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="first N photos of --train-data only (of all, in order)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")


def _check_arguments(args: argparse.Namespace) -> None:
    """ValueError naming the option, for settings that would only fail after the long flow evaluation."""
    from model_server.products.grid import Grid

    low, high = P.CFG.minimum, P.CFG.maximum
    if args.distribution_cfg is not None and not low <= args.distribution_cfg <= high:
        raise ValueError(f"--distribution-cfg must lie in [{low:g}, {high:g}], got {args.distribution_cfg}")
    if problem := truth_tolerance_problem(args.truth_tolerance):
        raise ValueError(problem)
    if args.map_samples:
        if args.map_samples < MIN_MAP_SAMPLES:
            raise ValueError(f"--map-samples must be 0 (off) or at least {MIN_MAP_SAMPLES}, got {args.map_samples}")
        Grid.global_grid(args.map_resolution)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from model_server.engine.guidance import Guidance
    from model_server.engine.model import load_model
    from model_server.engine.sampling import supported_precision
    from model_server.evaluation.evaluate import evaluate_model
    from model_server.evaluation.flow_scores import FlowScoring
    from model_server.evaluation.report import format_report, report_document

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        _check_arguments(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = not args.quiet
    model = load_model(args.model, device="cpu")
    args.precision = supported_precision(args.precision, model.device)  # the record says which ran
    guidance = model.guidance if args.distribution_cfg is None else Guidance(args.distribution_cfg)
    # the record says which w ran: the calibrated rule's values unless --distribution-cfg set one
    args.distribution_cfg, args.land_cfg, args.land_share_threshold = guidance.cfg, guidance.land, guidance.threshold
    bars: dict[str, tqdm] = {}

    def on_step(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=stage, disable=not progress, file=sys.stderr)
        bar = bars[stage]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    scoring = FlowScoring(
        guidance=guidance, cfg=args.cfg, guess_samples=args.guess_samples, samples=args.samples,
        steps=args.steps, solver=args.solver, precision=args.precision, likelihood_method=args.likelihood_method,
        likelihood_steps=args.likelihood_steps, truth_tolerance=args.truth_tolerance or None, seed=args.seed,
        chunk=args.chunk)
    result = evaluate_model(
        model, args.data, scoring, map_samples=args.map_samples, map_resolution=args.map_resolution,
        limit=args.limit, cache=args.cache, train_data=args.train_data, train_cache=args.train_cache,
        train_limit=args.train_limit, progress=progress, on_step=on_step)
    settings = jsonable_settings(args)
    report = report_document(model, str(args.data), settings, result)
    print(format_report(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        from geoplonk_service.output_files import atomic_write

        atomic_write(args.out, json.dumps(report, indent=2).encode("utf-8"))
    return 0

