"""One row per photo from a geolocate result: the columns of `geoplonk locate`'s summary.csv and the
attributes of Processing's best-guess layer.  Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# (column, type) in order; a value the result does not have is None.
RESULT_FIELDS: tuple[tuple[str, type], ...] = (
    ("photo", str),  # the file name
    ("path", str),  # the photo's full path
    ("status", str),  # ok, failed or cancelled
    ("error", str),
    ("lat", float),  # the best guess
    ("lon", float),
    ("country", str),
    ("place", str),
    ("localizability", float),
    ("top_place", str),  # the first of the top places (the largest basin)
    ("top_p_within_100km", float),  # the probability of lying within 100 km of it
    ("top_p_within_500km", float),  # ... and within 500 km
    ("top_basin_share", float),  # the mass of its ascent basin (not the chance of being near the place)
    ("area_90_km2", float),  # the 90 % credible region's area (when 0.9 is among the requested levels)
    ("exif_error_km", float),  # distance from the photo's EXIF GPS position, when it has one
    ("claim_level", float),  # the first claim checked: the smallest credible level whose region holds it
    ("claim_words", str),  # ... and its verdict in words ("unlikely under the model: outside the 97 % region ...")
    ("model", str),
    ("geotiff", str),  # the files written for the photo
    ("gpkg", str),
    ("json", str),
)
RESULT_COLUMNS = tuple(name for name, _ in RESULT_FIELDS)


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def summary_row(path: str | os.PathLike, result, files: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row of `result` (a client PhotoResult) for the photo at `path`, whose files are `files` (by kind)."""
    summary = result.summary or {}
    best = summary.get("best_guess") or {}
    top = summary.get("top_places") or [{}]
    exif = summary.get("exif") if isinstance(summary.get("exif"), dict) else {}
    areas = {r.get("level"): r.get("area_km2") for r in summary.get("credible_regions") or []}
    claim = (summary.get("claims") or [{}])[0]
    files = files or {}
    return {
        "photo": Path(path).name,
        "path": str(path),
        "status": result.status,
        "error": (result.error or {}).get("message"),
        "lat": _number(best.get("lat")),
        "lon": _number(best.get("lon")),
        "country": _text(best.get("country")),
        "place": _text(best.get("place")),
        "localizability": _number(summary.get("localizability")),
        "top_place": _text(top[0].get("place")),
        "top_p_within_100km": _number(top[0].get("p_within_100km")),
        "top_p_within_500km": _number(top[0].get("p_within_500km")),
        "top_basin_share": _number(top[0].get("basin_share")),
        "area_90_km2": _number(areas.get(0.9)),
        "exif_error_km": _number(exif.get("error_km")),
        "claim_level": _number(claim.get("credible_level")),
        "claim_words": _text(claim.get("words")),
        "model": _text(summary.get("model")),
        **{kind: _text(files.get(kind)) for kind in ("geotiff", "gpkg", "json")},
    }


def describe_row(row: dict[str, Any]) -> str:
    """One line for a log: the photo, its best guess and how far it is from the EXIF position."""
    if row["status"] != "ok":
        return f"{row['photo']}: {row['status']} ({row['error'] or 'no reason given'})"
    where = ", ".join(p for p in (row["place"], row["country"]) if p) or "?"
    text = f"{row['photo']}: {row['lat']:.3f}, {row['lon']:.3f} ({where})"
    if row["localizability"] is not None:
        text += f", localizability {row['localizability']:.2f}"
    if row["exif_error_km"] is not None:
        text += f", {row['exif_error_km']:.0f} km from EXIF GPS"
    return text
