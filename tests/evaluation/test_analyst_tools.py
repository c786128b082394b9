"""The figures of the analyst tools: ROC AUC, the false claims' shuffle, and the joint map's coverage on maps
whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from model_server.evaluation.analyst_tools import claim_levels, derangement, joint_figures, roc_auc
from model_server.geodesy import latlon_to_xyz
from model_server.products.grid import Grid
from model_server.products.maps import sample_map


def test_roc_auc_counts_pairs_and_halves_ties():
    assert roc_auc(np.array([0.1, 0.2]), np.array([0.9, 0.95])) == 1.0
    assert roc_auc(np.array([0.9]), np.array([0.1])) == 0.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5


def test_the_shuffle_gives_every_photo_another_photos_place():
    for n in (2, 5, 50):
        perm = derangement(n, np.random.default_rng(n))
        assert sorted(perm) == list(range(n)) and (perm != np.arange(n)).all()


def test_true_claims_rank_below_false_ones_and_a_joint_map_narrows():
    rng = np.random.default_rng(8)
    grid = Grid.global_grid(2.0)
    places = [(40.0, 10.0), (-20.0, 130.0)]
    maps = []
    for lat, lon in places:
        for _ in range(2):  # two photos of each place, each map offset a little
            d_lat, d_lon = rng.normal(0, 3, 2)
            x = latlon_to_xyz(lat + d_lat + rng.normal(0, 8, 400), lon + d_lon + rng.normal(0, 8, 400))
            maps.append((sample_map(x, grid), x))
    true_level, false_level = claim_levels(maps[0][0], [places[0], places[1]])
    assert true_level < 0.9 < false_level
    plain = joint_figures(maps, [[0, 1], [2, 3]], places, alpha=0.0)
    assert plain.joint_area_90_km2 < plain.single_area_90_km2
    assert plain.joint_inside_90 == pytest.approx(1.0) and plain.groups == 2
    tempered = joint_figures(maps, [[0, 1], [2, 3]], places)
    assert plain.joint_area_90_km2 < tempered.joint_area_90_km2 and tempered.joint_inside_90 == pytest.approx(1.0)


def test_each_photo_is_drawn_at_its_own_guidance_as_the_server_draws_it():
    """draw_maps at per-photo w gives each photo the draws of that photo alone at its w (the server's start points,
    its precision), the same as one w for all where the w agree."""
    import torch

    from model_server.engine.network import FlowConfig, GeoAdaLNMLP
    from model_server.engine.sampling import sample, start_points, supported_precision
    from model_server.evaluation.analyst_tools import draw_maps

    torch.manual_seed(0)
    flow = GeoAdaLNMLP(FlowConfig(cond_dim=8, dim=32, depth=2)).eval()
    emb = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    cfgs = np.array([-0.05, -0.5, -0.05])
    maps = draw_maps(flow, emb, cfg=cfgs, samples=64, resolution=5.0, steps=4, seed=3)
    precision = supported_precision("bf16", "cpu")
    for i, w in enumerate(cfgs):
        alone = sample(flow, emb[i : i + 1], 64, steps=4, cfg=w, x0=start_points(64, 3), precision=precision)
        assert np.allclose(maps[i][1], alone[0].numpy(), atol=1e-3), i  # bf16 rounds by batch
    assert not np.allclose(maps[1][1], draw_maps(flow, emb, cfg=-0.05, samples=64, resolution=5.0, steps=4,
                                                 seed=3)[1][1], atol=1e-3)
