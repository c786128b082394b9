"""The density raster's evaluation: the kernel sums of products/raster_sum.py against the row-by-row sum
kde_raster used before (every kernel within a latitude band at every column of a row, float32), in one run.

Cases (1024 samples by default): uniform draws (pilot kappa 2), a concentrated cloud (kappa 2000), a mix of
a tight cluster, a broad one and uniform draws, and the default model's own samples for samples/ocean.jpg and
samples/nile_delta.jpg (the server's options: its calibrated guidance, bf16, default steps and seed).
Per case: seconds for the bandwidths (select_kappa + adaptive_kappas, the same code either way), the old and
the new evaluation on the same bandwidths, kde_raster end to end, and each evaluation's largest relative
error per cell against the exact float64 sum of every kernel (with the uniform floor) on a sample of rows.

  .venv/server/bin/python benchmarks/bench_raster.py [--resolution 0.25] [--no-model] [--record benchmarks/results/]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_server.geodesy import latlon_to_xyz  # noqa: E402
from model_server.products.density import DEFAULT_UNIFORM_WEIGHT, _cuts, kde_raster  # noqa: E402
from model_server.products.grid import Grid  # noqa: E402
from model_server.products.kde import adaptive_kappas, max_kappa_for, select_kappa, vmf_log_norms  # noqa: E402
from model_server.products.raster_sum import _reference_sums, kernel_sums  # noqa: E402

CUTOFF = 30.0  # the old evaluation's: kernels beyond exp(-30) of their peak in latitude were skipped


def old_kernel_sums(s: np.ndarray, kappas: np.ndarray, grid: Grid) -> np.ndarray:
    """kde_raster's evaluation before products/raster_sum.py, verbatim: row by row, float32, every column."""
    lat_s = np.arcsin(np.clip(s[:, 2], -1.0, 1.0))
    order = np.argsort(lat_s)
    lat_sorted = lat_s[order]
    s_sorted = s[order].astype(np.float32)
    k_sorted = kappas[order].astype(np.float32)
    log_c_sorted = vmf_log_norms(kappas[order]).astype(np.float32)
    reach = np.arccos(np.maximum(-1.0, 1.0 - CUTOFF / kappas[order]))
    widest = float(reach.max()) if len(reach) else 0.0
    lats = np.deg2rad(grid.lat_centers())
    density = np.zeros((grid.height, grid.width))
    for row in range(grid.height):
        lo, hi = np.searchsorted(lat_sorted, [lats[row] - widest, lats[row] + widest])
        near = np.arange(lo, hi)[np.abs(lat_sorted[lo:hi] - lats[row]) <= reach[lo:hi]]
        if len(near) == 0:
            continue
        a = grid.row_xyz(row).astype(np.float32) @ s_sorted[near].T
        a -= 1.0
        a *= k_sorted[near]
        a += log_c_sorted[near]
        np.exp(a, out=a)
        density[row] = a.sum(axis=1, dtype=np.float64)
    return density


def new_kernel_sums(s: np.ndarray, kappas: np.ndarray, grid: Grid) -> np.ndarray:
    return kernel_sums(s, kappas, vmf_log_norms(kappas), grid, _cuts(kappas, DEFAULT_UNIFORM_WEIGHT))


def synthetic_cases(n: int, seed: int) -> dict[str, tuple[np.ndarray, float | None]]:
    """name -> (samples, pilot kappa or None for the leave-one-out choice)."""
    rng = np.random.default_rng(seed)

    def cloud(lat, lon, spread, k):
        return latlon_to_xyz(np.clip(lat + rng.normal(0, spread, k), -89.9, 89.9), lon + rng.normal(0, spread, k))

    uniform = rng.normal(size=(n, 3))
    uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
    tight, broad = int(0.4 * n), int(0.4 * n)
    return {
        "uniform (kappa ~2)": (uniform, None),
        "concentrated (kappa 2000)": (cloud(10, 30, 1.3, n), 2000.0),
        "mix: tight, broad, uniform": (np.concatenate([cloud(35, 30, 0.3, tight), cloud(-5, 60, 8, broad),
                                                       uniform[: n - tight - broad]]), None),
    }


def model_cases(n: int) -> dict[str, tuple[np.ndarray, float | None]]:
    """The default model's samples of two sample photos, drawn as the server draws them."""
    import torch

    from geoplonk_service import protocol as P
    from model_server.engine.model import load_model
    from model_server.engine.sampling import sample, start_points, supported_precision
    from model_server.images import decode_image

    model = load_model(None, device="cpu")
    options = P.DEFAULT_OPTIONS
    x0 = start_points(n, options["seed"])
    precision = supported_precision("bf16", model.device)
    cases = {}
    for photo in ("ocean", "nile_delta"):
        blob = (ROOT / "samples" / f"{photo}.jpg").read_bytes()
        emb = model.encoder.embed([decode_image(blob, max_bytes=P.MAX_IMAGE_BYTES)]).to(model.device)
        with torch.inference_mode():
            s = sample(model.flow, emb, n, cfg=model.distribution_cfg, x0=x0, steps=options["steps"],
                       solver=options["solver"], precision=precision)
        cases[f"{model.name}, samples/{photo}.jpg"] = (s[0].float().cpu().numpy().astype(np.float64), None)
        print(f"  drew {n} samples for {photo}.jpg (cfg {model.distribution_cfg:g}, {precision})", flush=True)
    return cases


def best_of(func, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def max_relative_error(sums: np.ndarray, exact: np.ndarray, n: int) -> float:
    """Largest relative error per cell of the densities (with the uniform floor) that the sums give."""
    eps = DEFAULT_UNIFORM_WEIGHT

    def density(x):
        return (1 - eps) * x / n + eps / (4 * math.pi)

    return float(np.max(np.abs(density(sums) / density(exact) - 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=float, default=0.25)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="best of, for the new evaluation (the old runs once)")
    parser.add_argument("--rows", type=int, default=12, help="rows checked against the exact sum")
    parser.add_argument("--no-model", action="store_true", help="skip the default model's samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", metavar="PATH",
                        help="also write the figures as JSON (a file, or a folder: benchmarks/results/); "
                             "then run benchmarks/render_doc.py")
    args = parser.parse_args()
    grid = Grid.global_grid(args.resolution)
    load_before = os.getloadavg()[0]
    print(f"{args.n} samples, {grid.height} x {grid.width} cells ({args.resolution:g} degrees), "
          f"load average {load_before:.1f} on {os.cpu_count()} cores")
    cases = synthetic_cases(args.n, args.seed)
    if not args.no_model:
        cases.update(model_cases(args.n))
    figures = []
    for name, (samples, pilot) in cases.items():
        s = samples / np.linalg.norm(samples, axis=1, keepdims=True)
        max_kappa = max_kappa_for(grid.resolution)
        start = time.perf_counter()
        kappa0 = pilot if pilot is not None else select_kappa(s, max_kappa)
        kappas = adaptive_kappas(s, kappa0, max(max_kappa, kappa0))
        t_bandwidth = time.perf_counter() - start
        t_new, new = best_of(lambda s=s, k=kappas: new_kernel_sums(s, k, grid), args.repeats)
        t_old, old = best_of(lambda s=s, k=kappas: old_kernel_sums(s, k, grid), 1)
        t_raster, _ = best_of(lambda s=s, k=pilot: kde_raster(s, grid, kappa=k), args.repeats)
        densest = int(np.unravel_index(np.argmax(new), new.shape)[0])
        rows = sorted({*np.linspace(0, grid.height - 1, args.rows - 1).astype(int).tolist(), densest})
        exact = _reference_sums(s, kappas, vmf_log_norms(kappas), grid, rows)
        err_new = max_relative_error(new[rows], exact, len(s))
        err_old = max_relative_error(old[rows], exact, len(s))
        q = np.percentile(kappas, [0, 50, 100])
        print(f"\n{name}: pilot kappa {kappa0:.4g}, kappa_i {q[0]:.3g} / {q[1]:.3g} / {q[2]:.3g} (min/median/max)")
        print(f"  bandwidths {t_bandwidth:7.3f} s")
        print(f"  evaluation old {t_old:7.3f} s, new {t_new:7.3f} s: {t_old / t_new:.1f}x")
        print(f"  kde_raster end to end (new) {t_raster:7.3f} s; before: {t_bandwidth + t_old:.3f} s")
        print(f"  largest relative error per cell on {len(rows)} rows: new {err_new:.1e}, old {err_old:.1e}")
        figures += [
            {"what": f"{name}: evaluation, before", "value": round(t_old, 3), "unit": "s"},
            {"what": f"{name}: evaluation, raster_sum", "value": round(t_new, 3), "unit": "s",
             "compare": f"{t_old / t_new:.1f}x faster"},
            {"what": f"{name}: bandwidths (select_kappa + adaptive_kappas)", "value": round(t_bandwidth, 3),
             "unit": "s"},
            {"what": f"{name}: kde_raster end to end", "value": round(t_raster, 3), "unit": "s",
             "compare": f"before: {t_bandwidth + t_old:.3f} s"},
            {"what": f"{name}: largest relative error per cell, raster_sum", "value": float(f"{err_new:.1e}"),
             "unit": "", "compare": f"before: {err_old:.1e}"},
        ]
    load_after = os.getloadavg()[0]
    print(f"\nload average {load_after:.1f}")
    if args.record:
        from render_doc import write_record

        write_record(
            args.record, "bench_raster",
            f"Density raster at {args.resolution:g} degrees, {args.n} samples: raster_sum against the row-by-row sum",
            figures, conditions=f"load average {load_before:.1f} at the start, {load_after:.1f} at the end "
                                f"(shared machine: compare within the run)",
            notes=[f"Evaluation: best of {args.repeats} (the old one: one run); the same bandwidths for both.",
                   f"Errors: against the float64 sum of every kernel at every cell, with the uniform floor "
                   f"{DEFAULT_UNIFORM_WEIGHT:g}, on {args.rows} rows spread over the globe and the densest one."])


if __name__ == "__main__":
    main()
