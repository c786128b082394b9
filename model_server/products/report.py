"""Everything a photo's result carries, computed from its samples: the pure part of the pipeline.

`compute_products` turns samples into the raster, regions, modes and best guess;
`write_products` turns those into the GeoTIFF and GeoPackage bytes.  Stage timings are
recorded so the server can report them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geodesy import haversine_km, xyz_to_latlon
from .density import DensityRaster, crop_window, kde_raster
from .geopackage import geopackage_bytes, points_layer, regions_layer
from .geotiff import geotiff_bytes
from .grid import Grid
from .modes import WITHIN_RADII_KM, Mode, best_guess, find_modes, within_field
from .place_names import PlaceName, name_places
from .regions import CredibleRegion, credible_regions

Stage = Callable[[str], None]


@dataclass
class Products:
    raster: DensityRaster
    regions: list[CredibleRegion]
    modes: list[Mode]
    mode_names: list[PlaceName]
    best: tuple[float, float]
    best_name: PlaceName
    sample_lat: np.ndarray
    sample_lon: np.ndarray
    exif: dict[str, float] | None
    crop: tuple[int, int, int, int]
    timings: dict[str, float] = field(default_factory=dict)


def compute_products(
    samples: np.ndarray,
    guess_samples: np.ndarray,
    resolution: float,
    levels: list[float],
    top_k: int,
    crop: bool,
    exif_latlon: tuple[float, float] | None = None,
    on_stage: Stage | None = None,
    check: Callable[[], None] | None = None,
) -> Products:
    """Samples (n, 3) of the distribution and samples (m, 3) at cfg 2 -> all products.

    Best guess: among the cfg-2 samples, the densest one in the region of most mass (modes.best_guess).
    """
    timings: dict[str, float] = {}

    def stage(name: str) -> float:
        if on_stage is not None:
            on_stage(name)
        return time.perf_counter()

    t = stage("density")
    grid = Grid.global_grid(resolution)
    raster = kde_raster(samples, grid, check=check)
    window = crop_window(raster.prob) if crop else (0, grid.height, 0, grid.width)
    timings["density"] = time.perf_counter() - t

    t = stage("regions")
    regions = credible_regions(raster, levels, samples)
    timings["regions"] = time.perf_counter() - t

    t = stage("places")
    modes = find_modes(raster, top_k, samples=samples)
    b_lat, b_lon = xyz_to_latlon(best_guess(guess_samples, resolution))
    best = (float(b_lat), float(b_lon))
    names = name_places([m.lat for m in modes] + [best[0]], [m.lon for m in modes] + [best[1]])
    exif = None
    if exif_latlon is not None:
        exif = {
            "lat": float(exif_latlon[0]),
            "lon": float(exif_latlon[1]),
            "error_km": float(haversine_km(best[0], best[1], exif_latlon[0], exif_latlon[1])),
        }
    timings["places"] = time.perf_counter() - t
    lat, lon = xyz_to_latlon(np.asarray(samples))
    return Products(raster, regions, modes, names[:-1], best, names[-1], lat, lon, exif, window, timings)


def output_grid(products: Products) -> tuple[np.ndarray, Grid]:
    """The raster as written: global, or cropped to the 99.9 % window (values stay global probabilities)."""
    r0, r1, c0, c1 = products.crop
    return products.raster.prob[r0:r1, c0:c1], products.raster.grid.window(r0, r1, c0, c1)


def write_products(products: Products, localizability: float, tags: dict[str, Any]) -> tuple[bytes, bytes]:
    """(GeoTIFF bytes, GeoPackage bytes) in the layout of the result contract."""
    prob, grid = output_grid(products)
    tiff = geotiff_bytes(prob, grid, tags)
    modes = products.modes
    layers = [
        points_layer("samples", products.sample_lat, products.sample_lon),
        points_layer(
            "top_places",
            [m.lat for m in modes],
            [m.lon for m in modes],
            {
                "rank": list(range(1, len(modes) + 1)),
                **{within_field(r): [m.within[r] for m in modes] for r in WITHIN_RADII_KM},
                "basin_share": [m.basin_share for m in modes],
                "country": [n.country for n in products.mode_names],
                "place": [n.place for n in products.mode_names],
                "label": [f"{i}. {n.place} ({place_odds(m)})" for i, (m, n) in
                          enumerate(zip(modes, products.mode_names, strict=True), 1)],
            },
            {"rank": "int32", "basin_share": "float64", **{within_field(r): "float64" for r in WITHIN_RADII_KM}},
        ),
        regions_layer(
            "credible_regions",
            [r.geometry for r in products.regions],
            {
                "level": [r.level for r in products.regions],
                "area_km2": [r.area_km2 for r in products.regions],
                "label": [r.label for r in products.regions],
            },
        ),
        points_layer(
            "best_guess",
            [products.best[0]],
            [products.best[1]],
            {
                "country": [products.best_name.country],
                "place": [products.best_name.place],
                "localizability": [float(localizability)],
            },
        ),
        points_layer(
            "exif_truth",
            [products.exif["lat"]] if products.exif else [],
            [products.exif["lon"]] if products.exif else [],
            {"error_km": [products.exif["error_km"]] if products.exif else []},
            {"error_km": "float64"},
        ),
    ]
    return tiff, geopackage_bytes(layers)


def place_odds(mode: Mode) -> str:
    """'12 % within 100 km, 48 % within 500 km': how likely the photo lies near a top place."""
    return ", ".join(f"{mode.within[r] * 100:.0f} % within {r:g} km" for r in WITHIN_RADII_KM)


def summary_fields(products: Products, localizability: float) -> dict[str, Any]:
    """The product part of the result summary (the server adds model, device, options, timings)."""
    prob, grid = output_grid(products)
    return {
        "best_guess": {
            "lat": products.best[0],
            "lon": products.best[1],
            "country": products.best_name.country,
            "place": products.best_name.place,
        },
        "localizability": float(localizability),
        "top_places": [
            {
                "rank": i,
                "lat": m.lat,
                "lon": m.lon,
                **{within_field(r): m.within[r] for r in WITHIN_RADII_KM},
                "basin_share": m.basin_share,
                "country": n.country,
                "place": n.place,
            }
            for i, (m, n) in enumerate(zip(products.modes, products.mode_names, strict=True), 1)
        ],
        "credible_regions": [{"level": r.level, "area_km2": r.area_km2} for r in products.regions],
        "exif": products.exif,
        "raster": {
            "resolution": grid.resolution,
            "bounds": list(grid.bounds),
            "width": grid.width,
            "height": grid.height,
            "max_probability": float(prob.max()),
            "kernel_kappa": products.raster.kappa,
        },
    }
