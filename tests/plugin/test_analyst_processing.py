"""Issue 23 through Processing: claims (a point, a point layer, the photo's EXIF GPS), an area of interest from
polygons, and a joint map, with processing.run in headless QGIS and with qgis_process and the installed zip.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import pytest
from analyst_inputs import EUROPE, EXIF_LATLON, geotagged_photo, inside_ring, memory_layer, to_crs
from conftest import FAST_OPTIONS, server_command
from plugin_install import ROOT, build_plugin_zip, make_profile, qgis_env, qgis_process_command
from test_processing import ALG, FAST_PARAMS, RecordingFeedback, best_guess_rows, run, run_raising

VERDICTS = ("likely under the model", "plausible under the model", "unlikely under the model",
            "very unlikely under the model")


@pytest.fixture(scope="module")
def provider(qgis_processing):  # noqa: ARG001 - Processing must be initialised first
    from qgis.core import QgsApplication

    from qgis_plugin.processing.provider import GeoPlonkProvider

    prov = GeoPlonkProvider()
    assert QgsApplication.processingRegistry().addProvider(prov)
    yield prov
    QgsApplication.processingRegistry().removeProvider(prov)


@pytest.fixture
def tagged_folder(photo_dir, tmp_path) -> Path:
    folder = tmp_path / "case"
    folder.mkdir()
    geotagged_photo(photo_dir / "harbour.jpg", folder / "tower.jpg")
    return folder


def assert_report(path: Path) -> str:
    """A self-contained case report holding a map picture rendered by QGIS; returns its text."""
    from qgis.PyQt.QtGui import QImage

    page = path.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", page) and "<link" not in page, path
    (encoded,) = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    picture = QImage.fromData(base64.b64decode(encoded), "PNG")
    assert not picture.isNull() and picture.width() == 1200, path
    colours = {picture.pixel(x, y) for x in range(0, picture.width(), 9) for y in range(0, picture.height(), 9)}
    assert len(colours) > 30, f"{path}: the map picture is blank"
    assert "Rendered by QGIS 3." in page and "over QGIS&#x27;s offline world map" in page  # escaped
    return page


def claims_layer_rows(gpkg: str) -> list[dict]:
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(f"{gpkg}|layername=claims", "claims", "ogr")
    assert layer.isValid(), f"{gpkg} has no claims layer"
    return [{**{n: f[n] for n in layer.fields().names()}, "_xy": (f.geometry().asPoint().x(),
                                                                  f.geometry().asPoint().y())}
            for f in layer.getFeatures()]


def test_claims_from_a_point_a_layer_and_exif_reach_the_best_guess_fields(provider, plugin_settings,  # noqa: ARG001
                                                                         tagged_folder, tmp_path, qgis_new_project):
    from qgis.core import QgsProcessingFeatureSourceDefinition

    # two witnesses' points, in Web Mercator; only the selected one is a claim
    witnesses = memory_layer("Point", "witnesses", to_crs([(31.2, 30.0), (-43.2, -22.9)], "EPSG:3857"),
                             crs="EPSG:3857", labels=["Cairo witness", "Rio witness"])
    witnesses.selectByExpression("\"name\" = 'Rio witness'")
    out = tmp_path / "out"
    feedback = RecordingFeedback()
    result = run({"FOLDER": str(tagged_folder), "OUTPUT_FOLDER": str(out), **FAST_PARAMS,
                  "CLAIM_POINT": "151.2,-33.9 [EPSG:4326]", "CLAIM_LABEL": "the seller says Sydney",
                  "CLAIM_LAYER": QgsProcessingFeatureSourceDefinition(witnesses.id(), selectedFeaturesOnly=True),
                  "CLAIM_EXIF": True}, feedback)
    assert result["SUCCEEDED"] == 1 and result["JOINT_RASTER"] is None

    (row,) = best_guess_rows(result["OUTPUT"])
    assert row["claims_checked"] == 3 and row["claim_label"] == "the seller says Sydney"
    assert row["claim_verdict"] in VERDICTS and 0 <= row["claim_level"] <= 1
    words = row["all_claims"].split(" | ")
    assert [w.split(":")[0] for w in words] == ["the seller says Sydney", "Rio witness", "EXIF GPS"]
    assert all(any(v in w for v in VERDICTS) and "best guess's" in w for w in words), words
    assert words[0] == f"the seller says Sydney: {row['claim_words']}"  # claim_*: the first claim's

    rows = claims_layer_rows(str(out / "tower.gpkg"))
    assert [r["source"] for r in rows] == ["user", "layer", "exif"]
    assert rows[0]["_xy"] == pytest.approx((151.2, -33.9))
    assert rows[1]["_xy"] == pytest.approx((-43.2, -22.9), abs=1e-6)  # transformed from EPSG:3857
    assert rows[2]["_xy"] == pytest.approx((EXIF_LATLON[1], EXIF_LATLON[0]), abs=1e-3)
    assert rows[0]["words"] == row["claim_words"]
    assert any("tower.jpg, claim the seller says Sydney: " in i for i in feedback.infos), feedback.infos


def test_area_of_interest_from_selected_polygons_restricts_the_map(provider, plugin_settings, photo_dir,  # noqa: ARG001
                                                                   tmp_path, qgis_new_project):
    from qgis.core import QgsProcessingFeatureSourceDefinition

    far_away = [(100.0, -40.0), (110.0, -40.0), (110.0, -30.0), (100.0, -40.0)]
    areas = memory_layer("Polygon", "areas", [to_crs(EUROPE, "EPSG:3857"), to_crs(far_away, "EPSG:3857")],
                         crs="EPSG:3857", labels=["Europe", "ocean"])
    areas.selectByExpression("\"name\" = 'Europe'")
    out = tmp_path / "out"
    result = run({"FOLDER": str(photo_dir), "OUTPUT_FOLDER": str(out), **FAST_PARAMS,
                  "AOI": QgsProcessingFeatureSourceDefinition(areas.id(), selectedFeaturesOnly=True)})
    assert result["SUCCEEDED"] == 3
    for row in best_guess_rows(result["OUTPUT"]):
        assert inside_ring(row["lon"], row["lat"], EUROPE, margin=FAST_OPTIONS["resolution"]), row
        summary = json.loads((out / Path(row["geotiff"]).with_suffix(".json").name).read_text())
        assert summary["aoi"]["weight"] == 0.0
        assert 5e6 < summary["aoi"]["area_km2"] < 9e6  # 30 x 22 degrees at 36-58 N, not the ocean box too
        assert summary["options"]["aoi"]["type"] == "MultiPolygon"


def test_joint_map_of_photos_of_one_place(provider, plugin_settings, photo_dir, tmp_path):  # noqa: ARG001
    out = tmp_path / "out"
    feedback = RecordingFeedback()
    result = run({"FOLDER": str(photo_dir), "OUTPUT_FOLDER": str(out), **FAST_PARAMS, "JOINT": True,
                  "CLAIM_POINT": "2.35,48.85 [EPSG:4326]", "REPORT": True}, feedback)
    assert result["SUCCEEDED"] == 3
    assert result["JOINT_RASTER"] == str(out / "joint.tif") and result["JOINT_GPKG"] == str(out / "joint.gpkg")
    bar = feedback.progress_values  # four units, the joint map the last: 100 only once it is written
    assert bar == sorted(bar) and bar[-1] == 100 and max(bar[:-1]) < 100 and 75.0 in bar, bar
    summary = json.loads((out / "joint.json").read_text())
    assert sorted(p["name"] for p in summary["joint"]["photos"]) == ["desert road.png", "forest.tif", "harbour.jpg"]
    assert len(summary["joint"]["contributions"]) == 3
    assert claims_layer_rows(result["JOINT_GPKG"])[0]["verdict"] in VERDICTS
    assert any(i.startswith("Joint map of 3 photos: best guess") for i in feedback.infos), feedback.infos
    for stem in ("harbour", "desert_road", "forest", "joint"):
        assert_report(out / f"{stem}.html")
    assert "Joint map of several photos" in (out / "joint.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(("parameters", "message"), [
    ({"CLAIM_POINT": "200,95 [EPSG:4326]"}, "out of range"),
    ({"AOI": "lines"}, "'roads' holds line features, not polygons"),
    ({"AOI": "empty selection"}, "No polygon selected in 'areas'"),
    ({"CLAIM_LAYER": "areas"}, "'areas' holds polygon features, not points: a claim is a point"),
])
def test_bad_analyst_input_is_named(provider, plugin_settings, photo_dir, tmp_path, qgis_new_project,  # noqa: ARG001
                                    parameters, message):
    from qgis.core import QgsProcessingException, QgsProcessingFeatureSourceDefinition

    roads = memory_layer("LineString", "roads", [[(0, 0), (1, 1)]])
    areas = memory_layer("Polygon", "areas", [EUROPE])
    by_name = {"lines": roads.id(), "areas": areas.id(),
               "empty selection": QgsProcessingFeatureSourceDefinition(areas.id(), selectedFeaturesOnly=True)}
    parameters = {k: by_name.get(v, v) for k, v in parameters.items()}
    with pytest.raises(QgsProcessingException, match=message):
        run_raising({"FOLDER": str(photo_dir), "OUTPUT_FOLDER": str(tmp_path / "out"), **FAST_PARAMS, **parameters})
    assert not (tmp_path / "out" / "harbour.tif").exists()  # refused before any photo was sent


def test_qgis_process_checks_claims_in_an_area_with_a_joint_map(tagged_folder, photo_dir, tmp_path):
    """`qgis_process run` with the installed zip: a typed claim, the EXIF claim, an area of interest from a
    GeoPackage of polygons (soft weight) and the joint map of two photos."""
    from osgeo import ogr, osr

    (tagged_folder / "harbour.jpg").write_bytes((photo_dir / "harbour.jpg").read_bytes())
    areas = tmp_path / "areas.gpkg"
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(areas))
    layer = ds.CreateLayer("europe", srs, ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON ((" + ", ".join(f"{x} {y}" for x, y in EUROPE) + "))"))
    layer.CreateFeature(feature)
    ds = None

    profiles = tmp_path / "qgis-profiles"
    make_profile(profiles, build_plugin_zip(tmp_path / "geoplonk.zip"),
                 {"endpoint": "tcp://127.0.0.1:1", "auto_start": "true",
                  "start_command": f"env PYTHONPATH={ROOT} {server_command()}"})  # this checkout's server
    env = qgis_env(tmp_path / "home")
    env.update(QGIS_CUSTOM_CONFIG_PATH=str(profiles), QT_QPA_PLATFORM="offscreen")
    out = tmp_path / "out"
    args = [f"FOLDER={tagged_folder}", f"OUTPUT_FOLDER={out}", *(f"{k}={v}" for k, v in FAST_PARAMS.items()),
            "CLAIM_POINT=2.35,48.85 [EPSG:4326]", "CLAIM_LABEL=Paris, says the caption", "CLAIM_EXIF=true",
            f"AOI={areas}", "AOI_WEIGHT=0.1", "JOINT=true", "REPORT=true"]
    proc = subprocess.run([*qgis_process_command(), "--json", "run", ALG, "--", *args], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(proc.stdout)["results"]
    assert results["SUCCEEDED"] == 2 and results["JOINT_RASTER"] == str(out / "joint.tif")
    rows = {r["photo"]: r for r in best_guess_rows(results["OUTPUT"])}
    assert rows["tower.jpg"]["claims_checked"] == 2 and rows["harbour.jpg"]["claims_checked"] == 1  # no GPS
    assert rows["tower.jpg"]["all_claims"].startswith("Paris, says the caption: ")
    assert "EXIF GPS: " in rows["tower.jpg"]["all_claims"]
    tower = json.loads((out / "tower.json").read_text())
    assert tower["aoi"]["weight"] == pytest.approx(0.1)
    joint = json.loads((out / "joint.json").read_text())
    assert [c["source"] for c in joint["claims"]] == ["user", "exif"]  # the joint map checks the tower's GPS too
    assert joint["aoi"]["weight"] == pytest.approx(0.1)
    page = assert_report(out / "tower.html")  # drawn by qgis_process's own QGIS
    assert tower["claims"][0]["words"].replace("'", "&#x27;") in page
    assert_report(out / "joint.html")
