"""Claim checks on synthetic maps: the credible level of a claim, its agreement with the regions drawn, the
distances to them, and the words an analyst quotes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_server.geodesy import haversine_km, latlon_to_xyz
from model_server.products.claims import Claim, claim_level, distance_to_cells_km, level_words
from model_server.products.grid import Grid
from model_server.products.report import compute_products, summary_fields, write_products

LEVELS = [0.5, 0.9, 0.99]


def cluster(rng, lat, lon, sd_deg, n):
    return latlon_to_xyz(lat + rng.normal(0, sd_deg, n), lon + rng.normal(0, sd_deg, n))


@pytest.fixture(scope="module")
def products():
    rng = np.random.default_rng(11)
    samples = np.concatenate([cluster(rng, 45, 8, 1.0, 300), cluster(rng, 40, 20, 3.0, 200)])
    claims = [Claim(45.0, 8.0, "click", "the centre"), Claim(40.0, 24.0, "layer", "the broad cluster's edge"),
              Claim(-33.9, 151.2, "exif", "Sydney")]
    return compute_products(samples, samples[:256], 1.0, LEVELS, 3, False, claims=claims)


def test_a_claim_at_the_peak_is_likely_and_one_far_away_very_unlikely(products):
    centre, edge, far = products.claims
    assert centre.credible_level < 0.5 and centre.verdict == "likely under the model"
    assert all(centre.inside) and centre.distance_km == [0.0, 0.0, 0.0]
    assert far.credible_level > 0.99 and far.verdict == "very unlikely under the model"
    assert not any(far.inside) and far.density_ratio < 1e-3
    # farther from the smaller regions, each distance at least the great-circle gap to the densest place
    assert far.distance_km[0] >= far.distance_km[1] >= far.distance_km[2] > 10_000
    assert "outside every region drawn" in far.words and "km from the 99 % region" in far.words
    assert centre.credible_level < edge.credible_level < far.credible_level


def test_the_level_agrees_with_the_regions_drawn(products):
    for check in products.claims:
        for level, inside, region in zip(LEVELS, check.inside, products.regions, strict=True):
            rows, cols = region_cell(check.claim)
            assert inside == bool(region.mask[rows, cols])
            assert (check.credible_level <= level) == inside


def region_cell(claim: Claim) -> tuple[int, int]:
    rows, cols = Grid.global_grid(1.0).cell_of(np.array([claim.lat]), np.array([claim.lon]))
    return int(rows[0]), int(cols[0])


def test_the_claims_go_to_the_summary_and_the_geopackage(products, tmp_path):
    import pyogrio

    fields = summary_fields(products, 0.1)
    assert [c["source"] for c in fields["claims"]] == ["click", "layer", "exif"]
    assert fields["claims"][2]["regions"][1]["level"] == 0.9 and not fields["claims"][2]["regions"][1]["inside"]
    assert fields["claims"][2]["words"].startswith("very unlikely under the model: outside ")
    _, gpkg = write_products(products, 0.1, {})
    path = tmp_path / "r.gpkg"
    path.write_bytes(gpkg)
    meta = pyogrio.read_info(path, layer="claims")
    assert meta["features"] == 3
    assert {"source", "credible_level", "density_ratio", "inside_90", "km_to_99", "verdict", "words"} <= set(
        meta["fields"])


def test_level_words_round_down_so_the_claim_is_outside_the_region_named():
    assert level_words(0.973) == "outside the 97 % region"
    assert level_words(0.9973) == "outside the 99.7 % region"
    assert level_words(0.004).startswith("inside the 1 % region")
    assert level_words(1.0).startswith("outside every credible region")


def test_distance_to_cells_wraps_round_the_antimeridian():
    grid = Grid.global_grid(1.0)
    mask = np.zeros((grid.height, grid.width), dtype=bool)
    mask[grid.cell_of(np.array([0.5]), np.array([179.5]))] = True  # the cell [179, 180] x [0, 1]
    km = distance_to_cells_km(0.5, -178.0, mask, grid)
    assert km == pytest.approx(float(haversine_km(0.5, -178.0, 0.5, 180.0)), rel=1e-6)  # 2 degrees east, not 358
    assert distance_to_cells_km(0.5, 179.2, mask, grid) == 0.0
    assert math.isinf(distance_to_cells_km(0.0, 0.0, np.zeros_like(mask), grid))


def test_claim_level_without_draws_adds_up_the_raster():
    from model_server.products.density import kde_raster
    from model_server.products.maps import ProbabilityMap

    rng = np.random.default_rng(5)
    raster = kde_raster(cluster(rng, 0, 0, 2.0, 400), Grid.global_grid(1.0))
    pmap = ProbabilityMap(raster)
    density = raster.density_sr()
    assert claim_level(float(density.max()), pmap) == 0.0
    assert claim_level(float(density.min()) * 0.5, pmap) == pytest.approx(1.0)
