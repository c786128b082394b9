"""The area-of-interest prior on synthetic maps: polygons across the antimeridian and around a pole, hard and
soft weights, and every product following the restricted map."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import shape

from model_server.geodesy import latlon_to_xyz
from model_server.products.aoi import AoiError, aoi_geometry, aoi_mask
from model_server.products.grid import Grid
from model_server.products.report import AreaOfInterest, compute_products

GRID = Grid.global_grid(1.0)


def cluster(rng, lat, lon, sd_deg, n):
    return latlon_to_xyz(np.clip(lat + rng.normal(0, sd_deg, n), -89.9, 89.9), lon + rng.normal(0, sd_deg, n))


def box(west, south, east, north) -> dict:
    return {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                [west, south]]]}


def cells(mask: np.ndarray, lat: float, lon: float) -> bool:
    r, c = GRID.cell_of(np.array([lat]), np.array([lon]))
    return bool(mask[r[0], c[0]])


def test_both_forms_of_a_polygon_across_the_antimeridian_cover_the_same_cells():
    split = {"type": "MultiPolygon", "coordinates": [box(170, -10, 180, 10)["coordinates"],
                                                      box(-180, -10, -170, 10)["coordinates"]]}
    past = box(170, -10, 190, 10)
    a, b = aoi_mask(aoi_geometry(split), GRID), aoi_mask(aoi_geometry(past), GRID)
    assert np.array_equal(a, b) and a.sum() == 20 * 20
    assert cells(a, 0, 179.5) and cells(a, 0, -179.5) and not cells(a, 0, 0) and not cells(a, 0, -165)


def test_a_polar_cap_covers_every_longitude_up_to_the_pole():
    cap = aoi_mask(aoi_geometry(box(-180, 70, 180, 90)), GRID)
    assert cap[:20].all() and not cap[20:].any()
    # the same cap drawn across the antimeridian, from 0 east round to 360
    assert np.array_equal(cap, aoi_mask(aoi_geometry(box(0, 70, 360, 90)), GRID))


def test_an_area_smaller_than_a_cell_takes_the_cells_it_touches():
    tiny = aoi_mask(aoi_geometry(box(10.2, 20.2, 10.4, 20.4)), GRID)
    assert tiny.sum() == 1 and cells(tiny, 20.3, 10.3)


def test_a_polygon_that_crosses_itself_is_refused_by_name():
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    with pytest.raises(AoiError, match="polygon 1 is not a valid polygon .*Self-intersection"):
        aoi_geometry(bowtie)


@pytest.fixture(scope="module")
def two_places():
    """A map with most mass in Europe and some around the north pole."""
    rng = np.random.default_rng(2)
    return np.concatenate([cluster(rng, 48, 10, 2.0, 400), cluster(rng, 88, 0, 1.0, 100)])


def test_a_hard_prior_around_the_pole_moves_every_product_there(two_places):
    cap = AreaOfInterest(aoi_geometry(box(-180, 80, 180, 90)), 0.0)
    products = compute_products(two_places, two_places[:256], 1.0, [0.5, 0.9], 3, False, aoi=cap)
    assert products.aoi["prior_mass"] == pytest.approx(0.2, abs=0.03)
    assert products.raster.prob[:10].sum() == pytest.approx(1.0) and products.raster.prob[10:].max() == 0.0
    assert products.best[0] > 80 and all(m.lat > 80 for m in products.modes)
    for region in products.regions:
        assert not region.mask[10:].any()
    # the draws outside weigh nothing: the odds near the top place count the polar draws only, and only they
    # are shown
    assert products.modes[0].within[500.0] > 0.9
    assert len(products.sample_lat) < len(two_places) and (products.sample_lat >= 80).all()


def test_a_soft_prior_reweighs_inside_against_outside(two_places):
    cap = AreaOfInterest(aoi_geometry(box(-180, 80, 180, 90)), 0.25)
    products = compute_products(two_places, two_places[:256], 1.0, [0.5, 0.9], 3, False, aoi=cap)
    m = products.aoi["prior_mass"]
    assert products.raster.prob[:10].sum() == pytest.approx(m / (m + 0.25 * (1 - m)), rel=1e-9)
    assert products.raster.prob.sum() == pytest.approx(1.0)


def test_an_area_far_from_the_map_is_mostly_the_floor_and_says_so(two_places):
    south = AreaOfInterest(aoi_geometry(box(-180, -90, 180, -80)), 0.0)
    products = compute_products(two_places, two_places[:256], 1.0, [0.9], 3, False, aoi=south)
    assert products.best[0] < -80 and any("mostly the model's uniform floor" in w for w in products.warnings)
    assert shape(box(-180, -90, 180, -80)).contains(products.regions[0].geometry.centroid)
