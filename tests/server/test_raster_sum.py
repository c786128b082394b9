"""The raster's kernel sums (products/raster_sum.py) against the plain sum of every kernel at every cell."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ive

from model_server.geodesy import latlon_to_xyz
from model_server.products import raster_sum
from model_server.products.density import CELL_TOLERANCE, CUTOFF, _cuts, kde_raster
from model_server.products.grid import Grid
from model_server.products.kde import vmf_log_norms
from model_server.products.raster_sum import _bessel_terms, _reference_sums, fourier_terms, kernel_sums

EPS = 1e-4  # the rasters' uniform weight


def awkward_kernels(seed: int = 1):
    """Sharp kernels on the antimeridian and at the poles, medium ones, and wide ones: (centres, kappas)."""
    rng = np.random.default_rng(seed)

    def cloud(lat, lon, spread, n):
        return latlon_to_xyz(np.clip(lat + rng.normal(0, spread, n), -90, 90), lon + rng.normal(0, spread, n))

    centres = np.concatenate([
        cloud(0, 179.9, 0.5, 30), cloud(89.95, 0, 0.05, 20),
        latlon_to_xyz(np.array([90.0, -90.0, 0.0, 45.0]), np.array([0.0, 10.0, -180.0, 180.0])),
        cloud(-60, -40, 10, 50), rng.normal(size=(40, 3)),
    ])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    kappas = np.concatenate([rng.uniform(1e3, 3e4, 30), rng.uniform(1e3, 3e4, 20), [3e4, 5e3, 1e4, 3e4],
                             rng.uniform(5, 500, 50), rng.uniform(0.1, 5, 40)])
    return centres, kappas


def test_fourier_terms_bound_the_tail_of_the_series():
    for cut in (20.0, 26.0, 33.0, 40.0, 47.0):
        for b in np.concatenate([[0.0, 1e-6, 1e-3, 0.1], np.geomspace(0.5, 6e4, 60)]):
            m = int(fourier_terms(b, cut))
            tail = 2 * ive(np.arange(m + 1, m + 400 + int(3 * math.sqrt(b))), b).sum()
            assert tail <= math.exp(-cut), (cut, b, m)


def test_bessel_terms_match_scipy():
    b = np.array([0.0, 1e-9, 1e-3, 0.3, 2.0, 17.0, 250.0, 4000.0, 5e4])
    m_top = int(fourier_terms(b.max(), 40.0))
    i0, ratios = _bessel_terms(b, m_top)
    np.testing.assert_allclose(i0, ive(0, b), rtol=1e-13)
    # the products are kept at least TINY, far below the tolerance
    expected = ive(np.arange(1, m_top + 1)[:, None], b)
    assert np.all(np.abs(i0 * ratios - expected) <= 1e-15 + 1e-12 * expected)


GRIDS = {
    "global 1 degree": Grid.global_grid(1.0),
    "window across the antimeridian": Grid.global_grid(1.0).window(20, 170, 170, 360),
    "window of a 0.5 degree grid": Grid.global_grid(0.5).window(10, 200, 300, 700),
    "columns not whole round the circle": Grid(0.7, 120, 300, 3, 5),
}


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
@pytest.mark.parametrize("fourier_cost", [0.0, raster_sum.FOURIER_COST, 1e12],
                         ids=["Fourier wherever it can", "cheaper way", "direct only"])
def test_kernel_sums_are_the_plain_sums_within_the_tolerance(monkeypatch, grid, fourier_cost):
    monkeypatch.setattr(raster_sum, "FOURIER_COST", fourier_cost)
    centres, kappas = awkward_kernels()
    log_w = vmf_log_norms(kappas)
    expected = _reference_sums(centres, kappas, log_w, grid)
    # with the uniform floor: every cell within CELL_TOLERANCE of the floor's share
    floor = EPS / (4 * math.pi * (1 - EPS)) * len(kappas)
    got = kernel_sums(centres, kappas, log_w, grid, _cuts(kappas, EPS))
    assert np.max(np.abs(got - expected) / (expected + floor)) < 2 * CELL_TOLERANCE
    # without it: each kernel is cut at exp(-CUTOFF) of its peak (and float64 rounds the sharpest exponents,
    # kappa 3e4, to about 1e-11)
    got = kernel_sums(centres, kappas, log_w, grid, _cuts(kappas, 0.0))
    assert np.max(np.abs(got - expected) - len(kappas) * np.exp(log_w.max() - CUTOFF) - 1e-10 * expected) <= 0


def test_both_ways_are_used_and_agree(monkeypatch):
    centres, kappas = awkward_kernels(2)
    log_w, cuts, grid = vmf_log_norms(kappas), _cuts(kappas, EPS), Grid.global_grid(0.5)
    seen = {}
    real_direct, real_fourier = raster_sum._direct, raster_sum._fourier

    def direct(layout, out, mu, *args):
        seen["direct"] = seen.get("direct", 0) + len(mu)
        return real_direct(layout, out, mu, *args)

    def fourier(layout, out, k_lat, *args):
        seen["fourier"] = len(k_lat)
        return real_fourier(layout, out, k_lat, *args)

    monkeypatch.setattr(raster_sum, "_direct", direct)
    monkeypatch.setattr(raster_sum, "_fourier", fourier)
    mixed = kernel_sums(centres, kappas, log_w, grid, cuts)
    assert seen["direct"] > 0 and seen["fourier"] > 0 and seen["direct"] + seen["fourier"] == len(kappas)
    monkeypatch.setattr(raster_sum, "FOURIER_COST", 1e12)
    np.testing.assert_allclose(mixed, kernel_sums(centres, kappas, log_w, grid, cuts), rtol=1e-9, atol=1e-9)


def test_quarter_degree_raster_is_the_plain_kde_within_a_millionth():
    rng = np.random.default_rng(5)
    spread = rng.normal(size=(224, 3))
    samples = np.concatenate([
        latlon_to_xyz(35 + rng.normal(0, 0.3, 400), 30 + rng.normal(0, 0.3, 400)),
        latlon_to_xyz(-5 + rng.normal(0, 8, 400), 60 + rng.normal(0, 8, 400)),
        spread / np.linalg.norm(spread, axis=1, keepdims=True),
    ])
    grid = Grid.global_grid(0.25)
    raster = kde_raster(samples, grid)
    rows = [0, 200, 219, 360, 379, 500, 719]
    kappas = raster.sample_kappas(len(samples))
    kde = _reference_sums(samples, kappas, vmf_log_norms(kappas), grid, rows) / len(samples)
    expected = (1 - raster.uniform_weight) * kde + raster.uniform_weight / (4 * math.pi)
    got = raster.density_sr()[rows] * raster.normaliser
    assert np.max(np.abs(got / expected - 1)) < 1e-6
    assert raster.prob.sum() == pytest.approx(1.0, abs=1e-12)


def test_the_same_samples_give_the_same_raster():
    centres, kappas = awkward_kernels(3)
    args = (centres, kappas, vmf_log_norms(kappas), Grid.global_grid(0.5), _cuts(kappas, EPS))
    assert np.array_equal(kernel_sums(*args), kernel_sums(*args))


@pytest.mark.parametrize("kappa", [2.0, 2000.0], ids=["diffuse", "sharp"])
def test_check_runs_throughout_and_stops_the_raster(kappa):
    rng = np.random.default_rng(4)
    samples = latlon_to_xyz(rng.uniform(-60, 60, 1024), rng.uniform(-180, 180, 1024))
    calls = []
    kde_raster(samples, Grid.global_grid(0.25), kappa=kappa, adaptive=False, check=lambda: calls.append(1))
    assert len(calls) >= 20

    class Stop(Exception):
        pass

    def stop_at(k):
        def check():
            calls.append(1)
            if len(calls) >= k:
                raise Stop

        return check

    for k in (len(calls) // 2, len(calls) - 1):
        calls.clear()
        with pytest.raises(Stop):
            kde_raster(samples, Grid.global_grid(0.25), kappa=kappa, adaptive=False, check=stop_at(k))


@pytest.mark.parametrize("resolution", [0.25, 2.0])
def test_the_plan_over_the_rows_its_kernels_reach_is_the_plan_over_every_row(monkeypatch, resolution):
    """_plan takes each chunk of kernels over the row blocks they reach: the same plan, bit for bit, as over every
    row, which it takes for a chunk holding a kernel that reaches everywhere."""
    rng = np.random.default_rng(3)
    layout = raster_sum._Layout(Grid.global_grid(resolution))
    lat = np.concatenate([rng.uniform(-90, 90, 300), [90.0, -90.0, 89.99, -89.9, 0.0]])
    kappa = np.concatenate([10 ** rng.uniform(0, 6, 300), [50.0, 3e5, 2.0, 1e4, 1e6]])
    cut = np.full(len(kappa), 20.0)
    chunked = raster_sum._plan(layout, np.deg2rad(lat), kappa, cut, None)
    assert (chunked.row_hi - chunked.row_lo < layout.height - 1).sum() > 200  # most kernels miss some rows
    # one chunk of every kernel with a kernel of everywhere (kappa 1e-3): every row
    monkeypatch.setattr(raster_sum, "PLAN_CHUNK", 10**6)
    monkeypatch.setattr(raster_sum, "BLOCK_WORK", 10**9)
    everywhere = raster_sum._plan(layout, np.deg2rad(np.r_[lat, 0.0]), np.r_[kappa, 1e-3], np.r_[cut, 20.0], None)
    assert everywhere.row_lo[-1] == 0 and everywhere.row_hi[-1] == layout.height - 1
    for field in ("fourier", "terms", "row_lo", "row_hi", "half_cols", "direct_work", "fourier_work"):
        np.testing.assert_array_equal(getattr(chunked, field), getattr(everywhere, field)[:-1], err_msg=field)
