"""The plugin's main path in headless QGIS against a real `geoplonk serve`: action -> task -> styled layers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsProject,
    QgsRasterLayer,
    QgsSingleBandPseudoColorRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QItemSelectionModel, QVariant

from geoplonk_service.launcher import free_port
from qgis_plugin import layers
from qgis_plugin.settings import Settings

# --- helpers -----------------------------------------------------------------------------


def result_groups(project: QgsProject) -> dict:
    """Result groups by the photo they are named after ("harbour.jpg · earth-tiles" -> "harbour.jpg")."""
    return {layers.photo_of_group(g): g for g in project.layerTreeRoot().children()
            if g.customProperty(layers.GROUP_PROPERTY)}


def by_role(group) -> dict:
    return {layers.layer_role(n.layer()): n for n in group.findLayers()}


def assert_result_group(group) -> None:
    """The group holds a valid pseudocolor density raster, regions and places, with files on disk."""
    by_name = by_role(group)
    assert {layers.DENSITY_NAME, layers.REGIONS_NAME, layers.PLACES_NAME, layers.SAMPLES_NAME} <= set(by_name)
    for node in by_name.values():
        layer = node.layer()
        assert layer.isValid(), layer.name()
        assert Path(layer.source().split("|")[0]).is_file(), layer.source()
    density = by_name[layers.DENSITY_NAME].layer()
    assert isinstance(density, QgsRasterLayer)
    renderer = density.renderer()
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer)
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    assert items[0].color.alpha() == 0 and items[-1].color.alpha() == 255  # negligible mass is transparent
    assert all("% per cell" in item.label for item in items)
    assert by_name[layers.REGIONS_NAME].layer().featureCount() >= 1
    assert by_name[layers.PLACES_NAME].layer().labelsEnabled()
    assert not by_name[layers.SAMPLES_NAME].isVisible()  # samples hidden by default
    json_path = Path(group.customProperty(layers.GROUP_PROPERTY))
    assert json_path.is_file() and json_path.with_suffix(".tif").is_file()


def render_canvas(qtbot, canvas, project: QgsProject, plugin):
    """Draw the project's visible layers on the canvas (zoomed to the result) and grab the picture."""
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    canvas.setLayers(project.layerTreeRoot().checkedLayers())
    with qtbot.waitSignal(canvas.mapCanvasRefreshed, timeout=30000):
        plugin.zoom_to_result()
    return canvas.grab().toImage()


def distinct_colours(image, step: int = 4) -> int:
    return len({image.pixel(x, y) for x in range(0, image.width(), step) for y in range(0, image.height(), step)})


def bar_messages(plugin) -> list[str]:
    """Every message on the stand-in message bar, whatever its level."""
    bar = plugin.iface.messageBar()
    return [m for level in (Qgis.Info, Qgis.Warning, Qgis.Critical, Qgis.Success) for m in bar.get_messages(level)]


def run_action(plugin, action, wait_for_task, timeout_s: float = 240):
    plugin.last_report = None
    plugin.task = None
    action.trigger()
    bar = plugin.iface.messageBar()
    assert plugin.task is not None, bar.get_messages(1) + bar.get_messages(2)
    return wait_for_task(plugin, timeout_s)


# --- each photo source ----------------------------------------------------------------------


def test_file_dialog_source_end_to_end(plugin, plugin_settings, photos, wait_for_task, qtbot, qgis_canvas):
    from qgis.core import QgsApplication

    plugin.choose_files = lambda: photos
    logged = []  # QGIS's log panel: loading results without claims must not warn of a missing "claims" layer

    def listen(text, tag, level):  # noqa: ARG001
        logged.append((tag, text))

    QgsApplication.messageLog().messageReceived.connect(listen)
    t0 = time.monotonic()
    try:
        report = run_action(plugin, plugin.action_geolocate, wait_for_task)
    finally:
        QgsApplication.messageLog().messageReceived.disconnect(listen)
    print(f"click-to-layers for 2 photos (tiny test model, fast options): {time.monotonic() - t0:.1f} s")
    assert (report.ok, report.failed, report.error_title) == (2, 0, "")
    project = QgsProject.instance()
    groups = result_groups(project)
    assert set(groups) == {"harbour.jpg", "desert road.png"}
    for group in groups.values():
        assert_result_group(group)
    assert layers.photo_of_group(project.layerTreeRoot().children()[0]) in groups  # results on top of the tree
    # named after the photo, not its files' stem (desert_road.*), which only a same-named photo's group shows
    assert groups["desert road.png"].name().split(layers.GROUP_SEPARATOR)[0] == "desert road.png"
    assert by_role(groups["desert road.png"])[layers.DENSITY_NAME].layer().name() == "desert road: probability"
    assert Path(plugin_settings.output_folder, "harbour.tif").is_file()
    assert [(tag, text) for tag, text in logged if tag == "OGR"] == [], logged

    image = render_canvas(qtbot, qgis_canvas, project, plugin)
    assert image.width() > 200 and image.height() > 150
    assert distinct_colours(image) > 10, "the canvas rendered blank"
    artifacts = Path(__file__).resolve().parents[1] / "artifacts"
    artifacts.mkdir(exist_ok=True)
    image.save(str(artifacts / "headless-canvas.png"))  # git-ignored; for looking at the styling
    # "Zoom to result" acted on the first result group (made current in a real Layers panel, else the last one).
    assert qgis_canvas.extent().intersects(layers.group_extent(plugin.last_groups[-1]))


def test_pyzmq_missing_is_explained_not_raised(plugin, plugin_settings, photos, monkeypatch):  # noqa: ARG001
    import sys

    monkeypatch.setitem(sys.modules, "zmq", None)  # what QGIS's Python without pyzmq does on `import zmq`
    assert plugin.geolocate(photos) is None
    critical = " ".join(plugin.iface.messageBar().get_messages(2))
    assert "pyzmq" in critical and "restart QGIS" in critical


def test_the_plugin_loads_in_a_qgis_python_without_pyzmq():
    """QGIS loads the plugin's modules before any photo is sent: none of them may need pyzmq to import, or the
    user would get an import error instead of the message above."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['zmq'] = None\n"
            "import qgis_plugin.plugin, qgis_plugin.processing.provider, qgis_plugin.layers\n"
            "print('loaded')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0 and "loaded" in run.stdout, run.stderr[-2000:]


def test_selected_features_source(plugin, plugin_settings, photos, wait_for_task, qgis_iface):  # noqa: ARG001
    layer = QgsVectorLayer("Point?crs=EPSG:4326", "geotagged photos", "memory")
    layer.dataProvider().addAttributes([QgsField("name", QVariant.String), QgsField("Photo", QVariant.String)])
    layer.updateFields()
    for i, path in enumerate([*photos, "/nowhere/not-selected.jpg"]):
        feat = QgsFeature(layer.fields())
        feat.setAttributes([f"p{i}", path])
        layer.dataProvider().addFeature(feat)
    QgsProject.instance().addMapLayer(layer)
    layer.selectByIds([f.id() for f in layer.getFeatures() if f["name"] in ("p0", "p1")])
    qgis_iface.setActiveLayer(layer)

    report = run_action(plugin, plugin.action_geolocate, wait_for_task)
    assert (report.ok, report.failed) == (2, 0)
    groups = result_groups(QgsProject.instance())
    assert set(groups) == {"harbour.jpg", "desert road.png"}
    for group in groups.values():
        assert_result_group(group)


def test_unknown_photo_field_asks_which(plugin, plugin_settings, photos, wait_for_task, qgis_iface):  # noqa: ARG001
    layer = QgsVectorLayer("Point?crs=EPSG:4326&field=id:integer&field=file_loc:string", "pics", "memory")
    for i, path in enumerate(photos):
        feat = QgsFeature(layer.fields())
        feat.setAttributes([i, path])
        layer.dataProvider().addFeature(feat)
    QgsProject.instance().addMapLayer(layer)
    layer.selectAll()
    qgis_iface.setActiveLayer(layer)
    asked = []
    plugin.choose_field = lambda names: asked.append(names) or "file_loc"

    report = run_action(plugin, plugin.action_geolocate, wait_for_task)
    assert asked == [["id", "file_loc"]]
    assert report.ok == 2


def test_browser_panel_source(plugin, plugin_settings, photos, wait_for_task, qgis_app, qgis_parent):  # noqa: ARG001
    from qgis.core import QgsBrowserProxyModel
    from qgis.gui import QgsBrowserGuiModel, QgsBrowserTreeView
    from qgis.PyQt.QtWidgets import QDockWidget

    folder = str(Path(photos[0]).parent)
    model = QgsBrowserGuiModel()
    model.initialize()
    model.addFavoriteDirectory(folder)
    proxy = QgsBrowserProxyModel()
    proxy.setBrowserModel(model)
    dock = QDockWidget("Browser", qgis_parent)
    view = QgsBrowserTreeView(dock)
    view.setModel(proxy)
    dock.setWidget(view)
    try:
        favourites = next(model.index(r, 0) for r in range(model.rowCount())
                          if model.dataItem(model.index(r, 0)).path() == "favorites:")
        model.fetchMore(favourites)
        deadline = time.monotonic() + 20
        while model.rowCount(favourites) < 1 and time.monotonic() < deadline:
            qgis_app.processEvents()
        directory = model.index(0, 0, favourites)
        model.fetchMore(directory)
        while model.rowCount(directory) < 3 and time.monotonic() < deadline:
            qgis_app.processEvents()
        for r in range(model.rowCount(directory)):
            index = model.index(r, 0, directory)
            if model.dataItem(index).path() in photos:
                view.selectionModel().select(proxy.mapFromSource(index),
                                             QItemSelectionModel.Select | QItemSelectionModel.Rows)

        report = run_action(plugin, plugin.action_geolocate, wait_for_task)
        assert (report.ok, report.failed) == (2, 0)
        assert set(result_groups(QgsProject.instance())) == {"harbour.jpg", "desert road.png"}
    finally:
        model.removeFavorite(model.index(0, 0, favourites))
        dock.deleteLater()


def test_folder_source_and_unreadable_photo_fails_alone(plugin, plugin_settings, photo_dir, wait_for_task,
                                                       tmp_path):  # noqa: ARG001
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((photo_dir / "harbour.jpg").read_bytes())
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG at all")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("ignored")
    plugin.choose_folder = lambda: str(folder)
    plugin.iface.messageBar().clear_messages()

    report = run_action(plugin, plugin.action_folder, wait_for_task)
    assert (report.ok, report.failed, report.error_title) == (1, 2, "")
    assert set(result_groups(QgsProject.instance())) == {"a.jpg"}
    # one message for the job, a warning naming each failed photo, not one message per photo
    (warning,) = plugin.iface.messageBar().get_messages(Qgis.Warning)
    assert bar_messages(plugin) == [warning]
    assert "1 photo geolocated, 2 failed" in warning and "broken.jpg: could not geolocate" in warning, warning
    assert "empty.png: could not geolocate" in warning, warning


def test_more_on_the_bar_shows_the_counted_failures_with_a_working_folder_link(
        plugin, plugin_settings, photo_dir, wait_for_task, tmp_path, qtbot, monkeypatch):  # noqa: ARG001
    """On QGIS's own message bar (not pytest-qgis's recorder): three failures are counted on the bar and listed
    once behind its "More" button, whose viewer shows the folder as a link, not as markup."""
    from qgis.gui import QgsMessageBar, QgsMessageViewer
    from qgis.PyQt.QtWidgets import QApplication, QTextBrowser, QToolButton

    folder = tmp_path / "three broken"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((photo_dir / "harbour.jpg").read_bytes())
    for name in ("b1.jpg", "b2.jpg", "b3.png"):
        (folder / name).write_bytes(b"not an image")
    bar = QgsMessageBar()
    monkeypatch.setattr(plugin.iface, "messageBar", lambda: bar)
    plugin.choose_folder = lambda: str(folder)

    report = run_action(plugin, plugin.action_folder, wait_for_task)
    assert (report.ok, report.failed) == (1, 3)
    (item,) = [i for i in bar.items() if i.title() == "GeoPlonk"]
    assert "1 photo geolocated, 3 failed" in item.text() and '3 failed: see "More"' in item.text()
    assert "b1.jpg" not in item.text()
    (more,) = item.findChildren(QToolButton)
    more.click()
    viewers = [w for w in QApplication.topLevelWidgets() if isinstance(w, QgsMessageViewer) and w.isVisible()]
    assert len(viewers) == 1
    shown = viewers[0].findChild(QTextBrowser)
    text = shown.toPlainText()
    assert "<a href" not in text and f"Results saved in {plugin.last_out_dir}" in text, text
    for name in ("b1.jpg", "b2.jpg", "b3.png"):
        assert text.count(f"{name}: could not geolocate this photo") == 1, text
    assert f'href="{Path(plugin.last_out_dir).as_uri()}"' in shown.toHtml()
    viewers[0].close()


# --- running -----------------------------------------------------------------------------------


def test_cancel_mid_run(plugin, plugin_settings, photo_dir, wait_for_task, qtbot):
    settings = Settings.load()
    settings.samples, settings.steps, settings.resolution = 1024, 16, 1.0  # slow enough to cancel
    settings.save()
    paths = [str(p) for p in sorted(photo_dir.iterdir())] * 2
    t0 = time.monotonic()
    task = plugin.geolocate(paths)
    qtbot.waitUntil(lambda: task.last_stage in ("embed", "sample") or plugin.last_report is not None, timeout=120000)
    t_cancel = time.monotonic()
    task.cancel()
    report = wait_for_task(plugin)
    assert report.error_title == ""
    assert report.cancelled >= 1 and report.ok < len(paths)
    assert report.ok + report.failed + report.cancelled == len(paths)
    assert len(result_groups(QgsProject.instance())) == report.ok
    print(f"cancel: {report.ok} ok, {report.cancelled} cancelled, {time.monotonic() - t0:.1f} s in all, "
          f"{time.monotonic() - t_cancel:.1f} s from cancel to report")


def test_server_down_gives_a_clear_message(plugin, plugin_settings, photos, wait_for_task):
    settings = Settings.load()
    settings.endpoint = f"tcp://127.0.0.1:{free_port()}"
    settings.auto_start = False
    settings.timeout_s = 1.0
    settings.save()
    plugin.choose_files = lambda: photos

    report = run_action(plugin, plugin.action_geolocate, wait_for_task)
    assert report.ok == 0 and report.failed == 2
    critical = plugin.iface.messageBar().get_messages(2)
    assert any("No GeoPlonk server answers at " + settings.endpoint in m for m in critical), critical
    assert not result_groups(QgsProject.instance())


def test_failed_auto_start_shows_the_servers_own_error(plugin, plugin_settings, photos, wait_for_task):
    import sys

    settings = Settings.load()
    settings.endpoint = f"tcp://127.0.0.1:{free_port()}"
    settings.timeout_s = 1.0
    settings.auto_start = True
    settings.start_command = f"{sys.executable} -c \"import sys; sys.exit('model earth-tiles not found: copy it in')\""
    settings.save()
    plugin.choose_files = lambda: photos

    report = run_action(plugin, plugin.action_geolocate, wait_for_task)
    assert report.ok == 0
    critical = " ".join(plugin.iface.messageBar().get_messages(2))
    assert "did not start" in critical and "model earth-tiles not found: copy it in" in critical


def test_auto_start_uses_and_stops_a_local_server(plugin, plugin_settings, photos, wait_for_task,
                                                  geoplonk_server_command):
    settings = Settings.load()
    settings.endpoint = f"tcp://127.0.0.1:{free_port()}"
    settings.auto_start = True
    settings.start_command = geoplonk_server_command
    settings.save()
    plugin.choose_files = lambda: photos[:1]

    report = run_action(plugin, plugin.action_geolocate, wait_for_task, timeout_s=400)
    assert (report.ok, report.error_title) == (1, "")
    server = plugin.servers.local_server
    assert server is not None and server.running
    plugin.unload()  # QGIS closing or the plugin unloaded: the server goes with it
    assert not server.running
    plugin.initGui()  # the fixture unloads again


def test_unloading_leaves_nothing_behind_and_loading_again_makes_one_of_each(plugin):
    """QGIS's Install from ZIP over an installed plugin unloads it and loads it again: its actions, toolbar and
    Processing provider must go with the unload and come back once, not pile up in the main window."""
    from plugin_census import plugin_census

    main = plugin.iface.mainWindow()
    loaded = plugin_census(main)
    assert len(loaded["actions"]) == len(set(loaded["actions"])) >= 10, loaded
    assert (loaded["toolbars"], loaded["providers"]) == (1, ["geoplonk"]), loaded
    plugin.unload()
    assert plugin_census(main) == {"actions": [], "toolbars": 0, "providers": []}
    plugin.initGui()  # the fixture unloads again
    assert plugin_census(main) == loaded


# --- what lands in the project ------------------------------------------------------------------


def test_project_reopens_with_the_same_styled_layers(plugin, plugin_settings, photos, wait_for_task, tmp_path):
    plugin.choose_files = lambda: photos[:1]
    report = run_action(plugin, plugin.action_geolocate, wait_for_task)
    assert report.ok == 1
    project = QgsProject.instance()
    before = sorted((lyr.name(), lyr.source()) for lyr in project.mapLayers().values())
    path = tmp_path / "analysis.qgz"
    assert project.write(str(path))
    project.clear()
    assert project.read(str(path))
    after = sorted((lyr.name(), lyr.source()) for lyr in project.mapLayers().values())
    assert after == before
    (group,) = result_groups(project).values()
    assert_result_group(group)
    density = next(n.layer() for n in group.findLayers() if layers.layer_role(n.layer()) == layers.DENSITY_NAME)
    assert "harbour" in density.source()


def test_same_named_photos_of_two_folders_get_groups_and_layers_told_apart(plugin, plugin_settings, photo_dir,
                                                                          wait_for_task, tmp_path):
    """a/IMG_0001.jpg and b/IMG_0001.jpg: saved as IMG_0001.* and IMG_0001_2.*, their groups' titles and layers'
    names differ by that stem, both groups still name the photo, and their case reports do not overwrite."""
    from qgis.PyQt.QtGui import QImage

    from qgis_plugin.report import write_case_report

    same = [tmp_path / "a" / "IMG_0001.jpg", tmp_path / "b" / "IMG_0001.jpg"]
    for path, source in zip(same, ("harbour.jpg", "desert road.png"), strict=True):
        path.parent.mkdir()
        assert QImage(str(photo_dir / source)).save(str(path), "JPEG")
    plugin.choose_files = lambda: [str(p) for p in same]
    report = run_action(plugin, plugin.action_geolocate, wait_for_task)
    assert (report.ok, report.failed) == (2, 0)
    groups = {Path(g.customProperty(layers.GROUP_PROPERTY)).stem: g
              for g in QgsProject.instance().layerTreeRoot().children() if g.customProperty(layers.GROUP_PROPERTY)}
    assert set(groups) == {"IMG_0001", "IMG_0001_2"}
    assert {stem: g.name().split(layers.GROUP_SEPARATOR)[0] for stem, g in groups.items()} == {
        "IMG_0001": "IMG_0001.jpg", "IMG_0001_2": "IMG_0001.jpg (IMG_0001_2)"}
    assert [layers.photo_of_group(g) for g in groups.values()] == ["IMG_0001.jpg", "IMG_0001.jpg"]
    names = {stem: {n.layer().name() for n in g.findLayers()} for stem, g in groups.items()}
    assert not names["IMG_0001"] & names["IMG_0001_2"], names
    for stem, group in groups.items():
        assert_result_group(group)
        density = by_role(group)[layers.DENSITY_NAME].layer()
        assert density.name() == f"{stem}: probability" and Path(density.source()).stem == stem
    pages = {stem: write_case_report(g) for stem, g in groups.items()}
    out = Path(plugin_settings.output_folder)
    assert pages == {"IMG_0001": out / "IMG_0001.html", "IMG_0001_2": out / "IMG_0001_2.html"}
    assert all("IMG_0001.jpg" in page.read_text(encoding="utf-8") for page in pages.values())


def test_map_tip_shows_thumbnail_localizability_and_best_guess(plugin, plugin_settings, photos, wait_for_task):
    plugin.choose_files = lambda: photos[:1]
    assert run_action(plugin, plugin.action_geolocate, wait_for_task).ok == 1
    (group,) = result_groups(QgsProject.instance()).values()
    places = next(n.layer() for n in group.findLayers() if layers.layer_role(n.layer()) == layers.PLACES_NAME)
    tip = places.mapTipTemplate()
    assert Path(photos[0]).name in tip and "<img src=\"file://" in tip
    assert "Localizability" in tip and "Best guess" in tip


@pytest.mark.parametrize("level", [0.5, 0.9, 0.99])
def test_region_labels(level):
    assert layers.level_label(level) == f"{level * 100:g} %"


def test_exif_position_shown_with_its_error(plugin, plugin_settings, photo_dir, wait_for_task, tmp_path):
    from PIL import Image  # Debian's Pillow, in QGIS's Python here; the plugin itself never needs it

    photo = tmp_path / "geotagged.jpg"
    exif = Image.Exif()
    exif[0x8825] = {  # GPSInfo: 48.8584 N, 2.2945 E
        1: "N", 2: (48.0, 51.0, 30.24), 3: "E", 4: (2.0, 17.0, 40.2), 0: b"\x02\x03\x00\x00",
    }
    Image.open(photo_dir / "harbour.jpg").save(photo, "JPEG", exif=exif)
    plugin.choose_files = lambda: [str(photo)]

    assert run_action(plugin, plugin.action_geolocate, wait_for_task).ok == 1
    (group,) = result_groups(QgsProject.instance()).values()
    exif_layer = next(n.layer() for n in group.findLayers() if layers.layer_role(n.layer()) == layers.EXIF_NAME)
    (feature,) = list(exif_layer.getFeatures())
    point = feature.geometry().asPoint()
    assert (point.y(), point.x()) == pytest.approx((48.8584, 2.2945), abs=1e-3)
    assert feature["error_km"] >= 0 and exif_layer.labelsEnabled()


def test_settings_dialog_test_connection_shows_server_info(plugin, plugin_settings, qgis_iface):
    from qgis_plugin.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings.load(), qgis_iface.mainWindow(), connect=plugin.connect)
    text = dialog.test_connection()
    assert "Device: cpu" in text and "Models: " in text and "none reported" not in text, text
    assert dialog.info_label.text() == text
    dialog.endpoint.setText(f"tcp://127.0.0.1:{free_port()}")
    dialog.auto_start.setChecked(False)
    assert "No GeoPlonk server answers" in dialog.test_connection()
    dialog.deleteLater()
