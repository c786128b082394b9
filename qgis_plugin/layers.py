"""Load one photo's saved result (GeoTIFF + GeoPackage) as a styled layer group.

The layers point at the files on disk, so a saved project reopens with the same
layers and styles.  The pure functions at the top (thresholds, class breaks,
labels) hold the styling math; the rest only builds QGIS objects.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsColorRampLegendNodeSettings,
    QgsColorRampShader,
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

GROUP_PROPERTY = "geoplonk/result"  # custom property marking our groups (value: the summary JSON path)
DENSITY_NAME = "Probability density"
REGIONS_NAME = "Credible regions"
PLACES_NAME = "Top places"
SAMPLES_NAME = "Samples"
EXIF_NAME = "EXIF position"
BEST_NAME = "Best guess"
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


def output_folder(configured: str = "", project: QgsProject | None = None) -> Path:
    """Where results go: the configured folder, else `<project folder>/geoplonk`, else a temp folder."""
    if configured:
        return Path(configured).expanduser()
    project = project or QgsProject.instance()
    home = project.homePath() if project is not None else ""
    if home and project.fileName():
        return Path(home) / "geoplonk"
    import tempfile

    return Path(tempfile.gettempdir()) / "geoplonk"


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


def _label(layer: QgsVectorLayer, expression: str, size: float = 9.0, placement=None) -> None:
    settings = QgsPalLayerSettings()
    settings.fieldName = expression
    settings.isExpression = True
    settings.setFormat(_text_format(size))
    if placement is not None:
        settings.placement = placement
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
    _label(layer, "coalesce(\"label\", format_number(\"level\" * 100, 0) || ' %')", 8.0, QgsPalLayerSettings.Line)
    layer.triggerRepaint()


def style_places(layer: QgsVectorLayer) -> None:
    symbol = QgsMarkerSymbol.createSimple(
        {"name": "circle", "color": "#ffd166", "outline_color": "#222222", "size": "2.6"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    _label(layer, "format_number(\"probability\" * 100, 1) || ' %  ' || " + PLACE_EXPRESSION)


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
    _label(layer, "'EXIF GPS: ' || format_number(\"error_km\", 0) || ' km from best guess'")


def style_best_guess(layer: QgsVectorLayer) -> None:
    symbol = QgsMarkerSymbol.createSimple(
        {"name": "cross2", "color": "#e53e3e", "outline_color": "#e53e3e", "outline_width": "0.8", "size": "5"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    _label(layer, "'Best guess: ' || " + PLACE_EXPRESSION)


def map_tip_html(photo_path: str | None, summary: dict[str, Any]) -> str:
    """Thumbnail + localizability + best guess, used as the best-guess layer's map tip."""
    best = summary.get("best_guess") or {}
    loc = summary.get("localizability")
    parts = []
    if photo_path and os.path.exists(photo_path):
        uri = Path(photo_path).resolve().as_uri()
        parts.append(f'<img src="{html.escape(uri)}" width="240"/>')
    parts.append(f"<b>{html.escape(Path(photo_path).name if photo_path else summary.get('name', ''))}</b>")
    if best:
        place = ", ".join(p for p in (best.get("place"), best.get("country")) if p)
        parts.append(f"Best guess: {html.escape(place)} ({best.get('lat', 0):.3f}, {best.get('lon', 0):.3f})")
    if isinstance(loc, (int, float)):
        parts.append(f"Localizability: {loc:.2f}")
    exif = summary.get("exif")
    if exif:
        parts.append(f"EXIF GPS: {exif.get('error_km', 0):.0f} km from the best guess")
    return "<br/>".join(parts)


# --- building the group ------------------------------------------------------------


def _vector(gpkg: str, layer_name: str, title: str) -> QgsVectorLayer:
    return QgsVectorLayer(f"{gpkg}|layername={layer_name}", title, "ogr")


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
    """
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.insertGroup(0, name)
    group.setCustomProperty(GROUP_PROPERTY, str(files.get("json", "")))
    tif, gpkg = str(files["geotiff"]), str(files["gpkg"])

    density = QgsRasterLayer(tif, DENSITY_NAME, "gdal")
    if not density.isValid():
        raise ValueError(f"the density raster {tif} cannot be opened")
    style_density(density, max_probability=(summary.get("raster") or {}).get("max_probability"))

    vectors = []
    for layer_name, title, styler, required in (
        ("best_guess", BEST_NAME, style_best_guess, False),
        ("exif_truth", EXIF_NAME, style_exif, False),
        ("top_places", PLACES_NAME, style_places, True),
        ("credible_regions", REGIONS_NAME, style_regions, True),
        ("samples", SAMPLES_NAME, style_samples, False),
    ):
        layer = _vector(gpkg, layer_name, title)
        if not layer.isValid():
            if required:
                raise ValueError(f"layer {layer_name!r} is missing from {gpkg}")
            continue
        if layer_name == "exif_truth" and layer.featureCount() == 0:
            continue
        styler(layer)
        vectors.append(layer)

    tip = map_tip_html(photo_path, summary)
    for layer in [*vectors, density]:
        project.addMapLayer(layer, False)
        node = group.addLayer(layer)
        if layer.name() == SAMPLES_NAME:
            node.setItemVisibilityChecked(False)
        if isinstance(layer, QgsVectorLayer) and layer.name() in (BEST_NAME, PLACES_NAME):
            layer.setMapTipTemplate(tip)
        layer.setCustomProperty("geoplonk/photo", photo_path or "")
    return group


def group_extent(group: QgsLayerTreeGroup, min_size_deg: float = 2.0) -> QgsRectangle:
    """The extent of the group's credible regions (else all its layers), padded to at least `min_size_deg`."""
    layers = [n.layer() for n in group.findLayers() if n.layer() is not None]
    regions = [lyr for lyr in layers if lyr.name() == REGIONS_NAME]
    extent = QgsRectangle()
    for layer in regions or layers:
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
