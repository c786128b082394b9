"""Load one photo's saved result (GeoTIFF + GeoPackage) as a styled layer group.

The layers point at the files on disk, so a saved project reopens with the same
layers and styles.  The pure functions at the top (thresholds, class breaks,
labels) hold the styling math; the rest only builds QGIS objects.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsColorRampLegendNodeSettings,
    QgsColorRampShader,
    QgsExpression,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsLayerTreeGroup,
    QgsLayerTreeNode,
    QgsMarkerSymbol,
    QgsPalLayerSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRectangle,
    QgsRendererCategory,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsStyle,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor

from geoplonk_service.output_files import JOINT_NAME, safe_stem

from . import case_text

GROUP_PROPERTY = "geoplonk/result"  # custom property marking our groups (value: the summary JSON path)
ROLE_PROPERTY = "geoplonk/role"  # custom property of each layer: which product it shows (one of the names below)
PHOTO_NAME_PROPERTY = "geoplonk/photo_name"  # custom property of our groups: the photo's file name (or joint title)
# A layer is named "<photo stem>: <role>" ("nile_delta: probability"), so layer pickers are unambiguous; a photo
# whose files got another stem (a same-named photo took it) is named by its files' stem ("IMG_0001_2: probability").
DENSITY_NAME = "probability"
REGIONS_NAME = "credible regions"
PLACES_NAME = "top places"
SAMPLES_NAME = "samples"
EXIF_NAME = "EXIF position"
BEST_NAME = "best guess"
CLAIMS_NAME = "claims"
BASEMAP_NAME = "World map (offline basemap)"
BASEMAP_PROPERTY = "geoplonk/basemap"
# The layers "Zoom to result" and the case report frame (not the samples, nor the global raster).
EXTENT_ROLES = (REGIONS_NAME, BEST_NAME, PLACES_NAME, EXIF_NAME, CLAIMS_NAME)
# Label priorities (0-10): the best guess wins over the top places, which win over region labels.
PRIORITY = {BEST_NAME: 10, CLAIMS_NAME: 9, EXIF_NAME: 9, PLACES_NAME: 6, REGIONS_NAME: 2}
RAMP_NAME = "Magma"
# Cells outside the highest-density region holding this much mass are drawn transparent.
VISIBLE_MASS = 0.999
DENSITY_OPACITY = 0.8
# "place, country", without an empty country (none is named at sea) or a repeated one (older results).
PLACE_EXPRESSION = (
    "coalesce(\"place\", '') || if(coalesce(\"country\", '') IN ('', coalesce(\"place\", '')), '', "
    "', ' || \"country\")"
)
REGION_COLOURS = {0.5: "#ffffff", 0.9: "#36c5f0", 0.99: "#2b6cb0"}
# A top place's label: the probability of lying within 100 and 500 km of it (not its basin's share of the mass).
PLACES_LABEL = (
    PLACE_EXPRESSION + " || '\n' || format_number(\"p_within_100km\" * 100, 0) || ' % within 100 km, ' || "
    "format_number(\"p_within_500km\" * 100, 0) || ' % within 500 km'"
)
GROUP_SEPARATOR = " · "  # group name: "<photo file name> · <model>", "<photo file name> (<files' stem>) · <model>"

# --- pure styling math -------------------------------------------------------------


def hpd_threshold(values: np.ndarray, mass: float) -> float:
    """Smallest cell value t such that the cells >= t hold `mass` of the total (highest-density region)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return 0.0
    v = np.sort(v)[::-1]
    cum = np.cumsum(v) / v.sum()
    k = int(np.searchsorted(cum, mass, side="left"))
    return float(v[min(k, v.size - 1)])


def class_breaks(vmin: float, vmax: float, n: int = 6) -> list[float]:
    """`n` log-spaced values from vmin to vmax (linear when the range is degenerate)."""
    if vmax <= 0:
        return [0.0, 1e-12]
    vmin = min(max(vmin, vmax * 1e-6), vmax * 0.999)
    return [float(x) for x in np.geomspace(vmin, vmax, n)]


def percent_label(value: float) -> str:
    """Probability per cell as '% per cell' with two significant digits."""
    pct = value * 100.0
    if pct <= 0:
        return "0 % per cell"
    digits = max(0, 1 - int(math.floor(math.log10(pct))))
    return f"{pct:.{digits}f} % per cell"


def level_label(level: float) -> str:
    return f"{level * 100:g} %"


# --- output folder ---------------------------------------------------------------


USER_RESULTS_FOLDER = ("GeoPlonk", "results")  # under the user's home: results outlive a temporary folder


def output_folder(configured: str = "", project: QgsProject | None = None) -> Path:
    """Where results go: the configured folder, else `<project folder>/geoplonk` when the project is saved,
    else `~/GeoPlonk/results` (never a temporary folder: a saved project's layers must find their files)."""
    if configured:
        return Path(configured).expanduser().resolve()
    project = project or QgsProject.instance()
    home = project.homePath() if project is not None else ""
    if home and project.fileName():
        return Path(home) / "geoplonk"
    return Path.home().joinpath(*USER_RESULTS_FOLDER)


# --- styles ----------------------------------------------------------------------


def _ramp():
    ramp = QgsStyle.defaultStyle().colorRamp(RAMP_NAME)
    return ramp if ramp is not None else QgsGradientColorRamp(QColor("#000004"), QColor("#fcfdbf"))


def style_density(
    layer: QgsRasterLayer, values: np.ndarray | None = None, max_probability: float | None = None
) -> None:
    """Pseudocolor (magma), transparent below the 99.9 % region, legend in '% per cell'."""
    if values is None:
        values = read_band(layer.source())
    vmax = float(max_probability) if max_probability else float(np.nanmax(values)) if values.size else 0.0
    vmin = hpd_threshold(values, VISIBLE_MASS) if values.size else 0.0
    breaks = class_breaks(max(vmin, vmax * 1e-4), vmax, 6)
    ramp = _ramp()
    items = []
    for i, value in enumerate(breaks):
        colour = QColor(ramp.color(0.15 + 0.85 * i / (len(breaks) - 1)))
        if i == 0:
            colour.setAlpha(0)
        elif i == 1:
            colour.setAlpha(170)
        items.append(QgsColorRampShader.ColorRampItem(value, colour, percent_label(value)))
    shader_fn = QgsColorRampShader(breaks[0], breaks[-1])
    shader_fn.setColorRampType(QgsColorRampShader.Interpolated)
    shader_fn.setSourceColorRamp(_ramp())
    shader_fn.setColorRampItemList(items)
    shader_fn.setClip(False)
    legend = QgsColorRampLegendNodeSettings()
    legend.setUseContinuousLegend(False)  # the classes' own "% per cell" labels, not raw min/max numbers
    shader_fn.setLegendSettings(legend)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(shader_fn)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(breaks[0])
    renderer.setClassificationMax(breaks[-1])
    layer.setRenderer(renderer)
    layer.setOpacity(DENSITY_OPACITY)  # the basemap stays readable under the density
    layer.setCustomProperty("geoplonk/visible_mass", VISIBLE_MASS)
    layer.triggerRepaint()


def read_band(path: str) -> np.ndarray:
    """Band 1 of a raster as float64 (nodata as NaN), via GDAL (always present in QGIS's Python)."""
    from osgeo import gdal

    ds = gdal.Open(path)
    if ds is None:
        return np.zeros((0, 0))
    band = ds.GetRasterBand(1)
    arr = band.ReadAsArray().astype(np.float64)
    nodata = band.GetNoDataValue()
    if nodata is not None:
        arr[arr == nodata] = np.nan
    return arr


def _text_format(size: float = 9.0, colour: str = "#111111") -> QgsTextFormat:
    fmt = QgsTextFormat()
    fmt.setSize(size)
    fmt.setColor(QColor(colour))
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(1.0)
    buffer.setColor(QColor("white"))
    fmt.setBuffer(buffer)
    return fmt


def _label(layer: QgsVectorLayer, expression: str, size: float = 9.0, placement=None, priority: int = 5) -> None:
    """Labels that do not pile up: placed around points (several candidates), never over each other, and the
    more important layers' labels win the space (`priority`, 0-10)."""
    from qgis.core import QgsLabelObstacleSettings

    settings = QgsPalLayerSettings()
    settings.fieldName = expression
    settings.isExpression = True
    settings.setFormat(_text_format(size))
    settings.placement = placement if placement is not None else QgsPalLayerSettings.OrderedPositionsAroundPoint
    settings.priority = priority
    settings.displayAll = False  # a label that would overlap another is left out
    settings.dist = 1.0  # mm from the marker
    obstacle = settings.obstacleSettings()
    obstacle.setIsObstacle(True)
    obstacle.setType(QgsLabelObstacleSettings.PolygonBoundary)
    settings.setObstacleSettings(obstacle)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)


def style_regions(layer: QgsVectorLayer) -> None:
    """Outlines per credible level (no fill), labelled '50 %' etc."""
    categories = []
    levels = sorted({float(f["level"]) for f in layer.getFeatures()}) or [0.5, 0.9, 0.99]
    for i, level in enumerate(levels):
        colour = REGION_COLOURS.get(round(level, 3), ["#ffffff", "#36c5f0", "#2b6cb0", "#1a365d"][min(i, 3)])
        symbol = QgsFillSymbol.createSimple(
            {"style": "no", "outline_color": colour, "outline_width": str(0.8 - 0.15 * i), "outline_style": "solid"}
        )
        categories.append(QgsRendererCategory(level, symbol, level_label(level)))
    layer.setRenderer(QgsCategorizedSymbolRenderer("level", categories))
    _label(layer, "coalesce(\"label\", format_number(\"level\" * 100, 0) || ' %')", 8.0, QgsPalLayerSettings.Line,
           PRIORITY[REGIONS_NAME])
    layer.triggerRepaint()


def style_places(layer: QgsVectorLayer) -> None:
    symbol = QgsMarkerSymbol.createSimple(
        {"name": "circle", "color": "#ffd166", "outline_color": "#222222", "size": "2.6"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    _label(layer, PLACES_LABEL, 8.5, priority=PRIORITY[PLACES_NAME])


def style_samples(layer: QgsVectorLayer) -> None:
    symbol = QgsMarkerSymbol.createSimple(
        {"name": "circle", "color": "255,255,255,128", "outline_style": "no", "size": "0.8"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))


def style_exif(layer: QgsVectorLayer) -> None:
    symbol = QgsMarkerSymbol.createSimple(
        {"name": "star", "color": "#38a169", "outline_color": "#ffffff", "size": "4.5"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    _label(layer, "'EXIF GPS: ' || format_number(\"error_km\", 0) || ' km from best guess'",
           priority=PRIORITY[EXIF_NAME])


def style_claims(layer: QgsVectorLayer, photo: str = "") -> None:
    """Claimed locations: an orange triangle labelled with who claims it and the verdict; the map tip quotes
    the server's full sentence.  Every photo's group checks the same claims, each with its own verdict, so with
    `photo` the label names whose verdict it is."""
    symbol = QgsMarkerSymbol.createSimple(
        {"name": "triangle", "color": "#ed8936", "outline_color": "#1a202c", "outline_width": "0.4", "size": "4"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    expression = case_text.CLAIM_LABEL_EXPRESSION
    if photo:
        expression = f"{QgsExpression.quotedString(photo + ' · ')} || {expression}"
    _label(layer, expression, 8.5, priority=PRIORITY[CLAIMS_NAME])
    layer.setMapTipTemplate(case_text.CLAIM_TIP_TEMPLATE)


def style_best_guess(layer: QgsVectorLayer) -> None:
    symbol = QgsMarkerSymbol.createSimple(
        {"name": "cross2", "color": "#e53e3e", "outline_color": "#e53e3e", "outline_width": "0.8", "size": "5"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    _label(layer, "'Best guess: ' || " + PLACE_EXPRESSION, 9.5, priority=PRIORITY[BEST_NAME])


def map_tip_html(photo_path: str | None, summary: dict[str, Any]) -> str:
    """Thumbnail, model, warnings, best guess, localizability and the top places' odds: the layers' map tip."""
    best = summary.get("best_guess") or {}
    loc = summary.get("localizability")
    parts = []
    if photo_path and os.path.exists(photo_path):
        uri = Path(photo_path).resolve().as_uri()
        parts.append(f'<img src="{html.escape(uri)}" width="240"/>')
    title = case_text.joint_title(summary) if case_text.is_joint(summary) else summary.get("name", "")
    parts.append(f"<b>{html.escape(Path(photo_path).name if photo_path else title)}</b>")
    if summary.get("model"):
        encoder = f" ({summary['encoder']})" if summary.get("encoder") else ""
        parts.append(f"Model: {html.escape(str(summary['model']) + encoder)}")
    for warning in summary.get("warnings") or []:
        parts.append(f'<span style="color:#b00020">⚠ {html.escape(str(warning))}</span>')
    if best:
        place = ", ".join(p for p in (best.get("place"), best.get("country")) if p)
        parts.append(f"Best guess: {html.escape(place)} ({best.get('lat', 0):.3f}, {best.get('lon', 0):.3f})")
    if isinstance(loc, (int, float)):
        parts.append(f"Localizability: {loc:.2f}")
    for top in (summary.get("top_places") or [])[:3]:
        if "p_within_100km" not in top:
            continue
        place = ", ".join(p for p in (top.get("place"), top.get("country")) if p)
        parts.append(
            f"{top.get('p_within_100km', 0) * 100:.0f} % within 100 km, {top.get('p_within_500km', 0) * 100:.0f} %"
            f" within 500 km of {html.escape(place)} (basin share {top.get('basin_share', 0) * 100:.0f} %)"
        )
    exif = summary.get("exif")
    if exif:
        parts.append(f"EXIF GPS: {exif.get('error_km', 0):.0f} km from the best guess")
    parts.extend(case_text.tip_lines(summary))
    return "<br/>".join(parts)


def layer_role(layer) -> str:
    """Which product a GeoPlonk layer shows (DENSITY_NAME, REGIONS_NAME...), '' for other layers."""
    return str(layer.customProperty(ROLE_PROPERTY, "") or "") if layer is not None else ""


def group_name(photo_name: str, summary: dict[str, Any], files_stem: str = "") -> str:
    """'nile_delta.jpg · earth-tiles': the photo and the model that placed it; with `files_stem`,
    'IMG_0001.jpg (IMG_0001_2) · earth-tiles', which tells apart two photos of one name."""
    title = f"{photo_name} ({files_stem})" if files_stem else photo_name
    model = summary.get("model")
    return f"{title}{GROUP_SEPARATOR}{model}" if model else title


def other_files_stem(photo_name: str, files: dict[str, str | os.PathLike]) -> str:
    """The saved files' stem when it is not the one the photo's name gives (`IMG_0001_2`: a same-named photo,
    of this batch or an earlier one in the folder, took `IMG_0001`), else '': the name that tells them apart."""
    stem = Path(str(files["geotiff"])).stem
    return "" if stem == safe_stem(photo_name) else stem


def photo_of_group(group) -> str:
    """The photo file name a result group is named after (without the files' stem its title may add)."""
    return str(group.customProperty(PHOTO_NAME_PROPERTY) or "") or group.name().split(GROUP_SEPARATOR)[0]


# --- basemap ---------------------------------------------------------------------------


def world_map_path() -> str | None:
    """QGIS's own offline world map (resources/data/world_map.gpkg), found through QGIS's paths."""
    from qgis.core import QgsApplication

    candidates = [os.path.join(QgsApplication.pkgDataPath(), "resources", "data", "world_map.gpkg")]
    try:
        candidates.insert(0, os.path.join(QgsApplication.resolvePkgPath(), "resources", "data", "world_map.gpkg"))
    except AttributeError:
        pass
    return next((c for c in candidates if os.path.isfile(c)), None)


def has_basemap(project: QgsProject) -> bool:
    """A basemap is there: ours, or any raster, line or polygon layer that is not a GeoPlonk result (the
    analyst's own map; a layer of photo points is no basemap)."""
    from qgis.core import QgsWkbTypes

    for layer in project.mapLayers().values():
        if layer.customProperty(BASEMAP_PROPERTY) or (not layer_role(layer) and (
                isinstance(layer, QgsRasterLayer)
                or (isinstance(layer, QgsVectorLayer) and layer.geometryType() != QgsWkbTypes.PointGeometry))):
            return True
    return False


def add_basemap(project: QgsProject | None = None) -> QgsVectorLayer | None:
    """When the project has no other layer, add QGIS's offline world map at the bottom of the layer tree:
    land in a light grey, countries outlined.  Returns the layer (None when there was one already or no map)."""
    project = project or QgsProject.instance()
    if has_basemap(project):
        return None
    path = world_map_path()
    if path is None:
        return None
    layer = QgsVectorLayer(f"{path}|layername=countries", BASEMAP_NAME, "ogr")
    if not layer.isValid():
        return None
    symbol = QgsFillSymbol.createSimple(
        {"color": "#eeeae2", "outline_color": "#9a9a9a", "outline_width": "0.2", "style": "solid"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    layer.setCustomProperty(BASEMAP_PROPERTY, True)
    project.addMapLayer(layer, False)
    project.layerTreeRoot().addLayer(layer)  # last: drawn under the results
    return layer


# --- building the group ------------------------------------------------------------


def _vector(gpkg: str, layer_name: str, title: str) -> QgsVectorLayer:
    return QgsVectorLayer(f"{gpkg}|layername={layer_name}", title, "ogr")


def gpkg_layer_names(gpkg: str) -> set[str] | None:
    """The layers a GeoPackage holds (its gpkg_contents), None where SQLite cannot tell (a Windows share's path is
    no SQLite URI): an optional layer that is not there is not asked for, which would put an OGR warning ("Cannot
    find layer") in the log panel for every photo without claims."""
    try:
        with contextlib.closing(sqlite3.connect(f"{Path(gpkg).resolve().as_uri()}?mode=ro", uri=True)) as db:
            return {row[0] for row in db.execute("SELECT table_name FROM gpkg_contents")}
    except (sqlite3.Error, ValueError):
        return None


def add_result_group(
    name: str,
    files: dict[str, str | os.PathLike],
    summary: dict[str, Any],
    photo_path: str | None = None,
    project: QgsProject | None = None,
) -> QgsLayerTreeGroup:
    """Add one photo's group at the top of the layer tree; returns the group.

    `files` maps "geotiff"/"gpkg"/"json" to paths (PhotoResult.save's return value).
    Layers that are missing from the GeoPackage are skipped; invalid layers raise ValueError.
    A joint map's group is named for its photos ("Joint map: a.jpg + b.jpg · model"), whatever `name` says.
    A photo or joint map whose files have another stem than its name gives is named by that stem too
    (`other_files_stem`): the second of one name, or the same photos' joint map made again.
    """
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    joint = case_text.is_joint(summary)
    title = case_text.joint_title(summary) if joint else name
    files_stem = other_files_stem(JOINT_NAME if joint else name, files)
    group = root.insertGroup(0, group_name(title, summary, files_stem))
    group.setCustomProperty(GROUP_PROPERTY, str(files.get("json", "")))
    group.setCustomProperty(PHOTO_NAME_PROPERTY, title)
    stem = (f"joint map ({files_stem})" if files_stem else "joint map") if joint else files_stem or Path(name).stem
    tif, gpkg = str(files["geotiff"]), str(files["gpkg"])

    density = QgsRasterLayer(tif, f"{stem}: {DENSITY_NAME}", "gdal")
    if not density.isValid():
        raise ValueError(f"the density raster {tif} cannot be opened")
    density.setCustomProperty(ROLE_PROPERTY, DENSITY_NAME)
    style_density(density, max_probability=(summary.get("raster") or {}).get("max_probability"))

    vectors = []
    present = gpkg_layer_names(gpkg)
    for layer_name, role, styler, required in (
        ("claims", CLAIMS_NAME, lambda layer: style_claims(layer, stem), False),
        ("best_guess", BEST_NAME, style_best_guess, False),
        ("exif_truth", EXIF_NAME, style_exif, False),
        ("top_places", PLACES_NAME, style_places, True),
        ("credible_regions", REGIONS_NAME, style_regions, True),
        ("samples", SAMPLES_NAME, style_samples, False),
    ):
        layer = _vector(gpkg, layer_name, f"{stem}: {role}") if present is None or layer_name in present else None
        if layer is None or not layer.isValid():
            if required:
                raise ValueError(f"layer {layer_name!r} is missing from {gpkg}")
            continue
        if layer_name in ("exif_truth", "claims") and layer.featureCount() == 0:
            continue
        layer.setCustomProperty(ROLE_PROPERTY, role)
        styler(layer)
        vectors.append(layer)

    tip = map_tip_html(photo_path, summary)
    for layer in [*vectors, density]:
        project.addMapLayer(layer, False)
        node = group.addLayer(layer)
        if layer_role(layer) == SAMPLES_NAME:
            node.setItemVisibilityChecked(False)
        if isinstance(layer, QgsVectorLayer) and layer_role(layer) in (BEST_NAME, PLACES_NAME):
            layer.setMapTipTemplate(tip)
        layer.setCustomProperty("geoplonk/photo", photo_path or "")
        layer.setCustomProperty("geoplonk/model", summary.get("model") or "")
    return group


def group_extent(group: QgsLayerTreeGroup, min_size_deg: float = 2.0) -> QgsRectangle:
    """What the analyst weighs, padded to at least `min_size_deg`: the credible regions with the best guess, the
    top places, the EXIF position and the claims (a claim outside the map is the finding), else all its layers."""
    layers = [n.layer() for n in group.findLayers() if n.layer() is not None]
    weighed = [lyr for lyr in layers if layer_role(lyr) in EXTENT_ROLES and lyr.featureCount() > 0]
    extent = QgsRectangle()
    for layer in weighed or layers:
        extent.combineExtentWith(layer.extent())
    if extent.isNull():
        return QgsRectangle(-180, -90, 180, 90)
    extent.scale(1.1)
    if extent.width() < min_size_deg:
        c = extent.center()
        extent.setXMinimum(c.x() - min_size_deg / 2)
        extent.setXMaximum(c.x() + min_size_deg / 2)
    if extent.height() < min_size_deg:
        c = extent.center()
        extent.setYMinimum(c.y() - min_size_deg / 2)
        extent.setYMaximum(c.y() + min_size_deg / 2)
    return extent


def find_result_group(node) -> QgsLayerTreeGroup | None:
    """The GeoPlonk group that `node` (a group or a layer inside it) belongs to."""
    while isinstance(node, QgsLayerTreeNode):
        if isinstance(node, QgsLayerTreeGroup) and node.customProperty(GROUP_PROPERTY) is not None:
            return node
        node = node.parent()
    return None
