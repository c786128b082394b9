"""Exact log-density: the uniform case, normalisation over the sphere, samples, and the authors' code."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from model_server.engine.likelihood import localizability, log_density
from model_server.engine.network import FlowConfig, GeoAdaLNMLP
from model_server.engine.sampling import sample
from model_server.engine.sphere import degrees_to_xyz, uniform_sphere, xyz_to_degrees

from . import plonk_reference
from .test_oracle import randomise

CONFIG = FlowConfig(cond_dim=8, dim=32, depth=2)


def field(gain: float = 1.0, seed: int = 0, time_gain: float = 0.05) -> GeoAdaLNMLP:
    """A random network whose dependence on time is damped.

    The time embedding feeds sin/cos(1000 gamma): with random weights the field oscillates in t
    with a period of ~0.0025, which no fixed-step solver resolves (a trained model is smoother).
    Damping the time pathway's output layer keeps every layer random but the field smooth in t.
    """
    net = GeoAdaLNMLP(CONFIG)
    randomise(net, seed, gain=gain)
    with torch.no_grad():
        net.time_embedder.map_time[2].weight.mul_(time_gain)
        net.time_embedder.map_time[2].bias.mul_(time_gain)
    return net.eval()


def grid(nlat: int = 45, nlon: int = 90):
    """Cell centres (lat, lon degrees) and their solid angles (steradians) on a lat/lon grid."""
    lat = (torch.arange(nlat, dtype=torch.float64) + 0.5) * 180 / nlat - 90
    lon = (torch.arange(nlon, dtype=torch.float64) + 0.5) * 360 / nlon - 180
    la, lo = torch.meshgrid(lat, lon, indexing="ij")
    area = torch.cos(torch.deg2rad(la)) * math.radians(180 / nlat) * math.radians(360 / nlon)
    return torch.stack([la, lo], -1).reshape(-1, 2), area.reshape(-1)


def test_zero_network_gives_exactly_uniform():
    net = GeoAdaLNMLP(CONFIG).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    lp = log_density(net, torch.randn(2, 8), uniform_sphere(50))
    assert lp.shape == (2, 50)
    assert torch.equal(lp, torch.full_like(lp, -math.log(4 * math.pi)))


def test_density_integrates_to_one_over_the_sphere():
    net = field(gain=0.5)
    emb = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    latlon, area = grid(30, 60)
    lp = log_density(net, emb, degrees_to_xyz(latlon).float(), method="rk4", steps=16)
    assert (lp.max(-1).values - lp.min(-1).values > 3).all()  # far from uniform: densities span 20x
    mass = (lp.double().exp() * area).sum(-1)
    print("mass per image:", mass.tolist())
    assert torch.allclose(mass, torch.ones(3, dtype=torch.float64), atol=0.02)


def test_adaptive_and_fixed_step_solvers_agree():
    net = field(gain=0.5)
    emb = torch.randn(1, 8)
    pts = uniform_sphere(64, generator=torch.Generator().manual_seed(1))
    dopri = log_density(net, emb, pts, method="dopri5", atol=1e-6, rtol=1e-6)
    rk4 = log_density(net, emb, pts, method="rk4", steps=16)
    assert (dopri - rk4).abs().max() < 3e-3


def test_density_matches_a_sample_histogram():
    """Sample mass per cell of a coarse grid against the integrated density (total variation)."""
    net = field(gain=0.7, seed=2)
    emb = torch.randn(1, 8, generator=torch.Generator().manual_seed(3))
    n = 40_000
    x = sample(net, emb, n, steps=32, solver="heun", generator=torch.Generator().manual_seed(4))[0]
    latlon = xyz_to_degrees(x).numpy()
    # 6 x 12 equal-area cells: latitude bands equal in sin(lat)
    sin_edges = np.linspace(-1, 1, 7)
    lon_edges = np.linspace(-180, 180, 13)
    hist, _, _ = np.histogram2d(np.sin(np.radians(latlon[:, 0])), latlon[:, 1], bins=[sin_edges, lon_edges])
    hist = hist / n
    fine, area = grid(48, 96)
    lp = log_density(net, emb, degrees_to_xyz(fine).float(), method="rk4", steps=16)[0].double()
    mass = (lp.exp() * area).numpy()
    sin_lat = np.sin(np.radians(fine[:, 0].numpy()))
    ilat = np.clip(np.searchsorted(sin_edges, sin_lat) - 1, 0, 5)
    ilon = np.clip(np.searchsorted(lon_edges, fine[:, 1].numpy()) - 1, 0, 11)
    expected = np.zeros((6, 12))
    np.add.at(expected, (ilat, ilon), mass)
    tv = 0.5 * np.abs(hist - expected / expected.sum()).sum()
    uniform_tv = 0.5 * np.abs(hist - 1 / 72).sum()
    print(f"total variation: density vs samples {tv:.4f}, uniform vs samples {uniform_tv:.4f}")
    assert uniform_tv > 0.2 and tv < 0.03


def test_cfg_changes_the_density_and_shapes_are_checked():
    net = field(gain=0.5)
    emb = torch.randn(3, 8)
    pts = uniform_sphere(16)
    guided = log_density(net, emb, pts, cfg=2.0, method="rk4")
    assert not torch.allclose(guided, log_density(net, emb, pts, method="rk4"))
    assert log_density(net, emb, pts.expand(3, -1, -1), method="rk4").shape == (3, 16)
    with pytest.raises(ValueError, match="points must be"):
        log_density(net, emb, torch.zeros(2, 16, 3))
    with pytest.raises(ValueError, match="embeddings must have shape"):
        log_density(net, torch.zeros(3, 5), pts)


def test_localizability_is_higher_for_a_peaked_model():
    emb = torch.randn(1, 8)
    flat = GeoAdaLNMLP(CONFIG).eval()
    with torch.no_grad():
        for p in flat.parameters():
            p.zero_()
    uniform = localizability(flat, emb, n=64, method="rk4", steps=16)
    assert uniform.item() == pytest.approx(-math.log(4 * math.pi) / (4 * math.pi * math.log(2)), abs=1e-6)
    peaked = localizability(field(gain=0.7), emb, n=256, method="rk4", steps=16)
    assert peaked.item() > uniform.item() + 0.01


def test_unprojected_mode_matches_the_authors_likelihood():
    """projected=False is the authors' computation: compare with their PlonkPipeline.compute_likelihood."""
    pipe_mod = plonk_reference.load("pipe")
    mlp = plonk_reference.load("models.networks.mlp")
    schedulers = plonk_reference.load("models.schedulers")
    manifolds = plonk_reference.load("utils.manifolds")
    ours = field(gain=0.5, seed=5)
    ref_net = mlp.GeoAdaLNMLP(3, CONFIG.dim, CONFIG.depth, CONFIG.expansion, CONFIG.cond_dim)
    ref_net.load_state_dict(ours.state_dict())
    pipe = object.__new__(pipe_mod.PlonkPipeline)  # skip __init__ (it downloads from the hub)
    pipe.network = ref_net.eval()
    pipe.preconditioning = plonk_reference.load("models.preconditioning").DDPMPrecond()
    pipe.scheduler = schedulers.SigmoidScheduler(start=-7, end=3)
    pipe.manifold = manifolds.Sphere()
    pipe.input_dim = 3
    pipe.device = torch.device("cpu")
    emb = torch.randn(1, 8, generator=torch.Generator().manual_seed(6))
    latlon = torch.tensor([[48.85, 2.35], [-33.9, 151.2], [0.0, -179.9], [89.0, 10.0], [-60.0, -70.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pipe.compute_likelihood(emb=emb, coordinates=latlon.numpy(), normalize_logp=False)
    mine = log_density(ours, emb, degrees_to_xyz(latlon), projected=False)[0]
    print("ours vs authors' log-density:", (mine - theirs.float()).abs().max().item())
    # two float32 adaptive solves (their state is one (M, 4) tensor, ours a tuple, so step sizes differ):
    # each is ~5e-4 from a float64 solve at tolerance 1e-10, so agreement is judged at 1e-3
    assert torch.allclose(mine, theirs.float(), atol=1e-3)


def test_works_inside_inference_mode():
    """The server runs requests under torch.inference_mode(); the divergence still needs autograd."""
    net = field(gain=0.5)
    pts = uniform_sphere(10)
    outside = log_density(net, torch.ones(1, 8), pts, method="rk4", steps=4)
    with torch.inference_mode():
        inside = log_density(net, torch.ones(1, 8), pts, method="rk4", steps=4)
    assert torch.equal(inside, outside)


def test_calibration_scores_the_guided_density_and_picks_the_least_nll():
    from model_server.engine.calibration import best_cfg, truth_nll_by_cfg

    net = field(gain=0.6)
    emb = torch.randn(5, 8)
    truth = uniform_sphere(5, generator=torch.Generator().manual_seed(1))
    nll = truth_nll_by_cfg(net, emb, truth, [-1.0, -0.1, 0.0], method="rk4", steps=8, chunk=2)
    own = -log_density(net, emb, truth[:, None], method="rk4", steps=8)[:, 0]
    assert nll[0.0] == pytest.approx(float(own.mean()), abs=1e-5)
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
    from model_server.engine.calibration import best_cfg_by_coverage, calibration_scores, truth_nll_by_cfg

    net = field(gain=0.6)
    emb = torch.randn(4, 8)
    truth = uniform_sphere(4, generator=torch.Generator().manual_seed(2))
    scores = calibration_scores(net, emb, truth, [-0.5, 0.0], samples=16, steps=8, likelihood_steps=8, chunk=3)
    # the truths' NLL is the one the cheap criterion computes, whatever draws share its likelihood solve
    nll = truth_nll_by_cfg(net, emb, truth, [-0.5, 0.0], steps=8)
    for w, score in scores.items():
        assert score["nll"] == pytest.approx(nll[w], abs=1e-4)
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
    from model_server.engine.calibration import best_cfg_by_coverage, map_scores

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
