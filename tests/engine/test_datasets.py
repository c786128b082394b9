"""Dataset reading (EXIF GPS folder, CSV), the embedding cache, and the Earth-tiles builder's geometry."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from model_server.data.earth_tiles import (
    TileSpec,
    build_earth_tiles,
    distant_centres,
    sample_plate_carree,
    tile_lonlat,
    uniform_centres,
)
from model_server.engine.datasets import embed_dataset, read_csv, read_dataset, read_datasets
from model_server.engine.encoders import load_encoder
from model_server.geodesy import EARTH_RADIUS_KM, haversine_km, latlon_to_xyz
from model_server.images import exif_with_gps

POSITIONS = [(30.05, 31.25), (-33.9, 151.2), (64.1, -21.9)]


class CountingEncoder:
    """The real encoder, counting how many images it is asked to embed."""

    def __init__(self, encoder):
        self.inner, self.name, self.dim, self.calls = encoder, encoder.name, encoder.dim, 0

    def embed(self, images):
        self.calls += len(images)
        return self.inner.embed(images)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("efficientnet-lite0")


@pytest.fixture()
def photo_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i, (lat, lon) in enumerate(POSITIONS):
        pixels = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"p{i}.jpg", exif=exif_with_gps(lat, lon))
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "no_gps.jpg")
    return tmp_path


def test_folder_reads_exif_gps_and_skips_photos_without(photo_folder):
    ds = read_dataset(photo_folder, progress=False)
    assert [p.name for p in ds.paths] == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert np.allclose(ds.latlon, POSITIONS, atol=1e-4)


def test_csv_with_relative_paths(photo_folder):
    (photo_folder / "list.csv").write_text("path,latitude,longitude\np1.jpg,-33.9,151.2\n")
    ds = read_csv(photo_folder / "list.csv")
    assert ds.paths == [photo_folder / "p1.jpg"] and ds.latlon.tolist() == [[-33.9, 151.2]]
    (photo_folder / "bad.csv").write_text("path,latitude,longitude\np1.jpg,95,0\n")
    with pytest.raises(ValueError, match="out of range"):
        read_csv(photo_folder / "bad.csv")


def test_embedding_cache_skips_unchanged_files(photo_folder, encoder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache") / "emb.npz"
    ds = read_dataset(photo_folder, progress=False)
    counting = CountingEncoder(encoder)
    first, _ = embed_dataset(ds, counting, cache_path=cache, progress=False)
    assert first.shape == (3, 1280) and counting.calls == 3 and cache.is_file()
    second, _ = embed_dataset(ds, counting, cache_path=cache, progress=False)
    assert counting.calls == 3 and np.array_equal(first.numpy(), second.numpy())
    st = os.stat(ds.paths[1])
    os.utime(ds.paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed file is re-encoded
    embed_dataset(ds, counting, cache_path=cache, progress=False)
    assert counting.calls == 4
    assert sorted(p.name for p in cache.parent.iterdir()) == ["emb.npz"]  # written atomically, nothing left over


def test_tile_footprint_is_true_ground_distance_at_any_latitude():
    for lat in (0.0, 60.0, 85.0, -89.9):
        spec = TileSpec(lat, 20.0, 400.0, 37.0)
        la, lo = tile_lonlat(spec, 101)
        # middle of the left edge to middle of the right edge: ~ footprint (pixel centres: 100/101 of it)
        d = haversine_km(la[50, 0], lo[50, 0], la[50, -1], lo[50, -1])
        assert abs(d - 400.0 * 100 / 101) < 2.0, (lat, d)
        assert abs(haversine_km(la[50, 50], lo[50, 50], lat, 20.0)) < 1e-6


def test_pole_and_antimeridian_tiles_wrap_instead_of_cutting():
    la, lo = tile_lonlat(TileSpec(89.0, 0.0, 500.0, 0.0), 64)
    assert lo.min() < -170 and lo.max() > 170  # the tile spans every longitude around the pole
    la, lo = tile_lonlat(TileSpec(0.0, 180.0, 300.0, 0.0), 64)
    assert (np.abs(lo) > 178).all()  # both sides of the antimeridian, nothing near lon 0
    # lookups wrap: a column gradient image sampled across the seam is continuous
    image = np.tile(np.arange(360, dtype=np.uint8)[None, :, None] % 2 * 200, (180, 1, 3))
    px = sample_plate_carree(image, np.zeros(3), np.array([179.9, -180.0, -179.9]))
    assert px.shape == (3, 3) and np.isfinite(px).all()


def test_distant_centres_keep_their_distance():
    rng = np.random.default_rng(0)
    train = uniform_centres(2000, rng)
    test = distant_centres(100, train, rng, 150.0)
    dots = latlon_to_xyz(test[:, 0], test[:, 1]) @ latlon_to_xyz(train[:, 0], train[:, 1]).T
    assert np.arccos(np.clip(dots.max(1), -1, 1)).min() * EARTH_RADIUS_KM >= 150.0 - 1e-6
    assert abs(np.mean(np.sin(np.radians(uniform_centres(20000, rng)[:, 0])))) < 0.02  # uniform by area


def test_build_earth_tiles_writes_geotagged_jpegs(tmp_path):
    info = build_earth_tiles(tmp_path, n_train=6, n_test=3, seed=1, size=64, progress=False)
    assert info["n_train"] == 6
    train = read_dataset(tmp_path / "train", progress=False)
    listed = read_csv(tmp_path / "train.csv")
    assert len(train) == 6 and np.allclose(train.latlon, listed.latlon, atol=1e-4)
    assert len(read_csv(tmp_path / "test.csv")) == 3
    assert Image.open(listed.paths[0]).size == (64, 64)


def test_rebuilding_earth_tiles_resumes_and_refuses_other_settings(tmp_path):
    build_earth_tiles(tmp_path, n_train=4, n_test=2, seed=3, size=48, progress=False)
    first = tmp_path / "train" / "000000.jpg"
    first_mtime = first.stat().st_mtime_ns
    (tmp_path / "train" / "000003.jpg").unlink()  # as if interrupted
    info = build_earth_tiles(tmp_path, n_train=4, n_test=2, seed=3, size=48, progress=False)
    assert info["complete"] and (tmp_path / "train" / "000003.jpg").is_file()
    assert first.stat().st_mtime_ns == first_mtime  # kept, not rewritten
    with pytest.raises(ValueError, match="seed 3 there, 4 asked"):
        build_earth_tiles(tmp_path, n_train=4, n_test=2, seed=4, size=48, progress=False)


def test_report_splits_are_added_without_touching_the_training_and_tuning_tiles(tmp_path):
    from model_server.products.place_names import is_land

    build_earth_tiles(tmp_path, n_train=5, n_test=2, seed=3, size=48, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "train").iterdir()} | {
        "test-" + p.name: p.read_bytes() for p in (tmp_path / "test").iterdir()}
    info = build_earth_tiles(tmp_path, n_train=5, n_test=2, seed=3, size=48, progress=False, n_report=4, n_land=6)
    after = {p.name: p.read_bytes() for p in (tmp_path / "train").iterdir()} | {
        "test-" + p.name: p.read_bytes() for p in (tmp_path / "test").iterdir()}
    assert after == before and info["n_report"] == 4 and info["n_land"] == 6
    report, land = read_csv(tmp_path / "report.csv"), read_csv(tmp_path / "land.csv")
    assert len(report) == 4 and len(land) == 6
    assert is_land(land.latlon[:, 0], land.latlon[:, 1]).all()
    taken = np.concatenate([read_csv(tmp_path / "train.csv").latlon, read_csv(tmp_path / "test.csv").latlon])
    for split in (report, land):
        dots = latlon_to_xyz(split.latlon[:, 0], split.latlon[:, 1]) @ latlon_to_xyz(taken[:, 0], taken[:, 1]).T
        assert np.arccos(np.clip(dots.max(1), -1, 1)).min() * EARTH_RADIUS_KM >= 75.0 - 1e-6
    # A rerun that does not ask for the splits keeps them on record; another size is refused.
    assert build_earth_tiles(tmp_path, n_train=5, n_test=2, seed=3, size=48, progress=False)["n_land"] == 6
    with pytest.raises(ValueError, match="n_land 6 there, 7 asked"):
        build_earth_tiles(tmp_path, n_train=5, n_test=2, seed=3, size=48, progress=False, n_land=7)


def test_train_land_tiles_lie_on_land_away_from_every_heldout_tile(tmp_path):
    """More training tiles on land, added without moving a tile of any other split."""
    from model_server.products.place_names import is_land

    splits = ("train", "test", "report", "land")

    def listing(folder):
        return {split: (folder / f"{split}.csv").read_text() for split in splits}

    options = dict(n_train=5, n_test=2, seed=3, size=48, progress=False, n_report=3, n_land=4)
    build_earth_tiles(tmp_path / "at-once", **options, n_train_land=6)
    build_earth_tiles(tmp_path, **options)
    before = listing(tmp_path)
    info = build_earth_tiles(tmp_path, **options, n_train_land=6)
    assert listing(tmp_path) == before and info["n_train_land"] == 6
    # the same tiles as a dataset built in one run (the CSVs list every tile's place)
    assert listing(tmp_path) == listing(tmp_path / "at-once")
    assert (tmp_path / "train-land.csv").read_text() == (tmp_path / "at-once" / "train-land.csv").read_text()
    extra = read_csv(tmp_path / "train-land.csv")
    assert len(extra) == 6 and is_land(extra.latlon[:, 0], extra.latlon[:, 1]).all()
    heldout = np.concatenate([read_csv(tmp_path / f"{split}.csv").latlon for split in splits[1:]])
    dots = latlon_to_xyz(extra.latlon[:, 0], extra.latlon[:, 1]) @ latlon_to_xyz(heldout[:, 0], heldout[:, 1]).T
    assert np.arccos(np.clip(dots.max(1), -1, 1)).min() * EARTH_RADIUS_KM >= 75.0 - 1e-6
    # reruns: the build script's options again, or none, keep it on record; another size is refused
    assert build_earth_tiles(tmp_path, **options, n_train_land=6)["n_train_land"] == 6
    assert build_earth_tiles(tmp_path, n_train=5, n_test=2, seed=3, size=48, progress=False)["n_train_land"] == 6
    with pytest.raises(ValueError, match="n_train_land 6 there, 8 asked"):
        build_earth_tiles(tmp_path, **options, n_train_land=8)
    # a report split added after them could fall near them: refused, with what to do
    other = tmp_path / "other"
    build_earth_tiles(other, n_train=5, n_test=2, seed=3, size=48, progress=False, n_train_land=2)
    with pytest.raises(ValueError, match="build every split in one run"):
        build_earth_tiles(other, n_train=5, n_test=2, seed=3, size=48, progress=False, n_report=2)


def test_land_tuning_tiles_lie_on_land_away_from_every_other_tile(tmp_path):
    """Tuning tiles on land, added to a built dataset without moving a tile, held out from every split (1,000 km
    apart here, so that a split left out of the distance check would show)."""
    from model_server.products.place_names import is_land

    splits = ("train", "test", "report", "land", "train-land")
    options = dict(n_train=5, n_test=2, seed=3, size=48, progress=False, n_report=3, n_land=4, n_train_land=6,
                   min_distance_km=1000.0)
    build_earth_tiles(tmp_path, **options)
    before = {split: (tmp_path / f"{split}.csv").read_text() for split in splits}
    info = build_earth_tiles(tmp_path, **options, n_tune_land=5)
    assert {split: (tmp_path / f"{split}.csv").read_text() for split in splits} == before
    assert info["n_tune_land"] == 5
    build_earth_tiles(tmp_path / "at-once", **options, n_tune_land=5)
    assert (tmp_path / "tune-land.csv").read_text() == (tmp_path / "at-once" / "tune-land.csv").read_text()
    tune = read_csv(tmp_path / "tune-land.csv")
    assert len(tune) == 5 and is_land(tune.latlon[:, 0], tune.latlon[:, 1]).all()
    for split in splits:
        other = read_csv(tmp_path / f"{split}.csv").latlon
        dots = latlon_to_xyz(tune.latlon[:, 0], tune.latlon[:, 1]) @ latlon_to_xyz(other[:, 0], other[:, 1]).T
        assert np.arccos(np.clip(dots.max(1), -1, 1)).min() * EARTH_RADIUS_KM >= 1000.0 - 1e-6, split
    # reruns keep them on record; another size is refused
    assert build_earth_tiles(tmp_path, **options)["n_tune_land"] == 5
    with pytest.raises(ValueError, match="n_tune_land 5 there, 6 asked"):
        build_earth_tiles(tmp_path, **options, n_tune_land=6)
    # no split they were placed away from may be added after them
    other = tmp_path / "other"
    build_earth_tiles(other, n_train=5, n_test=2, seed=3, size=48, progress=False, n_tune_land=2)
    for late in ({"n_train_land": 2}, {"n_report": 2}, {"n_land": 2}):
        with pytest.raises(ValueError, match=f"tune-land tiles.*{next(iter(late))} added now"):
            build_earth_tiles(other, n_train=5, n_test=2, seed=3, size=48, progress=False, **late)


def test_several_sources_read_as_one_dataset(photo_folder):
    one = read_datasets(photo_folder, progress=False)
    both = read_datasets([photo_folder, str(photo_folder)], progress=False)
    assert len(both) == 2 * len(one) and both.paths == one.paths * 2 and both.source == one.source
    assert np.array_equal(both.latlon, np.concatenate([one.latlon, one.latlon]))
