"""The server's localizability against the exact value on held-out photos, and what it costs.

Per photo, the server's own draws (its default options: 1024 samples, its default sampler, bf16, the model's
guidance, seed 0), then three estimates of the mean log-density of those draws / (4 pi ln 2):
  exact   every draw's exact log-density in fp32 (--exact: rk4 32 steps, or dopri5 atol = rtol = 1e-6)
  server  model_server.server.pipeline.localizability, the setting in use
  former  64 draws, midpoint 16 steps, fp32, plain mean: the plain estimate, as a baseline
Prints |estimate - exact| (median, max), Spearman against exact, and seconds per photo (wall and process
CPU) of each estimate and of the server's sampling (the distribution's draws and the best guess's 256).
--validate N checks the exact solve against dopri5 (atol = rtol = 1e-6) on 32 draws of the first N photos;
--exact-from reuses the exact values of an earlier --save of the same rows (the draws are seeded, and checked)
and names the setting they were solved with (a file saved without it: name it with --exact),
and --points/--steps/--divergence/--full-field try another setting than the server's (pipeline.LOCALIZABILITY_*).
--save also keeps every draw and, without --exact-from, its exact log-density:
benchmarks/compare_control_variates.py studies estimators on them.

  .venv/server/bin/python benchmarks/check_localizability.py --tiles 0:100 [--threads 1] [--validate 5]
      [--record benchmarks/results/]
Tiles 300-499 of build/earth-tiles/test.csv were used to choose the number of exact draws and the strata; report
on 0-99 (the steps, LOCALIZABILITY_STEPS = 4, were chosen on 0-99: docs/samplers.md).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geoplonk_service import protocol as P  # noqa: E402
from model_server.engine.likelihood import localizability, log_density  # noqa: E402
from model_server.engine.sampling import sample, start_points, supported_precision  # noqa: E402
from model_server.evaluation.metrics import spearman  # noqa: E402
from model_server.photo_guidance import guess_draws  # noqa: E402
from model_server.server import pipeline  # noqa: E402

SCALE = 4 * math.pi * math.log(2)


def timed(func):
    """(result, wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = func()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def former(model, emb, draws, cfg: float = 0.0):
    logp = log_density(model.flow, emb, draws[:, :64], cfg=cfg, method="midpoint", steps=16)
    return localizability(logp).cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "model_server" / "models" / "earth-tiles"))
    parser.add_argument("--data", default=str(ROOT / "build" / "earth-tiles" / "test.csv"))
    parser.add_argument("--cache", default=str(ROOT / "build" / "earth-tiles" / "emb-test-rot4.npz"))
    parser.add_argument("--tiles", default="0:100", help="START:STOP rows of --data")
    parser.add_argument("--exact", help="rk4:STEPS or dopri5 (default: rk4:32, or --exact-from's)")
    parser.add_argument("--validate", type=int, default=0, metavar="N")
    parser.add_argument("--exact-from", metavar="NPZ", help="exact values from an earlier --save of these rows")
    parser.add_argument("--points", type=int, help="exact draws per photo (default: the server's)")
    parser.add_argument("--steps", type=int, help="rk4 steps (default: the server's)")
    parser.add_argument("--divergence", choices=("exact", "hutchinson"), help="the server's divergence (default: "
                        "the server's)")
    parser.add_argument("--full-field", action="store_true",
                        help="the server's estimate without holding the unguided field over each step")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--save", metavar="NPZ", help="also write the per-photo figures")
    parser.add_argument("--record", metavar="PATH", help="also write the figures as JSON (a file, or a folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.points:
        pipeline.LOCALIZABILITY_SAMPLES = args.points
    if args.steps:
        pipeline.LOCALIZABILITY_STEPS = args.steps
    if args.divergence:
        pipeline.LOCALIZABILITY_DIVERGENCE = args.divergence
    if args.full_field:
        pipeline.LOCALIZABILITY_HOLD_UNGUIDED = False

    from model_server.engine.datasets import embed_rows
    from model_server.engine.model import load_model

    model = load_model(args.model, device="cpu")
    start, stop = (int(v) for v in args.tiles.split(":"))
    emb, _ = embed_rows(args.data, slice(start, stop), model.encoder, args.cache)
    options = P.DEFAULT_OPTIONS
    precision = supported_precision(options["precision"], model.device)
    x0 = start_points(options["samples"], options["seed"])
    guess = min(P.GUESS_SAMPLES, options["samples"])
    earlier = earlier_draws = None
    if args.exact_from:
        with np.load(args.exact_from) as saved:
            if "draws" not in saved:
                raise SystemExit(f"{args.exact_from} holds no draws: make it with this script's --save")
            earlier, earlier_draws = saved["rows"][:, 0], saved["draws"]
            saved_exact = str(saved["exact"]) if "exact" in saved else None
        if args.exact and saved_exact and args.exact != saved_exact:
            raise SystemExit(f"{args.exact_from} holds exact values of {saved_exact}, not {args.exact}")
        exact_known = args.exact or saved_exact
    else:
        exact_known = args.exact or "rk4:32"
        exact_kw = {"method": "dopri5"} if exact_known == "dopri5" else {"method": "rk4", "steps": int(exact_known[4:])}
    exact_label = exact_known or f"as in {args.exact_from}"
    if earlier is not None and len(earlier) != len(emb):
        raise SystemExit(f"{args.exact_from} has {len(earlier)} photos, these rows {len(emb)}")
    print(f"{len(emb)} photos of {args.data} (rows {args.tiles}), model {model.name}, {model.guidance.describe()}, "
          f"{options['samples']} draws, {options['steps']} {options['solver']} steps, {precision}; "
          f"exact: {exact_label}; torch threads {torch.get_num_threads()}", flush=True)

    rows, method, saved_draws, saved_lp, saved_w = [], "", [], [], []
    for i in range(len(emb)):
        one = emb[i : i + 1]

        def draw(one=one):  # as the server: the guess first, whose draws pick the photo's w
            with torch.inference_mode():
                guessed = guess_draws(model.flow, one, x0=x0[:guess], precision=precision)
                w = pipeline.choose_guidance(model, options, guessed[0])[0]["cfg"]
                return sample(model.flow, one, options["samples"], steps=options["steps"], solver=options["solver"],
                              cfg=w, x0=x0, precision=precision), w

        (draws, w), sample_wall, sample_cpu = timed(draw)
        (server, method), server_wall, server_cpu = timed(
            lambda one=one, d=draws, w=w: pipeline.localizability(model, one, d, cfg=w))
        old, old_wall, old_cpu = timed(lambda one=one, d=draws, w=w: former(model, one, d, w))
        if earlier is None:
            exact_lp = log_density(model.flow, one, draws, cfg=w, **exact_kw)
            exact = localizability(exact_lp).item()
            saved_lp.append(exact_lp[0].numpy())
        else:  # the same draws, or the exact values belong to other points (another model or embedding)
            if not np.allclose(draws[0].float().numpy(), earlier_draws[i], atol=1e-5):
                raise SystemExit(f"photo {i + start}: its draws differ from {args.exact_from}'s; "
                                 "same --model, --cache and --tiles?")
            exact = float(earlier[i])
        saved_draws.append(draws[0].float().numpy())
        saved_w.append(w)
        rows.append((exact, float(server[0]), float(old[0]), sample_wall, sample_cpu, server_wall, server_cpu,
                     old_wall, old_cpu))
        if i < args.validate and earlier is None:
            tight = log_density(model.flow, one, draws[:, :32], cfg=w, method="dopri5", atol=1e-6, rtol=1e-6)
            gap = exact_lp[:, :32] - tight
            print(f"  photo {i}: exact solve against dopri5 on 32 draws: max |d log p| {gap.abs().max().item():.2e}, "
                  f"mean {gap.mean().item():+.2e} nats")
        print(f"  photo {i + start}: exact {exact:+.4f} server {server[0]:+.4f} former {old[0]:+.4f}  "
              f"s/photo: sampling {sample_wall:.2f} server {server_wall:.3f} former {old_wall:.3f}", flush=True)

    a = np.array(rows)
    exact, server, old = a[:, 0], a[:, 1], a[:, 2]
    timing = a[:, 3:].mean(0)
    ws = np.array(saved_w)
    if len(set(saved_w)) > 1:  # the label names one photo's w; the photos here took several
        counts = ", ".join(f"{w:g} for {int((ws == w).sum())}" for w in sorted(set(saved_w)))
        held = sum(pipeline.localizability_holds(w) for w in saved_w)
        at = f"at each photo's w ({counts} photos)"
        if 0 < held < len(saved_w):
            at += f"; the unguided field held over each step for {held} of them"
        method = pipeline.localizability_method(options["samples"], precision, at, held == len(saved_w))
    print(f"\nserver: {method}")
    figures = []
    for name, est, wall, cpu in (("server", server, timing[2], timing[3]), ("former", old, timing[4], timing[5])):
        diff = np.abs(est - exact)
        rho = spearman(est, exact)
        print(f"  {name:6s} |diff| median {np.median(diff):.4f} max {np.max(diff):.4f}  Spearman {rho:.4f}  "
              f"{wall:.3f} s/photo wall, {cpu:.3f} s CPU = {cpu / timing[1]:.1%} of sampling's CPU")
        label = method if name == "server" else "64 draws, midpoint 16 steps, fp32"
        figures += [
            {"what": f"{name} ({label}): |diff| from exact, median", "value": round(float(np.median(diff)), 4),
             "unit": "localizability"},
            {"what": f"{name}: |diff| from exact, max", "value": round(float(np.max(diff)), 4),
             "unit": "localizability"},
            {"what": f"{name}: Spearman against exact", "value": round(rho, 4), "unit": ""},
            {"what": f"{name}: time per photo", "value": round(float(wall), 3), "unit": "s",
             "compare": f"{cpu:.3f} s CPU, {cpu / timing[1]:.1%} of the sampling's CPU"},
        ]
    print(f"  sampling (1024 + {guess} draws): {timing[0]:.3f} s/photo wall, {timing[1]:.3f} s CPU")
    figures.append({"what": f"sampling, {options['samples']} + {guess} draws", "value": round(float(timing[0]), 3),
                    "unit": "s", "compare": f"{timing[1]:.3f} s CPU"})
    if args.save:
        per_draw = {"draws": np.stack(saved_draws), "cfg": np.array(saved_w)}
        if exact_known:  # the setting the exact values were solved with, for a later --exact-from
            per_draw["exact"] = np.array(exact_known)
        if saved_lp:  # every draw's exact log-density, to study estimators offline
            per_draw["exact_log_density"] = np.stack(saved_lp)
        np.savez(args.save, rows=a, columns=np.array(["exact", "server", "former", "sample_wall", "sample_cpu",
                                                      "server_wall", "server_cpu", "former_wall", "former_cpu"]),
                 **per_draw)
    if args.record:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from render_doc import write_record

        write_record(args.record, "check_localizability",
                     f"Localizability as the server estimates it against the exact value, {len(emb)} tiles",
                     figures, device="cpu",
                     conditions=f"{args.data} rows {args.tiles}, exact = {exact_label} on all "
                                f"{options['samples']} draws, {torch.get_num_threads()} torch threads",
                     notes=[f"server: {method}"])


if __name__ == "__main__":
    main()
