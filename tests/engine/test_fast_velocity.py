"""The evaluator the sampler runs, in bf16 and fp32: close to the network (fp32: to float rounding), cached until
the weights change, and a sample's rows independent of how they are split among the row workers."""

from __future__ import annotations

import pytest
import torch

from model_server.engine.network import FlowConfig, GeoAdaLNMLP, fast_velocity
from model_server.engine.runtime import row_workers
from model_server.engine.sampling import sample
from model_server.engine.sphere import geodesic_distance, uniform_sphere

from .test_oracle import randomise

CONFIG = FlowConfig(cond_dim=24, dim=64, depth=3)


@pytest.fixture()
def net():
    n = GeoAdaLNMLP(CONFIG)
    randomise(n, 0)
    return n.eval()


@pytest.mark.parametrize("images", [1, 3])
def test_bf16_velocity_is_close_to_the_fp32_network(net, images):
    gen = torch.Generator().manual_seed(1)
    x = uniform_sphere(images * 40, generator=gen).reshape(images, 40, 3)
    emb = torch.randn(images, 1, CONFIG.cond_dim, generator=gen)
    fast = fast_velocity(net)
    with torch.inference_mode():
        for g in (1e-9, 0.3, 1.0):
            exact = net(x, torch.tensor(g), emb)
            err = (fast(x, torch.tensor(g), emb) - exact).norm() / exact.norm()
            assert err < 1e-2, (g, err)
    for layer in (fast.mlps[0][0], fast.mlps[-1][2]):
        assert layer.dtype == torch.bfloat16


@pytest.mark.parametrize("images", [1, 3])
def test_fp32_velocity_is_the_network_to_float_rounding(net, images):
    """The fp32 sampler runs this evaluator, not forward(): it must stay the reference's field (test_oracle checks
    the endpoints against the authors' code)."""
    gen = torch.Generator().manual_seed(4)
    x = uniform_sphere(images * 300, generator=gen).reshape(images, 300, 3)  # 300 rows: split among row workers
    emb = torch.randn(images, 1, CONFIG.cond_dim, generator=gen)
    fast = fast_velocity(net, torch.float32)
    assert fast is not fast_velocity(net) and fast_velocity(net, torch.float32) is fast
    with torch.inference_mode():
        for g in (1e-9, 0.3, 1.0):
            exact = net(x, torch.tensor(g), emb)
            assert (fast(x, torch.tensor(g), emb) - exact).abs().max() < 1e-5 * exact.abs().max(), g


def test_bf16_weights_are_converted_once_and_follow_changes(net):
    fast = fast_velocity(net)
    assert fast_velocity(net) is fast
    x = uniform_sphere(30, generator=torch.Generator().manual_seed(2)).unsqueeze(0)
    emb = torch.randn(1, 1, CONFIG.cond_dim)
    with torch.inference_mode():
        before = fast(x, torch.tensor(0.5), emb)
    changed = GeoAdaLNMLP(CONFIG)
    randomise(changed, 1)
    net.load_state_dict(changed.state_dict())  # in place: the parameters' version counters move
    again = fast_velocity(net)
    with torch.inference_mode():
        after = again(x, torch.tensor(0.5), emb)
        assert again is not fast and not torch.allclose(before, after)
        assert torch.allclose(after, fast_velocity(changed)(x, torch.tensor(0.5), emb))


def test_the_cache_does_not_keep_a_model_alive():
    import gc
    import weakref

    net = GeoAdaLNMLP(CONFIG)
    fast_velocity(net)
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None


def test_rows_do_not_depend_on_their_chunk(net):
    """The row workers split a photo's samples; each row's endpoint is the same whichever chunk it is in."""
    emb = torch.randn(1, CONFIG.cond_dim)
    x0 = uniform_sphere(400, generator=torch.Generator().manual_seed(3))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # 400 rows: two chunks of 200
        split = sample(net, emb, 400, steps=4, x0=x0, precision="bf16", cfg=1.0)
        torch.set_num_threads(1)
        whole = sample(net, emb, 400, steps=4, x0=x0, precision="bf16", cfg=1.0)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(split, whole)
    part = sample(net, emb, 100, steps=4, x0=x0[:100], precision="bf16", cfg=1.0)
    assert torch.equal(part, whole[:, :100])
    fp32 = sample(net, emb, 400, steps=4, x0=x0, cfg=1.0)
    assert (geodesic_distance(fp32, whole) * 6371).median() < 20


def test_row_workers_return_in_order_raise_and_keep_the_callers_threads():
    threads = torch.get_num_threads()
    workers = row_workers(3)
    assert torch.get_num_threads() == threads
    assert workers.map(lambda a: (a, torch.get_num_threads(), torch.is_inference_mode_enabled()),
                       [(i,) for i in range(5)]) == [(i, 1, True) for i in range(5)]
    with pytest.raises(ZeroDivisionError):
        workers.map(lambda a: 1 / a, [(1,), (0,)])
    assert workers.map(lambda: "still serving", [()]) == ["still serving"]
