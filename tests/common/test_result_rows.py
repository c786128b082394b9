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


def test_the_case_report_is_self_contained_and_escapes_what_it_quotes():
    import datetime as dt

    from geoplonk_service.case_report import case_report_html

    summary = {**SUMMARY, "photo_sha256": "ab" * 32, "model_sha256": "cd" * 32, "software_version": "9.9",
               "options": {"seed": 5, "aoi": {"type": "MultiPolygon", "coordinates": [
                   [[[0, 0], [1, 0], [1, 1], [0, 0]]], [[[5, 5], [6, 5], [6, 6], [5, 6], [5, 5]]]]}},
               "claims": [{"lat": 1, "lon": 2, "source": "click", "label": "<b>x</b>", "credible_level": 0.973,
                           "words": "unlikely under the model: outside the 97 % region"}]}
    text = case_report_html("<script>alert(1)</script>.jpg", summary, b"\x89PNG fake", "drawn by a test",
                            now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    assert "<script>" not in text and "&lt;script&gt;" in text and "&lt;b&gt;x&lt;/b&gt;" in text
    assert "ab" * 32 in text and "cd" * 32 in text and "2026-01-02 03:04:05 UTC" in text
    assert "MultiPolygon: 2 polygon(s), 9 vertices" in text and "&quot;seed&quot;: 5" in text
    assert "97.3 %" in text and "unlikely under the model: outside the 97 % region" in text
    assert "data:image/png;base64," in text and "http" not in text.replace("https://", "")
