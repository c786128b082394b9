"""The styling math and output-folder rules of layers.py (pure functions, no server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsProject

from qgis_plugin import layers


def test_hpd_threshold_keeps_the_requested_mass():
    rng = np.random.default_rng(0)
    p = rng.gamma(0.3, size=(90, 180))
    p /= p.sum()
    for mass in (0.5, 0.9, 0.999):
        t = layers.hpd_threshold(p, mass)
        kept = p[p >= t].sum()
        assert kept >= mass - 1e-9
        assert p[p > t].sum() < mass + 1e-9  # the smallest such region
    assert layers.hpd_threshold(np.zeros((3, 3)), 0.9) == 0.0
    assert layers.hpd_threshold(np.array([np.nan, 1.0]), 0.9) == 1.0


def test_class_breaks_are_increasing_and_span_the_range():
    breaks = layers.class_breaks(1e-6, 1e-2, 6)
    assert len(breaks) == 6 and breaks[0] == pytest.approx(1e-6) and breaks[-1] == pytest.approx(1e-2)
    assert all(a < b for a, b in zip(breaks, breaks[1:], strict=False))
    tiny = layers.class_breaks(0.0, 1e-3, 4)  # a zero minimum is lifted so the log scale stays defined
    assert tiny[0] > 0 and tiny[-1] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("value", "label"), [(0.0123, "1.2 % per cell"), (0.25, "25 % per cell"), (3.4e-5, "0.0034 % per cell")]
)
def test_percent_labels(value, label):
    assert layers.percent_label(value) == label


def test_output_folder_rules(tmp_path, qgis_new_project):  # noqa: ARG001
    assert layers.output_folder(str(tmp_path / "chosen")) == tmp_path / "chosen"
    project = QgsProject.instance()
    assert layers.output_folder("") == Path.home() / "GeoPlonk" / "results"  # unsaved project: a lasting folder
    project.setFileName(str(tmp_path / "study" / "case.qgz"))
    assert layers.output_folder("") == tmp_path / "study" / "geoplonk"
    project.setFileName("")


def test_a_group_shows_its_files_stem_only_when_the_photos_name_does_not_give_it():
    assert layers.other_files_stem("desert road.png", {"geotiff": "/r/desert_road.tif"}) == ""  # made file-safe
    assert layers.other_files_stem("IMG_0001.jpg", {"geotiff": "/r/IMG_0001_2.tif"}) == "IMG_0001_2"
    assert layers.group_name("IMG_0001.jpg", {"model": "earth-tiles"}) == "IMG_0001.jpg · earth-tiles"
    assert layers.group_name("IMG_0001.jpg", {"model": "earth-tiles"}, "IMG_0001_2") == (
        "IMG_0001.jpg (IMG_0001_2) · earth-tiles")


def test_map_tip_html_escapes_and_shows_the_essentials(tmp_path):
    photo = tmp_path / "a<b>.jpg"
    photo.write_bytes(b"x")
    summary = {
        "best_guess": {"lat": 30.1, "lon": 31.2, "place": "Cairo", "country": "Egypt"},
        "localizability": 0.42,
        "exif": {"error_km": 12.3},
    }
    html = layers.map_tip_html(str(photo), summary)
    assert "a&lt;b&gt;.jpg" in html and "<img src=\"file://" in html
    assert "Cairo, Egypt" in html and "0.42" in html and "12 km" in html
