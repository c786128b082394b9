"""Top places carry the probability of lying within stated radii of them, and the basin share under its own name.

The basin share (all the mass that climbs to a mode) can be near 100 % for a continent-wide peak; the
probabilities within 100 and 500 km are what an analyst can use.
"""

from __future__ import annotations

import numpy as np

from model_server.geodesy import latlon_to_xyz
from model_server.products.density import kde_raster
from model_server.products.grid import Grid
from model_server.products.modes import WITHIN_RADII_KM, find_modes, mass_within, within_field
from model_server.products.report import compute_products, summary_fields


def spread(rng, lat, lon, sd_deg, n):
    return latlon_to_xyz(lat + rng.normal(0, sd_deg, n), lon + rng.normal(0, sd_deg, n))


def test_a_broad_lone_mode_holds_all_the_mass_but_little_of_it_is_near_the_place():
    rng = np.random.default_rng(3)
    samples = spread(rng, 28, 30, 6.0, 800)  # one basin about 1,300 km across
    raster = kde_raster(samples, Grid.global_grid(0.5))
    (top, *_) = find_modes(raster, top_k=3, samples=samples)
    assert top.basin_share > 0.5  # near certainty, for a peak ~1,300 km across
    assert top.within[100.0] < 0.1 * top.basin_share  # what lies near the place: far less
    assert top.within[100.0] < top.within[500.0] < top.basin_share
    assert top.within[100.0] == mass_within(samples, top.lat, top.lon, (100.0,))[100.0]


def test_within_grows_with_the_radius_and_covers_a_tight_cluster():
    rng = np.random.default_rng(4)
    probs = mass_within(spread(rng, -10, 120, 0.2, 600), -10, 120, (50.0, 100.0, 500.0, 20000.0))
    assert probs[50.0] <= probs[100.0] <= probs[500.0] <= probs[20000.0]
    assert probs[500.0] > 0.95 and abs(probs[20000.0] - 1.0) < 1e-6


def test_within_does_not_depend_on_the_raster_resolution():
    rng = np.random.default_rng(6)
    samples = spread(rng, 40, 10, 3.0, 2000)
    per_resolution = []
    for resolution in (0.25, 1.0, 5.0, 10.0):
        (top, *_) = find_modes(kde_raster(samples, Grid.global_grid(resolution)), top_k=1, samples=samples)
        per_resolution.append(mass_within(samples, 40, 10)[500.0])
        assert 0 < top.within[100.0] < top.within[500.0] < 1
    assert max(per_resolution) == min(per_resolution) and 0.3 < per_resolution[0] < 0.8


def test_summary_and_geopackage_name_the_radius_and_the_basin_share():
    rng = np.random.default_rng(5)
    samples = np.concatenate([spread(rng, 48, 2, 1.5, 300), spread(rng, -33, 151, 1.5, 300)])
    products = compute_products(samples, samples, 1.0, [0.5, 0.9], 3, True)
    places = summary_fields(products, 0.5)["top_places"]
    assert places and "probability" not in places[0]
    for place in places:
        assert {within_field(r) for r in WITHIN_RADII_KM} | {"basin_share"} <= set(place)
        assert place["p_within_100km"] <= place["p_within_500km"] <= 1.0
