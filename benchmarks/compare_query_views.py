"""The default model's best guess from query embeddings averaged over 8 views (d8, what it uses) against the 4 it
was trained on (rot4): issue 25's "d8 views at query time" lever, on a split of build/earth-tiles (default: the
tuning split).

The guess is the server's: GUESS_SAMPLES draws at GUESS_CFG from the server's start points, then the best guess
at 0.25 degrees (flow_scores.best_guesses, as `geoplonk eval`). Prints GeoScore and the shares within 750 and
2,500 km, on all tiles and on land tiles, and the paired bootstrap interval of the GeoScore difference.
Embeddings are cached in build/earth-tiles/emb-<split>-<views>.npz.

  .venv/server/bin/python benchmarks/compare_query_views.py [--split test]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geoplonk_service import protocol as P  # noqa: E402
from model_server.engine.datasets import embed_dataset, read_dataset  # noqa: E402
from model_server.engine.encoders import load_encoder  # noqa: E402
from model_server.engine.model import load_model  # noqa: E402
from model_server.engine.sampling import start_points  # noqa: E402
from model_server.evaluation.flow_scores import best_guesses  # noqa: E402
from model_server.evaluation.metrics import geoscore  # noqa: E402
from model_server.geodesy import latlon_distance_km, xyz_to_degrees  # noqa: E402
from model_server.photo_guidance import guess_draws  # noqa: E402
from model_server.products.place_names import is_land  # noqa: E402


def guess_errors_km(model, emb: torch.Tensor, latlon: np.ndarray, chunk: int = 50) -> np.ndarray:
    x0 = start_points(P.SAMPLES.default, P.SEED.default)[: P.GUESS_SAMPLES]
    guesses = []
    for start in range(0, len(emb), chunk):
        with torch.inference_mode():
            draws = guess_draws(model.flow, emb[start : start + chunk], x0=x0, precision="bf16").float().numpy()
        guesses.append(best_guesses(draws, 0.25))
    return latlon_distance_km(xyz_to_degrees(np.concatenate(guesses)), latlon)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = ROOT / "build" / "earth-tiles"
    model = load_model(str(ROOT / "model_server" / "models" / "earth-tiles"), device="cpu")
    photos = read_dataset(str(work / f"{args.split}.csv"), progress=False)
    scores = {}
    for views in ("rot4", "d8"):
        encoder = load_encoder(f"efficientnet-lite0+{views}", device="cpu")
        emb, kept = embed_dataset(photos, encoder, cache_path=work / f"emb-{args.split}-{views}.npz", progress=False)
        errors = guess_errors_km(model, emb, kept.latlon)
        land = is_land(kept.latlon[:, 0], kept.latlon[:, 1])
        scores[views] = geoscore(errors)
        for name, mask in (("all", np.ones_like(land)), ("land", land)):
            e = errors[mask]
            print(f"{args.split} {views:4s} {name:4s} {mask.sum():4d} tiles: GeoScore {geoscore(e).mean():7.1f}, "
                  f"within 750 km {np.mean(e <= 750):.3f}, within 2500 km {np.mean(e <= 2500):.3f}", flush=True)
    diff = scores["d8"] - scores["rot4"]
    rng = np.random.default_rng(0)
    boots = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    low, high = np.quantile(boots, [0.025, 0.975])
    print(f"GeoScore, d8 - rot4: {diff.mean():+.1f} [{low:+.1f}, {high:+.1f}] (paired bootstrap, 95 %)")


if __name__ == "__main__":
    main()
