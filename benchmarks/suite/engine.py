"""Parts 1-4, in this process: the matmul roofline, sampling at the PLONK size against the reference, accuracy
against cost per solver, and exact log-density throughput."""

from __future__ import annotations

import inspect
import traceback
import types
import warnings

from . import common
from .common import (
    DEFAULT,
    DEFAULT_MODEL,
    PHOTO,
    PLONK,
    Sizes,
    distance_km,
    log,
    median,
    percentile,
    timed,
)

# The solver that gives the converged endpoints: the first of these the engine has (highest order first).
CONVERGED_PREFERENCE = ("rk4", "dpm3", "heun", "midpoint", "euler")


def random_flow(config, device, seed: int = 0):
    """A GeoAdaLNMLP with random weights in every layer (the zero-initialised output layers too), as
    benchmarks/bench_engine.py and tests/engine/test_oracle.randomise make them."""
    import torch

    from model_server.engine.network import GeoAdaLNMLP

    net = GeoAdaLNMLP(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / p.shape[-1] ** 0.5 if p.dim() > 1 else 0.05))
    return net.to(device).eval()


def flop_count(config) -> dict:
    """FLOPs (2 per multiply-add) of the network's matmuls per evaluation: per sample, and per image (the AdaLN
    modulations, which our network computes once per image and the reference once per sample)."""
    d, e, c, depth, i = config.dim, config.expansion, config.cond_dim, config.depth, config.input_dim
    initial, blocks, final = 2 * i * d, depth * 2 * (2 * d * d * e), 2 * d * i
    cond, time_emb = 2 * c * d, 2 * (d // 4) * d + 2 * d * d
    ada, final_ada = depth * 2 * d * 3 * d, 2 * d * 2 * d
    return {
        "per_sample": initial + blocks + final,
        "per_image": cond + time_emb + ada + final_ada,
        "terms": {"initial_mapper": initial, "blocks' MLPs": blocks, "final_linear": final,
                  "cond_mapper": cond, "time embedder": time_emb, "blocks' ada_map": ada, "final_adaln": final_ada},
    }


def reference_sampler(flow, device):
    """run(x0 (n, 3), emb (1, cond), steps, cfg) -> (n, 3) endpoints of the authors' sampler on flow's weights,
    or None where diff-plonk is not installed."""
    import torch

    try:
        import plonk_reference

        mlp = plonk_reference.load("models.networks.mlp")
        sampler = plonk_reference.load("models.samplers.riemannian_flow_sampler")
        schedulers = plonk_reference.load("models.schedulers")
    except ImportError as exc:
        log(f"  (the reference is not available: {exc})")
        return None
    c = flow.config
    ref = mlp.GeoAdaLNMLP(c.input_dim, c.dim, c.depth, c.expansion, c.cond_dim)
    ref.load_state_dict(flow.state_dict())
    ref = ref.to(device).eval()
    scheduler = schedulers.SigmoidScheduler(start=-7, end=3)

    def run(x0, emb, steps: int, cfg: float = 0.0):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x0 = x0.to(device)
            batch = {"y": x0.clone(), "emb": emb.to(device).expand(x0.shape[0], -1)}
            return sampler.riemannian_flow_sampler(ref, batch, conditioning_keys="emb", scheduler=scheduler,
                                                   num_steps=steps, cfg_rate=cfg)

    return run


# ------------------------------------------------------------------------------------------------ 1 and 2


def precisions_run(device) -> tuple[str, ...]:
    """The precisions the server can run here: bf16 only where the device has bf16 units. Elsewhere the server
    runs a "bf16" request in fp32 (sampling.supported_precision): emulated bf16 is a path no request takes, and
    timing it would cost minutes per figure."""
    from model_server.engine.sampling import supported_precision

    return ("fp32", "bf16") if supported_precision("bf16", device) == "bf16" else ("fp32",)


def matmul_ways(n: int, device) -> dict:
    """{precision: {way: run}} for precisions_run: an n x n product on all cores at once (intra-op threads) and,
    on a multi-core CPU, split by rows over one row worker per core, as the samplers run."""
    import torch

    from model_server.engine.runtime import row_workers

    cores = torch.get_num_threads()
    workers = row_workers(cores) if torch.device(device).type == "cpu" and cores > 1 else None
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name in precisions_run(device):
        dtype = torch.bfloat16 if name == "bf16" else torch.float32
        a = torch.randn(n, n, generator=gen).to(device, dtype)
        b = torch.randn(n, n, generator=gen).to(device, dtype)
        out[name] = {"intra-op": lambda a=a, b=b: torch.mm(a, b)}
        if workers is not None:
            parts = list(a.tensor_split(cores))
            out[name]["row workers"] = lambda parts=parts, b=b: workers.map(torch.mm, [(p, b) for p in parts])
    return out


def part_roofline(sizes: Sizes, device) -> dict:
    """The larger of two ways to run an n x n matmul (matmul_ways). A loaded machine slows the intra-op way
    several times more than the row workers, which would put a sampler above 100 % of the roofline."""
    n, out = sizes.roofline_size, {"size": sizes.roofline_size, "repeats": sizes.roofline_repeats, "ways": {}}
    for name, ways in matmul_ways(n, device).items():
        rates = {way: 2 * n**3 / median(timed(run, sizes.roofline_repeats, device)) / 1e9 for way, run in ways.items()}
        out["ways"][name] = rates
        out[name] = max(rates.values())
        log(f"  {name} {n} x {n} matmul: " + ", ".join(f"{way} {r:,.0f}" for way, r in rates.items()) + " GFLOP/s")
    return out


def part_sampling(sizes: Sizes, device, flow, emb, x0, reference) -> dict:
    """One photo's samples by Euler, ours at each of precisions_run and the reference's fp32 (warm-up: 2 steps
    each), timed in round-robin rounds with part 1's matmuls: a shared machine's speed changes from minute to
    minute, so each sampler's share of the roofline is taken against the matmuls of its own rounds."""
    from model_server.engine.sampling import sample

    n, steps = sizes.samples, sizes.steps
    runs, warmups = {}, {}
    for precision in precisions_run(device):
        def run(precision=precision, k=steps):
            return sample(flow, emb, n, steps=k, solver="euler", x0=x0, precision=precision)

        runs[f"ours {precision}"], warmups[f"ours {precision}"] = run, lambda run=run: run(k=2)
    if reference is not None:
        runs["reference fp32"] = lambda: reference(x0, emb, steps)
        warmups["reference fp32"] = lambda: reference(x0, emb, 2)
    size = sizes.roofline_size
    matmuls = {(name, way): run for name, ways in matmul_ways(size, device).items() for way, run in ways.items()}
    funcs = {**runs, **matmuls}
    for key, func in funcs.items():
        warmups.get(key, func)()
    times: dict = {key: [] for key in funcs}
    for _ in range(sizes.repeats):
        for key, func in funcs.items():
            times[key].extend(timed(func, 1, device, warmup=False))
    seconds = {name: median(times[name]) for name in runs}
    for name, sec in seconds.items():
        log(f"  {name}: {sec:.3f} s")
    roofline = {"size": size}
    for name, way in matmuls:  # the faster way, as in part 1
        roofline[name] = max(roofline.get(name, 0.0), 2 * size**3 / median(times[name, way]) / 1e9)
    log("  matmuls of the same rounds: " + ", ".join(f"{p} {rate:,.0f}" for p, rate in roofline.items() if p != "size")
        + " GFLOP/s")
    return {"n": n, "steps": steps, "seconds": seconds, "roofline": roofline}


# ------------------------------------------------------------------------------------------------ 3


def helper_accuracy():
    """HOOK (issue 21, part 3): benchmarks/bench_solvers.py's accuracy-against-cost function, once that file exists.

    Looked up as accuracy_vs_cost (or accuracy_against_cost). bench_all passes it, by keyword and only those its
    signature names: flow, emb (1, cond_dim), x0 (n, 3), n, device, repeats, accuracy_samples, converged_steps,
    steps (a step grid), precision, cfg, reference (run(x0, emb, steps, cfg) by the authors' sampler, or None),
    reference_steps (its Euler step counts: (32, 250)), reference_seconds ({steps: s} already measured here),
    default ((solver, steps) of the server), quick.
    It returns a list of rows, or a dict with "rows" (and optionally "converged", "notes"): each row a dict with
    solver, steps, seconds, median_km, p99_km, and optionally precision, evals, label, note, and reference (True
    for the authors' Euler). Until it exists, or when it fails, `accuracy_vs_cost` below measures the same.
    """
    try:
        import bench_solvers
    except ImportError:
        return None
    for name in ("accuracy_vs_cost", "accuracy_against_cost"):
        func = getattr(bench_solvers, name, None)
        if callable(func):
            return func
    log("  (benchmarks/bench_solvers.py has no accuracy_vs_cost: the built-in measurement runs)")
    return None


def call_helper(func, **kwargs) -> dict:
    params = inspect.signature(func).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    out = func(**kwargs)
    result = dict(out) if isinstance(out, dict) else {"rows": list(out)}
    for row in result["rows"]:
        missing = [k for k in ("solver", "steps", "seconds", "median_km", "p99_km") if k not in row]
        if missing:
            raise ValueError(f"a row of bench_solvers lacks {', '.join(missing)}: {row}")
    result["rows"] = [dict(row) for row in result["rows"]]
    result["source"] = "benchmarks/bench_solvers.py"
    return result


def accuracy_vs_cost(flow, emb, x0, *, n, device, repeats, accuracy_samples, converged_steps, steps, precision,
                     cfg=0.0, reference=None, reference_steps=(32, 250), reference_seconds=None, default=None,
                     extra=()) -> dict:
    """The built-in measurement of part 3 (until benchmarks/bench_solvers.py provides one).

    Endpoints of the first `accuracy_samples` start points against a converged solution (fp32, the highest-order
    solver the engine has, `converged_steps` steps; the same at half the steps gives its error bar), for every
    solver of engine.solvers.SOLVERS at each step count in `steps` and the (solver, steps) pairs of `extra` and
    `default`, at `precision`, each timed on all n start points (median of `repeats`; one warm-up first).
    Network evaluations are counted by a forward hook on cond_mapper, which every evaluation calls once (both
    precisions through network.FastVelocity, the guided pair in one call). The reference's Euler at
    `reference_steps`: endpoints from its own code (at cfg < 0, which it does not guide, from our fp32 Euler on its
    path); its time measured at the first at |cfg| (or taken from reference_seconds), scaled linearly for the rest.
    """
    from model_server.engine.sampling import sample
    from model_server.engine.solvers import SOLVERS

    emb = emb[:1]  # the built-in measurement scores one photo
    m = min(accuracy_samples, n)
    conv = next((s for s in CONVERGED_PREFERENCE if s in SOLVERS), next(iter(SOLVERS)))
    truth = sample(flow, emb, m, steps=converged_steps, solver=conv, x0=x0[:m], precision="fp32", cfg=cfg)[0]
    half = sample(flow, emb, m, steps=converged_steps // 2, solver=conv, x0=x0[:m], precision="fp32", cfg=cfg)[0]
    check = distance_km(half, truth)
    converged = {"solver": conv, "steps": converged_steps, "precision": "fp32", "samples": m,
                 "half_steps_median_km": float(check.median()), "half_steps_p99_km": percentile(check, 0.99)}
    grid = [(solver, k) for solver in SOLVERS for k in steps]
    grid += [tuple(pair) for pair in (*extra, *([default] if default else [])) if pair[0] in SOLVERS]
    grid = list(dict.fromkeys(grid))
    calls = [0]

    def count(*_):
        calls[0] += 1

    rows = []
    sample(flow, emb, n, steps=2, solver=grid[0][0], x0=x0, precision=precision, cfg=cfg)  # warm-up
    for solver, k in grid:
        ends: list = []
        handle = flow.cond_mapper.register_forward_hook(count)
        calls[0] = 0
        try:
            times = timed(lambda solver=solver, k=k, ends=ends: ends.append(
                sample(flow, emb, n, steps=k, solver=solver, x0=x0, precision=precision, cfg=cfg)),
                repeats, device, warmup=False)
        finally:
            handle.remove()
        err = distance_km(ends[-1][0, :m], truth)
        rows.append({"solver": solver, "steps": k, "precision": precision, "evals": calls[0] // repeats,
                     "seconds": median(times), "median_km": float(err.median()), "p99_km": percentile(err, 0.99)})
        log(f"  {solver} {k:4d} steps {precision}: {rows[-1]['seconds']:.3f} s, "
            f"median {rows[-1]['median_km']:.3g} km, p99 {rows[-1]['p99_km']:.3g} km")
    if reference is not None:
        measured = dict(reference_seconds or {})
        first = reference_steps[0]
        for k in reference_steps:
            # the authors' sampler guides only at w > 0: below, its path is our fp32 Euler's (the oracle tests
            # hold the two together), timed on the authors' sampler at |w|, the same doubled batch
            if cfg >= 0:
                ends = reference(x0[:m], emb, k, cfg)
            else:
                ends = sample(flow, emb, m, steps=k, solver="euler", x0=x0[:m], precision="fp32", cfg=cfg)[0]
            err = distance_km(ends, truth)
            note = None if cfg >= 0 else "endpoints by our fp32 Euler (the reference's path)"
            if k not in measured:
                if k == first:
                    measured[k] = median(timed(lambda k=k: reference(x0, emb, k, abs(cfg)), repeats, device,
                                               warmup=lambda: reference(x0, emb, 2, abs(cfg))))
                else:
                    measured[k] = measured[first] * k / first
                    note = "; ".join(filter(None, [
                        note, f"time scaled from the reference's {first}-step time (linear in steps)"]))
            rows.append({"solver": "euler", "label": f"reference Euler, {k} steps", "steps": k, "precision": "fp32",
                         "evals": k, "seconds": measured[k], "median_km": float(err.median()),
                         "p99_km": percentile(err, 0.99), "reference": True, **({"note": note} if note else {})})
            log(f"  reference euler {k:4d} steps fp32: {measured[k]:.3f} s, median {rows[-1]['median_km']:.3g} km, "
                f"p99 {rows[-1]['p99_km']:.3g} km")
    return {"rows": rows, "converged": converged, "source": "built-in (benchmarks/suite/engine.py)"}


# Few-step samplers judged against the target beside the server's default (docs/samplers.md).
FAST_CANDIDATES = (("rk3", 6), ("rk3", 7))


def part_accuracy(sizes: Sizes, device, flow, emb, x0, reference, reference_seconds, quick: bool,
                  cfg: float = 0.0, rule: str | None = None) -> dict:
    """`cfg`: the guidance every sampler draws at (the default model's calibrated w, the field the server
    integrates for it; 0 for the PLONK size); `rule`: the model's guidance by land share, which cfg is one w of."""
    from geoplonk_service import protocol as P
    from model_server.engine.sampling import supported_precision

    default = (P.DEFAULT_OPTIONS["solver"], sizes.steps if quick else int(P.DEFAULT_OPTIONS["steps"]))
    precision = supported_precision(P.DEFAULT_OPTIONS["precision"], device)  # what the server runs here
    kwargs = dict(flow=flow, emb=emb, x0=x0, n=sizes.samples, device=device, repeats=sizes.repeats,
                  accuracy_samples=sizes.accuracy_samples, converged_steps=sizes.converged_steps,
                  steps=tuple(sorted(set(sizes.step_grid))), precision=precision, cfg=cfg, reference=reference,
                  reference_steps=sizes.reference_steps, reference_seconds=reference_seconds, default=default,
                  extra=() if quick else FAST_CANDIDATES)
    helper, result, notes = helper_accuracy(), None, []
    if helper is not None:
        try:
            result = call_helper(helper, **kwargs, quick=quick)
        except Exception as exc:  # noqa: BLE001 - the built-in measurement stands in, and the record says so
            traceback.print_exc()
            log("  !! benchmarks/bench_solvers.py failed: the built-in measurement runs instead")
            notes.append(f"benchmarks/bench_solvers.py failed ({type(exc).__name__}: {exc}): built-in measurement.")
    if result is None:
        result = accuracy_vs_cost(**{**kwargs, "extra": [*kwargs["extra"], *(("euler", k) for k in sizes.euler_extra)]})
    result["notes"] = list(result.get("notes") or []) + notes
    result.update({"default": {"solver": default[0], "steps": default[1], "precision": precision}, "cfg": cfg,
                   "guidance_rule": rule, "samples": sizes.samples})
    return result


# ------------------------------------------------------------------------------------------------ 4


def part_density(sizes: Sizes, device, flow, emb, cfg: float = 0.0) -> dict:
    """log_density points per second: rk4 16 steps, and the server's localizability as the server calls it, at
    the w the server would draw this photo at (cfg)."""
    import torch

    from model_server.engine.likelihood import log_density
    from model_server.engine.sphere import uniform_sphere
    from model_server.server import pipeline

    gen = torch.Generator().manual_seed(1)
    points = uniform_sphere(sizes.density_points, generator=gen).to(device)
    out, values = {}, {}
    for precision in precisions_run(device):
        autocast = precision == "bf16"

        def solve(p=points, steps=16, autocast=autocast):
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
                return log_density(flow, emb, p, method="rk4", steps=steps)

        values[precision] = solve()
        seconds = median(timed(solve, sizes.repeats, device, warmup=lambda solve=solve: solve(points[:2], 2)))
        key = "rk4" if precision == "fp32" else "rk4_bf16"
        out[key] = {"points": len(points), "steps": 16, "seconds": seconds, "precision": precision}
        log(f"  rk4, 16 steps, {precision}: {len(points) / seconds:.1f} points/s")
    if "bf16" in values:
        diff = (values["bf16"] - values["fp32"]).abs().flatten()
        out["rk4_bf16"].update(median_abs_diff_nats=float(diff.median()), max_abs_diff_nats=float(diff.max()))
        log(f"  bf16 against fp32: median |diff| {float(diff.median()):.2g} nats, max {float(diff.max()):.2g}")
    k = int(getattr(pipeline, "LOCALIZABILITY_SAMPLES", 64))
    k = min(k, sizes.localizability_points or k)
    own = uniform_sphere(k, generator=gen).to(device)[None]
    model = types.SimpleNamespace(flow=flow, device=torch.device(device))
    method: list[str] = []
    seconds = median(timed(lambda: method.append(pipeline.localizability(model, emb, own, cfg=cfg)[1]),
                           sizes.repeats, device))
    out["server"] = {"points": k, "method": method[-1], "seconds": seconds}
    log(f"  the server's localizability ({method[-1]}, {k} points): {seconds:.3f} s = {k / seconds:.1f} points/s")
    return out


# ------------------------------------------------------------------------------------------------ all four


def run(sizes: Sizes, device, parts: set, quick: bool, raw: dict, failures: list) -> None:
    """Run the engine parts asked for into raw; a part that raises is printed, listed in failures and skipped."""
    import torch

    from model_server.engine.network import FlowConfig
    from model_server.engine.sphere import uniform_sphere

    def attempt(part: str, label: str, func):
        return common.attempt(raw, failures, part, label, func) if part in parts else None

    config = FlowConfig()
    raw["flops"] = {"config": config.to_dict(), **flop_count(config)}
    raw["precisions"] = list(precisions_run(device))
    # the guidance part 3 draws at and the one photo's w of part 4 (default 0)
    models, accuracy_emb, accuracy_cfg, accuracy_rule, photo_cfg = {}, {}, {}, {}, {}
    if parts & {"sampling", "accuracy", "density"}:
        gen = torch.Generator().manual_seed(0)
        models[PLONK] = (random_flow(config, device), torch.randn(1, config.cond_dim, generator=gen).to(device))
    if parts & {"accuracy", "density"}:
        from PIL import Image

        from model_server.engine.model import load_model
        from model_server.photo_guidance import cfg_for_photo

        try:
            model = load_model(str(DEFAULT_MODEL), device=device)
            # PHOTO first: the one photo of the other parts; part 3 scores every sample tile (a sampler's
            # accuracy varies from photo to photo)
            photos = [PHOTO, *sorted(p for p in PHOTO.parent.glob("*.jpg") if p != PHOTO)]
            embs = []
            for path in photos:
                with Image.open(path) as image:
                    embs.append(model.encoder.embed([image.convert("RGB")]))
            accuracy_emb[DEFAULT] = torch.cat(embs)
            models[DEFAULT] = (model.flow, accuracy_emb[DEFAULT][:1].to(device))
            guidance = model.guidance
            accuracy_cfg[DEFAULT] = float(guidance.cfg)
            if guidance.needs_land_share:
                accuracy_rule[DEFAULT] = guidance.describe()
            photo_cfg[DEFAULT] = cfg_for_photo(model, accuracy_emb[DEFAULT][:1])
        except Exception as exc:  # noqa: BLE001 - recorded; the PLONK-size parts still run
            traceback.print_exc()
            failures.append(f"loading the {DEFAULT} ({DEFAULT_MODEL}): {type(exc).__name__}: {exc}")
    x0 = uniform_sphere(sizes.samples, generator=torch.Generator().manual_seed(2))
    references = {name: reference_sampler(flow, device) for name, (flow, _) in models.items()}

    result = attempt("roofline", "", lambda: part_roofline(sizes, device))
    if result:
        raw["roofline"] = result
    if PLONK in models:
        flow, emb = models[PLONK]
        result = attempt("sampling", "", lambda: part_sampling(sizes, device, flow, emb, x0, references[PLONK]))
        if result:
            raw["sampling"] = result
    # The reference's 32-step time at the PLONK size, measured just now, serves part 3 as well.
    measured = (raw.get("sampling") or {}).get("seconds", {}).get("reference fp32")
    plonk_ref_seconds = {sizes.steps: measured} if measured and sizes.steps == sizes.reference_steps[0] else {}
    for name, (flow, emb) in models.items():
        emb = accuracy_emb.get(name, emb).to(device)
        result = attempt("accuracy", f", {name}", lambda flow=flow, emb=emb, name=name: part_accuracy(
            sizes, device, flow, emb, x0, references[name], plonk_ref_seconds if name == PLONK else {}, quick,
            cfg=accuracy_cfg.get(name, 0.0), rule=accuracy_rule.get(name)))
        if result:
            raw.setdefault("accuracy", {})[name] = result
    for name, (flow, emb) in models.items():
        result = attempt("density", f", {name}", lambda flow=flow, emb=emb, name=name: part_density(
            sizes, device, flow, emb, photo_cfg.get(name, 0.0)))
        if result:
            raw.setdefault("density", {})[name] = result
