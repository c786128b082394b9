"""Everything a photo's result carries, computed from its samples: the pure part of the pipeline.

`compute_products` turns samples into the raster, regions, modes and best guess;
`write_products` turns those into the GeoTIFF and GeoPackage bytes.  Stage timings are
recorded so the server can report them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geodesy import haversine_km, xyz_to_latlon
from .aoi import aoi_mask, aoi_weights
from .claims import Claim, ClaimCheck, check_claims
from .density import DensityRaster, crop_window
from .geopackage import Layer, geopackage_bytes, points_layer, regions_layer
from .geotiff import geotiff_bytes
from .grid import Grid
from .maps import ProbabilityMap, apply_prior, cells_of_points, sample_map
from .modes import WITHIN_RADII_KM, Mode, best_guess, find_modes, within_field
from .place_names import PlaceName, name_places
from .regions import CredibleRegion, credible_regions

Stage = Callable[[str], None]
# Below this share of the photo's own map inside the area of interest, the restricted map is mostly the
# kernel density's uniform floor: the summary warns.
AOI_LOW_MASS = 1e-3


@dataclass
class AreaOfInterest:
    """The prior of an area of interest: its geometry (shapely, lon/lat) and the weight outside it."""

    geometry: Any
    outside_weight: float = 0.0

    def summary(self, grid: Grid, mask: np.ndarray, prior_mass: float) -> dict[str, Any]:
        return {"weight": self.outside_weight, "area_km2": float((mask * grid.cell_areas_km2()[:, None]).sum()),
                "prior_mass": prior_mass}


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
    claims: list[ClaimCheck] = field(default_factory=list)
    aoi: dict[str, Any] | None = None  # weight, area_km2 and prior_mass of the area-of-interest prior
    warnings: list[str] = field(default_factory=list)
    pmap: ProbabilityMap | None = None
    own_map: ProbabilityMap | None = None  # the photo's map before an area-of-interest prior


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
    *,
    aoi: AreaOfInterest | None = None,
    claims: Sequence[Claim] = (),
) -> Products:
    """Samples (n, 3) of the distribution and samples (m, 3) at cfg 2 -> all products.

    Best guess: among the cfg-2 samples, the densest one in the region of most mass (modes.best_guess).
    `aoi`: the map is multiplied by the area's prior and renormalised, and every product follows it (the
    draws and the best guess's candidates weighted by the prior at them).  `claims` are checked on the map.
    """
    t = _stage(on_stage, "density")
    grid = Grid.global_grid(resolution)
    pmap = own = sample_map(samples, grid, check)
    guess_weights = None
    notes: list[str] = []
    aoi_fields = None
    if aoi is not None:
        mask = aoi_mask(aoi.geometry, grid)
        weights = aoi_weights(mask, aoi.outside_weight)
        prior_mass = float(pmap.raster.prob[mask].sum())
        pmap, _ = apply_prior(pmap, weights, samples)
        aoi_fields = aoi.summary(grid, mask, prior_mass)
        if prior_mass < AOI_LOW_MASS:
            notes.append(f"the area of interest holds only {prior_mass:.2%} of the photo's own map: the map "
                         "inside it is mostly the model's uniform floor")
        rows, cols = cells_of_points(grid, guess_samples)
        guess_weights = weights[rows, cols]
        if not guess_weights.any():
            guess_weights = None  # no candidate inside: the restricted map's top place is the guess
            notes.append("none of the best guess's candidates lies in the area of interest: the best guess is "
                         "the restricted map's top place")
            guess_samples = None
    timings = {"density": time.perf_counter() - t}
    if guess_samples is None:
        best = None
    else:
        b_lat, b_lon = xyz_to_latlon(best_guess(guess_samples, resolution, guess_weights))
        best = (float(b_lat), float(b_lon))
    draws = samples if pmap.at_samples is not None else None
    products = map_products(pmap, levels, top_k, crop, best, exif_latlon, on_stage, claims=claims,
                            samples=draws, timings=timings)
    products.aoi = aoi_fields
    products.own_map = own
    products.warnings = notes + products.warnings
    shown = np.asarray(samples)
    if aoi is not None and aoi.outside_weight == 0:  # the draws layer shows the restricted map's draws only
        rows, cols = cells_of_points(grid, shown)
        shown = shown[weights[rows, cols] > 0]
    lat, lon = xyz_to_latlon(shown)
    products.sample_lat, products.sample_lon = lat, lon
    return products


def _stage(on_stage: Stage | None, name: str) -> float:
    if on_stage is not None:
        on_stage(name)
    return time.perf_counter()


def map_products(
    pmap: ProbabilityMap,
    levels: list[float],
    top_k: int,
    crop: bool,
    best: tuple[float, float] | None,
    exif_latlon: tuple[float, float] | None = None,
    on_stage: Stage | None = None,
    *,
    claims: Sequence[Claim] = (),
    samples: np.ndarray | None = None,
    timings: dict[str, float] | None = None,
) -> Products:
    """Regions, top places, best guess and claim checks of a map (a photo's, or several photos' product).

    `samples`: the draws the map ranks its regions by (their share within a radius of a top place is its
    odds); without them the raster's own mass gives both.  `best`: the best guess, or None for the top place.
    """
    timings = dict(timings or {})
    raster = pmap.raster
    grid = raster.grid
    window = crop_window(raster.prob) if crop else (0, grid.height, 0, grid.width)

    t = _stage(on_stage, "regions")
    masks = pmap.masks(levels)
    regions = credible_regions(raster, levels, masks=masks)
    timings["regions"] = time.perf_counter() - t

    t = _stage(on_stage, "places")
    modes = find_modes(raster, top_k, samples=samples, sample_weights=pmap.sample_weights,
                       within_on_raster=samples is None)
    if best is None:
        top = modes[0] if modes else None
        best = (top.lat, top.lon) if top else _densest_cell(raster)
    names = name_places([m.lat for m in modes] + [best[0]], [m.lon for m in modes] + [best[1]])
    exif = None
    if exif_latlon is not None:
        exif = {
            "lat": float(exif_latlon[0]),
            "lon": float(exif_latlon[1]),
            "error_km": float(haversine_km(best[0], best[1], exif_latlon[0], exif_latlon[1])),
        }
    checks = check_claims(claims, pmap, levels, masks, best)
    timings["places"] = time.perf_counter() - t
    empty = np.zeros(0)
    return Products(raster, regions, modes, names[:-1], best, names[-1], empty, empty, exif, window, timings,
                    claims=checks, pmap=pmap)


def _densest_cell(raster: DensityRaster) -> tuple[float, float]:
    row, col = np.unravel_index(int(np.argmax(raster.density_sr())), raster.prob.shape)
    return float(raster.grid.lat_centers()[row]), float(raster.grid.lon_centers()[col])


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
    if products.claims:  # only when claims were checked: a plain result keeps the contract's five layers
        layers.append(claims_layer(products.claims, [r.level for r in products.regions]))
    return tiff, geopackage_bytes(layers)


def level_field(prefix: str, level: float) -> str:
    """A GeoPackage field per credible level: 'inside_90', 'km_to_99_5'."""
    return f"{prefix}_{level * 100:g}".replace(".", "_")


def claims_layer(checks: list[ClaimCheck], levels: list[float]) -> Layer:
    """The claims checked (Point): source, label, credible_level, density_ratio, verdict, words, and per level
    whether the claim is inside the region and how far from it (km)."""
    per_level: dict[str, list] = {}
    dtypes = {"credible_level": "float64", "density_ratio": "float64"}
    for j, level in enumerate(levels):
        inside, km = level_field("inside", level), level_field("km_to", level)
        per_level[inside] = [int(c.inside[j]) for c in checks]
        per_level[km] = [c.distance_km[j] if math.isfinite(c.distance_km[j]) else None for c in checks]
        dtypes.update({inside: "int32", km: "float64"})
    return points_layer(
        "claims",
        [c.claim.lat for c in checks],
        [c.claim.lon for c in checks],
        {
            "source": [c.claim.source for c in checks],
            "label": [c.claim.label for c in checks],
            "credible_level": [c.credible_level for c in checks],
            "density_ratio": [c.density_ratio for c in checks],
            **per_level,
            "verdict": [c.verdict for c in checks],
            "words": [c.words for c in checks],
        },
        dtypes,
    )


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
        "claims": [c.summary() for c in products.claims],
        "aoi": products.aoi,
        "raster": {
            "resolution": grid.resolution,
            "bounds": list(grid.bounds),
            "width": grid.width,
            "height": grid.height,
            "max_probability": float(prob.max()),
            "kernel_kappa": products.raster.kappa,
        },
    }
