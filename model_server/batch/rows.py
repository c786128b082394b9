"""One row per photo of the batch dataset, and the dataset's GeoParquet metadata.

The row is read off the same result the server sends (its summary and its GeoPackage), so a row holds the
server's figures for the photo, not a recomputation of them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from geoplonk_service import protocol as P

# The level whose credible region the row carries as a polygon.
REGION_LEVEL = 0.9

TOP_PLACE = pa.struct([
    ("rank", pa.int32()), ("lat", pa.float64()), ("lon", pa.float64()), ("p_within_100km", pa.float64()),
    ("p_within_500km", pa.float64()), ("basin_share", pa.float64()), ("country", pa.string()),
    ("place", pa.string()),
])
GEO_METADATA = {
    "version": "1.1.0",
    "primary_column": "geometry",
    "columns": {  # no "crs": GeoParquet's default, OGC:CRS84 (longitude, latitude on WGS 84), as the products
        "geometry": {"encoding": "WKB", "geometry_types": ["Point"]},
        "region_90": {"encoding": "WKB", "geometry_types": ["MultiPolygon"]},
    },
}
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("status", pa.string()),  # ok or failed
        ("error_code", pa.string()),
        ("error", pa.string()),
        ("geometry", pa.binary()),  # the best guess, a WKB point
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("country", pa.string()),
        ("place", pa.string()),
        ("localizability", pa.float64()),
        ("top_places", pa.list_(TOP_PLACE)),
        ("region_90", pa.binary()),  # the 90 % credible region, a WKB multipolygon
        ("area_90_km2", pa.float64()),
        ("exif_error_km", pa.float64()),
        ("warnings", pa.list_(pa.string())),
        ("model", pa.string()),
        ("options", pa.string()),  # JSON: the options that ran, as the server's summary gives them
        ("job_key", pa.string()),  # model, software and requested options: what a rerun compares to skip done photos
        ("summary", pa.string()),  # JSON: the server's summary of the photo, less its timings
        ("geotiff", pa.string()),  # the per-photo files, when the job writes them
        ("gpkg", pa.string()),
    ],
    metadata={b"geo": json.dumps(GEO_METADATA).encode()},
)
COLUMNS = tuple(SCHEMA.names)


def job_key(model: dict[str, Any], options: dict[str, Any]) -> str:
    """What makes two runs of a photo give the same products: the model (its name, and the hashes of its
    manifest and weights, so a model rebuilt under the same name counts as another), the software version and
    the requested options."""
    from model_server import __version__

    text = json.dumps({"model": model, "software_version": __version__, "options": options}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def empty_row(path: str, sha256: str | None, status: str, code: str | None, error: str | None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(path=path, sha256=sha256, status=status, error_code=code, error=error)
    return row


def region_wkb(gpkg: bytes, level: float = REGION_LEVEL) -> bytes | None:
    """The credible region of `level` from the result's GeoPackage, as WKB (None when the job did not ask
    for that level)."""
    import warnings

    from pyogrio.raw import read

    with warnings.catch_warnings():  # the bytes are read through a GDAL memory file named without .gpkg
        warnings.simplefilter("ignore", RuntimeWarning)
        _, _, geometry, fields = read(gpkg, layer="credible_regions")
    levels = fields[0] if len(fields) else []
    for value, wkb in zip(levels, geometry, strict=True):
        if abs(float(value) - level) < 1e-9 and wkb is not None:
            return bytes(wkb)
    return None


def result_row(path: str, sha256: str, summary: dict[str, Any], gpkg: bytes, key: str) -> dict[str, Any]:
    """The row of a photo the pipeline located: its server summary and the GeoPackage it wrote."""
    import shapely

    best = summary.get("best_guess") or {}
    areas = {r.get("level"): r.get("area_km2") for r in summary.get("credible_regions") or []}
    exif = summary.get("exif") if isinstance(summary.get("exif"), dict) else {}
    kept = {k: v for k, v in summary.items() if k != "timings"}
    row = empty_row(path, sha256, P.STATUS_OK, None, None)
    row.update(
        geometry=shapely.to_wkb(shapely.Point(best["lon"], best["lat"])),
        lat=best["lat"], lon=best["lon"], country=best.get("country"), place=best.get("place"),
        localizability=summary.get("localizability"),
        top_places=[{k: place.get(k) for k in TOP_PLACE.names} for place in summary.get("top_places") or []],
        region_90=region_wkb(gpkg), area_90_km2=areas.get(REGION_LEVEL),
        exif_error_km=exif.get("error_km"), warnings=list(summary.get("warnings") or []),
        model=summary.get("model"), options=json.dumps(summary.get("options"), sort_keys=True),
        job_key=key, summary=json.dumps(kept, sort_keys=True, allow_nan=False),
    )
    return row


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)
