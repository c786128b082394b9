"""The one row per photo: summary.csv's columns and the best-guess layer's attributes."""

from __future__ import annotations

from geoplonk_service.client import PhotoResult
from geoplonk_service.result_rows import RESULT_COLUMNS, describe_row, summary_row

SUMMARY = {
    "best_guess": {"lat": 1.5, "lon": -2, "country": "FR", "place": "Paris"},
    "localizability": 0.25,
    "top_places": [
        {"place": "Paris", "p_within_100km": 0.2, "p_within_500km": 0.6, "basin_share": 0.9},
        {"place": "Lyon", "p_within_100km": 0.05, "p_within_500km": 0.3, "basin_share": 0.1},
    ],
    "credible_regions": [{"level": 0.5, "area_km2": 10.0}, {"level": 0.9, "area_km2": 250.0}],
    "exif": {"lat": 0, "lon": 0, "error_km": 12.25},
    "claims": [{"credible_level": 0.973, "words": "unlikely under the model: outside the 97 % region"},
               {"credible_level": 0.1, "words": "likely under the model: outside the 10 % region"}],
    "model": "m",
}


def test_row_of_a_located_photo():
    result = PhotoResult(0, "paris.jpg", "ok", SUMMARY)
    files = {"geotiff": "/out/paris.tif", "gpkg": "/out/paris.gpkg", "json": "/out/paris.json"}
    row = summary_row("/photos/paris.jpg", result, files)
    assert tuple(row) == RESULT_COLUMNS
    assert row == {
        "photo": "paris.jpg",
        "path": "/photos/paris.jpg",
        "status": "ok",
        "error": None,
        "lat": 1.5,
        "lon": -2.0,
        "country": "FR",
        "place": "Paris",
        "localizability": 0.25,
        "top_place": "Paris",
        "top_p_within_100km": 0.2,
        "top_p_within_500km": 0.6,
        "top_basin_share": 0.9,
        "area_90_km2": 250.0,
        "exif_error_km": 12.25,
        "claim_level": 0.973,
        "claim_words": "unlikely under the model: outside the 97 % region",
        "model": "m",
        **files,
    }
    assert describe_row(row) == "paris.jpg: 1.500, -2.000 (Paris, FR), localizability 0.25, 12 km from EXIF GPS"


def test_row_without_optional_parts_or_of_a_failure():
    sparse = summary_row("x.jpg", PhotoResult(0, "x.jpg", "ok", {"best_guess": {"lat": 0, "lon": 0}, "exif": None}))
    assert sparse["exif_error_km"] is None and sparse["top_p_within_100km"] is None and sparse["area_90_km2"] is None
    assert describe_row(sparse) == "x.jpg: 0.000, 0.000 (?)"
    failed = PhotoResult(1, "bad.jpg", "failed", error={"code": "bad_image", "message": "not a recognised image"})
    row = summary_row("/p/bad.jpg", failed)
    assert (row["status"], row["error"], row["lat"], row["geotiff"]) == ("failed", "not a recognised image", None, None)
    assert describe_row(row) == "bad.jpg: failed (not a recognised image)"
