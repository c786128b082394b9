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
    uniform = localizability(log_density(flat, emb, sample(flat, emb, 64), method="rk4", steps=16))
    assert uniform.item() == pytest.approx(-math.log(4 * math.pi) / (4 * math.pi * math.log(2)), abs=1e-6)
    peaked_net = field(gain=0.7)
    peaked = localizability(log_density(peaked_net, emb, sample(peaked_net, emb, 256), method="rk4", steps=16))
    assert peaked.item() > uniform.item() + 0.01
    assert localizability(np.array([[-1.0, -3.0]]))[0] == pytest.approx(-2.0 / (4 * math.pi * math.log(2)))


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
