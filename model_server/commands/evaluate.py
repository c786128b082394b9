"""Evaluate a model on geotagged photos: `geoplonk eval --model DIR --data CSV_OR_FOLDER [--out report.json]`.

Reports, for the cfg=2 single guess and the distribution (at the model's calibrated guidance unless
--distribution-cfg says otherwise): mean/median error (km), accuracy within
1/25/200/750/2500 km, GeoScore, NLL of the truth (exact likelihood, nats per steradian), coverage of
the 50/90/99 % credible regions and the localizability/error correlation. With --train-data, the same
figures for the uniform prior and nearest-neighbour retrieval (top-1, top-k kernel density).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

RETRIEVAL_K = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model folder or name (default: the built-in model)")
    parser.add_argument("--data", required=True, type=Path, help="CSV (path, latitude, longitude) or photo folder")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--train-data", type=Path, default=None,
                        help="training set: adds the uniform and nearest-neighbour retrieval baselines")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N photos only")
    parser.add_argument("--samples", type=int, default=64, help="samples per photo for coverage / localizability")
    parser.add_argument("--guess-samples", type=int, default=256, help="cfg=2 samples per photo for the best guess")
    parser.add_argument("--cfg", type=float, default=2.0, help="guidance for the single guess")
    parser.add_argument("--distribution-cfg", type=float, default=None,
                        help="guidance w of the distribution (default: the model's calibrated w, 0 if none)")
    parser.add_argument("--steps", type=int, default=32, help="sampler steps")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="sampler matmul precision")
    parser.add_argument("--likelihood-method", default="midpoint", help="dopri5 (adaptive) | rk4 | midpoint | euler")
    parser.add_argument("--likelihood-steps", type=int, default=8, help="steps of fixed-step likelihood methods")
    parser.add_argument("--map-samples", type=int, default=0,
                        help="also score the map the server draws: N samples, KDE raster, its NLL and regions' "
                             "coverage (0: off; the server draws 1024)")
    parser.add_argument("--map-resolution", type=float, default=0.25, help="cell size of that raster, degrees")
    parser.add_argument("--chunk", type=int, default=20, help="photos per batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache for --data")
    parser.add_argument("--train-cache", type=Path, default=None, help="embedding cache for --train-data")
    parser.add_argument("--train-limit", type=int, default=None, help="first N photos of --train-data only")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")


# ---------------------------------------------------------------- pure helpers


def unit(latlon_deg: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(latlon_deg[..., 0]), np.radians(latlon_deg[..., 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def degrees(xyz: np.ndarray) -> np.ndarray:
    xyz = xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)
    return np.degrees(np.stack([np.arcsin(np.clip(xyz[..., 2], -1, 1)), np.arctan2(xyz[..., 1], xyz[..., 0])], -1))


def best_guess(xyz: np.ndarray, resolution_deg: float = 0.25) -> np.ndarray:
    """(E, n, 3) cfg-2 samples -> (E, 3): the server's best guess (same rule, same bandwidth choice)."""
    from model_server.products.density import max_kappa_for, select_kappa
    from model_server.products.modes import best_of_samples

    out = []
    for x in np.asarray(xyz, dtype=np.float64):
        out.append(x[best_of_samples(x, select_kappa(x, max_kappa_for(resolution_deg)))])
    return np.stack(out)


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardise with the training statistics and L2-normalise (cosine retrieval)."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    out = []
    for a in (train, *others):
        z = (a - mean) / std
        out.append(z / np.linalg.norm(z, axis=1, keepdims=True))
    return out


def topk(query: np.ndarray, gallery: np.ndarray, k: int, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    sims = query @ gallery.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    k = min(k, gallery.shape[0])
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(sims, idx, 1)
    order = np.argsort(-s, axis=1)
    return np.take_along_axis(idx, order, 1), np.take_along_axis(s, order, 1)


def retrieval_kde(sims: np.ndarray, gallery_xyz: np.ndarray, idx: np.ndarray, tau: float):
    """Softmax(sim / tau) weights over the k neighbours' positions: (E, k, 3) centres, (E, k) weights."""
    w = np.exp((sims - sims.max(1, keepdims=True)) / tau)
    return gallery_xyz[idx], w / w.sum(1, keepdims=True)


def fit_kde(train_z: np.ndarray, train_xyz: np.ndarray, n: int = 500, min_km: float = 75.0, seed: int = 0):
    """(tau, kappa) maximising the leave-one-out likelihood on n training photos, neighbours nearer
    than min_km excluded (as the held-out split is built)."""
    from model_server.engine.metrics import EARTH_RADIUS_KM, kde_log_density

    rng = np.random.default_rng(seed)
    q = rng.choice(len(train_z), size=min(n, len(train_z)), replace=False)
    sims = train_z[q] @ train_z.T
    close = np.einsum("qd,nd->qn", train_xyz[q], train_xyz) > math.cos(min_km / EARTH_RADIUS_KM)
    sims[close] = -np.inf
    k = min(RETRIEVAL_K, len(train_z))
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(sims, idx, 1)
    s = np.where(np.isfinite(s), s, s[np.isfinite(s)].min() - 100.0)  # fewer than k allowed neighbours
    best = None
    for tau in (0.01, 0.02, 0.05, 0.1, 0.2):
        centres, w = retrieval_kde(s, train_xyz, idx, tau)
        for kappa in (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0):
            ll = kde_log_density(train_xyz[q][:, None], centres, w, kappa).mean()
            if best is None or ll > best[0]:
                best = (ll, tau, kappa)
    return best[1], best[2]


def row(name: str, dist_km: np.ndarray, logp: np.ndarray | None) -> dict:
    from model_server.engine.metrics import distance_summary, nll_summary

    out = {"method": name, **distance_summary(dist_km)}
    if logp is not None:
        out.update(nll_summary(logp))
    return out


# ---------------------------------------------------------------- evaluation


def evaluate_flow(flow, emb, truth_deg: np.ndarray, args, progress: bool) -> tuple[list[dict], dict]:
    import torch
    from tqdm import tqdm

    from model_server.engine.likelihood import truth_and_draws_log_density
    from model_server.engine.metrics import coverage, latlon_distance_km, spearman
    from model_server.engine.sampling import sample

    gen = torch.Generator().manual_seed(args.seed)
    truth_xyz = unit(truth_deg)
    single, guess, logp_truth, logp_samples = [], [], [], []
    for start in tqdm(range(0, len(emb), args.chunk), desc="flow", disable=not progress, file=sys.stderr):
        e = emb[start : start + args.chunk]
        guided = sample(flow, e, args.guess_samples, steps=args.steps, cfg=args.cfg, generator=gen,
                        precision=args.precision).numpy()
        single.append(guided[:, 0])
        guess.append(best_guess(guided))
        at_truth, at_draws = truth_and_draws_log_density(
            flow, e, torch.tensor(truth_xyz[start : start + args.chunk]), args.samples, cfg=args.distribution_cfg,
            steps=args.steps, precision=args.precision, generator=gen, method=args.likelihood_method,
            likelihood_steps=None if args.likelihood_method == "dopri5" else args.likelihood_steps)
        logp_truth.append(at_truth.numpy())
        logp_samples.append(at_draws.numpy())
    single, guess = np.concatenate(single), np.concatenate(guess)
    logp_truth, logp_samples = np.concatenate(logp_truth), np.concatenate(logp_samples)
    d_single = latlon_distance_km(degrees(single), truth_deg)
    d_guess = latlon_distance_km(degrees(guess), truth_deg)
    localizability = logp_samples.mean(1) / (4 * math.pi * math.log(2))
    rows = [
        row(f"flow, cfg={args.cfg:g} single sample", d_single, None),
        row(f"flow, cfg={args.cfg:g} best guess of {args.guess_samples} samples", d_guess, None),
        {**row(f"flow, distribution (cfg={args.distribution_cfg:g})", d_guess, logp_truth),
         **coverage(logp_truth, logp_samples),
         "spearman_localizability_vs_error": spearman(localizability, d_guess)},
    ]
    rows[-1]["note"] = "distance figures of the distribution row are those of the best guess"
    extra = {"localizability": localizability.tolist(), "error_km_guess": d_guess.tolist(),
             "guess_deg": degrees(guess).tolist()}
    return rows, extra


def evaluate_map(flow, emb, truth_deg: np.ndarray, args, progress: bool) -> dict:
    """The map as the server draws it (KDE raster of its samples): NLL of the truth's cell, and the share of
    truths inside its 50 / 90 / 99 % regions, which are what an analyst sees."""
    import torch
    from tqdm import tqdm

    from model_server.engine.metrics import COVERAGE_LEVELS, nll_summary
    from model_server.engine.sampling import sample
    from model_server.products.grid import Grid
    from model_server.products.regions import truth_on_map

    levels = list(COVERAGE_LEVELS)
    gen = torch.Generator().manual_seed(args.seed + 1)
    grid = Grid.global_grid(args.map_resolution)
    logp, inside, inside_by_mass = [], [], []
    for start in tqdm(range(0, len(emb), args.chunk), desc="maps", disable=not progress, file=sys.stderr):
        e = emb[start : start + args.chunk]
        points = sample(flow, e, args.map_samples, steps=args.steps, cfg=args.distribution_cfg, generator=gen,
                        precision=args.precision).numpy()
        for x, (lat, lon) in zip(points, truth_deg[start : start + args.chunk], strict=True):
            scored = truth_on_map(x, lat, lon, grid, levels)
            logp.append(scored.log_density)
            inside.append(scored.inside)
            inside_by_mass.append(scored.inside_by_mass)
    share, share_by_mass = np.mean(np.array(inside), axis=0), np.mean(np.array(inside_by_mass), axis=0)
    out = {"method": f"flow, the server's map (cfg={args.distribution_cfg:g}, {args.map_samples} samples, "
                     f"{args.map_resolution:g} deg raster)",
           "n": len(logp), **nll_summary(np.array(logp))}
    out.update({f"coverage_{round(100 * lv)}": float(v) for lv, v in zip(levels, share, strict=True)})
    # the rule the regions were drawn by before: the densest cells until the raster's probability reaches p
    out["coverage_by_raster_mass"] = {f"{round(100 * lv)}": float(v) for lv, v in zip(levels, share_by_mass,
                                                                                      strict=True)}
    out["note"] = "no distance figures: this row scores the raster and its credible regions"
    return out


def evaluate_baselines(train_emb: np.ndarray, train_deg: np.ndarray, emb: np.ndarray, truth_deg: np.ndarray,
                       seed: int) -> list[dict]:
    from model_server.engine.metrics import UNIFORM_NLL, kde_log_density, latlon_distance_km

    rng = np.random.default_rng(seed)
    u = rng.normal(size=(len(emb), 3))
    rows = [row("uniform prior", latlon_distance_km(degrees(u), truth_deg), np.full(len(emb), -UNIFORM_NLL))]
    train_xyz = unit(train_deg)
    tz, qz = standardise(train_emb, emb)
    idx, sims = topk(qz, tz, RETRIEVAL_K)
    rows.append(row("retrieval top-1", latlon_distance_km(train_deg[idx[:, 0]], truth_deg), None))
    tau, kappa = fit_kde(tz, train_xyz, seed=seed)
    centres, w = retrieval_kde(sims, train_xyz, idx, tau)
    logp = kde_log_density(unit(truth_deg)[:, None], centres, w, kappa)[:, 0]
    dens_at_centres = kde_log_density(centres, centres, w, kappa)
    guess = centres[np.arange(len(emb)), dens_at_centres.argmax(1)]
    r = row(f"retrieval top-{RETRIEVAL_K} kernel density", latlon_distance_km(degrees(guess), truth_deg), logp)
    r["kde"] = {"tau": tau, "kappa": kappa}
    rows.append(r)
    return rows


def format_table(rows: list[dict]) -> str:
    cols = ["median_km", "mean_km", "acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "geoscore",
            "nll_mean", "coverage_50", "coverage_90", "coverage_99"]
    head = "| method | median km | mean km | @1 | @25 | @200 | @750 | @2500 km | GeoScore | NLL (nats/sr) " \
           "| cov 50 | cov 90 | cov 99 |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if v is None:
                cells.append("-")
            elif c.startswith(("acc", "coverage")):
                cells.append(f"{100 * v:.1f} %")
            elif c == "nll_mean":
                cells.append(f"{v:.2f}")
            else:
                cells.append(f"{v:.0f}")
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from model_server.engine.datasets import embed_dataset, read_dataset
    from model_server.engine.model import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    try:  # refuse bad settings now, not after the long flow evaluation
        if args.distribution_cfg is not None and not -1 <= args.distribution_cfg <= 20:
            raise ValueError(f"--distribution-cfg must lie in [-1, 20], got {args.distribution_cfg}")
        if args.map_samples:
            from model_server.products.grid import Grid

            if args.map_samples < 16:
                raise ValueError(f"--map-samples must be 0 (off) or at least 16, got {args.map_samples}")
            Grid.global_grid(args.map_resolution)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = not args.quiet
    model = load_model(args.model, device="cpu")
    if args.distribution_cfg is None:
        args.distribution_cfg = model.distribution_cfg
    data = read_dataset(args.data, progress=progress)
    if args.limit:
        data = data.subset(np.arange(min(args.limit, len(data))))
    emb, data = embed_dataset(data, model.encoder, cache_path=args.cache, progress=progress)
    rows, extra = evaluate_flow(model.flow, emb, data.latlon, args, progress)
    if args.map_samples:
        rows.append(evaluate_map(model.flow, emb, data.latlon, args, progress))
    if args.train_data is not None:
        train = read_dataset(args.train_data, progress=progress)
        if args.train_limit:
            train = train.subset(np.arange(min(args.train_limit, len(train))))
        # The gallery is embedded as the flow's training photos were (one view each), the query as photos are located.
        train_encoder = model.encoder if model.training_encoder_name == model.encoder_name else model.encoder.base
        train_emb, train = embed_dataset(train, train_encoder, cache_path=args.train_cache, progress=progress)
        rows = evaluate_baselines(train_emb.numpy(), train.latlon, emb.numpy(), data.latlon, args.seed) + rows
    report = {
        "model": str(model.path), "model_name": model.name, "data": str(args.data), "n": len(data),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "_run"},
        "nll_unit": "nats per steradian (uniform on the sphere = log 4 pi = 2.531)",
        "rows": rows, "per_image": extra,
    }
    print(format_table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        from geoplonk_service.output_files import atomic_write

        atomic_write(args.out, json.dumps(report, indent=2).encode("utf-8"))
    return 0
