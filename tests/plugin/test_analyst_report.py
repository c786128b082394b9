"""Issue 23's case report from the plugin: a right-click on a result group in a real QgsLayerTreeView offers
"Open case report" below QGIS's own entries; choosing it renders the group's map with QGIS and writes one
self-contained HTML file holding that picture, the claim verdicts and the record.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from analyst_inputs import geotagged_photo
from qgis.core import QgsProject
from qgis.PyQt.QtGui import QImage
from test_plugin_headless import result_groups, run_action
from tree_menu import right_click_and_choose

from qgis_plugin import layers


@pytest.fixture
def layer_tree_view(qgis_iface, qgis_parent, monkeypatch):
    """A real Layers panel view of the project, with a menu provider offering one of QGIS's own actions;
    the plugin finds it through iface.layerTreeView() when it loads (request this fixture before `plugin`)."""
    from qgis.core import QgsLayerTreeModel
    from qgis.gui import QgsLayerTreeView, QgsLayerTreeViewMenuProvider
    from qgis.PyQt import sip
    from qgis.PyQt.QtWidgets import QMenu

    view = QgsLayerTreeView(qgis_parent)
    model = QgsLayerTreeModel(QgsProject.instance().layerTreeRoot(), view)
    view.setModel(model)

    class Provider(QgsLayerTreeViewMenuProvider):
        def createContextMenu(self):  # noqa: N802 - QGIS's name
            menu = QMenu()
            rename = view.defaultActions().actionRenameGroupOrLayer(menu)
            sip.transferto(rename, menu)  # a factory's result: C++ keeps it, as QGIS's own provider does
            menu.addAction(rename)
            return menu

    provider = Provider()
    view.setMenuProvider(provider)
    view.resize(400, 500)
    view.show()
    monkeypatch.setattr(qgis_iface, "layerTreeView", lambda: view, raising=False)
    yield view
    view.hide()


def test_context_menu_writes_a_self_contained_report_with_the_qgis_picture(layer_tree_view, plugin, plugin_settings,
                                                                           photo_dir, wait_for_task, tmp_path):
    photo = geotagged_photo(photo_dir / "harbour.jpg", tmp_path / "tower.jpg")
    plugin.analyst.action_claim_exif.setChecked(True)
    plugin.choose_files = lambda: [str(photo)]
    opened: list[Path] = []
    plugin.open_file = opened.append
    assert run_action(plugin, plugin.action_geolocate, wait_for_task).ok == 1
    (group,) = result_groups(QgsProject.instance()).values()
    model = layer_tree_view.layerTreeModel()
    layer_tree_view.setCurrentIndex(model.index(model.rowCount() - 1, 0))  # the basemap: the click selects the group

    index = layer_tree_view.layerTreeModel().node2index(group)
    entries = right_click_and_choose(layer_tree_view, index, "Open case report")
    assert entries == ["Re&name Group", "Open case report"]  # below QGIS's own entry
    report = Path(plugin_settings.output_folder) / "tower.html"
    assert opened == [report] and report.is_file()

    page = report.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", page), "the report refers to another file"
    assert "<link" not in page and "url(" not in page and "<script" not in page
    (encoded,) = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    picture = QImage.fromData(base64.b64decode(encoded), "PNG")
    assert not picture.isNull() and picture.width() == 1200
    colours = {picture.pixel(x, y) for x in range(0, picture.width(), 7) for y in range(0, picture.height(), 7)}
    assert len(colours) > 30, "the map picture is blank"
    artifacts = Path(__file__).resolve().parents[1] / "artifacts"
    artifacts.mkdir(exist_ok=True)
    picture.save(str(artifacts / "case-report-map.png"))  # git-ignored; for looking at the picture
    assert "Rendered by QGIS 3." in page
    summary = json.loads(report.with_suffix(".json").read_text())
    (claim,) = summary["claims"]
    assert claim["source"] == "exif"
    assert claim["words"].replace("'", "&#x27;") in page
    assert "GeoPlonk case report" in page and "tower.jpg" in page
    assert "Case report written" in " ".join(plugin.iface.messageBar().get_messages(0))


def test_no_result_group_selected_is_said(layer_tree_view, plugin):
    opened: list[Path] = []
    plugin.open_file = opened.append
    assert plugin.open_case_report() is None and opened == []
    assert "Select a GeoPlonk result group in the Layers panel first" in " ".join(
        plugin.iface.messageBar().get_messages(1))


def test_the_picture_shows_the_group_not_the_other_results(plugin, plugin_settings, photos, wait_for_task):
    """Two results: each report's picture is drawn from its own group's layers only."""
    from qgis_plugin.report import group_layers

    plugin.choose_files = lambda: photos
    assert run_action(plugin, plugin.action_geolocate, wait_for_task).ok == 2
    groups = result_groups(QgsProject.instance())
    for name, group in groups.items():
        drawn = group_layers(group, QgsProject.instance())
        own = {n.layer().id() for n in group.findLayers()}
        assert drawn and all(lyr.id() in own or lyr.customProperty(layers.BASEMAP_PROPERTY) for lyr in drawn), name
        assert any(lyr.customProperty(layers.BASEMAP_PROPERTY) for lyr in drawn)  # the world map underneath
