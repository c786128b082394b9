"""Photo sources, settings storage and plain-language messages (no server needed)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from qgis.core import QgsSettings
from qgis.PyQt.QtCore import QSettings

from geoplonk_service import protocol as P
from geoplonk_service.photos import photos_in_folder
from qgis_plugin import messages, sources
from qgis_plugin.settings import Settings, parse_levels


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (["id", "Photo", "lat"], "Photo"),
        (["id", "PATH"], "PATH"),
        (["filepath", "image"], "filepath"),
        (["fid", "photo_path"], "photo_path"),
        (["id", "name", "when"], None),
    ],
)
def test_detect_photo_field(fields, expected):
    assert sources.detect_photo_field(fields) == expected


def test_image_formats_and_folder_listing(tmp_path):
    for name in ("a.JPG", "b.heic", "c.webp", "d.tiff", "e.png", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.name for p in photos_in_folder(tmp_path)]
    assert found == ["a.JPG", "b.heic", "c.webp", "d.tiff", "e.png"]


def test_relative_and_url_paths_resolve(tmp_path):
    assert sources.resolve_photo_path("img/x.jpg", str(tmp_path)) == str(tmp_path / "img/x.jpg")
    assert sources.resolve_photo_path("file:///data/y.jpg") == "/data/y.jpg"
    assert sources.resolve_photo_path(None) is None
    assert sources.resolve_photo_path("  ") is None


def test_settings_round_trip_through_qgssettings():
    saved = Settings.load()
    try:
        custom = Settings(
            endpoint="tcp://127.0.0.1:6123",
            start_command="/opt/geo/bin/geoplonk serve",
            auto_start=False,
            model="earth-tiles",
            samples=256,
            solver="heun",
            steps=16,
            cfg=1.5,
            resolution=0.5,
            levels=[0.5, 0.95],
            output_folder="/tmp/out",
        )
        custom.save()
        assert QgsSettings().value("geoplonk/endpoint") == "tcp://127.0.0.1:6123"
        assert QgsSettings().value("geoplonk/solver") == "heun"
        assert Settings.load() == custom
        assert custom.options() == {
            "samples": 256, "solver": "heun", "steps": 16, "cfg": 1.5, "resolution": 0.5, "levels": [0.5, 0.95],
            "model": "earth-tiles",
        }
        # unset guidance: no cfg is sent (the server uses the model's calibrated one), and it stays unset
        default = Settings(endpoint="tcp://127.0.0.1:6124")
        assert default.cfg is None and "cfg" not in default.options()
        default.save()
        assert Settings.load() == default
    finally:
        saved.save()


def test_stored_steps_without_a_solver_load_with_euler(tmp_path):
    """A solver and its steps go together: steps stored alone were chosen for euler, and keep it."""
    fresh = QSettings(str(tmp_path / "fresh.ini"), QSettings.IniFormat)
    loaded = Settings.load(fresh)
    assert (loaded.solver, loaded.steps) == (P.DEFAULT_SOLVER, P.STEPS.default)
    assert (loaded.options()["solver"], loaded.options()["steps"]) == (P.DEFAULT_SOLVER, P.STEPS.default)

    steps_only = QSettings(str(tmp_path / "steps-only.ini"), QSettings.IniFormat)
    steps_only.setValue("geoplonk/steps", 24)
    steps_only.setValue("geoplonk/samples", 512)
    loaded = Settings.load(steps_only)
    assert (loaded.solver, loaded.steps, loaded.samples) == ("euler", 24, 512)
    assert (loaded.options()["solver"], loaded.options()["steps"]) == ("euler", 24)
    # once saved, the solver is stored beside its steps and loads as chosen
    replace(loaded, solver="rk4", steps=5).save(steps_only)
    assert steps_only.value("geoplonk/solver") == "rk4"
    assert (Settings.load(steps_only).solver, Settings.load(steps_only).steps) == ("rk4", 5)

    solver_only = QSettings(str(tmp_path / "solver-only.ini"), QSettings.IniFormat)
    solver_only.setValue("geoplonk/solver", "midpoint")
    assert (Settings.load(solver_only).solver, Settings.load(solver_only).steps) == ("midpoint", P.STEPS.default)


def test_levels_parse_percent_or_fraction():
    assert parse_levels("50, 90, 99") == [0.5, 0.9, 0.99]
    assert parse_levels("0.5;0.9") == [0.5, 0.9]
    with pytest.raises(ValueError):
        parse_levels("150")


def test_settings_dialog_edits_and_validates(qgis_iface):
    from qgis_plugin.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings(), qgis_iface.mainWindow(), connect=lambda s: pytest.fail("no server needed"))
    assert (dialog.solver.currentData(), dialog.steps.value()) == (P.DEFAULT_SOLVER, P.STEPS.default)
    labels = [dialog.solver.itemText(i) for i in range(dialog.solver.count())]
    assert [dialog.solver.itemData(i) for i in range(dialog.solver.count())] == list(P.SOLVERS)
    assert labels[P.SOLVERS.index(P.DEFAULT_SOLVER)].endswith(", default")
    assert sum(", default" in t for t in labels) == 1
    assert labels[0].startswith("euler (the reference's sampler)") and labels[3].startswith("rk3 (third order")
    dialog.samples.setValue(300)
    dialog.levels.setText("50, 80")
    dialog.auto_start.setChecked(False)
    dialog.solver.setCurrentIndex(dialog.solver.findData("euler"))
    dialog.steps.setValue(32)
    edited = dialog.settings()
    assert (edited.samples, edited.levels, edited.auto_start) == (300, [0.5, 0.8], False)
    assert (edited.solver, edited.steps) == ("euler", 32)
    assert (edited.options()["solver"], edited.options()["steps"]) == ("euler", 32)
    # the guidance box starts at "model's calibrated" (no cfg sent); any value in the range is sent as is
    assert dialog.guidance.text() == "model's calibrated" and edited.cfg is None
    dialog.guidance.setValue(-0.3)
    assert dialog.settings().cfg == pytest.approx(-0.3)
    dialog.guidance.setValue(dialog.guidance.minimum())
    assert dialog.settings().cfg is None
    dialog.levels.setText("abc")
    with pytest.raises(ValueError):
        dialog.settings()
    dialog.deleteLater()
    # the combo starts at the settings' solver
    midpoint = SettingsDialog(Settings(solver="midpoint", steps=9), qgis_iface.mainWindow(),
                              connect=lambda s: pytest.fail("no server needed"))
    assert (midpoint.solver.currentData(), midpoint.steps.value()) == ("midpoint", 9)
    assert (midpoint.settings().solver, midpoint.settings().steps) == ("midpoint", 9)
    midpoint.deleteLater()


def test_pyzmq_help_names_each_platform():
    for platform, needle in (("linux", "apt install python3-zmq"), ("win32", "OSGeo4W Shell"), ("darwin", "QGIS.app")):
        title, text, details = messages.pyzmq_missing(platform)
        assert "pyzmq" in title and needle in text
        assert all(word in details for word in ("apt", "OSGeo4W", "QGIS.app"))


def test_saved_to_links_a_relative_or_odd_folder_without_raising(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = messages.saved_to("results & more")
    assert (tmp_path / "results & more").as_uri() in text.replace("&amp;", "&")
    assert "results &amp; more</a>" in text


def test_a_batch_tells_its_photos_notes_in_one_message_naming_few_and_counting_many():
    notes = messages.JobNotes()
    lines = [notes.failed(f"p{i}.jpg", "not an image") for i in range(3)]
    lines.append(notes.warned("street.jpg", "the model expects overhead views"))
    lines.append(notes.judged("tower.jpg", ["Cairo witness: likely", "EXIF GPS: unlikely"]))
    title, text, details = notes.message("GeoPlonk", "4 photos geolocated, 3 failed in 9.0 s. Saved")
    assert notes.troubled and title == "GeoPlonk"
    assert text.startswith("4 photos geolocated, 3 failed in 9.0 s. Saved. 3 failed: see \"More\".")
    assert "street.jpg: check the model: the model expects overhead views." in text
    assert "tower.jpg: Cairo witness: likely | EXIF GPS: unlikely." in text and "p0.jpg" not in text
    assert details.splitlines() == lines[:3]  # the counted notes behind "more", once: the named ones are in the text
    html = messages.details_html(text, details)
    assert html.count("p0.jpg") == 1 and html.count("street.jpg") == 1
    quiet = messages.JobNotes()
    quiet.joint_made("Joint map: a.jpg + b.jpg")
    assert not quiet.troubled
    assert quiet.message("GeoPlonk", "2 photos geolocated.")[1] == (
        "2 photos geolocated. Joint map: a.jpg + b.jpg: one map for the photos of one place is in the Layers panel.")


def test_the_photo_dialogs_open_where_photos_were_last_chosen_else_home(plugin, tmp_path, monkeypatch):
    """The start folder the plugin gives QGIS's file and folder dialogs (the desktop test drives the real file
    dialog once; here each case, with the dialogs' static calls recording what they are given)."""
    from qgis.core import QgsSettings

    from qgis_plugin import plugin as plugin_module

    QgsSettings().remove(plugin_module.LAST_PHOTO_FOLDER)
    opened_in = []
    chosen = tmp_path / "site photos"
    chosen.mkdir()

    def files_dialog(parent, title, folder, filters):  # noqa: ARG001
        opened_in.append(folder)
        return [str(chosen / "a.jpg")], ""

    def folder_dialog(parent, title, folder):  # noqa: ARG001
        opened_in.append(folder)
        return str(tmp_path)

    monkeypatch.setattr(plugin_module.QFileDialog, "getOpenFileNames", files_dialog)
    monkeypatch.setattr(plugin_module.QFileDialog, "getExistingDirectory", folder_dialog)
    home = os.path.expanduser("~")
    try:
        assert plugin._dialog_files() == [str(chosen / "a.jpg")]  # first use: home
        assert plugin._dialog_folder() == str(tmp_path)  # after a choice of files: their folder
        assert plugin._dialog_files()  # after a choice of folder: that folder
        chosen.rmdir()
        plugin._dialog_folder()  # the remembered folder is gone: home
        assert opened_in == [home, str(chosen), str(tmp_path), home], opened_in
    finally:
        QgsSettings().remove(plugin_module.LAST_PHOTO_FOLDER)
