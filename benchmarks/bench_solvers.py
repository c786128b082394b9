"""Endpoint accuracy against time of each sampler, on the default model and at the published PLONK size.

For each solver and step count: the median and 99th percentile great-circle distance (km) of every sample's
endpoint from a converged solution from the same start points (fp32 rk4, `--converged-steps`; the same at half
the steps is printed as its error bar), and the seconds to draw one photo's samples. The authors' sampler runs
the reference's Euler at 32 and 250 steps (fp32) on the same points in the same run.

Models: the committed default model (earth-tiles) at its calibrated guidance, on held-out test photos (the
--cache embeddings, or the shipped sample tiles embedded here); and the PLONK size (dim 512, depth 12, cond 1024)
with random weights, twice: as benchmarks/bench_engine.py makes them ("raw": their time embedding makes the
field oscillate in gamma ~50 times faster than a trained model's, which no fixed-step solver resolves), and
with the time embedding's input kept to its channels slower than 3 cycles per unit of gamma ("smooth": then
the field's spectrum in gamma matches the trained default model's).

Run: .venv/server/bin/python benchmarks/bench_solvers.py [--models default,plonk-smooth,plonk-raw]
         [--cache build/earth-tiles/emb-test-rot4.npz] [--record benchmarks/results/]
     rk3's grid weight: ... --cache none --photos 7 --candidates rk3:5,rk3:6,rk3:7 --grid-weights 0.5,0.6,0.7,0.8
     the unguided field held or not: ... --models default --only-candidates --candidates rk3:6,rk3:6:full
A candidate SOLVER:STEPS:full evaluates the unguided field at every stage (sampling.sample's hold_unguided).
The measurement is importable: solver_accuracy_table(...), and accuracy_vs_cost(...) for benchmarks/bench_all.py.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "engine"))

from suite.engine import reference_sampler  # noqa: E402

from model_server.engine.network import FlowConfig, GeoAdaLNMLP  # noqa: E402
from model_server.engine.runtime import configure_cpu_math, row_workers  # noqa: E402
from model_server.engine.sampling import held_calls, sample  # noqa: E402
from model_server.engine.solvers import EVALUATIONS, SOLVERS, guided_velocity, rk4_sphere  # noqa: E402
from model_server.engine.sphere import geodesic_distance, normalize, uniform_sphere  # noqa: E402

EARTH_RADIUS_KM = 6371.0
# (solver, steps, precision) drawn by our engine; the authors' Euler is added at REFERENCE_STEPS.
CASES = (
    ("euler", 32, "fp32"), ("euler", 32, "bf16"), ("euler", 16, "bf16"),
    ("heun", 8, "bf16"), ("heun", 16, "bf16"),
    ("midpoint", 4, "bf16"), ("midpoint", 5, "bf16"), ("midpoint", 6, "bf16"), ("midpoint", 8, "bf16"),
    ("midpoint", 12, "bf16"), ("midpoint", 16, "bf16"),
    ("rk4", 4, "bf16"), ("rk4", 8, "bf16"),
)
REFERENCE_STEPS = (32, 250)
SMOOTH_CYCLES = 3.0


def distance_km(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (geodesic_distance(a.double(), b.double()) * EARTH_RADIUS_KM).flatten()


def quantile(values: torch.Tensor, q: float) -> float:
    return float(torch.quantile(values.double(), q))


def random_plonk(smooth: bool, seed: int = 0) -> GeoAdaLNMLP:
    """PLONK-size flow with bench_engine.py's random weights; `smooth` keeps the time embedding's input to its
    channels slower than SMOOTH_CYCLES cycles per unit of gamma."""
    net = GeoAdaLNMLP(FlowConfig())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / p.shape[-1] ** 0.5 if p.dim() > 1 else 0.05))
        if smooth:
            angular = net.time_embedder.encode_time.freqs * net.time_embedder.time_scaling
            keep = (angular <= 2 * math.pi * SMOOTH_CYCLES).float().repeat(2)
            net.time_embedder.map_time[0].weight.mul_(keep)
    return net.eval()


@torch.inference_mode()
def converged_endpoints(flow: GeoAdaLNMLP, emb: torch.Tensor, x0: torch.Tensor, steps: int, cfg: float) -> torch.Tensor:
    """fp32 rk4 endpoints (P, m, 3), as sample(..., solver="rk4", hold_unguided=False) draws them, with the rows
    split over the row workers: the fp32 sampler runs on intra-op threads, which a loaded machine slows several
    times."""
    count = max(1, min(torch.get_num_threads(), x0.shape[0] // 64))
    workers = row_workers(count)

    def net(x, g, e):
        return torch.cat(workers.map(flow, [(part, g, e) for part in x.tensor_split(count, dim=-2)]), dim=-2)

    configure_cpu_math()
    x = x0.expand(emb.shape[0], -1, -1).clone()
    return normalize(rk4_sphere(guided_velocity(net, emb.unsqueeze(1), float(cfg)), x, steps))


def best_times(funcs: dict, rounds: int) -> dict:
    """Fewest seconds of each function over `rounds` rounds, each round calling every function once.

    Round robin, so that the load of a shared machine falls on every variant alike; the minimum, because
    other processes only ever add time.
    """
    best = {key: math.inf for key in funcs}
    for _ in range(rounds):
        for key, func in funcs.items():
            start = time.perf_counter()
            func()
            best[key] = min(best[key], time.perf_counter() - start)
    return best


def solver_accuracy_table(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    x0: torch.Tensor,
    *,
    cfg: float = 0.0,
    cases=CASES,
    accuracy_samples: int = 256,
    converged_steps: int = 128,
    repeats: int = 3,
    reference=None,
    reference_steps=REFERENCE_STEPS,
    reference_seconds: dict | None = None,
    log=print,
) -> dict:
    """Endpoint error against time, per (solver, steps, precision[, hold_unguided]) in `cases` and the
    reference's Euler.

    emb (P, cond_dim): the photos; x0 (n, 3): every photo's start points (the server's are shared likewise).
    Errors: the first `accuracy_samples` endpoints of every photo against fp32 rk4 at `converged_steps` from the
    same points. Times: seconds to draw photo 0's n samples, the best of `repeats` rounds after a warm-up.
    The reference's Euler rows (32 and 250 steps, fp32) take their endpoints from the authors' sampler
    (`reference`: suite.engine.reference_sampler), or from our fp32 Euler, which the oracle tests hold to it in 10 m,
    where it has none or cannot apply cfg (it ignores cfg <= 0); their time is the authors' sampler's at the
    first step count (at |cfg| for a negative cfg: the same doubled batch), scaled linearly for the others,
    unless `reference_seconds` ({steps: s}) gives them.
    Returns {"rows": [...], "converged": {...}}; a row has solver, steps, precision, evals, seconds, median_km,
    p99_km, label, reference (True for the reference's Euler) and maybe a note.
    """
    emb = torch.as_tensor(emb, dtype=torch.float32).reshape(-1, flow.config.cond_dim)
    n, m = x0.shape[0], min(accuracy_samples, x0.shape[0])
    start = x0[:m]
    truth = converged_endpoints(flow, emb, start, converged_steps, cfg)
    half = converged_endpoints(flow, emb, start, converged_steps // 2, cfg)
    check = distance_km(half, truth)
    converged = {"solver": "rk4", "steps": converged_steps, "precision": "fp32", "photos": emb.shape[0], "samples": m,
                 "half_steps_median_km": float(check.median()), "half_steps_p99_km": quantile(check, 0.99)}
    log(f"  converged: rk4 {converged_steps} steps fp32; at half the steps: median {check.median():.3g} km, "
        f"p99 {converged['half_steps_p99_km']:.3g} km")

    rows, funcs = [], {}
    authors_endpoints = reference is not None and cfg >= 0
    for k in reference_steps:
        if authors_endpoints:
            ends = torch.stack([reference(start, e, k, cfg) for e in emb])
            source = "the authors' sampler"
        else:
            ends = sample(flow, emb, m, steps=k, solver="euler", x0=start, cfg=cfg)
            source = "our fp32 Euler (the reference's path)"
        rows.append({"solver": "euler", "steps": k, "precision": "fp32", "evals": k, "reference": True,
                     "label": f"reference euler {k} fp32", "ends": ends, "note": f"endpoints by {source}"})
    for solver, k, precision, *held in cases:
        hold = held[0] if held else True
        ends = sample(flow, emb, m, steps=k, solver=solver, x0=start, cfg=cfg, precision=precision,
                      hold_unguided=hold)
        evals = k * EVALUATIONS[solver]
        held_note = {}
        if hold and held_calls(solver, cfg, k) > 1:
            held_note = {"note": f"the unguided field held over each step: {evals + k} batches' rows, not {2 * evals}"}
        rows.append({"solver": solver, "steps": k, "precision": precision, "evals": evals,
                     "label": f"{solver} {k} {precision}" + ("" if hold else " full"), "reference": False,
                     "ends": ends, **({} if hold else {"hold_unguided": False}), **held_note})
        funcs[len(rows) - 1] = (lambda solver=solver, k=k, precision=precision, hold=hold: sample(
            flow, emb[:1], n, steps=k, solver=solver, x0=x0, cfg=cfg, precision=precision, hold_unguided=hold))

    measured = dict(reference_seconds or {})
    first = reference_steps[0]
    if first not in measured:
        if reference is not None:
            funcs["reference"] = lambda: reference(x0, emb[0], first, abs(cfg))
        else:
            funcs["reference"] = lambda: sample(flow, emb[:1], n, steps=first, solver="euler", x0=x0, cfg=cfg)
    for func in funcs.values():
        func()  # warm-up (and the bf16 weights' conversion)
    seconds = best_times(funcs, repeats)
    measured.setdefault(first, seconds.get("reference"))
    for i, row in enumerate(rows):
        if row["reference"]:
            k = row["steps"]
            row["seconds"] = measured.get(k, measured[first] * k / first)
            if k not in measured:
                row["note"] += f"; time scaled from its {first}-step time (linear in steps)"
            if reference is None:
                row["note"] += "; timed by our fp32 Euler: the authors' sampler is not installed"
            elif cfg < 0:
                row["note"] += f"; timed at cfg {abs(cfg):g}, the same cost"
        else:
            row["seconds"] = seconds[i]
        err = distance_km(row.pop("ends"), truth)
        row.update(median_km=float(err.median()), p99_km=quantile(err, 0.99))
        log(f"  {row['label']:<26} {row['evals']:4d} evals {row['seconds']:8.3f} s   median {row['median_km']:8.3f} km"
            f"   p99 {row['p99_km']:8.3f} km")
    return {"rows": rows, "converged": converged}


def verdict(rows: list[dict], solver: str, steps: int, precision: str = "bf16", base: int = 32) -> str | None:
    """Does (solver, steps) reach the reference `base`-step Euler's median and p99 in a tenth of its time?"""
    ref = next((r for r in rows if r.get("reference") and r["steps"] == base), None)
    ours = next((r for r in rows if not r.get("reference") and r.get("hold_unguided", True)
                 and (r["solver"], r["steps"], r["precision"]) == (solver, steps, precision)), None)
    if ref is None or ours is None:
        return None
    met = ours["median_km"] <= ref["median_km"] and ours["p99_km"] <= ref["p99_km"] and ours["seconds"] <= ref[
        "seconds"] / 10
    return (f"{solver} {steps} {precision}: median {ours['median_km']:.1f} km (reference Euler {base}: "
            f"{ref['median_km']:.1f}), p99 {ours['p99_km']:.1f} km ({ref['p99_km']:.1f}), "
            f"{ours['seconds'] / ref['seconds']:.3f} of its time: {'met' if met else 'NOT met'}")


def accuracy_vs_cost(flow, emb, x0, *, n, repeats, accuracy_samples, converged_steps, steps, precision, cfg=0.0,
                     reference=None, reference_steps=REFERENCE_STEPS, reference_seconds=None, default=None,
                     extra=(), quick=False) -> dict:
    """benchmarks/bench_all.py's entry point: every engine solver at each of `steps` (and the server's `default`
    (solver, steps), and the (solver, steps) pairs of `extra`) at `precision`, through solver_accuracy_table;
    the default and the extra pairs judged against the target in the notes."""
    cases = [(s, k, precision) for s in SOLVERS for k in steps]
    judged = [tuple(pair) for pair in ([default] if default is not None else []) + list(extra)]
    for solver, k in judged:
        if (solver, int(k), precision) not in cases:
            cases.append((solver, int(k), precision))
    result = solver_accuracy_table(
        flow, emb, x0[:n], cfg=cfg, cases=cases, accuracy_samples=accuracy_samples, converged_steps=converged_steps,
        repeats=repeats, reference=reference, reference_steps=reference_steps, reference_seconds=reference_seconds)
    notes = []
    for i, (solver, k) in enumerate(judged):
        line = verdict(result["rows"], solver, int(k), precision)
        if line:
            notes.append(f"the server's default {line}" if i == 0 and default is not None else line)
    if notes:
        result["notes"] = notes
    return result


def grid_weight_table(flow, emb, x0, *, cfg, steps, weights, converged_steps=128, log=print) -> list[dict]:
    """rk3's endpoint error per grid weight (schedule.weighted_grid) and step count: the evaluations are the same
    at every weight, so only the error is measured."""
    from model_server.engine.solvers import RK3_GRID_WEIGHT

    truth = converged_endpoints(flow, emb, x0, converged_steps, cfg)
    rows = []
    for k in steps:
        for weight in weights:
            out = sample(flow, emb, x0.shape[0], steps=k, solver="rk3", cfg=cfg, x0=x0, precision="bf16",
                         solver_options={"grid_weight": weight})
            d = distance_km(out.reshape(truth.shape), truth)
            rows.append({"steps": k, "weight": weight, "median_km": float(d.median()), "p99_km": quantile(d, 0.99)})
            log(f"  rk3 {k} bf16, grid weight {weight:g}{' (the default)' if weight == RK3_GRID_WEIGHT else ''}: "
                f"median {rows[-1]['median_km']:.1f} km, p99 {rows[-1]['p99_km']:.1f} km")
    return rows


def default_model_photos(cache: Path | None, photos: int):
    """(flow, emb (P, cond), cfg, what): the committed model at its calibrated guidance on held-out photos."""
    from model_server.engine.model import load_model

    model = load_model(device="cpu")
    if cache is not None and cache.exists():
        import numpy as np

        emb = torch.from_numpy(np.load(cache)["embeddings"][:photos]).float()
        what = f"the first {len(emb)} photos of {cache}"
    else:
        from PIL import Image

        files = sorted((ROOT / "samples").glob("*.jpg"))[:photos]
        images = [Image.open(f).convert("RGB") for f in files]
        emb = torch.cat([model.encoder.embed([im]) for im in images])
        what = f"the sample tiles {', '.join(f.stem for f in files)}"
    return model.flow.eval(), emb, float(model.distribution_cfg), what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="default,plonk-smooth,plonk-raw")
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "earth-tiles" / "emb-test-rot4.npz",
                        help="held-out embeddings for the default model (else the shipped sample tiles)")
    parser.add_argument("--photos", type=int, default=4, help="default model: photos scored")
    parser.add_argument("--n", type=int, default=1024, help="samples per photo (timed)")
    parser.add_argument("--accuracy-samples", type=int, default=256, help="samples per photo scored")
    parser.add_argument("--converged-steps", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (best of)")
    parser.add_argument("--candidates", default=None, help="SOLVER:STEPS[:full],... judged against the target "
                        "(default: the server's default)")
    parser.add_argument("--grid-weights", default=None, help="W,W,...: instead of the table, rk3's endpoint error "
                        "per grid weight at the --candidates' rk3 step counts")
    parser.add_argument("--only-candidates", action="store_true", help="time and score the --candidates and the "
                        "reference only, not the other solvers")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--record", metavar="PATH", help="also write the figures as JSON (a file, or a folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from geoplonk_service import protocol as P

    specs = [text.split(":") for text in
             (args.candidates or f"{P.DEFAULT_OPTIONS['solver']}:{P.STEPS.default}").split(",")]
    if any(len(spec) not in (2, 3) or spec[2:] not in ([], ["full"]) for spec in specs):
        raise SystemExit(f"--candidates: SOLVER:STEPS or SOLVER:STEPS:full, got {args.candidates!r}")
    candidates = [(spec[0], int(spec[1])) for spec in specs if not spec[2:]]
    cases = [] if args.only_candidates else [(*case, True) for case in CASES]
    cases += [case for case in ((spec[0], int(spec[1]), "bf16", not spec[2:]) for spec in specs) if case not in cases]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.n} samples per photo timed, "
          f"{args.accuracy_samples} scored, converged: rk4 {args.converged_steps} steps fp32")
    figures, notes = [], []
    for name in args.models.split(","):
        if name == "default":
            flow, emb, cfg, what = default_model_photos(args.cache, args.photos)
            title = f"default model (earth-tiles), cfg {cfg:g}, {what}"
        elif name in ("plonk-smooth", "plonk-raw"):
            flow = random_plonk(smooth=name == "plonk-smooth")
            emb = torch.randn(1, flow.config.cond_dim, generator=torch.Generator().manual_seed(1))
            cfg, title = 0.0, f"PLONK size, random weights ({name.split('-')[1]} in gamma), cfg 0, one photo"
        else:
            raise SystemExit(f"unknown model {name!r}")
        print(f"\n{title}:")
        x0 = uniform_sphere(args.n, generator=torch.Generator().manual_seed(0))
        if args.grid_weights:
            grid_weight_table(flow, emb, x0[: args.accuracy_samples], cfg=cfg, converged_steps=args.converged_steps,
                              steps=[k for solver, k in candidates if solver == "rk3"],
                              weights=[float(w) for w in args.grid_weights.split(",")])
            continue
        result = solver_accuracy_table(flow, emb, x0, cfg=cfg, cases=cases, accuracy_samples=args.accuracy_samples,
                                       converged_steps=args.converged_steps, repeats=args.repeats,
                                       reference=reference_sampler(flow, "cpu"))
        for pair in candidates:
            line = verdict(result["rows"], *pair)
            if line:
                print(f"  target (the reference 32-step Euler's median and p99 in a tenth of its time): {line}")
                notes.append(f"{name}: {line}.")
        conv = result["converged"]
        notes.append(f"{name}: converged solution rk4 {conv['steps']} steps fp32; at half the steps it differs by "
                     f"median {conv['half_steps_median_km']:.3g} km, p99 {conv['half_steps_p99_km']:.3g} km.")
        for row in result["rows"]:
            figures.append({"what": f"{name}: {row['label']} ({row['evals']} evaluations)",
                            "value": round(row["seconds"], 3), "unit": "s per photo",
                            "compare": f"median {row['median_km']:.3g} km, p99 {row['p99_km']:.3g} km",
                            "note": row.get("note")})
    if args.record:
        from render_doc import write_record

        write_record(args.record, "bench_solvers",
                     "Endpoint error (to a converged solution) against time, per solver and step count",
                     figures, notes=[f"{args.n} samples per photo timed (best of {args.repeats} round-robin rounds), "
                                     f"{args.accuracy_samples} per photo scored; {torch.get_num_threads()} threads.",
                                     *notes])


if __name__ == "__main__":
    main()
