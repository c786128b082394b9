"""Place names from offline data: GeoNames cities (reverse_geocoder), ISO country names
(pycountry) and a 1 km land/sea mask (global-land-mask) to tell open ocean apart."""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass

import numpy as np

from ..geodesy import haversine_km, latlon_to_xyz, xyz_to_latlon
from . import land_mask

OPEN_OCEAN = "open ocean"
# Beyond this distance from the nearest GeoNames town the place is described as "near <town>".
NEAR_KM = 25.0
# Beyond this distance the nearest town's country is no evidence of the point's country,
# and a point at sea is in the open ocean rather than off a coast.
REMOTE_KM = 300.0


@dataclass(frozen=True)
class PlaceName:
    country: str  # "" where no country can be told: the open ocean, Antarctica, land far from any town
    place: str  # never repeats the country, so "place, country" reads well wherever it is joined


@functools.lru_cache(maxsize=1)
def load_geocoder():
    """The GeoNames towns' reverse geocoder, loaded once (about 0.5 s)."""
    import reverse_geocoder

    # mode=1 is single-process.
    with contextlib.redirect_stdout(io.StringIO()):
        return reverse_geocoder.RGeocoder(mode=1, verbose=False)


@functools.lru_cache(maxsize=1)
def _towns():
    """The GeoNames towns in a k-d tree over unit vectors, where nearest means nearest on the sphere, across the
    antimeridian and near the poles too (the library's own tree is over raw degrees)."""
    from scipy.spatial import cKDTree

    towns = load_geocoder().locations
    lat = np.array([float(t["lat"]) for t in towns])
    lon = np.array([float(t["lon"]) for t in towns])
    return cKDTree(latlon_to_xyz(lat, lon)), towns


def warm_up() -> None:
    """Load the towns' tree (about 1 s) and map the land mask (4 s to build its cache the first time for a user,
    land_mask.py) before the first photo needs them: a server calls this while it preloads its model, so its
    first answer is not late."""
    _towns()
    is_land(np.zeros(1), np.zeros(1))


def nearest_towns(lats: np.ndarray, lons: np.ndarray) -> list[dict]:
    """The nearest GeoNames town (name, cc, lat, lon) to each point, by great-circle distance."""
    tree, towns = _towns()
    _, index = tree.query(latlon_to_xyz(np.asarray(lats, dtype=np.float64), np.asarray(lons, dtype=np.float64)))
    return [towns[i] for i in np.atleast_1d(index)]


@functools.lru_cache(maxsize=512)
def country_name(code: str) -> str:
    import pycountry

    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return code
    return getattr(country, "common_name", None) or country.name


def is_land(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    lat = np.clip(np.asarray(lat, dtype=np.float64), -90.0, 90.0)
    lon = np.asarray(lon, dtype=np.float64)
    lon = np.where((lon >= -180.0) & (lon < 180.0), lon, (lon + 180.0) % 360.0 - 180.0)
    return np.asarray(land_mask.is_land(lat, lon), dtype=bool)


def land_share(xyz: np.ndarray) -> np.ndarray:
    """Share of the points (..., n, 3) that lie on land, per leading index (a 0-d array for one set): which of a
    model's guidance values a photo gets (engine.guidance), from its best-guess draws."""
    lat, lon = xyz_to_latlon(np.asarray(xyz, dtype=np.float64))
    return is_land(lat.ravel(), lon.ravel()).reshape(lat.shape).mean(axis=-1)


def name_places(lats: list[float], lons: list[float]) -> list[PlaceName]:
    """Country and nearest town for each point; at sea, the coast it lies off, or "open ocean" far from any."""
    if not lats:
        return []
    land = is_land(np.array(lats), np.array(lons))
    found = nearest_towns(np.array(lats), np.array(lons))
    names = []
    for lat, lon, on_land, hit in zip(lats, lons, land, found, strict=True):
        town = hit["name"]
        country = country_name(hit["cc"])
        km = float(haversine_km(lat, lon, float(hit["lat"]), float(hit["lon"])))
        if not on_land:
            near_coast = km <= REMOTE_KM and lat >= -60.0
            names.append(PlaceName(country, f"at sea, {km:.0f} km off {town}") if near_coast
                         else PlaceName("", OPEN_OCEAN))
        elif lat < -60.0:
            names.append(PlaceName("", "Antarctica"))
        elif km > REMOTE_KM:  # the town's country is no evidence of the point's: named, not claimed
            names.append(PlaceName("", f"remote land, {km:.0f} km from {town} ({country})"))
        else:
            names.append(PlaceName(country, town if km <= NEAR_KM else f"{km:.0f} km from {town}"))
    return names
