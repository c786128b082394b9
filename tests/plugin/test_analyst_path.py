"""The analyst's path through the widgets a person uses (toolbar action, settings dialog buttons,
message bar, Layers panel), in headless QGIS against a real `geoplonk serve`.  The Browser dock, the basemap
and the label settings are checked in real desktop QGIS by test_desktop.py.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from qgis.core import QgsFeature, QgsField, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QElapsedTimer, Qt, QTimer, QVariant
from qgis.PyQt.QtTest import QTest
from test_plugin_headless import bar_messages, by_role, result_groups, run_action

from geoplonk_service import protocol as P
from geoplonk_service.launcher import free_port
from geoplonk_service.protocol import job_units
from qgis_plugin import layers
from qgis_plugin.progress import STAGE_ORDER, STAGE_SHARE, JobProgress
from qgis_plugin.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def photo_layer(paths: list[str | None], name: str = "field photos") -> QgsVectorLayer:
    """A memory point layer with a `photo` field, every feature selected."""
    layer = QgsVectorLayer("Point?crs=EPSG:4326", name, "memory")
    layer.dataProvider().addAttributes([QgsField("name", QVariant.String), QgsField("photo", QVariant.String)])
    layer.updateFields()
    for i, path in enumerate(paths):
        feature = QgsFeature(layer.fields())
        feature.setAttributes([f"p{i}", path])
        layer.dataProvider().addFeature(feature)
    QgsProject.instance().addMapLayer(layer)
    layer.selectAll()
    return layer


def messages_of(plugin, level: int) -> list[str]:
    return list(plugin.iface.messageBar().get_messages(level))


# --- gap 3: which model ran, and the warning when it does not fit the photo -------------------------------


def test_groups_and_map_tips_name_the_model_and_ground_photos_get_a_warning(plugin, plugin_settings, photo_dir,
                                                                            wait_for_task, tmp_path):
    from PIL import Image

    ground = tmp_path / "street.jpg"  # a 320 x 240 camera frame with camera EXIF
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS 5D"
    exif.get_ifd(0x8769)[0x920A] = 35.0
    Image.open(photo_dir / "harbour.jpg").save(ground, "JPEG", exif=exif)
    plugin.choose_files = lambda: [str(ground)]
    plugin.iface.messageBar().clear_messages()

    assert run_action(plugin, plugin.action_geolocate, wait_for_task).ok == 1
    (group,) = result_groups(QgsProject.instance()).values()
    assert group.name() == "street.jpg · earth-tiles"
    places = by_role(group)[layers.PLACES_NAME].layer()
    fields = places.fields().names()  # gap 2: the GeoPackage names what its numbers are
    assert {"p_within_100km", "p_within_500km", "basin_share"} <= set(fields) and "probability" not in fields
    assert "within 100 km" in places.labeling().settings().fieldName
    tip = places.mapTipTemplate()
    assert "within 100 km" in tip and "basin share" in tip
    assert "Model: earth-tiles" in tip and "expects overhead views" in tip
    (warnings,) = messages_of(plugin, 1)  # the job's one message, a warning: its photo's model warnings in it
    assert "street.jpg: check the model" in warnings and "expects overhead views" in warnings, warnings
    assert "Canon" in warnings and "320 x 240" in warnings  # and not square

    summary = json.loads(Path(group.customProperty(layers.GROUP_PROPERTY)).read_text())
    assert len(summary["warnings"]) == 2  # recorded in the summary


def test_model_picker_is_filled_from_the_servers_info_with_cards(plugin, plugin_settings, qgis_iface, qtbot):
    from qgis_plugin.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings.load(), qgis_iface.mainWindow(), connect=plugin.connect)
    QTest.mouseClick(dialog.test_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not dialog.testing(), timeout=60000)
    assert dialog.info_label.text().startswith("Connected"), dialog.info_label.text()
    names = [dialog.model.itemText(i) for i in range(dialog.model.count())]
    assert names[0] == "server default (earth-tiles)" and "earth-tiles" in names
    assert dialog.model_card.text().startswith("earth-tiles: for overhead views")
    assert "efficientnet-lite0" in dialog.model_card.text() and "MIT" in dialog.model_card.text()
    dialog.model.setCurrentIndex(names.index("earth-tiles"))
    assert dialog.settings().model == "earth-tiles"
    assert "not ground photos" in dialog.model.itemData(names.index("earth-tiles"), Qt.ToolTipRole)
    dialog.deleteLater()


# --- gap 4: Test connection never freezes QGIS ----------------------------------------------------------------


def test_test_connection_with_a_hanging_start_command_keeps_the_event_loop_running(plugin, plugin_settings,
                                                                                  qgis_iface, qgis_app):
    from qgis_plugin.settings_dialog import SettingsDialog

    settings = Settings.load()
    settings.endpoint = f"tcp://127.0.0.1:{free_port()}"
    settings.auto_start = True
    settings.start_command = f"{sys.executable} -c \"import time; time.sleep(40)\""  # never says READY
    dialog = SettingsDialog(settings, qgis_iface.mainWindow(), connect=plugin.connect)
    dialog.show()
    stalls: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.elapsed()]

    def beat():
        now = clock.elapsed()
        stalls.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(beat)
    timer.start(20)
    QTest.mouseClick(dialog.test_button, Qt.LeftButton)  # the button a person presses
    states = set()
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        qgis_app.processEvents()
        states.add(dialog.info_label.text().split(" …")[0])
        time.sleep(0.005)
    assert dialog.testing() and not dialog.test_button.isEnabled() and dialog.cancel_test_button.isEnabled()
    assert any(s.startswith("Connecting to the GeoPlonk server") for s in states), states
    QTest.mouseClick(dialog.cancel_test_button, Qt.LeftButton)
    timer.stop()
    assert not dialog.testing() and dialog.info_label.text() == "Test cancelled."
    assert dialog.test_button.isEnabled()
    assert len(stalls) > 100 and max(stalls) < 200, f"longest event-loop stall {max(stalls)} ms"
    dialog.deleteLater()


# --- gap 5: results in a lasting folder -----------------------------------------------------------------------


def test_unsaved_project_results_last_after_the_temp_folder_is_cleared(plugin, plugin_settings, photos,
                                                                        wait_for_task, tmp_path, monkeypatch):
    settings = Settings.load()
    settings.output_folder = ""  # the default
    settings.save()
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    plugin.choose_files = lambda: photos[:1]
    assert not QgsProject.instance().fileName()

    report = run_action(plugin, plugin.action_geolocate, wait_for_task)
    assert report.ok == 1
    results = home / "GeoPlonk" / "results"
    assert (results / "harbour.tif").is_file()
    done = " ".join(bar_messages(plugin))
    assert f'<a href="{results.as_uri()}">{results}</a>' in done, done  # where, as a link that opens it

    project = QgsProject.instance()
    path = tmp_path / "study" / "analysis.qgz"
    path.parent.mkdir()
    assert project.write(str(path))
    shutil.rmtree(Path(tempfile.gettempdir()) / "geoplonk", ignore_errors=True)  # "clear the temp folder"
    project.clear()
    assert project.read(str(path))
    loaded = list(project.mapLayers().values())
    assert len(loaded) >= 5 and all(layer.isValid() for layer in loaded), [
        (layer.name(), layer.source()) for layer in loaded if not layer.isValid()]
    assert all(str(results) in layer.source() for layer in loaded if layers.layer_role(layer))


# --- gap 6: empty or missing photo paths ----------------------------------------------------------------------


def test_all_empty_photo_fields_open_no_dialog_and_say_why(plugin, plugin_settings, qgis_iface):
    layer = photo_layer([None, "", "  "])
    qgis_iface.setActiveLayer(layer)
    plugin.action_geolocate.trigger()  # the fixture fails the test if a file dialog opens
    assert plugin.task is None
    text = " ".join(messages_of(plugin, 1))
    assert "No photos to geolocate" in text and "3 of the 3 selected features" in text and "empty" in text, text


def test_a_mix_geolocates_the_good_rows_and_counts_the_skipped(plugin, plugin_settings, photos, wait_for_task,
                                                               qgis_iface):
    layer = photo_layer([photos[0], None, photos[1], "/nowhere/gone.jpg"])
    qgis_iface.setActiveLayer(layer)
    report = run_action(plugin, plugin.action_geolocate, wait_for_task)
    assert (report.ok, report.failed) == (2, 0)
    text = " ".join(messages_of(plugin, 0))
    assert "2 of the 4 selected features in 'field photos' skipped" in text, text
    assert "1 with an empty 'photo' field" in text and "1 whose photo file does not exist" in text


# --- gap 8: progress per photo and stage; a cancel reads as a cancel ------------------------------------------


def test_progress_moves_with_the_servers_stages(plugin, plugin_settings, photo_dir, wait_for_task, qtbot):
    settings = Settings.load()
    settings.samples, settings.steps, settings.resolution = 1024, 16, 1.0  # stages long enough for heartbeats
    settings.save()
    paths = [str(p) for p in sorted(photo_dir.iterdir())]
    task = plugin.geolocate(paths)
    seen: list[float] = []
    task.progressChanged.connect(seen.append)
    report = wait_for_task(plugin)
    assert report.ok == 3
    log = task.progress_log
    stages = [stage for _, stage, _ in log]
    assert {"embed", "sample", "density", "places"} <= set(stages), stages
    before = [p for _, stage, p in log[: stages.index("result")]]
    assert len({round(p) for p in before if p > 0}) >= 5, log  # steps before the first photo is done
    assert seen == sorted(seen) and seen[-1] == 100
    assert max(b - a for a, b in zip([0.0, *seen], seen, strict=False)) <= 40, log
    # from the second photo on, the server's shares, timed on the first: its sample stage starts after the first
    # photo's decode and embed took their share of its time
    first = json.loads(Path(plugin.last_groups[0].customProperty(layers.GROUP_PROPERTY)).read_text())["timings"]
    start = (first["decode"] + first["embed"]) / sum(first[stage] for stage in P.PHOTO_STAGES)
    second = next(p for _, stage, p in log[stages.index("result"):] if stage == "sample")
    assert second == pytest.approx(100 / 3 * (1 + start), abs=0.05), (start, log)
    # no still stretch (the issue saw 49 s at 0 %): every stage of every photo, and every heartbeat repeating a
    # stage that has a next one, moves the bar (each heartbeat's step: test_job_progress_moves_...)
    # (a photo's last stage, `write`, has nothing to creep towards; `queued`, between a result and the next
    # photo, starts where the result left the bar, and so does the next photo's `decode` once the server has
    # timed a photo: its share starts at 0)
    still = [(a, b) for a, b in zip(log, log[1:], strict=False)
             if b[2] <= a[2] < 100 and not a[1] == b[1] == "write" and b[1] != "queued"
             and not (a[1] == "result" and b[1] == "decode")]
    assert not still, (still, log)


def test_job_progress_moves_through_every_photo_and_heartbeat():
    """The messages of 3 photos, each stage sent three times (a stage and two heartbeats): every stage of every
    photo, and each heartbeat repeating one, raises the bar, which ends at 100."""
    stages = [s for s in STAGE_ORDER if s not in ("queued", "load")]
    bar = JobProgress(3)
    seen = [bar.update({"stage": "queued", "done": 0, "total": 3, "fraction": 0.0})]
    for done in range(3):
        for stage in stages:
            message = {"stage": stage, "done": done, "total": 3, "index": done, "fraction": done / 3}
            seen += [bar.update(message) for _ in range(3)]
    seen.append(bar.update({"stage": "write", "done": 3, "total": 3, "fraction": 1.0}))
    rises = [b > a for a, b in zip(seen, seen[1:], strict=False)]
    # only a heartbeat of `write`, the last stage, has nothing to creep towards
    assert sum(not r for r in rises) == 3 * 2, seen
    assert seen[-1] == 100.0 and max(seen[:-1]) < 100.0
    assert bar.update({"stage": "queued", "done": 0, "total": 3, "fraction": 0.0}) == 100.0  # never back
    results = JobProgress(4)
    assert [results.finished(n) for n in (1, 3, 2, 4)] == [25.0, 75.0, 75.0, 100.0]


def test_the_bar_follows_the_servers_timed_shares_of_a_photo():
    """On a CPU without bf16 units sampling takes 70 % of a photo: with the server's shares the bar stands at
    the sample stage's start and creeps towards its end, not towards the client's guess for the next stage."""
    bar = JobProgress(1)
    at_sample = bar.update({"stage": "sample", "done": 0, "total": 1, "index": 0, "fraction": 0.0,
                            "share": [0.1, 0.8]})
    assert at_sample == pytest.approx(10.0)
    creeping = [bar.update({"stage": "sample", "done": 0, "total": 1, "index": 0, "fraction": 0.0,
                            "share": [0.1, 0.8]}) for _ in range(20)]
    assert creeping == sorted(creeping) and 70 < creeping[-1] < 80  # 0.9 of the way to the stage's end
    assert bar.update({"stage": "write", "done": 0, "total": 1, "index": 0, "fraction": 0.0,
                       "share": [0.95, 1.0]}) == pytest.approx(95.0)
    # no share (the server's first photo of these settings, or an older server): the client's own guess
    assert JobProgress(1).update({"stage": "sample", "fraction": 0.0, "share": None}) == 100 * STAGE_SHARE["sample"]
    # a share of another shape is ignored, one out of range is clamped, one backwards creeps nowhere
    for odd in ("0.1,0.8", [0.1], [0.1, 0.5, 0.8], [True, False], ["0.1", "0.8"], {"start": 0.1}):
        assert JobProgress(1).update({"stage": "sample", "fraction": 0.0, "share": odd}) == \
            100 * STAGE_SHARE["sample"], odd
    assert JobProgress(1).update({"stage": "write", "fraction": 0.0, "share": [-3, 7]}) == 0.0
    backwards = JobProgress(1)
    assert [backwards.update({"stage": "sample", "fraction": 0.0, "share": [0.6, 0.2]}) for _ in range(3)] == \
        [60.0] * 3


def test_a_joint_jobs_bar_counts_the_combined_map_as_one_more_unit():
    """Two photos and their combined map: the map's stages, after the photos, move the bar below 100."""
    bar = JobProgress(job_units(2, joint=True))
    assert bar.units == 3 and job_units(2) == 2
    after_photos = bar.finished(2)
    during = [bar.update({"stage": stage, "done": 2, "total": 2, "fraction": 2 / 3}) for stage in
              ("joint", "regions", "places")]
    assert after_photos == pytest.approx(200 / 3) and during == sorted(during) and during[-1] > after_photos
    assert max(during) < 100 and bar.finished(bar.units) == 100


def test_cancel_shows_cancelled_with_the_counts(plugin, plugin_settings, photo_dir, wait_for_task, qtbot):
    settings = Settings.load()
    settings.samples, settings.steps, settings.resolution = 1024, 16, 1.0
    settings.save()
    paths = [str(p) for p in sorted(photo_dir.iterdir())] * 2
    task = plugin.geolocate(paths)
    qtbot.waitUntil(lambda: task.last_stage in ("embed", "sample") or plugin.last_report is not None, timeout=120000)
    task.cancel()
    report = wait_for_task(plugin)
    assert report.cancelled >= 1
    text = " ".join(messages_of(plugin, 1))
    assert "GeoPlonk: cancelled" in text and f"{report.cancelled} not geolocated" in text, text
    assert not [m for m in messages_of(plugin, 3) if "geolocated in" in m]  # no green "success"
    assert max(percent for *_, percent in task.progress_log) < 100  # cancelled photos do not fill the bar


# --- gap 10: files the team can read --------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_results_follow_the_users_umask(plugin, plugin_settings, photos, wait_for_task, umask):
    plugin.choose_files = lambda: photos[:1]
    old = os.umask(umask)
    try:
        assert run_action(plugin, plugin.action_geolocate, wait_for_task).ok == 1
    finally:
        os.umask(old)
    out = Path(plugin_settings.output_folder)
    for suffix in (".tif", ".gpkg", ".json"):
        mode = stat.S_IMODE((out / f"harbour{suffix}").stat().st_mode)
        assert mode == 0o666 & ~umask, (suffix, oct(mode))


# --- gap 11: small things ---------------------------------------------------------------------------------------


def test_help_link_zoom_icon_translations_and_metadata(plugin, tmp_path):
    import subprocess

    from qgis_plugin import plugin as plugin_module

    meta = configparser.ConfigParser()
    meta.read(ROOT / "metadata.txt")
    general = meta["general"]
    repo = general["repository"]
    assert general["tracker"] == f"{repo}/issues" and general["homepage"] == plugin_module.HELP_URL
    assert plugin_module.HELP_URL.startswith(repo) and plugin_module.HELP_URL.endswith("#analysts-guide-qgis")
    readme = (ROOT / "README.md").read_text()
    assert "## Analyst's guide (QGIS)" in readme  # the anchor the help link opens
    assert plugin.action_help in plugin.actions and plugin.action_help.text() == "GeoPlonk help"
    assert not plugin.action_zoom.icon().isNull()
    out = tmp_path / "geoplonk.zip"
    subprocess.run(["/usr/bin/python3", str(ROOT / "scripts/build_plugin_zip.py"), "--out", str(out)], check=True)
    names = zipfile.ZipFile(out).namelist()
    assert "geoplonk/i18n/geoplonk_en.ts" in names and "geoplonk/translation.py" in names
    sources = "".join(p.read_text() for p in (ROOT / "qgis_plugin").glob("*.py"))
    assert sources.count("tr(\"") >= 15
