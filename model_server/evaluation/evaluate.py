"""A model scored on geotagged photos, photo by photo: what `geoplonk eval`'s report is computed from.

The flow's methods (flow_scores.py), the drawn map when asked (map_scores.py) and, with a training set,
the uniform and retrieval baselines first (baselines.py); each photo's truth on land or water, for the
report's land rows (report.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoplonk_service import protocol as P

from ..products.place_names import is_land
from .baselines import baseline_scores
from .flow_scores import FlowScoring, evaluate_flow
from .map_scores import map_method, score_maps
from .report import MethodScores

# (stage, done, total): "flow" and "maps" count photos.
Progress = Callable[[str, int, int], None]


@dataclass
class Evaluation:
    methods: list[MethodScores]
    per_image: dict
    n: int  # photos scored
    land: np.ndarray  # (n,) bool: the photo's true location is on land


def evaluate_model(
    model,
    data: Path,
    scoring: FlowScoring,
    *,
    map_samples: int = 0,
    map_resolution: float = P.RESOLUTION.default,
    limit: int | None = None,
    cache: Path | None = None,
    train_data: Sequence[Path] | None = None,
    train_cache: Path | None = None,
    train_limit: int | None = None,
    progress: bool = True,
    on_step: Progress | None = None,
) -> Evaluation:
    """Score `model` on the photos of `data` (CSV or folder; the first `limit` only): the flow's methods, the
    drawn map when map_samples > 0, and with train_data the baselines, which come first."""
    from ..engine.datasets import embed_dataset, read_dataset, read_datasets

    def stage(name: str, total: int) -> Callable[[int], None]:
        return lambda done: on_step(name, done, total) if on_step is not None else None

    photos = read_dataset(data, progress=progress)
    if limit:
        photos = photos.subset(np.arange(min(limit, len(photos))))
    emb, photos = embed_dataset(photos, model.encoder, cache_path=cache, progress=progress)
    methods, per_image = evaluate_flow(model.flow, emb, photos.latlon, scoring, on_step=stage("flow", len(emb)))
    if map_samples:
        lat, lon = photos.latlon[:, 0], photos.latlon[:, 1]
        cfgs = np.asarray(per_image["cfg"])  # each photo's w, as its distribution was drawn
        scores = score_maps(model.flow, emb, lat, lon, cfg=cfgs, samples=map_samples,
                            resolution=map_resolution, steps=scoring.steps, solver=scoring.solver,
                            precision=scoring.precision,
                            seed=scoring.seed, chunk=scoring.chunk, on_step=stage("maps", len(emb)))
        methods.append(map_method(scores, guidance=scoring.guidance.describe(), samples=map_samples,
                                  resolution=map_resolution))
    if train_data is not None:
        train = read_datasets(train_data, progress=progress)
        if train_limit:
            train = train.subset(np.arange(min(train_limit, len(train))))
        # The gallery is embedded as the photos to locate are: retrieval on the flow's query embeddings.
        train_emb, train = embed_dataset(train, model.encoder, cache_path=train_cache, progress=progress)
        methods = baseline_scores(train_emb.numpy(), train.latlon, emb.numpy(), photos.latlon,
                                  seed=scoring.seed) + methods
    land = is_land(photos.latlon[:, 0], photos.latlon[:, 1])
    return Evaluation(methods, per_image, len(photos), land)
