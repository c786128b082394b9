"""Products on synthetic samples: raster mass, credible regions, modes, antimeridian and poles."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy.special import logsumexp

from model_server.geodesy import haversine_km, latlon_to_xyz, xyz_to_latlon
from model_server.products.density import crop_window, kde_raster
from model_server.products.grid import Grid
from model_server.products.kde import (
    KAPPA_GRID,
    kde_log_density,
    log_kernel_sums,
    loo_log_likelihood,
    select_kappa,
    vmf_log_norms,
)
from model_server.products.modes import best_guess, best_of_samples, find_modes
from model_server.products.regions import credible_regions


def cluster(rng, lat, lon, spread_deg, n):
    """n points scattered around (lat, lon) by a tangent-plane Gaussian of spread_deg."""
    lats = lat + rng.normal(0, spread_deg, n)
    lons = lon + rng.normal(0, spread_deg, n) / max(np.cos(np.deg2rad(lat)), 0.2)
    return latlon_to_xyz(np.clip(lats, -89.9, 89.9), lons)


def fraction_inside(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    """Share of points (given by their cells) that fall inside a region mask."""
    return float(mask[rows, cols].mean()) if len(rows) else 0.0


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


def test_grid_cells_cover_the_sphere():
    grid = Grid.global_grid(0.5)
    assert grid.cell_areas_sr().sum() * grid.width == pytest.approx(4 * np.pi, rel=1e-9)
    with pytest.raises(ValueError):
        Grid.global_grid(0.7)


def test_raster_sums_to_one_and_matches_the_kde(rng):
    samples = cluster(rng, 30, 40, 4, 800)
    raster = kde_raster(samples, Grid.global_grid(0.5))
    assert raster.prob.min() > 0
    assert raster.prob.sum() == pytest.approx(1.0, abs=1e-9)
    # The cell density is the KDE at the cell centre, up to the tiny midpoint renormalisation.
    grid = raster.grid
    r, c = 120, 440
    centre = latlon_to_xyz(np.array([grid.lat_centers()[r]]), np.array([grid.lon_centers()[c]]))
    exact = kde_log_density(centre, samples, raster.sample_kappas(len(samples)), raster.uniform_weight)[0]
    assert np.log(raster.density_sr()[r, c]) == pytest.approx(exact, abs=0.02)


def test_bandwidth_follows_the_spread(rng):
    narrow = select_kappa(cluster(rng, 0, 0, 1, 500))
    wide = select_kappa(cluster(rng, 0, 0, 10, 500))
    assert narrow > 10 * wide


def test_the_leave_one_out_score_matches_a_float64_kernel_sum(rng):
    """select_kappa's scores take their exp in float32: the same scores and the same choice as the plain sum."""
    samples = np.concatenate([cluster(rng, 10, 20, 0.3, 300), cluster(rng, -30, 100, 8, 300)])
    cos = np.clip(samples @ samples.T, -1.0, 1.0)
    np.fill_diagonal(cos, -np.inf)
    plain = np.array([np.mean(logsumexp(k * (cos - 1.0), axis=1)) - np.log(len(samples) - 1) + vmf_log_norms(k)
                      for k in KAPPA_GRID])
    scores = loo_log_likelihood(samples, KAPPA_GRID)
    np.testing.assert_allclose(scores, plain, rtol=0, atol=1e-5)
    assert np.argmax(scores) == np.argmax(plain)


@pytest.mark.parametrize("resolution", [0.1, 0.3, 2.0])
def test_a_region_traced_on_its_bounding_box_has_the_whole_grid_s_coordinates(resolution):
    """polygonize traces a mask's bounding box only: its polygons are, bit for bit, the whole grid's, at the east
    edge, the south pole and across the antimeridian too, at cell sizes that binary fractions do not hold."""
    from rasterio import features
    from shapely.geometry import MultiPolygon, Polygon, shape

    from model_server.products.regions import polygonize

    grid = Grid.global_grid(resolution)
    h, w = grid.height, grid.width
    mask = np.zeros((h, w), dtype=bool)
    mask[h - 3 :, w - 5 :] = True  # the south pole's row, at the east edge
    mask[h // 2 : h // 2 + 4, :3] = mask[h // 2 : h // 2 + 4, -2:] = True  # both sides of the antimeridian
    mask[2:9, w // 3 : w // 3 + 9] = True
    mask[4, w // 3 + 3] = False  # a hole
    transform = grid.transform()
    whole = [shape(g) for g, v in features.shapes(mask.astype(np.uint8), mask=mask, transform=transform,
                                                    connectivity=4) if v == 1]
    merged = shapely.make_valid(shapely.union_all(whole))
    expected = MultiPolygon([g for g in getattr(merged, "geoms", [merged]) if isinstance(g, Polygon)])
    got = polygonize(mask, transform)
    assert got.wkb == expected.wkb
    assert got.bounds == (-180.0, -90.0, 180.0, expected.bounds[3])
    assert polygonize(np.zeros((h, w), dtype=bool), transform).is_empty


def test_ninety_percent_region_holds_ninety_percent_of_samples(rng):
    samples = cluster(rng, -10, 120, 5, 2000)
    fresh = cluster(rng, -10, 120, 5, 2000)  # held-out draws of the same distribution
    raster = kde_raster(samples, Grid.global_grid(0.5))
    regions = credible_regions(raster, [0.5, 0.9, 0.99], samples)
    lat, lon = np.rad2deg(np.arcsin(fresh[:, 2])), np.rad2deg(np.arctan2(fresh[:, 1], fresh[:, 0]))
    rows, cols = raster.grid.cell_of(lat, lon)
    shares = [fraction_inside(r.mask, rows, cols) for r in regions]
    assert shares[0] == pytest.approx(0.5, abs=0.06)
    assert shares[1] == pytest.approx(0.9, abs=0.04)
    assert shares[2] > 0.97
    areas = [r.area_km2 for r in regions]
    assert areas[0] < areas[1] < areas[2]
    for region in regions:
        assert region.geometry.is_valid and not region.geometry.is_empty


def test_regions_of_a_sharp_and_broad_mixture_hold_their_level_of_fresh_draws():
    """One bandwidth cannot fit a tight cluster and broad ones at once. Adding up a fixed-kernel raster's
    probability then makes the 50 % region too big and the 90 / 99 % ones too small, as on the default
    model as trained; ranking by the samples' leave-one-out densities keeps every level, and the
    adaptive kernel (one bandwidth per sample) fits both clusters, so its map is likelier too."""
    rng = np.random.default_rng(0)

    def draw(n):
        k = rng.binomial(n, 0.4)
        return np.concatenate([cluster(rng, 35, 30, 0.3, k), cluster(rng, 20, 10, 2, (n - k) // 2),
                               cluster(rng, -5, 60, 8, n - k - (n - k) // 2)])

    samples, fresh = draw(1024), draw(20000)
    raster = kde_raster(samples, Grid.global_grid(0.25))
    fixed = kde_raster(samples, Grid.global_grid(0.25), adaptive=False)
    rows, cols = raster.grid.cell_of(*xyz_to_latlon(fresh))
    levels = [0.5, 0.9, 0.99]
    by_samples = [fraction_inside(r.mask, rows, cols) for r in credible_regions(raster, levels, samples)]
    fixed_by_samples = [fraction_inside(r.mask, rows, cols) for r in credible_regions(fixed, levels, samples)]
    fixed_by_mass = [fraction_inside(r.mask, rows, cols) for r in credible_regions(fixed, levels)]
    log_lik = float(np.log(raster.density_at_cells(rows, cols)).mean())
    fixed_log_lik = float(np.log(fixed.density_at_cells(rows, cols)).mean())
    print(f"fresh draws inside the 50/90/99 % regions: adaptive by samples {np.round(by_samples, 3)}, "
          f"fixed kernel by samples {np.round(fixed_by_samples, 3)}, by raster mass {np.round(fixed_by_mass, 3)}; "
          f"mean log density {log_lik:.3f} adaptive, {fixed_log_lik:.3f} fixed")
    assert by_samples == pytest.approx(levels, abs=0.025)
    assert fixed_by_samples == pytest.approx(levels, abs=0.025)
    assert fixed_by_mass[0] > 0.52 and fixed_by_mass[1] < 0.88  # adding up the raster's mass misses both ways
    assert log_lik > fixed_log_lik + 0.05
    # each sample's own kernel is left out of its density: a lone far sample is not a peak of its own
    lone = np.concatenate([cluster(rng, 0, 0, 1, 99), latlon_to_xyz(np.array([50.0]), np.array([100.0]))])
    raster = kde_raster(lone, Grid.global_grid(0.5))
    assert raster.density_at_own_samples(lone)[-1] < 1e-3 * raster.density_sr().max()
    # ... but when more than 1 % of the samples stand alone like that, the 99 % region keeps their
    # kernels (the mass rule) instead of taking every cell of the globe
    scattered = np.concatenate([cluster(rng, 0, 0, 1, 95), latlon_to_xyz(rng.uniform(-60, 60, 5),
                                                                         rng.uniform(-180, 180, 5))])
    raster = kde_raster(scattered, Grid.global_grid(0.5))
    inner, middle, wide = credible_regions(raster, [0.5, 0.9, 0.99], scattered)
    assert wide.mask.mean() < 0.9  # the quantile rule alone took 100 % of the cells
    assert not (inner.mask & ~middle.mask).any() and not (middle.mask & ~wide.mask).any()  # still nested
    rows, cols = raster.grid.cell_of(*xyz_to_latlon(scattered))
    assert wide.mask[rows, cols].mean() >= 0.99


def test_bimodal_gives_two_regions_and_two_places(rng):
    samples = np.concatenate([cluster(rng, 48, 2, 2, 600), cluster(rng, -33, 151, 2, 600)])
    raster = kde_raster(samples, Grid.global_grid(0.5))
    region90 = credible_regions(raster, [0.9])[0]
    assert len(region90.geometry.geoms) == 2
    modes = find_modes(raster, top_k=5)
    assert len(modes) >= 2
    assert modes[0].probability > 0.35 and modes[1].probability > 0.35
    found = sorted((round(m.lat), round(m.lon)) for m in modes[:2])
    assert haversine_km(*found[0], -33, 151) < 300
    assert haversine_km(*found[1], 48, 2) < 300


def test_antimeridian_region_is_split_and_valid(rng):
    samples = cluster(rng, -17, 179.5, 3, 1000)
    raster = kde_raster(samples, Grid.global_grid(0.5))
    region = credible_regions(raster, [0.9])[0]
    geom = region.geometry
    assert geom.is_valid
    assert geom.bounds[0] == pytest.approx(-180) and geom.bounds[2] == pytest.approx(180)
    # Two parts, one each side of the antimeridian, meeting there; none wider than the cluster.
    assert len(geom.geoms) == 2
    assert all(part.bounds[2] - part.bounds[0] < 30 for part in geom.geoms)
    modes = find_modes(raster, top_k=3)
    assert haversine_km(modes[0].lat, modes[0].lon, -17, 179.5) < 300
    assert crop_window(raster.prob) [2:] == (0, raster.grid.width)  # a wrapping crop keeps all longitudes


def test_polar_region_is_closed_and_valid(rng):
    samples = cluster(rng, 89, 0, 3, 1000)
    raster = kde_raster(samples, Grid.global_grid(0.5))
    region = credible_regions(raster, [0.9])[0]
    geom = region.geometry
    assert geom.is_valid and len(geom.geoms) == 1
    west, south, east, north = geom.bounds
    assert north == pytest.approx(90) and west == pytest.approx(-180) and east == pytest.approx(180)
    polygon = geom.geoms[0]
    assert polygon.exterior.is_closed
    assert shapely.contains_xy(geom, 0.0, 89.9)
    # A polar cap of angular radius a has area 2 pi R^2 (1 - cos a): the region's area is such a cap.
    cap_radius = np.deg2rad(90 - south)
    assert region.area_km2 < 2 * np.pi * 6371.0**2 * (1 - np.cos(cap_radius))
    modes = find_modes(raster, top_k=3)
    assert modes[0].lat > 85 and modes[0].probability > 0.8


def test_crop_keeps_the_mass(rng):
    raster = kde_raster(cluster(rng, 40, -100, 3, 500), Grid.global_grid(0.5))
    r0, r1, c0, c1 = crop_window(raster.prob, 0.999)
    assert raster.prob[r0:r1, c0:c1].sum() >= 0.999 - 1e-9
    assert (r1 - r0) * (c1 - c0) < raster.prob.size / 4


@pytest.mark.parametrize("mass", [0.99, 0.999])
def test_crop_takes_the_densest_cells_a_full_sort_takes(rng, mass):
    """crop_window sorts only the cells that can hold the mass: the window of a sort of every cell."""

    def full_sort_window(prob):
        flat = prob.ravel()
        order = np.argsort(flat, kind="stable")[::-1]
        keep = order[: int(np.searchsorted(np.cumsum(flat[order]), mass * flat.sum())) + 1]
        rows, cols = np.unravel_index(keep, prob.shape)
        return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1

    grid = Grid.global_grid(0.5)
    for samples in (cluster(rng, 40, -100, 3, 500), cluster(rng, -20, 30, 25, 500), cluster(rng, 0, 0, 0.2, 50)):
        prob = kde_raster(samples, grid).prob
        assert crop_window(prob, mass) == full_sort_window(prob)
    flat = np.full((grid.height, grid.width), 1.0 / (grid.height * grid.width))  # every cell a candidate
    r0, r1, c0, c1 = crop_window(flat, mass)
    assert flat[r0:r1, c0:c1].sum() >= mass - 1e-9
    block = np.zeros((grid.height, grid.width))
    block[100:110, 200:230] = rng.random((10, 30))
    assert crop_window(block, 1.0) == (100, 110, 200, 230)  # all the mass: the cells holding some
    assert crop_window(np.zeros_like(block), mass) == (0, grid.height, 0, grid.width)  # none: nothing to crop to


def test_best_guess_prefers_the_larger_region_and_stays_sharp_inside_it(rng):
    tight = cluster(rng, -10, 20, 0.05, 40)  # a small, very tight cluster
    broad = cluster(rng, 45, -100, 3.0, 300)  # most of the mass, spread over ~300 km
    samples = np.concatenate([tight, broad])
    kappa = select_kappa(samples, 1e5)
    guess = samples[best_of_samples(samples, kappa)]
    lat, lon = np.degrees(np.arcsin(guess[2])), np.degrees(np.arctan2(guess[1], guess[0]))
    assert haversine_km(lat, lon, 45, -100) < 400  # the large region, not the spike
    # one cluster: the guess is near its centre, not anywhere in the 1,000 km window
    one = cluster(rng, 10, 10, 0.5, 300)
    g = one[best_of_samples(one, select_kappa(one, 1e5))]
    assert haversine_km(np.degrees(np.arcsin(g[2])), np.degrees(np.arctan2(g[1], g[0])), 10, 10) < 60


def test_the_summary_reports_the_best_guess_of_the_guess_samples(rng):
    """The server's best guess is products.modes.best_guess of its cfg-2 draws, the one `geoplonk eval` scores."""
    from model_server.products.report import compute_products

    samples = cluster(rng, 20, 30, 3, 200)
    guess = np.concatenate([cluster(rng, 20, 30, 1, 60), cluster(rng, -40, 150, 0.2, 20)])
    products = compute_products(samples, guess, 1.0, [0.5, 0.9], 3, False)
    lat, lon = xyz_to_latlon(best_guess(guess, 1.0))
    assert products.best == (float(lat), float(lon))
    assert haversine_km(*products.best, 20, 30) < 300
    assert np.array_equal(best_guess(guess[:1], 1.0), guess[0])  # one draw is its own guess


def test_kernel_sums_leave_each_point_out_block_by_block(rng):
    x = cluster(rng, 0, 0, 5, 50)
    kappas = np.linspace(100.0, 300.0, 50)
    terms = kappas * (np.clip(x @ x.T, -1.0, 1.0) - 1.0)
    np.fill_diagonal(terms, -np.inf)
    expected = np.log(np.exp(terms).sum(axis=1))
    got = log_kernel_sums(x, x, kappas, leave_out_own=True, chunk=7)
    assert np.allclose(got, expected, rtol=0, atol=1e-12)
    assert np.allclose(log_kernel_sums(x, x, 200.0, chunk=7), log_kernel_sums(x, x, 200.0), rtol=0, atol=1e-12)

def test_places_at_sea_name_the_coast_they_lie_off():
    """A guess just off the Nile delta is not 'open ocean': it names the coast; mid-Pacific is open ocean."""
    from model_server.products.place_names import OPEN_OCEAN, name_places

    offshore, inland, mid_pacific, alps = name_places([31.6, 30.0, 0.0, 46.5], [29.9, 31.2, -140.0, 10.0])
    assert offshore.country == "Egypt" and offshore.place.startswith("at sea, ") and "Alexandria" in offshore.place
    assert inland.country == "Egypt" and not inland.place.startswith("at sea")
    assert mid_pacific.place == OPEN_OCEAN and mid_pacific.country == ""
    assert alps.country == "Switzerland"
    # where no country can be told, none is claimed, and the place never repeats one ("place, country" reads well)
    icecap, pole = name_places([75.0, -80.0], [-40.0, 0.0])
    assert icecap.country == "" and icecap.place == "remote land, 553 km from Upernavik (Greenland)"
    assert pole.country == "" and pole.place == "Antarctica"


def test_nearest_town_is_nearest_on_the_sphere():
    """Across the antimeridian and at high latitude, flat degrees would pick a farther town (or none)."""
    from model_server.products.place_names import name_places

    off_fiji, baffin_bay = name_places([-16.5, 72.3], [-179.9, -63.8])
    assert off_fiji.country == "Fiji" and off_fiji.place.startswith("at sea, 77 km off")
    assert baffin_bay.country == "Greenland"


def test_warm_up_loads_every_table_the_first_place_name_needs():
    """The server warms place names up while it preloads its model, so its first photo's answer does not wait for
    them.  In a fresh process, so that no earlier test has loaded them."""
    import subprocess
    import sys

    script = (
        "from model_server.products import land_mask as m, place_names as p\n"
        "assert p._towns.cache_info().currsize == 0 and m._packed_mask.cache_info().currsize == 0\n"
        "p.warm_up()\n"
        "assert p._towns.cache_info().currsize == 1 and m._packed_mask.cache_info().currsize == 1\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)


def test_the_land_mask_answers_as_global_land_mask_from_a_mapped_bit_cache(tmp_path, monkeypatch):
    """The same answer as the package, cell for cell (2 million random points, every row's and many columns'
    edges, the poles and the antimeridian), from a cache built once, in another process, without the package's
    933 MB array; a damaged cache is built again."""
    import os
    import subprocess
    import sys

    from global_land_mask import globe

    from model_server.products import land_mask

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    land_mask._packed_mask.cache_clear()
    try:
        rng = np.random.default_rng(0)
        lat = np.concatenate([rng.uniform(-90, 90, 2_000_000), globe._lat,
                              np.full(len(globe._lon[::7]) + 4, 51.5), [90.0, -90.0, 0.0, 89.9999]])
        lon = np.concatenate([rng.uniform(-180, 180, 2_000_000), rng.uniform(-180, 180, len(globe._lat)),
                              globe._lon[::7], [180.0, -180.0, 179.9999999, -179.9999999], [0.0, 0.0, 180.0, -180.0]])
        ours = land_mask.is_land(lat, lon)
        assert np.array_equal(ours, globe.is_land(lat.copy(), lon.copy()))
        assert 0.25 < ours.mean() < 0.4  # about 29 % of the Earth is land
        (cached,) = (tmp_path / "geoplonk").glob("land-mask-*.npy")
        assert cached.stat().st_size < 120e6

        script = (  # VmHWM: the peak resident memory of this program (ru_maxrss would count the forking parent's)
            "import re, sys, numpy as np\n"
            "from model_server.products import land_mask\n"
            "land = int(land_mask.is_land(np.array([46.5, 0.0]), np.array([10.0, -140.0])).sum())\n"
            "peak = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
            "print(land, 'global_land_mask.globe' in sys.modules, int(peak) // 1024)\n"
        )
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
        before = cached.stat().st_mtime_ns
        land, imported, rss_mb = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                                text=True, check=True, timeout=120).stdout.split()
        assert (land, imported) == ("1", "False") and int(rss_mb) < 300, (land, imported, rss_mb)
        assert cached.stat().st_mtime_ns == before  # mapped, not built again

        cached.write_bytes(cached.read_bytes()[:1000])  # a cache cut short: built again, right again
        land_mask._packed_mask.cache_clear()
        assert np.array_equal(land_mask.is_land(lat[:1000], lon[:1000]), ours[:1000])
        assert cached.stat().st_size > 100e6
        # longitudes beyond +-180 (a sampler's raw angle) wrap round the globe, as place names ask for them
        from model_server.products.place_names import is_land

        assert list(is_land(np.full(4, 46.5), np.array([10.0, 370.0, -350.0, 730.0]))) == [True] * 4
        assert list(is_land(np.full(3, 0.0), np.array([-140.0, 220.0, -500.0]))) == [False] * 3
    finally:
        land_mask._packed_mask.cache_clear()  # later tests map the usual cache


def test_ascent_climbs_to_the_peak_a_step_by_step_climb_reaches():
    """Steepest ascent over the 8 neighbours, across the antimeridian but not past the poles, where a polar row's
    cells all neighbour each other: checked cell by cell against a plain climb."""
    from model_server.products.modes import ascent_roots

    rng = np.random.default_rng(3)
    h, w = 7, 10
    density = rng.permutation(h * w).reshape(h, w).astype(float)  # no ties

    def neighbours(r, c):
        cells = [(r + dr, (c + dc) % w) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if 0 <= r + dr < h]
        if r in (0, h - 1):
            cells += [(r, k) for k in range(w)]
        return cells

    def climb(r, c):
        while True:
            nr, nc = max(neighbours(r, c), key=lambda rc: density[rc])
            if density[nr, nc] <= density[r, c]:
                return r * w + c
            r, c = nr, nc

    roots = ascent_roots(density)
    assert [int(x) for x in roots] == [climb(r, c) for r in range(h) for c in range(w)]


def test_a_lone_mode_holds_at_most_all_the_mass():
    """Its mass is summed in another order than the raster's normalisation: unclipped, six of these twelve
    broad 64-draw clusters gave a lone mode 1 + 5e-15 to 1 + 5e-14."""
    rng = np.random.default_rng(0)
    for _ in range(12):
        lat, lon = rng.uniform(-60, 60), rng.uniform(-180, 180)
        samples = latlon_to_xyz(np.clip(lat + rng.normal(0, 10, 64), -89.9, 89.9), lon + rng.normal(0, 10, 64))
        modes = find_modes(kde_raster(samples, Grid.global_grid(0.25)), top_k=3)
        assert all(0 < m.probability <= 1.0 for m in modes)


def test_cropped_and_coarse_geotiffs_are_tiled_with_overviews():
    """The contract says tiled with overviews: cropped rasters and rasters under 256 cells too."""
    from rasterio.io import MemoryFile

    from model_server.products.geotiff import geotiff_bytes

    for grid, overviews in [(Grid.global_grid(0.25).window(100, 140, 200, 260), [2, 4]),  # 60 x 40 cropped
                            (Grid.global_grid(1.0), [2, 4, 8, 16]),  # 360 x 180
                            (Grid.global_grid(0.25), [2, 4, 8, 16])]:
        data = np.random.default_rng(0).random((grid.height, grid.width)) / (grid.height * grid.width)
        with MemoryFile(geotiff_bytes(data, grid)) as mem, mem.open() as src:
            assert src.profile["tiled"], grid
            assert src.block_shapes[0][0] % 16 == 0
            assert src.overviews(1) == overviews


def test_the_geotiff_compressed_on_several_threads_is_the_same_file(monkeypatch):
    """Tiles (and overviews) compress independently: threads change when the bytes are ready, not the bytes. A
    Ray actor's OpenMP budget bounds the threads."""
    from model_server.products import geotiff

    grid = Grid.global_grid(0.25)
    data = kde_raster(cluster(np.random.default_rng(1), 30, 31, 2, 300), grid).prob
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert geotiff.compression_threads() == "1"
    one = geotiff.geotiff_bytes(data, grid)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert geotiff.compression_threads() == "ALL_CPUS"  # rasterio's GDAL here is 3.7.3 or newer
    assert geotiff.geotiff_bytes(data, grid) == one


def test_geopackage_bytes_do_not_depend_on_the_clock():
    """Identical runs give identical GeoPackage bytes (GDAL's last_change timestamp is fixed)."""
    import time

    from model_server.products.geopackage import geopackage_bytes, points_layer

    layers = [points_layer("samples", [1.0, 2.0], [3.0, 4.0])]
    first = geopackage_bytes(layers)
    time.sleep(1.1)
    assert geopackage_bytes(layers) == first
