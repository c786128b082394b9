"""Full desktop QGIS under a virtual screen (xvfb-run), with the plugin installed from the built zip.

desktop_script.py runs inside QGIS and does what an analyst does, from the Browser dock and the toolbar button to
Processing's dialogs, Install from ZIP, the file dialog and the settings dialog (its docstring lists the steps); it
saves a screenshot and a JSON report, then quits.  The tests read the report and the screenshot.
With GEOPLONK_UPDATE_DOCS=1 the screenshot is also copied to docs/img/desktop.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from plugin_install import ROOT, build_plugin_zip, make_profile, qgis_env

SCRIPT = Path(__file__).with_name("desktop_script.py")
ARTIFACTS = ROOT / "tests" / "artifacts"
TIMEOUT_S = 300
LAYER_PHOTOS = ("harbour.jpg", "forest.tif")  # the active layer's selected features: the Browser selection wins
SAMPLES = ROOT / "samples"
PHOTOS = ("himalaya.jpg", "nile_delta.jpg")  # selected in the real Browser dock, among the seven samples


def make_photo_layer(path: Path, photos: list[Path]) -> Path:
    """A GeoPackage point layer with a `photo` path field, like Processing's 'Import geotagged photos' makes."""
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("photos", srs, ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("photo", ogr.OFTString))
    layer.CreateField(ogr.FieldDefn("filename", ogr.OFTString))
    for i, photo in enumerate(photos):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature["photo"] = str(photo)
        feature["filename"] = photo.name
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({10 + i} {45 + i})"))
        layer.CreateFeature(feature)
    ds = None
    return path


@pytest.fixture(scope="module")
def desktop(geoplonk_server, photo_dir, tmp_path_factory):
    """Run desktop QGIS once for this module; returns (process, report, screenshot path)."""
    if shutil.which("xvfb-run") is None or shutil.which("qgis") is None:
        pytest.fail("the desktop test needs `qgis`, `xvfb` and `xauth` (apt-get install qgis xvfb xauth)")
    tmp = tmp_path_factory.mktemp("desktop")
    profiles = tmp / "profiles"
    plugin_zip = build_plugin_zip(tmp / "geoplonk.zip")
    make_profile(
        profiles,
        plugin_zip,
        {"endpoint": geoplonk_server.endpoint, "auto_start": "false", "output_folder": str(tmp / "results")},
    )
    out = tmp / "out"
    env = qgis_env(tmp / "home")
    env.pop("QT_QPA_PLATFORM", None)  # a real (virtual) X screen this time
    env.pop("QT_QPA_PLATFORMTHEME", None)  # Qt's own dialogs, not a desktop's native ones
    env.update(
        GEOPLONK_DESKTOP_LAYER=str(make_photo_layer(tmp / "photos.gpkg", [photo_dir / p for p in LAYER_PHOTOS])),
        GEOPLONK_DESKTOP_BROWSER_DIR=str(SAMPLES),
        GEOPLONK_DESKTOP_BROWSER_FILES=",".join(PHOTOS),
        GEOPLONK_DESKTOP_OUT=str(out),
        GEOPLONK_DESKTOP_HELPERS=str(SCRIPT.parent),
        GEOPLONK_DESKTOP_ZIP=str(plugin_zip),
        GEOPLONK_DESKTOP_TIMEOUT=str(TIMEOUT_S),
    )
    command = [
        "timeout", "-k", "10", str(TIMEOUT_S + 60),
        "xvfb-run", "-a", "-s", "-screen 0 1400x900x24",
        "qgis", "--nologo", "--noversioncheck", "--profiles-path", str(profiles), "--code", str(SCRIPT),
    ]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S + 90)
    report_path = out / "report.json"
    assert report_path.is_file(), f"QGIS wrote no report (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(report_path.read_text())
    screenshot = out / "desktop.png"
    if screenshot.is_file():
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, ARTIFACTS / "desktop.png")
        shutil.copyfile(out / "canvas.png", ARTIFACTS / "desktop-canvas.png")
        (ARTIFACTS / "desktop-report.json").write_text(json.dumps(report, indent=2))
        if os.environ.get("GEOPLONK_UPDATE_DOCS") == "1":
            (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(screenshot, ROOT / "docs" / "img" / "desktop.png")
    return proc, report, screenshot


def image_pixels(path: Path, rect: list[int] | None = None):
    """The PNG's pixels as an (h, w, 3) uint8 array, optionally cropped to rect = [x, y, w, h]."""
    import numpy as np
    from qgis.PyQt.QtGui import QImage

    image = QImage(str(path)).convertToFormat(QImage.Format_RGB32)
    assert not image.isNull(), path
    ptr = image.constBits()
    ptr.setsize(image.height() * image.bytesPerLine())
    raw = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)[:, : image.width()]
    rgb = raw[..., 2::-1][..., :3].copy()  # BGRA in memory -> RGB
    if rect:
        x, y, w, h = rect
        rgb = rgb[y : y + h, x : x + w]
    return rgb


def over_white(colour: str, opacity: float) -> str:
    """The colour a translucent layer shows over the canvas's white background."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(opacity * v + (1 - opacity) * 255):02x}" for v in rgb)


def count_near(pixels, colours: list[str], tolerance: float) -> int:
    """How many pixels lie within `tolerance` (RGB distance) of any of `colours` ('#rrggbb')."""
    import numpy as np

    flat = pixels.reshape(-1, 3).astype(np.int32)
    targets = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colours], np.int32)
    near = np.zeros(len(flat), bool)
    for target in targets:
        near |= ((flat - target) ** 2).sum(axis=1) <= tolerance**2
    return int(near.sum())


def test_qgis_exits_by_itself(desktop):
    proc, report, _ = desktop
    assert report["errors"] == [], report["errors"]
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_photos_selected_in_the_real_browser_dock_and_only_they_are_geolocated(desktop):
    _, report, _ = desktop
    browser = report["browser"]
    assert browser["view_class"] == "QgsDockBrowserTreeView", browser  # the dock's own view, not a stand-in
    assert browser["children"] >= len(list(SAMPLES.glob("*.jpg")))
    wanted = sorted(str(SAMPLES / p) for p in PHOTOS)
    assert browser["selected"] == wanted and browser["plugin_sees"] == wanted, browser
    assert report["photo_layer"]["selected"] == len(LAYER_PHOTOS)  # selected features too, yet ignored
    assert sorted(report["task"]["paths"]) == wanted, report["task"]
    assert sorted(g["photo"] for g in report["groups"]) == sorted(PHOTOS)


def test_button_click_puts_styled_groups_in_the_layers_panel(desktop):
    _, report, _ = desktop
    assert report["toolbar_button"]["found"]
    assert report["task"]["ok"] == len(PHOTOS) and report["task"]["failed"] == 0, report["task"]
    groups = {g["photo"]: g for g in report["groups"]}
    assert set(groups) == set(PHOTOS)
    for photo, group in groups.items():
        assert group["visible"]
        assert group["name"] == f"{photo} · earth-tiles"  # the model that placed it
        by_role = {layer["role"]: layer for layer in group["layers"]}
        assert all(layer["valid"] for layer in group["layers"])
        stem = Path(photo).stem
        assert all(layer["name"] == f"{stem}: {layer['role']}" for layer in group["layers"])  # "nile_delta: ..."
        density = by_role["probability"]
        assert density["visible"] and density["renderer"] == "singlebandpseudocolor"
        assert by_role["credible regions"]["visible"] and by_role["credible regions"]["features"] >= 1
        assert by_role["top places"]["visible"]
        assert not by_role["samples"]["visible"]  # hidden by default
        assert "Model: earth-tiles" in by_role["top places"]["map_tip"]
    panel = report["layers_panel"]
    shown = [row["text"] for row in panel["rows"] if row["shown"]]
    assert panel["visible"] and {groups[p]["name"] for p in PHOTOS} <= set(shown), panel
    print("click-to-layer timings (s):", report["timings"])


def test_screenshot_shows_the_raster_and_the_credible_regions(desktop):
    _, report, screenshot = desktop
    assert report["screenshot_saved"] and screenshot.is_file()
    canvas = image_pixels(screenshot, report["canvas_rect"])
    assert canvas.shape[0] > 300 and canvas.shape[1] > 300, canvas.shape
    density = next(layer for g in report["groups"] for layer in g["layers"] if layer["role"] == "probability")
    # The ramp's colours, less the ones a white canvas or grey widgets could supply on their own.
    ramp = [c for c in density["ramp_samples"] + density["ramp_colours"] if max(c[1:3], c[3:5], c[5:7]) < "e0"]
    ramp = [over_white(c, density.get("opacity", 1.0)) for c in ramp]  # the layer is drawn translucent
    raster_px = count_near(canvas, ramp, tolerance=20)  # 64 ramp samples: rendered colours fall between them
    # over 1 % of the canvas: the view frames the clicked claim (in Italy) too, so the maps fill less of it
    assert raster_px > 0.01 * canvas.shape[0] * canvas.shape[1], f"only {raster_px} raster-coloured pixels"
    regions = next(layer for g in report["groups"] for layer in g["layers"] if layer["role"] == "credible regions")
    outline = [c for c in regions["outline_colours"] if c != "#ffffff"]
    assert outline, regions
    outline_px = count_near(canvas, outline, tolerance=30)
    assert outline_px > 100, f"only {outline_px} pixels of the credible region outlines {outline}"


def test_an_offline_basemap_lies_under_the_results(desktop):
    _, report, _ = desktop
    (basemap,) = report["basemap"]
    assert basemap["valid"] and basemap["source"].split("|")[0].endswith("resources/data/world_map.gpkg")
    assert report["tree_order"][-1] == basemap["name"]  # the bottom of the layer tree: drawn under the results
    assert basemap["name"] in report["canvas_layers"]


def test_labels_of_both_results_use_placement_and_priority(desktop):
    _, report, _ = desktop
    labelling = report["labelling"]
    assert labelling["best guess"]["priority"] > labelling["top places"]["priority"] > labelling["credible regions"][
        "priority"]
    assert not labelling["top places"]["display_all"]  # overlapping labels are dropped, not piled up
    assert "within 100 km" in labelling["top places"]["expression"]


def test_a_claim_clicked_on_the_real_canvas_is_checked(desktop):
    _, report, _ = desktop
    claim = report["claim"]
    assert claim["tool_active"] and claim["tool_given_back"], claim
    (clicked,) = claim["claims"]
    assert clicked["source"] == "click"
    assert claim["pixel_deg"] is not None and claim["pixel_deg"] < 0.01, claim  # the photos' layer, in lon/lat
    assert [clicked["lat"], clicked["lon"]] == pytest.approx(claim["expected"], abs=2 * claim["pixel_deg"])
    for group in report["groups"]:
        claims = next(layer for layer in group["layers"] if layer["role"] == "claims")
        assert claims["valid"] and claims["features"] == 1 and claims["labels"]
        assert "likely under the model: " in claims["map_tip_text"] and "clicked point" in claims["map_tip_text"]
        # both groups label the same point, each with its own photo's verdict: the label says whose it is
        assert claims["label_text"].startswith(f"{Path(group['photo']).stem} · clicked point "), claims


def test_the_job_tells_its_photos_verdicts_in_one_message_on_the_real_bar(desktop):
    _, report, _ = desktop
    ours = [item for item in report["message_bar"] if item["title"].startswith("GeoPlonk")]
    (job,) = [item for item in ours if "geolocated" in item["text"]]  # not one message per photo
    assert "2 photos geolocated" in job["text"], ours
    for photo in PHOTOS:
        assert f"{photo}: clicked point " in job["text"] and "likely under the model" in job["text"], job
    assert not [item for item in ours if "Click the claimed location" in item["text"]], ours  # the click ended it


def test_zoom_to_result_frames_the_clicked_claim_with_the_map(desktop):
    _, report, _ = desktop
    (clicked,) = report["claim"]["claims"]
    west, south, east, north = report["zoomed_extent"]  # the Layers panel's current group, in lon/lat
    assert west < clicked["lon"] < east and south < clicked["lat"] < north, (report["zoomed_extent"], clicked)


def test_open_case_report_from_the_real_layers_panel_menu(desktop):
    _, report, _ = desktop
    case = report["case_report"]
    assert case["menu"][-1] == "Open case report" and len(case["menu"]) > 3, case  # QGIS's own entries first
    (opened,) = case["opened"]
    page = Path(opened).read_text(encoding="utf-8")
    assert Path(opened).name == case["group"].split(" · ")[0].rsplit(".", 1)[0] + ".html"
    assert "src='data:image/png;base64," in page and "Rendered by QGIS 3.22" in page
    assert "clicked point" in page  # the claim's verdict is in the report


def test_the_processing_dialog_runs_a_folder_and_loads_its_layers(desktop):
    """Processing's own dialog, its Run button clicked: the algorithm ran as the dialog's background task, wrote
    each photo's files, and the dialog loaded the rasters and the best-guess layer into the project."""
    _, report, _ = desktop
    run = report["processing_dialog"]
    assert run["successful"], run["log"]
    assert (run["results"]["SUCCEEDED"], run["results"]["FAILED"]) == (2, 0), run["results"]
    stems = [name.rsplit(".", 1)[0] for name in PHOTOS]
    for stem in stems:
        assert {f"{stem}.tif", f"{stem}.gpkg", f"{stem}.json"} <= set(run["files"]), run["files"]
    added = {name: (valid, source, features) for name, valid, source, features in run["layers_added"]}
    assert all(valid for valid, _, _ in added.values()), added
    rasters = [source for _, source, _ in added.values() if source.endswith(".tif")]
    assert sorted(Path(s).stem for s in rasters) == sorted(stems), added
    # the dialog's default destination, a temporary layer, is kept on disk beside the rasters, and loaded
    _, source, features = added["Best guesses"]
    assert Path(source.split("|")[0]).name == "best_guesses.gpkg" and features == 2, added
    assert "2 photo(s) geolocated, 0 failed" in run["log"], run["log"]


def test_the_processing_batch_dialog_runs_each_row_and_loads_layers_only_when_asked(desktop):
    """Processing's batch dialog, two rows typed into its table and Run clicked: each row's folder was geolocated
    into its own output folder (the batch runs on QGIS's main thread); no layer was loaded with the dialog's "Load
    layers on completion" off, its default, and each row's raster and best guesses were with it on."""
    _, report, _ = desktop
    batch = report["processing_batch"]
    assert batch["rows"] == 2
    stems = sorted(p.rsplit(".", 1)[0] for p in PHOTOS)
    quiet, loading = batch["runs"]
    for run in (quiet, loading):
        assert "executions failed" not in run["log"], run["log"]
        assert run["log"].count("1 photo(s) geolocated, 0 failed") == 2, run["log"]
        for row, photo in enumerate(PHOTOS):
            stem = photo.rsplit(".", 1)[0]
            assert {f"{stem}.tif", f"{stem}.gpkg", "best_guesses.gpkg"} <= set(run["files"][f"row{row}"]), run
    assert (quiet["load_layers"], quiet["layers_added"]) == (False, []), quiet
    assert loading["load_layers"] and all(valid for _, valid, _ in loading["layers_added"]), loading
    loaded = sorted(Path(source.split("|")[0]).stem for _, _, source in loading["layers_added"])
    assert loaded == sorted(["best_guesses"] * 2 + stems), loading["layers_added"]


def test_installing_the_zip_over_the_running_plugin_leaves_one_of_everything(desktop):
    """QGIS's own Install from ZIP (pyplugin_installer), over the plugin in use: QGIS unloads and reloads it, and
    one toolbar, one of each action and one Processing provider remain."""
    _, report, _ = desktop
    before, after = report["reinstall"]["before"], report["reinstall"]["after"]
    assert report["reinstall"]["reloaded"], report["reinstall"]  # a new instance of the plugin is active
    assert report["reinstall"]["old_instance_freed"], report["reinstall"]  # nothing of QGIS keeps the old one
    assert after == before, (before, after)
    assert before["toolbars"] == 1 and before["providers"] == ["geoplonk"]
    assert len(before["actions"]) == len(set(before["actions"])) >= 10, before


def test_with_nothing_selected_the_button_opens_the_file_dialog_and_geolocates_what_is_chosen(desktop):
    """QGIS's real file dialog, opened by the toolbar button of the reinstalled plugin: it opens in the home folder,
    lists the photos and not the text file beside them once it has read the folder (its filter), the two photos
    typed into it are geolocated, and their folder is stored as where the dialog opens next."""
    _, report, _ = desktop
    dialog = report["file_dialog"]
    assert dialog["opened_in"] == dialog["home"] and dialog["remembered"] == dialog["directory"], dialog
    assert dialog["title"] == "Geolocate photos" and dialog["filters"][0].startswith("Photos (*.jpg"), dialog
    assert dialog["listed"] == sorted(PHOTOS), dialog
    job = dialog["job"]
    assert (job["ok"], job["failed"], job["error"]) == (2, 0, ""), job
    assert sorted(Path(p).name for p in job["paths"]) == sorted(PHOTOS), job
    assert {str(Path(p).parent) for p in job["paths"]} == {dialog["directory"]}, job


def test_the_settings_dialog_lists_the_servers_models_and_saves_what_is_chosen(desktop):
    """GeoPlonk settings from its action: Test connection (in the background) fills the model list with the server's
    models and the picked one's card; the model picked and the samples typed in are saved by OK."""
    _, report, _ = desktop
    dialog = report["settings_dialog"]
    assert dialog["models"][0].startswith("server default") and "earth-tiles" in dialog["models"], dialog
    assert dialog["info"].startswith("Connected: GeoPlonk server"), dialog
    assert dialog["picked_before"] == 0 and dialog["picked"] == [dialog["models"].index("earth-tiles"), "earth-tiles"]
    assert dialog["card"].startswith("earth-tiles: for overhead views"), dialog
    assert dialog["saved"] == {"model": "earth-tiles", "samples": 512}, dialog
