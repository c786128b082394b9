"""`make demo`, the README's first command, run as a user runs it (into a temporary DEMO_OUT).

It starts its own server on the embedded default model, geolocates the sample photos, renders the map
with QGIS and prints a summary; the test opens what it wrote in QGIS.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

from conftest import ROOT
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtGui import QImage

SAMPLE_NAMES = {"alps.jpg", "amazon.jpg", "greenland.jpg", "himalaya.jpg", "nile_delta.jpg", "ocean.jpg", "sahara.jpg"}


def test_make_demo_writes_rasters_layers_a_map_picture_and_a_project(tmp_path):
    out = tmp_path / "demo-output"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "GEOPLONK_MODEL"))}
    env["DEMO_OUT"] = str(out)
    proc = subprocess.run(["make", "--no-print-directory", "demo"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=800)  # under pytest's own 900 s, so this test fails with the output
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(proc.stdout.splitlines()[-1])  # "time: geolocation N s, map N s"

    (listed,) = [line for line in proc.stdout.splitlines() if line.startswith("demo: ") and "photo(s):" in line]
    with open(out / "summary.csv", newline="") as f:
        rows = {Path(r["photo"]).name: r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(listed.split(":", 2)[2].split()) and SAMPLE_NAMES <= set(rows), (listed, rows)
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row)
        assert f"{name}: best guess" in proc.stdout
        raster = QgsRasterLayer(str(ROOT / row["geotiff"]), name)
        assert raster.isValid() and raster.crs().authid() == "EPSG:4326", row["geotiff"]
        assert raster.dataProvider().bandStatistics(1).maximumValue > 0
        regions = QgsVectorLayer(f"{ROOT / row['gpkg']}|layername=credible_regions", name, "ogr")
        assert regions.isValid() and regions.featureCount() > 0, row["gpkg"]

    picture = QImage(str(out / "map.png"))
    assert not picture.isNull() and picture.width() >= 800
    colours = {picture.pixel(x, y) for x in range(0, picture.width(), 16) for y in range(0, picture.height(), 16)}
    assert len(colours) > 50, "the map picture is nearly blank"

    project = QgsProject()
    assert project.read(str(out / "demo.qgz"))
    layers = list(project.mapLayers().values())
    assert len(layers) >= 2 * len(rows) and all(layer.isValid() for layer in layers)
