"""Place names from offline data: GeoNames cities (reverse_geocoder), ISO country names
(pycountry) and a 1 km land/sea mask (global-land-mask) to tell open ocean apart."""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass

import numpy as np

from .geodesy import haversine_km

OPEN_OCEAN = "open ocean"
# Beyond this distance from the nearest GeoNames town the place is described as "near <town>".
NEAR_KM = 25.0
# Beyond this distance the nearest town's country is no evidence of the point's country,
# and a point at sea is in the open ocean rather than off a coast.
REMOTE_KM = 300.0


@dataclass(frozen=True)
class PlaceName:
    country: str
    place: str


@functools.lru_cache(maxsize=1)
def _geocoder():
    import reverse_geocoder

    # Loads the bundled cities1000 table once (about 0.3 s); mode=1 is single-process.
    with contextlib.redirect_stdout(io.StringIO()):
        return reverse_geocoder.RGeocoder(mode=1, verbose=False)


@functools.lru_cache(maxsize=512)
def country_name(code: str) -> str:
    import pycountry

    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return code
    return getattr(country, "common_name", None) or country.name


def is_land(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    from global_land_mask import globe

    lat = np.clip(np.asarray(lat, dtype=np.float64), -90.0, 90.0)
    lon = np.asarray(lon, dtype=np.float64)
    lon = np.where(lon >= 180.0, lon - 360.0, lon)
    return np.asarray(globe.is_land(lat, lon), dtype=bool)


def name_places(lats: list[float], lons: list[float]) -> list[PlaceName]:
    """Country and nearest town for each point; at sea, the coast it lies off, or "open ocean" far from any."""
    if not lats:
        return []
    land = is_land(np.array(lats), np.array(lons))
    found = _geocoder().query([(float(a), float(b)) for a, b in zip(lats, lons, strict=True)])
    names = []
    for lat, lon, on_land, hit in zip(lats, lons, land, found, strict=True):
        town = hit["name"]
        country = country_name(hit["cc"])
        km = float(haversine_km(lat, lon, float(hit["lat"]), float(hit["lon"])))
        if not on_land:
            near_coast = km <= REMOTE_KM and lat >= -60.0
            names.append(PlaceName(country, f"at sea, {km:.0f} km off {town}") if near_coast
                         else PlaceName(OPEN_OCEAN, OPEN_OCEAN))
        elif lat < -60.0:
            names.append(PlaceName("Antarctica", "Antarctica"))
        elif km > REMOTE_KM:
            names.append(PlaceName("unknown", f"remote land, {km:.0f} km from {town} ({country})"))
        else:
            names.append(PlaceName(country, town if km <= NEAR_KM else f"{km:.0f} km from {town}"))
    return names
