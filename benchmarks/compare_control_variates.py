"""How close the localizability estimate gets to the mean over all draws, by control variate and number of exact
draws, offline: no network runs, only every draw's exact log-density saved by check_localizability.py --save.

For each photo and each setting, --repeats random choices of the exact draws (stratified by the control's rank as
engine.likelihood.mean_log_density takes them, or plain at random) give the estimate's error against the mean
of all the photo's draws: the sampling error alone, without the ODE's truncation.

  .venv/server/bin/python benchmarks/check_localizability.py --tiles 0:100 --exact rk4:16 --save build/loc/loc.npz
  .venv/server/bin/python benchmarks/compare_control_variates.py build/loc/loc.npz
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_server.engine.likelihood import DENSITY_STRATA, STRATUM_SHARES, knn_log_density  # noqa: E402
from model_server.products.kde import adaptive_kappas, log_kernel_sums, select_kappa, vmf_log_norms  # noqa: E402

SCALE = 4 * math.pi * math.log(2)  # log-density (nats/sr) to localizability


def vmf_leave_one_out(x: np.ndarray, kappa: np.ndarray | float) -> np.ndarray:
    """Each draw's von Mises-Fisher kernel density among the others (nats/sr)."""
    k = np.broadcast_to(np.asarray(kappa, dtype=np.float64), (len(x),))
    return log_kernel_sums(x, x, k, vmf_log_norms(k), leave_out_own=True) - np.log(len(x) - 1)


def controls(x: np.ndarray) -> dict[str, np.ndarray]:
    out = {f"kNN k={k}": knn_log_density(torch.from_numpy(x).float()[None], k)[0].double().numpy()
           for k in (5, 10, 20, 40)}
    kappa = select_kappa(x)
    out["KDE, fixed kappa"] = vmf_leave_one_out(x, kappa)
    out["KDE, adaptive kappas"] = vmf_leave_one_out(x, adaptive_kappas(x, kappa))
    return out


def estimates(c: np.ndarray, lp: np.ndarray, m: int, stratified: bool, repeats: int,
              rng: np.random.Generator) -> np.ndarray:
    """mean(c) + the residual lp - c's mean over m exact draws (by stratum when stratified), `repeats` times."""
    n, residual = len(c), lp - c
    if not stratified:
        return np.array([c.mean() + residual[rng.choice(n, m, replace=False)].mean() for _ in range(repeats)])
    rank = np.empty(n, dtype=int)
    rank[np.argsort(c, kind="stable")] = np.arange(n)
    upper = [round(n * q) for q in DENSITY_STRATA]
    sizes = np.diff([0, *upper])
    take = np.minimum(np.maximum(np.diff([0, *np.round(m * np.cumsum(STRATUM_SHARES)).astype(int)]), 1), sizes)
    members = [np.flatnonzero(np.searchsorted(upper, rank, side="right") == h) for h in range(len(upper))]
    return np.array([c.mean() + sum(size / n * residual[rng.choice(mem, t, replace=False)].mean()
                                    for size, t, mem in zip(sizes, take, members, strict=True))
                     for _ in range(repeats)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("saved", help="an .npz of check_localizability.py --save, without --exact-from")
    parser.add_argument("--exact", default="32,48,64,96", help="numbers of exact draws per photo")
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    saved = np.load(args.saved)
    if "exact_log_density" not in saved:
        raise SystemExit(f"{args.saved} holds no exact log-densities: save it without --exact-from")
    draws, lp = saved["draws"].astype(np.float64), saved["exact_log_density"].astype(np.float64)
    rng = np.random.default_rng(0)
    truth = lp.mean(1)
    per_photo = [controls(x) for x in draws]
    print(f"{len(draws)} photos, {draws.shape[1]} draws each; errors in localizability units (log-density / 4 pi ln 2)")
    print("control              residual sd (nats, median over photos)")
    for name in per_photo[0]:
        print(f"  {name:20s} {np.median([np.std(lp[i] - c[name]) for i, c in enumerate(per_photo)]):.3f}")
    print("exact  control              choice      RMSE   median|err|  max|err| over the photos (median of repeats)")
    for m in (int(v) for v in args.exact.split(",")):
        for name in per_photo[0]:
            for stratified in (True, False):
                err = np.array([(estimates(c[name], lp[i], m, stratified, args.repeats, rng) - truth[i]) / SCALE
                                for i, c in enumerate(per_photo)])  # (photos, repeats)
                print(f"{m:5d}  {name:20s} {'stratified' if stratified else 'plain':10s}  "
                      f"{np.sqrt((err ** 2).mean()):.4f}  {np.median(np.abs(err)):.4f}       "
                      f"{np.median(np.abs(err).max(0)):.4f}", flush=True)


if __name__ == "__main__":
    main()
