"""Choose a model's distribution guidance on held-out geotagged photos and record it in its manifest.

`geoplonk calibrate --model DIR --data CSV_OR_FOLDER [--skip N] [--limit M]` scores the photos' true
locations under guidance w for each w of a grid (exact likelihood), keeps the w of least mean NLL (or,
with --criterion coverage, the w whose credible regions hold nearest their share of truths; with
--criterion map, the exact density's and the drawn map's regions together; with --criterion map-land,
those on all photos and again on the photos taken on land; the coverage criteria draw with the server's
default sampler, or --solver/--steps) and
writes it to DIR/geoplonk.json as calibration.distribution_cfg, which the server and `geoplonk eval`
then use for the distribution (evaluation/calibration.py says why). With --by-land-share it chooses one w
for the photos whose best-guess draws fall mostly on land (calibration.land_cfg) and one for the others,
each on its own group, and the server picks a photo's w by the same rule (engine/guidance.py). Use photos
the model was not trained on, and not the ones you report figures on. A running server reads the new value
when it next loads the model (restart it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from geoplonk_service import protocol as P

from ..engine.guidance import LAND_SHARE_THRESHOLD
from ..evaluation.criteria import COVERAGE_KINDS, CRITERIA, DEFAULT_GRID, MAP_CRITERIA, MIN_CFG, TRUTH_TOLERANCE
from .common import CommandError, run_guarded, truth_tolerance_problem


def _grid(text: str) -> list[float]:
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or not all(MIN_CFG <= v <= 0.0 for v in values):
        raise argparse.ArgumentTypeError(f"guidance values must lie in [{MIN_CFG:g}, 0], got {text!r}")
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
                             "a raster per photo and value: slower again); map-land: map, scored on all photos and "
                             "again on those whose truth is on land (global-land-mask), the misses summed")
    parser.add_argument("--samples", type=int, default=32,
                        help="own draws per photo for the coverage criteria (coverage, map, map-land)")
    parser.add_argument("--map-samples", type=int, default=P.SAMPLES.default,
                        help="draws per map for --criterion map and map-land (the server's default)")
    parser.add_argument("--solver", choices=P.SOLVERS, default=P.DEFAULT_SOLVER,
                        help="sampler of those draws (default: the server's, %(default)s): w is set for the "
                             "draws the server will make")
    parser.add_argument("--steps", type=int, default=P.STEPS.default,
                        help="its steps (default: the server's, %(default)s)")
    parser.add_argument("--map-resolution", type=float, default=P.RESOLUTION.default,
                        help="cell size of those maps, degrees (the server's default)")
    parser.add_argument("--by-land-share", action="store_true",
                        help="choose one w for the photos whose best-guess draws fall mostly on land and one for "
                             "the others, each on its own group (the server then picks a photo's w the same way)")
    parser.add_argument("--land-share-threshold", type=float, default=LAND_SHARE_THRESHOLD,
                        help="share of the guess draws on land from which a photo counts as land-looking "
                             "(default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--likelihood-method", default="rk4", help="fixed-step ODE method of the likelihood")
    parser.add_argument("--likelihood-steps", type=int, default=16)
    parser.add_argument("--truth-tolerance", type=float, default=TRUTH_TOLERANCE,
                        help="the truths' log-density by dopri5 at this atol = rtol (0: by the fixed-step method; "
                             "it overstates the density at a truth the model misses). --criterion nll solves the "
                             "truths alone, so this sets its whole cost")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dry-run", action="store_true", help="print the scores, leave the manifest alone")
    parser.add_argument("--quiet", action="store_true")


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad settings before the model and the photos are loaded."""
    from model_server.products.grid import Grid

    if problem := truth_tolerance_problem(args.truth_tolerance):
        raise CommandError(problem)
    if args.samples < 2 or args.likelihood_steps < 1 or args.steps < 1:
        raise CommandError(f"--samples must be at least 2, --likelihood-steps and --steps at least 1, got "
                           f"{args.samples}, {args.likelihood_steps} and {args.steps}")
    if args.by_land_share and not 0 < args.land_share_threshold <= 1:
        raise CommandError(f"--land-share-threshold must lie in (0, 1], got {args.land_share_threshold}")
    if args.criterion in MAP_CRITERIA:
        if args.map_samples < 16:
            raise CommandError(f"--map-samples must be at least 16, got {args.map_samples}")
        try:
            Grid.global_grid(args.map_resolution)
        except ValueError as exc:
            raise CommandError(f"--map-resolution: {exc}") from None


def _load_model(path: Path):
    """The model in `path`, when a calibration can be recorded in it: a manifest whose file hashes hold now
    (the manifest is rewritten with fresh hashes)."""
    from model_server.engine.checkpoint import ModelNotFoundError, read_manifest, verify_files
    from model_server.engine.model import load_model

    if not path.is_dir():
        raise CommandError(f"model folder not found: {path}")
    try:
        model = load_model(path, device="cpu")
    except ModelNotFoundError as exc:
        raise CommandError(str(exc)) from None
    if read_manifest(model.path) is None:
        raise CommandError(f"{model.path} has no geoplonk.json to record a calibration in")
    problems = verify_files(model.path)
    if problems:
        raise CommandError(f"{model.path} does not match its manifest ({'; '.join(problems)}); not calibrating it")
    return model


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from model_server.engine.datasets import embed_dataset, read_dataset
    from model_server.evaluation.calibration import (
        calibration_record,
        guess_land_shares,
        land_rule_record,
        record_calibration,
        score_guidance,
        score_guidance_by_land_share,
    )
    from model_server.geodesy import degrees_to_xyz

    if args.threads:
        torch.set_num_threads(args.threads)
    _check_arguments(args)
    model = _load_model(args.model)
    if not args.data.exists():
        raise CommandError(f"data not found: {args.data}")
    progress = not args.quiet
    data = read_dataset(args.data, progress=progress)
    stop = len(data) if args.limit is None else min(len(data), args.skip + args.limit)
    if args.skip < 0 or stop <= args.skip:
        raise CommandError(f"no photos left: {len(data)} in {args.data}, --skip {args.skip}, --limit {args.limit}")
    data = data.subset(np.arange(args.skip, stop))
    emb, data = embed_dataset(data, model.encoder, cache_path=args.cache, progress=progress)
    bar = tqdm(total=1, desc="calibrate", disable=not progress, file=sys.stderr)

    def on_step(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    truth = torch.from_numpy(degrees_to_xyz(data.latlon)).float()
    land = None  # after embedding, which may drop unreadable photos
    if args.criterion in COVERAGE_KINDS:  # the land photos' shares: scored by map-land, recorded by every one
        from model_server.products.place_names import is_land

        land = is_land(data.latlon[:, 0], data.latlon[:, 1])
        if not land.any():
            if args.criterion == "map-land":
                raise CommandError(f"--criterion map-land: none of the {len(data)} photos' truths is on land")
            land = None
    settings = {"criterion": args.criterion, "samples": args.samples, "map_samples": args.map_samples,
                "map_resolution": args.map_resolution, "seed": args.seed,
                "likelihood_method": args.likelihood_method, "likelihood_steps": args.likelihood_steps,
                "truth_tolerance": args.truth_tolerance or None,
                "solver": args.solver, "steps": args.steps}
    record_settings = {**{k: v for k, v in settings.items() if k not in ("solver", "steps")},
                       "data": args.data, "skip": args.skip, "sampler": f"{args.solver}, {args.steps} steps"}
    if args.by_land_share:
        shares = guess_land_shares(model.flow, emb, seed=args.seed)
        try:
            groups, guidance = score_guidance_by_land_share(model.flow, emb, truth, args.grid, shares=shares,
                                                            threshold=args.land_share_threshold, land=land,
                                                            on_step=on_step, **settings)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        bar.close()
        for group in groups:
            print(f"{group.name} photos ({group.n}):")
            _print_scores(group.scores, group.chosen)
        record = land_rule_record(groups, guidance, land=land, **record_settings)
        chosen_text = guidance.describe()
    else:
        scores, chosen = score_guidance(model.flow, emb, truth, args.grid, land=land, on_step=on_step, **settings)
        bar.close()
        _print_scores(scores, chosen)
        record = calibration_record(scores, chosen, n=len(data),
                                    land_tiles=None if land is None else int(land.sum()), **record_settings)
        chosen_text = f"w = {chosen:g}"
    if args.dry_run:
        return 0
    path = record_calibration(model.path, record)
    print(f"recorded distribution guidance {chosen_text} in {path}")
    return 0


def _print_scores(scores: dict[float, dict], chosen: float) -> None:
    for w, score in scores.items():
        print(f"w = {w:+.3f}: NLL {score['nll']:.4f} nats/sr{_coverage_text(score)}"
              f"{'   <- chosen' if w == chosen else ''}")


def _coverage_text(score: dict) -> str:
    """", coverage 50/90/99 ... %" for the exact regions, then "; map ...", "; land ..." and "; land map ..." for
    the drawn map's and the land photos' when scored."""
    text = ""
    for kind, label in (("coverage", "coverage"), ("map_coverage", "map"), ("land_coverage", "land"),
                        ("land_map_coverage", "land map")):
        shares = [v for k, v in score.items() if k.startswith(f"{kind}_")]
        if shares:
            text += f"{'; ' if text else ', '}{label} 50/90/99 {' / '.join(f'{100 * v:.1f}' for v in shares)} %"
    if "map_nll" in score:
        text += f" (map NLL {score['map_nll']:.4f})"
    return text


def run(args: argparse.Namespace) -> int:
    return run_guarded(_run, args)
