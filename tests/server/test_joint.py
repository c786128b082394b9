"""The joint map of several photos of one place, on synthetic maps: the product's regions, and the
contributions that single out a photo that disagrees."""

from __future__ import annotations

import numpy as np
import pytest

from model_server.geodesy import latlon_to_xyz
from model_server.products.grid import Grid
from model_server.products.joint import (
    JOINT_ALPHA,
    JointAccumulator,
    contributions,
    joint_exponent,
    map_localizability,
)
from model_server.products.maps import sample_map
from model_server.products.report import map_products

GRID = Grid.global_grid(1.0)


def cluster(rng, lat, lon, sd_deg, n):
    return latlon_to_xyz(lat + rng.normal(0, sd_deg, n), lon + rng.normal(0, sd_deg, n))


@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(4)
    return [cluster(rng, 44, 8, 5.0, 500), cluster(rng, 48, 14, 5.0, 500), cluster(rng, -30, 140, 3.0, 500)]


def joint_of(samples_list):
    acc = JointAccumulator(GRID)
    maps = []
    for i, samples in enumerate(samples_list):
        pmap = sample_map(samples, GRID)
        maps.append(pmap)
        acc.add(i, f"p{i}.jpg", pmap, samples)
    return acc, maps


def test_two_agreeing_photos_give_a_smaller_map_between_them(photos):
    acc, maps = joint_of(photos[:2])
    joint = acc.combined()
    assert joint.raster.prob.sum() == pytest.approx(1.0)
    for alpha in (0.0, JOINT_ALPHA):  # the product of the maps, tempered: (p0 p1)^(2^-alpha), renormalised
        log_product = sum(np.log(m.raster.density_sr()) for m in maps) * joint_exponent(2, alpha)
        expected = np.exp(log_product - log_product.max()) * GRID.cell_areas_sr()[:, None]
        assert np.allclose(acc.combined(alpha).raster.prob, expected / expected.sum(), rtol=1e-9)
    assert joint_exponent(1) == 1.0 and joint_exponent(4, 0.5) == 0.5
    products = map_products(acc.combined(0.0), [0.9], 3, False, None)
    singles = [map_products(m, [0.9], 3, False, None) for m in maps]
    assert products.regions[0].area_km2 < min(s.regions[0].area_km2 for s in singles)
    tempered = map_products(joint, [0.9], 3, False, None)  # the default: wider than the plain product
    assert products.regions[0].area_km2 < tempered.regions[0].area_km2
    assert 44 < products.best[0] < 48 and 8 < products.best[1] < 14
    assert map_localizability(joint) > max(map_localizability(m) for m in maps)
    for c in contributions(joint, products.best, acc.parts):
        assert c["level_at_guess"] < 0.9 and c["kl_nats"] < 2.0 and "joint best guess lies" in c["words"]


def test_a_photo_from_elsewhere_is_singled_out(photos):
    acc, _ = joint_of(photos)
    joint = acc.combined()
    products = map_products(joint, [0.5, 0.9], 3, False, None)
    by_name = {c["name"]: c for c in contributions(joint, products.best, acc.parts)}
    assert by_name["p2.jpg"]["kl_nats"] > 5 * max(by_name["p0.jpg"]["kl_nats"], by_name["p1.jpg"]["kl_nats"])
    assert max(c["level_at_guess"] for c in by_name.values()) > 0.99
    assert products.modes[0].within[500.0] > 0  # the odds near a top place come from the map's mass


def test_no_photo_no_joint_map():
    with pytest.raises(ValueError, match="no photo of the request could be located"):
        JointAccumulator(GRID).combined()
