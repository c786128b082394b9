"""Issue 23 from the toolbar, with the real canvas and widgets: a claim clicked on the map, from selected points
or from the photo's EXIF GPS; an area of interest from selected polygons; "Geolocate as one place".  The result
groups load the real GeoPackages: the claims layer (labels and map tip with the verdict's words) and the joint
map as one group named for its photos.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from analyst_inputs import EUROPE, EXIF_LATLON, geotagged_photo, inside_ring, memory_layer, to_crs
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsExpression,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QPoint, Qt
from qgis.PyQt.QtTest import QTest
from test_plugin_headless import bar_messages, by_role, result_groups, run_action

from qgis_plugin import layers

VERDICTS = ("likely under the model", "plausible under the model", "unlikely under the model",
            "very unlikely under the model")
PARIS = (2.35, 48.85)  # lon, lat


def messages_of(plugin, level: int) -> str:
    return " ".join(plugin.iface.messageBar().get_messages(level))


def evaluate(template: str, layer, feature, expression: bool = False) -> str:
    """A label expression or a map tip template, evaluated on one feature as QGIS draws it."""
    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    context.setFeature(feature)
    if expression:
        return str(QgsExpression(template).evaluate(context))
    return QgsExpression.replaceExpressionText(template, context)


def click_on_canvas(canvas, lon_lat: tuple[float, float], crs: str = "EPSG:3857") -> QPoint:
    """Show the area round `lon_lat` in `crs` and click it with the mouse, as the analyst does."""
    (x, y), = to_crs([lon_lat], crs)
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem(crs))
    canvas.setExtent(QgsRectangle(x - 2e5, y - 2e5, x + 2e5, y + 2e5))
    canvas.refresh()
    pixel = canvas.getCoordinateTransform().transform(QgsPointXY(x, y))
    pos = QPoint(round(pixel.x()), round(pixel.y()))
    QTest.mouseClick(canvas.viewport(), Qt.LeftButton, Qt.NoModifier, pos)
    return pos


def test_clicking_the_canvas_sets_the_claim_then_gives_the_canvas_back(plugin, qgis_canvas, qgis_app):
    from qgis.gui import QgsMapToolPan

    pan = QgsMapToolPan(qgis_canvas)
    qgis_canvas.setMapTool(pan)
    plugin.analyst.action_claim_click.trigger()
    assert qgis_canvas.mapTool() is plugin.analyst.claim_tool
    click_on_canvas(qgis_canvas, PARIS)
    qgis_app.processEvents()
    (claim,) = plugin.analyst.analysis.claims
    # one pixel of a 400 km wide view is well under a kilometre
    assert (claim["lon"], claim["lat"]) == pytest.approx(PARIS, abs=0.02) and claim["source"] == "click"
    assert qgis_canvas.mapTool() is pan
    assert "Claim set at the clicked point" in messages_of(plugin, 0) and "1 claim (clicked point" in \
        messages_of(plugin, 0)


def test_the_click_hint_leaves_the_bar_with_the_click_or_another_tool(plugin, qgis_canvas, qgis_app):
    from qgis.gui import QgsMapToolPan
    from qgis.PyQt import sip

    bar = plugin.iface.messageBar()
    plugin.analyst.action_claim_click.trigger()
    hint = plugin.analyst._click_hint
    assert hint in bar.items() and "Click the claimed location" in hint.text()
    qgis_canvas.setMapTool(QgsMapToolPan(qgis_canvas))  # the analyst picks another tool instead
    qgis_app.processEvents()
    assert plugin.analyst._click_hint is None and hint not in bar.items()
    plugin.analyst.action_claim_click.trigger()
    hint = plugin.analyst._click_hint
    bar.popWidget(hint)  # its time ran out: QGIS deletes it
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    assert sip.isdeleted(hint)
    click_on_canvas(qgis_canvas, PARIS)  # the click still sets the claim, and ending the gone hint is harmless
    qgis_app.processEvents()
    assert plugin.analyst._click_hint is None and plugin.analyst.analysis.claims[0]["source"] == "click"


def test_bad_inputs_are_named_in_the_message_bar(plugin, qgis_iface):
    roads = memory_layer("LineString", "roads", [[(0, 0), (1, 1)]])
    roads.selectAll()
    qgis_iface.setActiveLayer(roads)
    plugin.analyst.action_aoi.trigger()
    plugin.analyst.action_claim_layer.trigger()
    areas = memory_layer("Polygon", "countries", [EUROPE])
    qgis_iface.setActiveLayer(areas)
    plugin.analyst.action_aoi.trigger()  # nothing selected
    towns = memory_layer("Point", "towns", [PARIS])
    qgis_iface.setActiveLayer(towns)
    plugin.analyst.action_claim_layer.trigger()  # nothing selected
    plugin.analyst.choose_weight = lambda current: 1.5
    plugin.analyst.action_aoi_weight.trigger()
    warnings = messages_of(plugin, 1)
    assert "'roads' holds line features, not polygons" in warnings
    assert "'roads' holds line features, not points: a claim is a point" in warnings
    assert "No polygon selected in 'countries'" in warnings
    assert "No feature is selected in 'towns': select the claimed points first" in warnings
    assert "weight outside the area must be a number in [0, 1], got 1.5" in warnings
    assert plugin.analyst.analysis.options() == {}


def test_claims_and_area_reach_the_layers_labels_and_map_tips(plugin, plugin_settings, photo_dir, wait_for_task,
                                                              qgis_iface, tmp_path):
    photo = geotagged_photo(photo_dir / "harbour.jpg", tmp_path / "tower.jpg")
    witnesses = memory_layer("Point", "witnesses", to_crs([(31.2, 30.0), (PARIS[0], PARIS[1])], "EPSG:3857"),
                             crs="EPSG:3857", labels=["Cairo witness", "Paris witness"])
    witnesses.selectAll()
    qgis_iface.setActiveLayer(witnesses)
    plugin.analyst.action_claim_layer.trigger()
    plugin.analyst.action_claim_exif.setChecked(True)
    areas = memory_layer("Polygon", "regions", [to_crs(EUROPE, "EPSG:3857")], crs="EPSG:3857", labels=["Europe"])
    areas.selectAll()
    qgis_iface.setActiveLayer(areas)
    plugin.analyst.action_aoi.trigger()
    plugin.analyst.choose_weight = lambda current: 0.05
    plugin.analyst.action_aoi_weight.trigger()
    case = messages_of(plugin, 0)
    assert "2 claims (" in case and "Cairo witness" in case and "each photo's EXIF GPS" in case
    assert "area of interest 'regions' (1 polygon), outside it weighted 0.05" in case

    areas.removeSelection()  # the area is set; the photo comes from the file dialog
    plugin.choose_files = lambda: [str(photo)]
    plugin.iface.messageBar().clear_messages()
    assert run_action(plugin, plugin.action_geolocate, wait_for_task).ok == 1
    (group,) = result_groups(QgsProject.instance()).values()
    summary = json.loads(Path(group.customProperty(layers.GROUP_PROPERTY)).read_text())
    assert summary["aoi"]["weight"] == pytest.approx(0.05)
    claims = by_role(group)[layers.CLAIMS_NAME].layer()
    assert claims.source().split("|")[0] == str(Path(plugin_settings.output_folder) / "tower.gpkg")
    assert claims.source().endswith("layername=claims") and claims.isValid()
    features = list(claims.getFeatures())
    assert [f["label"] for f in features] == [c["label"] for c in summary["claims"]]
    assert sorted(f["label"] for f in features) == ["Cairo witness", "EXIF GPS", "Paris witness"]
    exif_claim = features[-1].geometry().asPoint()
    assert (exif_claim.y(), exif_claim.x()) == pytest.approx(EXIF_LATLON, abs=1e-3)
    assert claims.labelsEnabled()
    label = claims.labeling().settings().fieldName
    for feature, check in zip(features, summary["claims"], strict=True):
        text = evaluate(label, claims, feature, expression=True)
        assert text == f"tower · {check['label']}: {check['verdict']}" and check["verdict"] in VERDICTS
        tip = evaluate(claims.mapTipTemplate(), claims, feature)
        assert check["words"] in tip and check["label"] in tip, tip
    best_tip = by_role(group)[layers.BEST_NAME].layer().mapTipTemplate()
    paris = next(c for c in summary["claims"] if c["label"] == "Paris witness")
    assert f"Claim: Paris witness: {paris['words']}" in best_tip
    assert "weighted towards (outside weight 0.05) the area of interest" in best_tip
    (said,) = bar_messages(plugin)  # the job's one message: what ran, and the verdicts ready to quote
    first = summary["claims"][0]
    assert "1 photo geolocated" in said and f"tower.jpg: {first['label']}: {first['words']}" in said, said
    assert "| EXIF GPS: " in said


def test_geolocate_as_one_place_adds_a_joint_group_named_for_the_photos(plugin, plugin_settings, photos,
                                                                        wait_for_task, qgis_iface):
    areas = memory_layer("Polygon", "regions", [EUROPE])
    areas.selectAll()
    qgis_iface.setActiveLayer(areas)
    plugin.analyst.action_aoi.trigger()
    areas.removeSelection()
    plugin.choose_files = lambda: photos[:1]
    plugin.analyst.action_joint.trigger()  # one photo is no joint map
    assert plugin.task is None and "at least two photos of one place; 1 selected" in messages_of(plugin, 1)

    plugin.choose_files = lambda: photos
    report = run_action(plugin, plugin.analyst.action_joint, wait_for_task)
    assert report.ok == 2
    # three units, the combined map the last: the bar stands at 2/3 after the photos, moves through the map's
    # stages and reaches 100 only with it
    bar = [(stage, percent) for _, stage, percent in plugin.task.progress_log]
    results = [percent for stage, percent in bar if stage == "result"]
    assert results[-1] == pytest.approx(200 / 3) and bar[-1] == ("joint", 100.0), bar
    assert max(percent for _, percent in bar[:-1]) < 100, bar
    groups = result_groups(QgsProject.instance())
    joint = groups["Joint map: harbour.jpg + desert road.png"]
    assert joint is plugin.last_joint_group and joint.name().endswith(" · earth-tiles")
    assert {"harbour.jpg", "desert road.png"} < set(groups)
    roles = by_role(joint)
    assert {layers.DENSITY_NAME, layers.REGIONS_NAME, layers.PLACES_NAME, layers.BEST_NAME} <= set(roles)
    out = Path(plugin_settings.output_folder)
    assert roles[layers.DENSITY_NAME].layer().source() == str(out / "joint.tif")
    assert all(n.layer().isValid() for n in roles.values())
    summary = json.loads((out / "joint.json").read_text())
    best = summary["best_guess"]
    assert inside_ring(best["lon"], best["lat"], EUROPE, margin=plugin_settings.resolution)  # the area applies
    tip = roles[layers.BEST_NAME].layer().mapTipTemplate()
    assert "<b>Joint map: harbour.jpg + desert road.png</b>" in tip
    assert all(c["words"] in tip for c in summary["joint"]["contributions"])
    assert "one map for the photos of one place" in " ".join(bar_messages(plugin))
    opened: list[Path] = []
    plugin.open_file = opened.append
    assert plugin.open_case_report() == out / "joint.html" and opened == [out / "joint.html"]
    page = (out / "joint.html").read_text(encoding="utf-8")
    assert "Joint map of several photos" in page and "Joint map: harbour.jpg + desert road.png" in page

    # the same photos' joint map again: saved as joint_2.*, its group and layers told apart from the first's
    assert run_action(plugin, plugin.analyst.action_joint, wait_for_task).ok == 2
    second = plugin.last_joint_group
    assert second is not joint
    assert second.name() == "Joint map: harbour.jpg + desert road.png (joint_2) · earth-tiles"
    assert layers.photo_of_group(second) == layers.photo_of_group(joint) == "Joint map: harbour.jpg + desert road.png"
    assert by_role(second)[layers.DENSITY_NAME].layer().source() == str(out / "joint_2.tif")
    first_names = {n.layer().name() for n in joint.findLayers()}
    assert "joint map (joint_2): probability" in {n.layer().name() for n in second.findLayers()}
    assert not first_names & {n.layer().name() for n in second.findLayers()}, first_names


def test_a_country_of_qgis_world_map_is_simplified_to_fit_and_restricts_the_map(plugin, plugin_settings, photos,
                                                                               wait_for_task, qgis_iface):
    """Canada's outline in QGIS's own world map has 38,000 vertices, over the protocol's 10,000."""
    from qgis.core import QgsVectorLayer

    from geoplonk_service import protocol as P

    countries = QgsVectorLayer(f"{layers.world_map_path()}|layername=countries", "countries", "ogr")
    assert countries.isValid()
    QgsProject.instance().addMapLayer(countries)
    countries.selectByExpression("\"NAME\" = 'Canada'")
    (canada,) = countries.getSelectedFeatures()
    assert canada.geometry().constGet().nCoordinates() > P.MAX_AOI_VERTICES
    qgis_iface.setActiveLayer(countries)
    plugin.analyst.action_aoi.trigger()
    aoi = plugin.analyst.analysis.aoi
    assert aoi is not None, messages_of(plugin, 1)
    positions = sum(len(ring) for polygon in aoi["coordinates"] for ring in polygon)
    assert 1000 < positions <= P.MAX_AOI_VERTICES
    assert "area of interest 'countries' (" in messages_of(plugin, 0) and "outline simplified to 0.0" in \
        messages_of(plugin, 0)

    countries.removeSelection()
    plugin.choose_files = lambda: photos[:1]
    assert run_action(plugin, plugin.action_geolocate, wait_for_task).ok == 1
    summary = json.loads((Path(plugin_settings.output_folder) / "harbour.json").read_text())
    best = summary["best_guess"]
    box = canada.geometry().boundingBox()
    margin = plugin_settings.resolution
    assert box.xMinimum() - margin <= best["lon"] <= box.xMaximum() + margin, best
    assert box.yMinimum() - margin <= best["lat"] <= box.yMaximum() + margin, best
    assert 9e6 < summary["aoi"]["area_km2"] < 1.2e7  # Canada: about 10 million km2
