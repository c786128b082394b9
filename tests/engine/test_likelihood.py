"""Exact log-density: the uniform case, normalisation over the sphere, samples, the authors' code, the
forward-mode divergence against autograd's Jacobian, and the mean log-density behind localizability."""

from __future__ import annotations

import math
import types
import warnings

import numpy as np
import pytest
import torch

from model_server.engine.likelihood import (
    KNN_NEIGHBOURS,
    TangentField,
    field_and_divergence,
    guided_conditions,
    knn_log_density,
    localizability,
    log_density,
    mean_log_density,
)
from model_server.engine.network import FlowConfig, GeoAdaLNMLP
from model_server.engine.sampling import sample, supported_precision
from model_server.engine.schedule import gamma, gamma_derivative
from model_server.engine.sphere import degrees_to_xyz, normalize, project_tangent, uniform_sphere, xyz_to_degrees
from model_server.server import pipeline

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


def autograd_field(net, emb, cfg, t, projected):
    """u(x) for one point x (3,) through the network's own forward, for autograd's Jacobian."""
    g = gamma(t)

    def u(x):
        y = normalize(x) if projected else x
        v = net(y, g, emb)
        if cfg:
            v = (1 + cfg) * v - cfg * net(y, g, torch.zeros_like(emb))
        return gamma_derivative(t) * (project_tangent(y, v) if projected else v)

    return u


@pytest.mark.parametrize("projected", [True, False])
@pytest.mark.parametrize("cfg", [0.0, 1.5])
def test_divergence_is_the_trace_of_the_jacobian(projected, cfg):
    """The forward-mode divergence against the trace of autograd's 3x3 Jacobian, off the sphere too
    (projected, the field is extended along rays: |x| = 1.03 must give the same surface divergence)."""
    net = field(gain=0.7, seed=3)
    gen = torch.Generator().manual_seed(4)
    emb = torch.randn(2, 1, 8, generator=gen)
    x = uniform_sphere(10, generator=gen).reshape(2, 5, 3) * (1.03 if projected else 1.0)
    x[0, 0] = torch.tensor([0.0, 0.0, -1.0])  # where the tangent frame changes branch
    t = torch.tensor(0.37)
    tangent = TangentField(net)
    weights, cond = guided_conditions(net, emb, cfg)
    u, div = field_and_divergence(tangent, weights, tangent.modulations(cond, gamma(t)), x, t, projected)
    for i in range(2):
        ref = autograd_field(net, emb[i, 0], cfg, t, projected)
        for j in range(5):
            jac = torch.autograd.functional.jacobian(ref, x[i, j])
            assert torch.allclose(u[i, j], ref(x[i, j]), atol=1e-6)
            assert div[i, j].item() == pytest.approx(jac.trace().item(), abs=1e-5, rel=1e-5)


def test_hutchinson_divergence_is_the_trace_on_average():
    """Each sign pair gives the trace plus s1 s2 times the frame's symmetric off-diagonal: the four pairs
    average to the exact divergence, and the pairs differ (an estimate, not the trace again)."""
    net = field(gain=0.7, seed=3)
    gen = torch.Generator().manual_seed(4)
    emb = torch.randn(1, 1, 8, generator=gen)
    x = uniform_sphere(6, generator=gen).reshape(1, 6, 3) * 1.03
    t = torch.tensor(0.37)
    tangent = TangentField(net)
    weights, cond = guided_conditions(net, emb, 1.5)
    mods = tangent.modulations(cond, gamma(t))
    u, exact = field_and_divergence(tangent, weights, mods, x, t)
    estimates = []
    for s1 in (-1.0, 1.0):
        for s2 in (-1.0, 1.0):
            signs = torch.tensor([s1, s2]).expand(1, 6, 2)
            u_h, div = field_and_divergence(tangent, weights, mods, x, t, signs=signs)
            assert torch.allclose(u_h, u, atol=1e-6)
            estimates.append(div)
    assert torch.allclose(torch.stack(estimates).mean(0), exact, atol=1e-5)
    assert (estimates[0] - estimates[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="projected"):
        field_and_divergence(tangent, weights, mods, x, t, projected=False, signs=signs)


def test_hutchinson_log_density_is_seeded_by_the_points_and_near_the_exact_one():
    """The same points give the same values in any batch or split between row workers; the noise averages
    out over points; adaptive solvers refuse it."""
    net = field(gain=0.5)
    pts = uniform_sphere(64, generator=torch.Generator().manual_seed(2))
    emb = torch.ones(1, 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        split = log_density(net, emb, pts, cfg=-0.2, method="rk4", steps=4, divergence="hutchinson")
        torch.set_num_threads(1)
        alone = log_density(net, emb, pts, cfg=-0.2, method="rk4", steps=4, divergence="hutchinson")
        first = log_density(net, emb, pts[:5], cfg=-0.2, method="rk4", steps=4, divergence="hutchinson")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(split, alone) and torch.allclose(first, alone[:, :5], atol=1e-6)
    exact = log_density(net, emb, pts, cfg=-0.2, method="rk4", steps=4)
    assert not torch.equal(alone, exact)
    assert abs((alone - exact).mean().item()) < 0.1 * (alone - exact).abs().max().item() + 1e-4
    with pytest.raises(ValueError, match="fixed-step"):
        log_density(net, emb, pts, method="dopri5", divergence="hutchinson")
    with pytest.raises(ValueError, match="divergence must be"):
        log_density(net, emb, pts, method="rk4", divergence="random")


@pytest.mark.parametrize("method,steps,evaluations", [("euler", 5, 5), ("midpoint", 4, 8), ("rk4", 3, 12)])
def test_fixed_steps_match_torchdiffeq_and_call_on_step_before_every_evaluation(method, steps, evaluations):
    """The engine's own fixed-step integrators against torchdiffeq's on the autograd field."""
    from torchdiffeq import odeint

    net = field(gain=0.5, seed=6)
    emb = torch.randn(1, 8, generator=torch.Generator().manual_seed(7))
    pts = uniform_sphere(4, generator=torch.Generator().manual_seed(8))
    calls = []
    lp = log_density(net, emb, pts, method=method, steps=steps, on_step=lambda: calls.append(1))[0]
    assert len(calls) == evaluations

    def rhs(t, state):
        x = state[0]
        ref = autograd_field(net, emb[0], 0.0, t, True)
        div = torch.stack([torch.autograd.functional.jacobian(ref, p).trace() for p in x])
        return torch.stack([ref(p) for p in x]), div

    state = (pts, torch.zeros(4))
    expected = odeint(rhs, state, torch.tensor([0.0, 1.0]), method=method, options={"step_size": 1 / steps})[1][-1]
    assert torch.allclose(lp, expected - math.log(4 * math.pi), atol=1e-5)


@pytest.mark.parametrize("cfg", [0.0, 1.5])
def test_on_step_may_stop_the_solve_from_row_workers_too(cfg):
    """Enough points to split among two row workers: every evaluation of each is announced, the split gives the
    one-thread values (guided too: each worker doubles its own rows), and a raise stops it."""
    net = field(gain=0.5)
    pts = uniform_sphere(64, generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        calls = []
        split = log_density(net, torch.ones(1, 8), pts, cfg=cfg, method="midpoint", steps=2,
                            on_step=lambda: calls.append(1))
        assert len(calls) == 2 * 4  # two workers, 2 steps of 2 evaluations each
        torch.set_num_threads(1)
        assert torch.equal(split, log_density(net, torch.ones(1, 8), pts, cfg=cfg, method="midpoint", steps=2))
        torch.set_num_threads(2)

        def stop():
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            log_density(net, torch.ones(1, 8), pts, method="rk4", steps=4, on_step=stop)
    finally:
        torch.set_num_threads(threads)


def test_the_likelihood_holds_the_unguided_field_over_each_step_as_the_sampler_does(monkeypatch):
    """hold_unguided evaluates the doubled batch at each rk4 step's first stage only and moves the log-density less
    than the steps' own error at a small |w|; beyond the sampler's limits, for Euler and by default, nothing is
    held; a point's value does not depend on its split among row workers."""
    from model_server.engine import likelihood
    from model_server.engine.sampling import HOLD_UNGUIDED_MAX_CFG, HOLD_UNGUIDED_MAX_STEPS

    net = field(gain=0.7)
    emb = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    pts = uniform_sphere(64, generator=torch.Generator().manual_seed(4))

    def density(w=-0.05, hold=True, method="rk4", steps=4, points=pts):
        return log_density(net, emb, points, cfg=w, method=method, steps=steps, hold_unguided=hold)

    full, held = density(hold=False), density()
    converged = density(hold=False, steps=64)
    assert 0 < (held - full).abs().mean() < 0.5 * (full - converged).abs().mean()
    assert torch.equal(density(hold=False), log_density(net, emb, pts, cfg=-0.05, method="rk4", steps=4))
    for kept in ({"method": "euler", "steps": 6}, {"w": -2 * HOLD_UNGUIDED_MAX_CFG},
                 {"steps": HOLD_UNGUIDED_MAX_STEPS + 1}):
        assert torch.equal(density(**kept), density(hold=False, **kept)), kept
    for limit in ({"w": -HOLD_UNGUIDED_MAX_CFG}, {"steps": HOLD_UNGUIDED_MAX_STEPS}, {"method": "midpoint"}):
        assert not torch.equal(density(**limit), density(hold=False, **limit)), limit
    with pytest.raises(ValueError, match="holding the unguided field"):
        density(method="dopri5")

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        split = density()
        torch.set_num_threads(1)
        alone, first = density(), density(points=pts[:5])
        rows = []
        call = likelihood.TangentField.__call__
        monkeypatch.setattr(likelihood.TangentField, "__call__",
                            lambda self, mods, x, dx: rows.append(x.shape[0]) or call(self, mods, x, dx))
        density(steps=3)
        density(method="midpoint", steps=2)
        hutchinson = log_density(net, emb, pts, cfg=-0.05, method="rk4", steps=3, divergence="hutchinson",
                                 hold_unguided=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(split, alone) and torch.allclose(first, alone[:, :5], atol=1e-6)
    # 2 photos: both fields' rows at each step's first stage, then the guided field's alone
    assert rows == [4, 2, 2, 2] * 3 + [4, 2] * 2 + [4, 2, 2, 2] * 3
    exact = density(steps=3)  # Hutchinson's noise averages out with the field held too
    assert not torch.equal(hutchinson, exact)
    assert abs((hutchinson - exact).mean().item()) < 0.1 * (hutchinson - exact).abs().max().item() + 1e-4


def test_guided_density_by_an_adaptive_solver_and_by_fixed_steps_agree():
    """The guided field through torchdiffeq's dopri5 (one modulation table per call) and through the engine's own
    rk4 (every stage's table at once): the same ODE."""
    net = field(gain=0.5, seed=9)
    emb = torch.randn(2, 8, generator=torch.Generator().manual_seed(10))
    pts = uniform_sphere(6, generator=torch.Generator().manual_seed(11))
    adaptive = log_density(net, emb, pts, cfg=1.5, method="dopri5", atol=1e-7, rtol=1e-7)
    fixed = log_density(net, emb, pts, cfg=1.5, method="rk4", steps=64)
    assert torch.allclose(adaptive, fixed, atol=1e-3)
    assert (adaptive - log_density(net, emb, pts, method="dopri5", atol=1e-7, rtol=1e-7)).abs().max() > 1e-2


def test_bf16_matmuls_under_autocast_stay_close():
    net = field(gain=0.7, seed=2)
    emb = torch.randn(1, 8, generator=torch.Generator().manual_seed(3))
    pts = uniform_sphere(32, generator=torch.Generator().manual_seed(4))
    exact = log_density(net, emb, pts, method="rk4", steps=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = log_density(net, emb, pts, method="rk4", steps=8)
    assert fast.dtype == torch.float32
    assert 0 < (fast - exact).abs().max() < 0.02


def test_knn_density_of_uniform_points_is_uniform_on_average():
    pts = uniform_sphere(4000, generator=torch.Generator().manual_seed(0))[None]
    assert knn_log_density(pts).mean().item() == pytest.approx(-math.log(4 * math.pi), abs=0.05)
    with pytest.raises(ValueError, match="k must be"):
        knn_log_density(pts[:, :5], k=5)


def test_knn_density_finds_the_neighbours_the_whole_distance_matrix_does_and_may_be_stopped():
    pts = uniform_sphere(1000, generator=torch.Generator().manual_seed(1))[None].expand(2, -1, -1).double()
    chord = torch.cdist(pts, pts, compute_mode="donot_use_mm_for_euclid_dist")
    kth = chord.topk(KNN_NEIGHBOURS + 1, dim=-1, largest=False).values[..., KNN_NEIGHBOURS]
    digamma = sum(1 / j for j in range(1, KNN_NEIGHBOURS)) - 0.5772156649015329
    expected = digamma - math.log(999) - (math.pi * kth.square()).log()
    searches = []
    got = knn_log_density(pts, on_search=lambda: searches.append(1))
    assert got.shape == (2, 1000) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-5)
    assert len(searches) == 2

    def stop():
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        knn_log_density(pts, on_search=stop)


def test_mean_log_density_is_close_to_the_mean_over_every_draw():
    """The stratified control-variate estimate from 64 exact draws against the exact mean over all 1024.

    An estimate: one image's error is random (its 64 draws are chosen by the draws' own bits, so any change in the
    sampler's rounding picks others), up to about 0.15 nats here: the test bounds each image's error loosely and
    the root mean square over 6 images tightly."""
    net = field(gain=0.7)
    emb = torch.randn(6, 8, generator=torch.Generator().manual_seed(5))
    draws = sample(net, emb, 1024, steps=32, generator=torch.Generator().manual_seed(6))
    full = log_density(net, emb, draws, method="rk4", steps=4).mean(-1)
    plain = log_density(net, emb, draws[:, :64], method="rk4", steps=4).mean(-1)
    estimate = mean_log_density(net, emb, draws, exact=64, method="rk4", steps=4)
    print("full", full.tolist(), "estimate", estimate.tolist(), "first 64 alone", plain.tolist())
    rms, plain_rms = (d.square().mean().sqrt().item() for d in (estimate - full, plain - full))
    assert (estimate - full).abs().max() < 0.25, estimate - full
    assert rms < 0.1, rms  # nats: 0.01 of localizability
    assert rms < plain_rms / 2, (rms, plain_rms)
    few = draws[:, :40]
    assert torch.equal(mean_log_density(net, emb, few, exact=64, method="rk4", steps=4),
                       log_density(net, emb, few, method="rk4", steps=4).mean(-1))


def test_server_localizability_names_its_method():
    net = field(gain=0.7)
    model = types.SimpleNamespace(flow=net, device=torch.device("cpu"))
    emb = torch.randn(1, 8, generator=torch.Generator().manual_seed(5))
    draws = sample(net, emb, 512, steps=32, generator=torch.Generator().manual_seed(6))
    values, method = pipeline.localizability(model, emb, draws)
    exact = localizability(log_density(net, emb, draws, method="rk4", steps=16)).item()
    assert values.shape == (1,) and abs(values[0] - exact) < 0.03
    assert f"{pipeline.LOCALIZABILITY_SAMPLES} of 512 samples" in method and "control variate" in method
    # The exact draws are picked at random, seeded by the draws' bits, which differ from CPU to CPU in the last
    # place (AVX2 or AVX-512 kernels): its accuracy is over those picks, here the draws moved by 1e-6 rad.
    errors = torch.tensor([pipeline.localizability(model, emb, normalize(draws + 1e-6 * torch.randn(
        draws.shape, generator=torch.Generator().manual_seed(seed))))[0][0] - exact for seed in range(32)])
    assert errors.square().mean().sqrt() < 0.0125, errors
    _, method = pipeline.localizability(model, emb, draws[:, :10])
    assert "all 10 samples" in method
    # guided draws: their density under the same guided field (the map's own entropy), against both fields'
    # densities at the server's own steps, so that only the field tells them apart
    guided = sample(net, emb, 40, steps=32, cfg=-0.8, generator=torch.Generator().manual_seed(7))  # all exact
    values, method = pipeline.localizability(model, emb, guided, cfg=-0.8)
    steps = pipeline.LOCALIZABILITY_STEPS
    exact = localizability(log_density(net, emb, guided, cfg=-0.8, method="rk4", steps=steps)).item()
    unguided = localizability(log_density(net, emb, guided, method="rk4", steps=steps)).item()
    converged = localizability(log_density(net, emb, guided, cfg=-0.8, method="rk4", steps=16)).item()
    print("guided draws: server", values[0], "same steps", exact, "unguided", unguided, "rk4 16", converged)
    assert abs(values[0] - exact) < abs(exact - unguided) / 4
    assert abs(values[0] - converged) < 0.005  # the steps' truncation, against 0.01 for the control variate above
    assert "w = -0.8" in method and "held" not in method  # beyond the hold's |w|
    _, method = pipeline.localizability(model, emb, guided, cfg=-0.05)
    assert "w = -0.05" in method and "unguided field held over each step" in method

    def mean_held(hold):
        return localizability(mean_log_density(net, emb, guided, exact=pipeline.LOCALIZABILITY_SAMPLES, steps=steps,
                                               precision=supported_precision("bf16", "cpu"), cfg=-0.05,
                                               hold_unguided=hold)).item()

    value = pipeline.localizability(model, emb, guided, cfg=-0.05)[0][0]
    assert value == pytest.approx(mean_held(True), abs=1e-7) and value != pytest.approx(mean_held(False), abs=1e-7)
