"""Choosing the distribution guidance: the truths' NLL, the exact regions' and the drawn map's coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine.test_likelihood import field  # the random flow, smooth in time, the likelihood tests use

from model_server.engine.likelihood import log_density
from model_server.engine.sampling import sample
from model_server.engine.sphere import uniform_sphere
from model_server.evaluation.calibration import calibration_scores, map_scores, score_guidance, truth_nll_by_cfg
from model_server.evaluation.criteria import COVERAGE_KINDS, TRUTH_TOLERANCE, best_cfg, best_cfg_by_coverage
from model_server.evaluation.map_scores import MapScores


def test_calibration_scores_the_guided_density_and_picks_the_least_nll():
    net = field(gain=0.6)
    emb = torch.randn(5, 8)
    truth = uniform_sphere(5, generator=torch.Generator().manual_seed(1))
    nll = truth_nll_by_cfg(net, emb, truth, [-1.0, -0.1, 0.0], method="rk4", steps=8, truth_tolerance=None, chunk=2)
    own = -log_density(net, emb, truth[:, None], method="rk4", steps=8)[:, 0]
    assert nll[0.0] == pytest.approx(float(own.mean()), abs=1e-5)
    # by default the truths are solved by dopri5 (a fixed-step solve overstates a missed truth's density)
    adaptive = -log_density(net, emb, truth[:, None], atol=TRUTH_TOLERANCE, rtol=TRUTH_TOLERANCE)[:, 0]
    assert truth_nll_by_cfg(net, emb, truth, [0.0])[0.0] == pytest.approx(float(adaptive.mean()), abs=1e-6)
    # w = -1 is the unconditional flow: the photo's embedding no longer matters
    blind = -log_density(net, torch.zeros_like(emb), truth[:, None], method="rk4", steps=8)[:, 0]
    assert nll[-1.0] == pytest.approx(float(blind.mean()), abs=1e-5)
    assert len(set(nll.values())) == 3
    assert best_cfg(nll) == min(nll, key=nll.get)
    assert best_cfg({-0.2: 1.0, -0.1: 0.5, 0.0: 0.5}) == 0.0  # a tie goes to the model as trained
    with pytest.raises(ValueError, match=r"in \[-1, 0\]"):
        truth_nll_by_cfg(net, emb, truth, [0.5])
    with pytest.raises(ValueError, match="truth must be"):
        truth_nll_by_cfg(net, emb, truth[:3], [0.0])


def test_calibration_by_coverage_scores_credible_regions_of_the_guided_distribution():
    net = field(gain=0.6)
    emb = torch.randn(4, 8)
    truth = uniform_sphere(4, generator=torch.Generator().manual_seed(2))
    scores = calibration_scores(net, emb, truth, [-0.5, 0.0], samples=16, steps=8, likelihood_steps=8, chunk=3)
    # the truths' NLL is the one the cheap criterion computes, whatever draws share its likelihood solve (both by
    # the fixed steps: dopri5 steps a batch together, so its values move with the batching)
    fixed = calibration_scores(net, emb, truth, [-0.5, 0.0], samples=16, steps=8, likelihood_steps=8, chunk=3,
                               truth_tolerance=None)
    nll = truth_nll_by_cfg(net, emb, truth, [-0.5, 0.0], steps=8, truth_tolerance=None)
    for w, score in fixed.items():
        assert score["nll"] == pytest.approx(nll[w], abs=1e-4)
    for score in scores.values():
        assert 0 <= score["coverage_50"] <= score["coverage_90"] <= score["coverage_99"] <= 1
    # truths drawn from the model itself are exchangeable with its own draws: the levels hold
    emb = torch.randn(150, 8)
    own = sample(net, emb, 1, steps=8, generator=torch.Generator().manual_seed(3))[:, 0]
    self_score = calibration_scores(net, emb, own, [0.0], samples=64, steps=8, likelihood_steps=8)[0.0]
    print("self-coverage 50/90/99:", [round(self_score[f"coverage_{p}"], 3) for p in (50, 90, 99)])
    assert self_score["coverage_50"] == pytest.approx(0.5, abs=0.13)
    assert self_score["coverage_90"] == pytest.approx(0.9, abs=0.08)
    picks = {-0.2: {"nll": 1.0, "coverage_50": 0.52, "coverage_90": 0.91},
             -0.1: {"nll": 0.5, "coverage_50": 0.40, "coverage_90": 0.85},
             0.0: {"nll": 0.9, "coverage_50": 0.52, "coverage_90": 0.91}}
    assert best_cfg_by_coverage(picks) == 0.0  # nearest the levels; the tie goes to the lower NLL


def test_calibration_by_the_drawn_map_scores_the_servers_regions():
    net = field(gain=0.6)
    emb = torch.randn(80, 8)
    # truths drawn from the model itself: the drawn map's regions hold them at their levels
    own = sample(net, emb, 1, steps=8, generator=torch.Generator().manual_seed(4))[:, 0]
    scores = map_scores(net, emb, own, [-0.5, 0.0], samples=256, resolution=2.0, steps=8, chunk=30)
    self_score = scores[0.0]
    print("map self-coverage 50/90/99:", [round(self_score[f"map_coverage_{p}"], 3) for p in (50, 90, 99)])
    assert self_score["map_coverage_50"] == pytest.approx(0.5, abs=0.15)
    assert self_score["map_coverage_90"] == pytest.approx(0.9, abs=0.1)
    assert 0 <= self_score["map_coverage_50"] <= self_score["map_coverage_90"] <= self_score["map_coverage_99"] <= 1
    # another w draws another map; its NLL is per steradian, finite (the raster's uniform floor)
    assert scores[-0.5] != scores[0.0] and all(np.isfinite(s["map_nll"]) for s in scores.values())
    # the map criterion weighs both kinds of region: the exact density alone would pick the other w
    picks = {-0.1: {"nll": 0.5, "coverage_50": 0.50, "coverage_90": 0.90, "map_coverage_50": 0.62,
                    "map_coverage_90": 0.95},
             0.0: {"nll": 0.6, "coverage_50": 0.46, "coverage_90": 0.88, "map_coverage_50": 0.50,
                   "map_coverage_90": 0.90}}
    assert best_cfg_by_coverage(picks) == -0.1
    assert best_cfg_by_coverage(picks, kinds=("coverage", "map_coverage")) == 0.0
    with pytest.raises(ValueError, match=r"in \[-1, 0\]"):
        map_scores(net, emb, own, [0.5])


def test_score_guidance_runs_each_criterion_and_counts_every_part():
    net = field(gain=0.6)
    emb = torch.randn(6, 8)
    truth = sample(net, emb, 1, steps=8, generator=torch.Generator().manual_seed(5))[:, 0]
    grid = [-0.5, 0.0]
    scores, chosen = score_guidance(net, emb, truth, grid, criterion="nll", likelihood_steps=4)
    assert scores == {w: {"nll": v} for w, v in truth_nll_by_cfg(net, emb, truth, grid, steps=4).items()}
    assert chosen == best_cfg({w: s["nll"] for w, s in scores.items()})
    seen = []
    scores, chosen = score_guidance(net, emb, truth, grid, criterion="map", samples=4, map_samples=32,
                                    map_resolution=5.0, likelihood_steps=4, on_step=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (2 * len(grid) * len(emb),) * 2 and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert set(scores[0.0]) == {"nll", "coverage_50", "coverage_90", "coverage_99", "map_nll", "map_coverage_50",
                                "map_coverage_90", "map_coverage_99"}
    assert chosen == best_cfg_by_coverage(scores, kinds=("coverage", "map_coverage"))
    with pytest.raises(ValueError, match="unknown criterion"):
        score_guidance(net, emb, truth, grid, criterion="entropy")


def test_map_land_scores_the_land_photos_again_and_sums_both_misses():
    net = field(gain=0.6)
    emb = torch.randn(6, 8)
    truth = sample(net, emb, 1, steps=8, generator=torch.Generator().manual_seed(5))[:, 0]
    grid = [-0.5, 0.0]
    kw = dict(samples=4, map_samples=32, map_resolution=5.0, likelihood_steps=4)
    every, _ = score_guidance(net, emb, truth, grid, criterion="map-land", land=np.ones(6, dtype=bool), **kw)
    for score in every.values():  # all photos on land: the land shares are the shares
        for key in ("coverage_50", "coverage_90", "map_coverage_50", "map_coverage_90"):
            assert score[f"land_{key}"] == score[key]
    land = np.array([True, False, True, False, False, True])
    scores, chosen = score_guidance(net, emb, truth, grid, criterion="map-land", land=land, **kw)
    plain, _ = score_guidance(net, emb, truth, grid, criterion="map", **kw)
    for w in grid:  # the same draws: the land photos' shares, and the all-photo scores unchanged
        assert {k: v for k, v in scores[w].items() if not k.startswith("land_")} == plain[w]
    assert chosen == best_cfg_by_coverage(scores, kinds=COVERAGE_KINDS["map-land"])
    # the land photos' misses count: here map keeps the w nearest its levels on all photos, map-land the wider one
    picks = {
        -0.2: {"nll": 0.0, "coverage_50": 0.55, "coverage_90": 0.90, "map_coverage_50": 0.59, "map_coverage_90": 0.91,
               "land_coverage_50": 0.45, "land_coverage_90": 0.88, "land_map_coverage_50": 0.50,
               "land_map_coverage_90": 0.91},
        -0.15: {"nll": 0.0, "coverage_50": 0.50, "coverage_90": 0.89, "map_coverage_50": 0.52, "map_coverage_90": 0.90,
                "land_coverage_50": 0.30, "land_coverage_90": 0.83, "land_map_coverage_50": 0.36,
                "land_map_coverage_90": 0.86},
    }
    assert best_cfg_by_coverage(picks, kinds=COVERAGE_KINDS["map"]) == -0.15
    assert best_cfg_by_coverage(picks, kinds=COVERAGE_KINDS["map-land"]) == -0.2
    for missing in (None, np.zeros(6, dtype=bool), np.ones(5, dtype=bool)):
        with pytest.raises(ValueError, match="land flag per photo"):
            score_guidance(net, emb, truth, grid, criterion="map-land", land=missing, **kw)
    with pytest.raises(ValueError, match="bool flag"):
        score_guidance(net, emb, truth, grid, criterion="map-land", land=np.array([0, 2, 5]), **kw)


def test_map_shares_of_a_subset_count_only_its_truths():
    scores = MapScores((0.5, 0.9), np.zeros(4), np.array([[True, True], [False, True], [False, False], [True, True]]))
    assert scores.shares() == {"50": 0.5, "90": 0.75}
    assert scores.shares(np.array([True, True, False, False])) == {"50": 0.5, "90": 1.0}
    with pytest.raises(ValueError, match="bool flag"):
        scores.shares(np.array([0, 1]))


def test_the_map_row_of_eval_and_the_map_scores_of_calibrate_are_one_computation():
    from model_server.evaluation.map_scores import map_row, score_maps
    from model_server.geodesy import xyz_to_latlon

    net = field(gain=0.6)
    emb = torch.randn(7, 8)
    truth = sample(net, emb, 1, steps=8, generator=torch.Generator().manual_seed(6))[:, 0]
    lat, lon = xyz_to_latlon(truth.double().numpy())
    kw = {"samples": 64, "resolution": 5.0, "steps": 8, "seed": 3, "chunk": 4}
    scores = score_maps(net, emb, lat, lon, cfg=-0.2, **kw)
    assert scores.inside.shape == (7, 3) and np.all(np.isfinite(scores.log_density))
    row = map_row(scores, guidance="cfg=-0.2", samples=64, resolution=5.0)
    assert row["method"] == "flow, the server's map (cfg=-0.2, 64 samples, 5 deg raster)" and row["n"] == 7
    calibrated = map_scores(net, emb, truth, [-0.2], **kw)[-0.2]
    assert calibrated["map_nll"] == row["nll_mean"]
    assert all(calibrated[f"map_coverage_{p}"] == row[f"coverage_{p}"] for p in (50, 90, 99))


def test_each_photo_drawn_at_its_own_w_matches_that_w_drawn_for_every_photo():
    """Photo by photo (chunk 1) the draws come from the same generator state, so a photo drawn at its own w
    (a land rule's) gets the very map, and the very exact scores, that a single w gives it."""
    from model_server.engine.guidance import Guidance
    from model_server.evaluation.flow_scores import FlowScoring, evaluate_flow
    from model_server.evaluation.map_scores import score_maps
    from model_server.geodesy import xyz_to_latlon

    net = field(gain=0.6)
    emb = torch.randn(5, 8)
    truth = sample(net, emb, 1, steps=8, generator=torch.Generator().manual_seed(6))[:, 0]
    lat, lon = xyz_to_latlon(truth.double().numpy())
    cfgs = np.array([-0.4, 0.0, -0.4, -0.4, 0.0])
    kw = {"samples": 32, "resolution": 5.0, "steps": 4, "seed": 3, "chunk": 1}
    mixed = score_maps(net, emb, lat, lon, cfg=cfgs, **kw)
    for w in (-0.4, 0.0):
        alone = score_maps(net, emb, lat, lon, cfg=w, **kw)
        rows = cfgs == w
        assert np.array_equal(mixed.inside[rows], alone.inside[rows])
        assert np.array_equal(mixed.log_density[rows], alone.log_density[rows])
    # in one chunk, each w's photos are drawn together, the first w met first: they get back their own rows
    together = score_maps(net, emb, lat, lon, cfg=cfgs, **{**kw, "chunk": 5})
    first = cfgs == cfgs[0]
    alone = score_maps(net, emb[torch.from_numpy(first)], lat[first], lon[first], cfg=cfgs[0], **{**kw, "chunk": 5})
    assert np.array_equal(together.log_density[first], alone.log_density)
    assert np.array_equal(together.inside[first], alone.inside)
    truth_deg = np.stack([lat, lon], axis=1)
    settings = {"cfg": 1.0, "guess_samples": 16, "guess_steps": 4, "samples": 8, "steps": 4,
                "likelihood_steps": 2, "chunk": 1}
    by_rule = {}
    for name, guidance in (("land", Guidance(0.0, -0.4, 1e-9)), ("others", Guidance(0.0, -0.4, 1.0 + 1e-9)),
                           ("w=-0.4", Guidance(-0.4)), ("w=0", Guidance(0.0))):
        methods, per_image = evaluate_flow(net, emb, truth_deg, FlowScoring(guidance=guidance, **settings))
        by_rule[name] = (methods[-1], per_image)
    # every photo's guess draws have some share on land (>= 1e-9) and none all of it (>= 1 + 1e-9)
    for rule, single in (("land", "w=-0.4"), ("others", "w=0")):
        (rule_scores, rule_photos), (w_scores, w_photos) = by_rule[rule], by_rule[single]
        assert np.array_equal(rule_scores.logp, w_scores.logp) and rule_photos["cfg"] == w_photos["cfg"]
        assert len(rule_photos["guess_land_share"]) == 5 and "guess_land_share" not in w_photos
    assert by_rule["land"][0].method == ("flow, distribution (cfg=-0.4 land-looking, 0 others "
                                         "(guess land share >= 1e-09))")


def test_calibration_by_land_share_chooses_a_w_for_each_group_on_its_photos_alone():
    from model_server.engine.guidance import Guidance, guidance_from_calibration
    from model_server.evaluation.calibration import land_rule_record, score_guidance_by_land_share

    net = field(gain=0.6)
    emb = torch.randn(6, 8)
    truth = sample(net, emb, 1, steps=8, generator=torch.Generator().manual_seed(5))[:, 0]
    grid = [-0.5, -0.25, 0.0]
    shares = np.array([0.9, 0.1, 0.8, 0.0, 0.2, 0.6])
    settings = {"criterion": "coverage", "samples": 4, "likelihood_steps": 2, "steps": 4}
    seen = []
    groups, guidance = score_guidance_by_land_share(net, emb, truth, grid, shares=shares, threshold=0.5,
                                                    on_step=lambda d, t: seen.append((d, t)), **settings)
    assert [g.name for g in groups] == ["land-looking", "others"]
    assert groups[0].rows.tolist() == [True, False, True, False, False, True]
    for group in groups:
        rows = torch.from_numpy(group.rows)
        assert (group.scores, group.chosen) == score_guidance(net, emb[rows], truth[rows], grid, **settings)
    assert guidance == Guidance(groups[1].chosen, groups[0].chosen, 0.5)
    assert seen[-1] == (len(grid) * 6,) * 2 and [d for d, _ in seen] == sorted(d for d, _ in seen)
    record = land_rule_record(groups, guidance, land=np.array([1, 0, 1, 0, 0, 0], dtype=bool),
                              criterion="coverage", data="tiles.csv", skip=0, likelihood_method="rk4",
                              likelihood_steps=2, samples=4, seed=0, map_samples=32, map_resolution=5.0)
    assert guidance_from_calibration(record) == guidance  # what the server reads back
    assert record["n"] == 6 and record["groups"]["land-looking"]["n"] == 3
    assert record["groups"]["land-looking"]["land_tiles"] == 2 and "land_tiles" not in record["groups"]["others"]
    assert set(record["groups"]["others"]["coverage_by_cfg"]) == {"-0.5", "-0.25", "0"}
    with pytest.raises(ValueError, match="0 of 6 look like land"):
        score_guidance_by_land_share(net, emb, truth, grid, shares=shares, threshold=0.95, **settings)
