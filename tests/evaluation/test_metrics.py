"""Geolocation metrics: known distances, GeoScore, accuracy, HPD coverage calibration, vMF mixture density."""

from __future__ import annotations

import math

import numpy as np

from model_server.evaluation.metrics import accuracy_within, coverage, distance_summary, geoscore, nll_summary
from model_server.geodesy import degrees_to_xyz, haversine_km, latlon_distance_km, xyz_to_degrees, xyz_to_latlon
from model_server.products.kde import mixture_log_density


def fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def test_haversine_known_distances():
    assert abs(haversine_km(48.8566, 2.3522, 51.5074, -0.1278) - 343.5) < 1.0  # Paris - London
    assert abs(haversine_km(0, 0, 0, 180) - math.pi * 6371) < 1e-6
    assert abs(haversine_km(10, 179.5, 10, -179.5) - haversine_km(10, 0, 10, 1)) < 1e-9  # across the antimeridian
    rows = np.array([[48.8566, 2.3522], [0.0, 0.0]])
    assert np.allclose(latlon_distance_km(rows, [[51.5074, -0.1278], [0.0, 180.0]]),
                       [haversine_km(48.8566, 2.3522, 51.5074, -0.1278), math.pi * 6371])


def test_degrees_and_unit_vectors_round_trip_in_their_precision():
    rows = np.array([[0.0, 0.0], [45.0, 90.0], [-33.9, 151.2], [10.0, 179.999], [-89.9999, -77.0]])
    xyz = degrees_to_xyz(rows)
    assert np.allclose(np.linalg.norm(xyz, axis=-1), 1.0) and np.allclose(xyz[1], [0.0, 0.7071068, 0.7071068])
    assert np.allclose(xyz_to_degrees(xyz), rows, atol=1e-9)
    assert np.allclose(np.stack(xyz_to_latlon(2 * xyz), axis=-1), rows, atol=1e-9)  # normalised first
    # float32 draws stay float32 (eval's single-sample row is scored so); xyz_to_latlon is float64 always
    assert xyz_to_degrees(xyz.astype(np.float32)).dtype == np.float32
    assert xyz_to_latlon(xyz.astype(np.float32))[0].dtype == np.float64


def test_geoscore_and_accuracy():
    assert geoscore(0.0) == 5000.0
    assert abs(geoscore(1492.7) - 5000 / math.e) < 1e-9
    acc = accuracy_within([0.5, 20, 300, 3000])
    assert acc == {"acc_1km": 0.25, "acc_25km": 0.5, "acc_200km": 0.5, "acc_750km": 0.75, "acc_2500km": 0.75}
    s = distance_summary([100.0, 300.0])
    assert s["mean_km"] == 200.0 and s["median_km"] == 200.0 and s["n"] == 2
    assert nll_summary([-1.0, -3.0])["nll_mean"] == 2.0


def test_coverage_is_calibrated_when_truth_follows_the_model():
    rng = np.random.default_rng(0)
    # model = N(0, 1) per image; its samples' log-densities and an independent truth's log-density
    samples = rng.normal(size=(4000, 200))
    truth = rng.normal(size=4000)
    logpdf = lambda x: -0.5 * x**2  # noqa: E731 - monotone in the density: all the HPD needs
    cov = coverage(logpdf(truth), logpdf(samples))
    for level, key in ((0.5, "coverage_50"), (0.9, "coverage_90"), (0.99, "coverage_99")):
        assert abs(cov[key] - level) < 0.03, cov
    # an over-confident model (truth twice as spread) under-covers
    assert coverage(logpdf(2 * truth), logpdf(samples))["coverage_90"] < 0.7


def test_vmf_mixture_density_integrates_to_one():
    pts = fibonacci_sphere(200_000)
    centres = np.array([[[1.0, 0, 0], [0, 0, 1.0]]])
    weights = np.array([[0.3, 0.7]])
    for kappa in (1.0, 50.0, 2000.0):
        logp = mixture_log_density(pts[None], centres, weights, kappa)
        total = np.exp(logp).mean() * 4 * math.pi
        assert abs(total - 1) < 0.01, (kappa, total)
