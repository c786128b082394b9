"""Where the server's localizability error comes from, photo by photo: the steps' truncation or the choice of draws.

Reads a check_localizability.py --save file made without --exact-from (every draw's exact log-density) and, for
each photo asked for, prints in localizability units:
  server     the server's estimate (pipeline.localizability) minus the exact mean over all draws
  choice     the same estimator fed the exact log-density at the draws it chose: the sampling error alone
  steps      the mean over --draws draws of the server's solve (its steps, precision and hold) minus their exact
             values: the truncation's bias, which the estimator passes on whole

  .venv/server/bin/python benchmarks/split_localizability_error.py build/loc/loc-held-0-100.npz --photos 10,83,0 \
      [--steps 6]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_server.engine import likelihood  # noqa: E402
from model_server.engine.sampling import supported_precision  # noqa: E402
from model_server.server import pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("saved", help="an .npz of check_localizability.py --save, without --exact-from")
    parser.add_argument("--photos", required=True, help="comma-separated photo numbers within the file")
    parser.add_argument("--first-tile", type=int, default=0, help="the file's first row of --data")
    parser.add_argument("--draws", type=int, default=1024, help="draws per photo for the steps' bias")
    parser.add_argument("--steps", type=int, help="rk4 steps of the server's solve (default: the server's)")
    parser.add_argument("--model", default=str(ROOT / "model_server" / "models" / "earth-tiles"))
    parser.add_argument("--data", default=str(ROOT / "build" / "earth-tiles" / "test.csv"))
    parser.add_argument("--cache", default=str(ROOT / "build" / "earth-tiles" / "emb-test-rot4.npz"))
    args = parser.parse_args()
    saved = np.load(args.saved)
    if "exact_log_density" not in saved:
        raise SystemExit(f"{args.saved} holds no exact log-densities: save it without --exact-from")
    draws, exact, cfgs = saved["draws"], saved["exact_log_density"].astype(np.float64), saved["cfg"]

    from model_server.engine.datasets import embed_rows
    from model_server.engine.model import load_model

    if args.steps:
        pipeline.LOCALIZABILITY_STEPS = args.steps
    model = load_model(args.model, device="cpu")
    photos = [int(p) for p in args.photos.split(",")]
    start = args.first_tile
    emb, _ = embed_rows(args.data, slice(start, start + len(draws)), model.encoder, args.cache)
    precision = supported_precision("bf16", model.device)
    solve = likelihood.log_density
    print(f"{args.saved}: exact {saved['exact'] if 'exact' in saved else '(setting not saved)'}; server: rk4 "
          f"{pipeline.LOCALIZABILITY_STEPS} steps {precision}, {pipeline.LOCALIZABILITY_SAMPLES} exact draws")
    print("photo      w   server   choice    steps  (localizability units)")
    for i in photos:
        one, w = emb[i : i + 1], float(cfgs[i])
        points = torch.from_numpy(draws[i])[None]
        truth = likelihood.localizability(exact[i])
        server = pipeline.localizability(model, one, points, cfg=w)[0][0]
        index = {row.tobytes(): j for j, row in enumerate(draws[i])}

        def exact_at(flow, emb, chosen, i=i, index=index, **_):  # the exact values of the chosen draws
            rows = [index[p.tobytes()] for p in chosen[0].float().numpy()]
            return torch.from_numpy(exact[i][rows])[None].float()

        likelihood.log_density = exact_at
        try:
            choice = pipeline.localizability(model, one, points, cfg=w)[0][0]
        finally:
            likelihood.log_density = solve
        n = min(args.draws, points.shape[1])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            steps = solve(model.flow, one, points[:, :n], cfg=w, method="rk4", steps=pipeline.LOCALIZABILITY_STEPS,
                          hold_unguided=pipeline.localizability_holds(w))[0].double().numpy()
        bias = likelihood.localizability(steps - exact[i][:n])
        print(f"{i + start:5d} {w:6g}  {server - truth:+.4f}  {choice - truth:+.4f}  {bias:+.4f}", flush=True)


if __name__ == "__main__":
    main()
