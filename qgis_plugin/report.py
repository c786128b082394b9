"""The case report of a result group: its map rendered by QGIS as the analyst styled it, put in the
self-contained HTML report that `geoplonk locate --report` writes too (geoplonk_service.case_report).

The report is written beside the group's files (`<stem>.html`) so it travels with them.  Rendering is
synchronous on the calling thread (no render threads), so Processing can make reports from its own thread.
"""

from __future__ import annotations

import json
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsMapRendererCustomPainterJob,
    QgsMapSettings,
    QgsProject,
)
from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice, QSize
from qgis.PyQt.QtGui import QColor, QImage, QPainter

from geoplonk_service.case_report import case_report_html
from geoplonk_service.output_files import atomic_write

from . import layers

WIDTH = 1200
MIN_HEIGHT = 300
PICTURE_NOTE = ("Rendered by QGIS {version} from the Layers panel, as styled there: the probability per cell, "
                "the credible regions, the top places, the best guess and any claims (orange triangles), "
                "over {basemap}.")


class ReportError(RuntimeError):
    """No report can be made for this group, with the reason."""


def group_layers(group, project: QgsProject) -> list:
    """The group's visible layers, top first, then the project's basemap (drawn underneath)."""
    shown = [n.layer() for n in group.findLayers() if n.layer() is not None and n.isVisible()]
    basemap = [lyr for lyr in project.mapLayers().values() if lyr.customProperty(layers.BASEMAP_PROPERTY)]
    return shown + basemap


def render_group_png(group, project: QgsProject | None = None, width: int = WIDTH) -> bytes:
    """The group's map as PNG bytes, over the group's extent in lon/lat, labels included."""
    project = project or QgsProject.instance()
    extent = layers.group_extent(group)
    size = QSize(width, min(2 * width, max(MIN_HEIGHT, round(width * extent.height() / max(extent.width(), 1e-9)))))
    settings = QgsMapSettings()
    settings.setLayers(group_layers(group, project))
    settings.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    settings.setTransformContext(project.transformContext())
    settings.setOutputSize(size)
    settings.setExtent(extent)
    settings.setBackgroundColor(QColor("white"))
    settings.setFlag(QgsMapSettings.DrawLabeling, True)
    image = QImage(size, QImage.Format_ARGB32_Premultiplied)
    image.fill(QColor("white"))
    painter = QPainter(image)
    job = QgsMapRendererCustomPainterJob(settings, painter)
    job.renderSynchronously()
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.WriteOnly)
    if image.isNull() or not image.save(buffer, "PNG"):
        raise ReportError("QGIS could not render the map of the result")
    buffer.close()
    return bytes(data)


def group_files(group) -> dict[str, Path]:
    """The result's files by kind, found from the group's summary JSON."""
    raw = group.customProperty(layers.GROUP_PROPERTY) if group is not None else None
    if not raw:
        raise ReportError("select a GeoPlonk result group in the Layers panel first")
    summary = Path(str(raw))
    if not summary.is_file():
        raise ReportError(f"the result's summary {summary} is gone: the report needs it")
    return {"geotiff": summary.with_suffix(".tif"), "gpkg": summary.with_suffix(".gpkg"), "json": summary}


def write_case_report(group, project: QgsProject | None = None) -> Path:
    """Write `<stem>.html` beside the group's files and return its path."""
    project = project or QgsProject.instance()
    files = group_files(group)
    doc = json.loads(files["json"].read_text(encoding="utf-8"))
    summary = {k: v for k, v in doc.items() if k not in ("name", "status")}
    basemap = "QGIS's offline world map" if any(
        lyr.customProperty(layers.BASEMAP_PROPERTY) for lyr in project.mapLayers().values()) else "a white background"
    note = PICTURE_NOTE.format(version=Qgis.QGIS_VERSION, basemap=basemap)
    page = case_report_html(layers.photo_of_group(group), summary, render_group_png(group, project), note,
                            {kind: str(path) for kind, path in files.items()})
    return atomic_write(files["json"].with_suffix(".html"), page.encode("utf-8"))


def report_from_files(name: str, files: dict[str, str], summary: dict) -> Path:
    """The report of a saved result outside the analyst's project (Processing, qgis_process): its layers are
    loaded and styled as the toolbar would, with the offline basemap, in a project of their own."""
    project = QgsProject()
    group = layers.add_result_group(name, files, summary, project=project)
    layers.add_basemap(project)
    return write_case_report(group, project)
