"""sample(): shapes, starting points, seeds, guidance, solvers and bf16."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_server.engine.network import FlowConfig, GeoAdaLNMLP
from model_server.engine.sampling import sample
from model_server.engine.sphere import geodesic_distance, uniform_sphere

from .test_oracle import randomise

REPO_ROOT = Path(__file__).resolve().parents[2]

CONFIG = FlowConfig(cond_dim=16, dim=64, depth=3)


@pytest.fixture(scope="module")
def net():
    n = GeoAdaLNMLP(CONFIG)
    randomise(n, 0)
    return n.eval()


def test_shapes_unit_norm_and_seeds(net):
    emb = torch.randn(3, 16)
    x = sample(net, emb, 100, steps=8, generator=torch.Generator().manual_seed(1))
    assert x.shape == (3, 100, 3) and x.dtype == torch.float32
    assert torch.allclose(x.norm(dim=-1), torch.ones(3, 100), atol=1e-6)
    again = sample(net, emb, 100, steps=8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, again)
    assert sample(net, emb[0], 5, steps=2).shape == (1, 5, 3)


def test_shared_and_per_image_starting_points(net):
    emb = torch.randn(2, 16)
    x0 = uniform_sphere(40, generator=torch.Generator().manual_seed(2))
    shared = sample(net, emb, 40, steps=8, x0=x0)
    per_image = sample(net, emb, 40, steps=8, x0=x0.expand(2, -1, -1))
    assert torch.equal(shared, per_image)
    # an image's samples do not depend on the other images in the batch
    assert torch.allclose(sample(net, emb[1:], 40, steps=8, x0=x0)[0], shared[1], atol=1e-5)
    with pytest.raises(ValueError, match="x0 must have shape"):
        sample(net, emb, 41, x0=x0)


def test_progress_callback_and_guidance(net):
    calls = []
    emb = torch.randn(1, 16)
    x0 = uniform_sphere(64, generator=torch.Generator().manual_seed(3))
    plain = sample(net, emb, 64, steps=6, x0=x0, on_step=lambda k, n: calls.append((k, n)))
    assert calls == [(k, 6) for k in range(1, 7)]
    guided = sample(net, emb, 64, steps=6, x0=x0, cfg=2.0)
    assert geodesic_distance(plain, guided).mean() > 1e-3


def test_heun_converges_faster_than_euler(net):
    """On a field smooth in time (see test_likelihood.field): random time weights oscillate too fast."""
    from .test_likelihood import field

    net = field(gain=0.5)
    emb = torch.randn(1, 8)
    x0 = uniform_sphere(200, generator=torch.Generator().manual_seed(4))
    fine = sample(net, emb, 200, steps=512, solver="heun", x0=x0)
    err = {s: geodesic_distance(sample(net, emb, 200, steps=16, solver=s, x0=x0), fine).mean().item()
           for s in ("euler", "heun")}
    assert err["heun"] < 0.6 * err["euler"], err  # measured ~0.45: second order helps even on this field


def test_bf16_stays_close_to_fp32(net):
    emb = torch.randn(2, 16)
    x0 = uniform_sphere(200, generator=torch.Generator().manual_seed(5))
    fp32 = sample(net, emb, 200, steps=16, x0=x0)
    bf16 = sample(net, emb, 200, steps=16, x0=x0, precision="bf16")
    km = geodesic_distance(fp32, bf16) * 6371
    assert bf16.dtype == torch.float32 and km.median() < 50, km.median()
    with pytest.raises(ValueError, match="precision"):
        sample(net, emb, 4, precision="fp8")


def test_bf16_is_asked_for_only_where_it_is_native():
    from model_server.engine.sampling import supported_precision

    bf16_units = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()  # this project's: yes
    assert supported_precision("bf16", "cpu") == ("bf16" if bf16_units else "fp32")
    assert supported_precision("fp32", "cpu") == "fp32"
    assert supported_precision("bf16", "mps") == "fp32"  # autocast to bf16 on Apple GPUs depends on the build


def test_a_cpu_without_bf16_dot_products_samples_in_fp32():
    """Most laptops have AVX2 only: there oneDNN has no bf16 matmul and torch's fallback is slower than fp32.
    oneDNN's ISA limit makes this CPU one of them (a fresh process: the choice is made once)."""
    code = ("import torch; from model_server.engine.sampling import supported_precision; "
            "print(supported_precision('bf16', 'cpu'), supported_precision('fp32', 'cpu'))")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == ["fp32", "fp32"], out


def test_the_engine_offers_what_the_protocol_names():
    """The server validates options by the protocol's lists; the engine must run every name on them."""
    from geoplonk_service import protocol as P
    from model_server.engine.sampling import PRECISIONS
    from model_server.engine.solvers import SOLVERS

    assert tuple(SOLVERS) == P.SOLVERS
    assert set(PRECISIONS) == set(P.PRECISIONS)


def test_guided_velocity_in_one_call_is_the_two_fields_combined(net):
    """The sampler evaluates the conditional and unconditional fields in one doubled batch: the same field as
    two calls, up to float32 rounding."""
    from model_server.engine.solvers import guided_velocity

    emb = torch.randn(3, 1, 16)
    x = uniform_sphere(30, generator=torch.Generator().manual_seed(6)).reshape(3, 10, 3)
    g = torch.tensor(0.4)
    joint = guided_velocity(net, emb, 1.5)(x, g)
    expected = 2.5 * net(x, g, emb) - 1.5 * net(x, g, torch.zeros_like(emb))
    assert torch.allclose(joint, expected, atol=1e-5)
    assert torch.equal(guided_velocity(net, emb, 0.0)(x, g), net(x, g, emb))


@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint", "rk3", "rk4"])
def test_the_unguided_field_is_held_over_each_step_at_the_first_stage(net, solver):
    """With the unguided field held, each solver evaluates the doubled batch at each step's first stage only:
    the call count per step that guided_velocity relies on."""
    from model_server.engine.solvers import EVALUATIONS, SOLVERS, guided_velocity

    rows = []

    def counting(x, g, e):
        rows.append(x.shape[0])
        return net(x, g, e)

    k = EVALUATIONS[solver]
    x = uniform_sphere(50, generator=torch.Generator().manual_seed(10)).unsqueeze(0)
    SOLVERS[solver](guided_velocity(counting, torch.randn(1, 1, 16), -0.05, k), x, 4)
    assert rows == ([2] + [1] * (k - 1)) * 4


def test_holding_the_unguided_field_moves_draws_less_than_the_step_error_at_a_small_w(net):
    """At the default model's small |w| and few steps the held field costs less accuracy than the solver's steps;
    beyond HOLD_UNGUIDED_MAX_CFG or HOLD_UNGUIDED_MAX_STEPS, and for Euler, nothing is held."""
    from model_server.engine.sampling import HOLD_UNGUIDED_MAX_CFG, HOLD_UNGUIDED_MAX_STEPS

    emb = torch.randn(2, 16, generator=torch.Generator().manual_seed(8))
    x0 = uniform_sphere(200, generator=torch.Generator().manual_seed(9))

    def draws(w, hold=True, solver="rk3", steps=6):
        return sample(net, emb, 200, steps=steps, solver=solver, x0=x0, cfg=w, hold_unguided=hold)

    full, held = draws(-0.05, hold=False), draws(-0.05)
    converged = draws(-0.05, hold=False, solver="rk4", steps=64)
    hold_error = geodesic_distance(held, full).mean()
    assert 0 < hold_error < 0.5 * geodesic_distance(full, converged).mean()
    assert torch.equal(draws(-0.05, solver="euler", steps=8), draws(-0.05, hold=False, solver="euler", steps=8))
    w = -2 * HOLD_UNGUIDED_MAX_CFG
    assert torch.equal(draws(w), draws(w, hold=False))
    steps = HOLD_UNGUIDED_MAX_STEPS + 1
    assert torch.equal(draws(-0.05, steps=steps), draws(-0.05, hold=False, steps=steps))


def test_solvers_reach_their_order():
    """Halving the step halves Euler's error, quarters midpoint's and cuts rk3's ~8-fold and rk4's ~16-fold,
    against a fine rk4.

    On a field without time dependence: the random time embedding's fast channels put a floor under any
    fixed-step solver's error (see test_likelihood.field).
    """
    from .test_likelihood import field

    net = field(gain=0.5, time_gain=0.0)
    emb = torch.randn(1, 8, generator=torch.Generator().manual_seed(7))
    x0 = uniform_sphere(200, generator=torch.Generator().manual_seed(8))
    fine = sample(net, emb, 200, steps=256, solver="rk4", x0=x0)

    def error(solver, steps):
        return geodesic_distance(sample(net, emb, 200, steps=steps, solver=solver, x0=x0), fine).mean().item()

    ratios = {s: error(s, k) / error(s, 2 * k) for s, k in (("euler", 16), ("midpoint", 8), ("rk3", 3), ("rk4", 2))}
    assert 1.6 < ratios["euler"] < 2.6 and 3.2 < ratios["midpoint"] < 5 and ratios["rk4"] > 6, ratios  # 2, 4, 10
    assert 5 < ratios["rk3"] < 12, ratios
    assert error("midpoint", 8) < 0.5 * error("euler", 16)  # the same 16 evaluations
    assert error("rk3", 6) < 0.5 * error("midpoint", 9)  # the same 18 evaluations


@pytest.mark.parametrize("weight", [0.5, 0.7])
def test_weighted_grid_mixes_the_two_spacings_by_its_weight(weight):
    """Its step density in gamma is sampling_grid's ** weight x a uniform one's ** (1 - weight), from noise (~0)
    to data (1); balanced_grid is weight 1/2."""
    import math

    import numpy as np

    from model_server.engine.schedule import END, START, balanced_grid, sampling_grid, weighted_grid

    g = weighted_grid(8, weight).double().numpy()
    assert g[0] == pytest.approx(1e-9) and g[-1] == 1.0 and np.all(np.diff(g) > 0)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    gg = np.linspace(0, 1, 200001)
    s = sig(END) - (sig(END) - sig(START)) * gg  # sampling_grid's density in gamma is 1 / (s (1 - s))
    density = (s * (1 - s)) ** -weight
    cdf = np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(gg))])
    assert np.allclose(np.interp(np.linspace(0, 1, 9), cdf / cdf[-1], gg), g, atol=1e-6)
    assert torch.equal(sampling_grid(4)[[0, -1]], weighted_grid(4, weight)[[0, -1]].float())
    assert torch.allclose(weighted_grid(4, 0.0)[1:], torch.tensor([0.25, 0.5, 0.75, 1.0]))  # uniform in gamma
    assert torch.equal(balanced_grid(8), weighted_grid(8, 0.5))
    with pytest.raises(ValueError, match="grid weight"):
        weighted_grid(4, 1.0)


def test_every_solver_is_deterministic_and_counts_its_steps(net):
    from model_server.engine.solvers import SOLVERS

    emb = torch.randn(1, 16)
    x0 = uniform_sphere(50, generator=torch.Generator().manual_seed(9))
    for solver in SOLVERS:
        calls = []
        a = sample(net, emb, 50, steps=3, solver=solver, x0=x0, on_step=lambda k, n, calls=calls: calls.append(k))
        b = sample(net, emb, 50, steps=3, solver=solver, x0=x0, precision="bf16")
        assert calls == [1, 2, 3] and torch.equal(a, sample(net, emb, 50, steps=3, solver=solver, x0=x0))
        assert torch.allclose(a.norm(dim=-1), torch.ones(1, 50)) and torch.equal(
            b, sample(net, emb, 50, steps=3, solver=solver, x0=x0, precision="bf16"))
    with pytest.raises(ValueError, match="unknown solver"):
        sample(net, emb, 4, solver="rk45")
    # rk3's grid weight, as benchmarks/bench_solvers.py --grid-weights varies it: its default is the server's
    from model_server.engine.solvers import RK3_GRID_WEIGHT

    rk3 = sample(net, emb, 50, steps=3, solver="rk3", x0=x0)
    assert torch.equal(rk3, sample(net, emb, 50, steps=3, solver="rk3", x0=x0,
                                   solver_options={"grid_weight": RK3_GRID_WEIGHT}))
    assert not torch.equal(rk3, sample(net, emb, 50, steps=3, solver="rk3", x0=x0, solver_options={"grid_weight": 0.5}))
