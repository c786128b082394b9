"""Geodesy in numpy: degrees <-> unit vectors and great-circle distances on the Earth's sphere.

Points are unit vectors (..., 3) inside the code (x toward lon 0, z north, the engine's convention) and
latitude, longitude in degrees at the edges. engine/sphere.py holds the torch counterparts the flow uses.
"""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0  # mean radius, as in the paper's haversine metric


def latlon_to_xyz(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Degrees -> unit vectors (..., 3) in float64."""
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    lon = np.deg2rad(np.asarray(lon_deg, dtype=np.float64))
    cos_lat = np.cos(lat)
    return np.stack((cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)), axis=-1)


def degrees_to_xyz(latlon_deg: np.ndarray) -> np.ndarray:
    """(..., 2) rows of latitude, longitude in degrees -> unit vectors (..., 3)."""
    latlon_deg = np.asarray(latlon_deg)
    return latlon_to_xyz(latlon_deg[..., 0], latlon_deg[..., 1])


def _latlon_radians(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero vectors -> (lat, lon) in radians, in their own floating precision; normalised first."""
    xyz = xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)
    return np.arcsin(np.clip(xyz[..., 2], -1.0, 1.0)), np.arctan2(xyz[..., 1], xyz[..., 0])


def xyz_to_latlon(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit (or near-unit) vectors -> (lat, lon) in degrees as float64, lon in [-180, 180]."""
    lat, lon = _latlon_radians(np.asarray(xyz, dtype=np.float64))
    return np.rad2deg(lat), np.rad2deg(lon)


def xyz_to_degrees(xyz: np.ndarray) -> np.ndarray:
    """Non-zero vectors (..., 3) -> (..., 2) rows of latitude, longitude in degrees, in the vectors' precision
    (float32 draws of the flow stay float32)."""
    return np.rad2deg(np.stack(_latlon_radians(np.asarray(xyz)), axis=-1))


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km (R = 6371 km, the paper's metric) between points in degrees; broadcasts."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def latlon_distance_km(pred_deg: np.ndarray, true_deg: np.ndarray) -> np.ndarray:
    """Great-circle distances in km between (..., 2) rows of latitude, longitude in degrees."""
    pred_deg, true_deg = np.asarray(pred_deg), np.asarray(true_deg)
    return haversine_km(pred_deg[..., 0], pred_deg[..., 1], true_deg[..., 0], true_deg[..., 1])
