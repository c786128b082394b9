#!/usr/bin/env python3
"""Render GeoPlonk results to a PNG map with QGIS (headless), styled exactly as the plugin styles them.

Run with QGIS's Python and QT_QPA_PLATFORM=offscreen:
    .venv/qgis/bin/python scripts/render_map.py demo-output/ --out demo-output/map.png [--project demo.qgz]
Every `<stem>.tif` + `<stem>.gpkg` (+ `<stem>.json` summary) in the folder becomes one layer group, over
QGIS's own offline world map (Natural Earth countries, shipped in QGIS's resources) when it is there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORLD_MAPS = [
    Path(os.environ.get("QGIS_PREFIX_PATH", "/usr")) / "share/qgis/resources/data/world_map.gpkg",
    Path("/usr/share/qgis/resources/data/world_map.gpkg"),
]


def find_results(folder: Path) -> list[dict[str, Path]]:
    """Complete result triples in `folder`, sorted by stem; "photo" from `geoplonk locate`'s summary.json."""
    photos = {}
    run_summary = folder / "summary.json"
    if run_summary.exists():
        for row in json.loads(run_summary.read_text()).get("photos", []):
            if row.get("json"):
                photos[Path(row["json"]).name] = row.get("photo")
    out = []
    for tif in sorted(folder.glob("*.tif")):
        gpkg, summary = tif.with_suffix(".gpkg"), tif.with_suffix(".json")
        if gpkg.exists():
            out.append({"geotiff": tif, "gpkg": gpkg, "json": summary, "photo": photos.get(summary.name)})
    return out


def world_layer():
    from qgis.core import QgsFillSymbol, QgsSingleSymbolRenderer, QgsVectorLayer

    for path in WORLD_MAPS:
        if path.exists():
            layer = QgsVectorLayer(f"{path}|layername=countries", "Countries (Natural Earth)", "ogr")
            if layer.isValid():
                symbol = QgsFillSymbol.createSimple(
                    {"color": "#3c4650", "outline_color": "#8895a0", "outline_width": "0.15"}
                )
                layer.setRenderer(QgsSingleSymbolRenderer(symbol))
                return layer
    return None


def render(results: list[dict[str, Path]], out: Path, size=(1600, 900), project_path: Path | None = None) -> dict:
    """Load the results into the current project, render to `out`; returns figures for the summary."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRectangle

    from qgis_plugin import layers

    project = QgsProject.instance()
    world = world_layer()
    if world is not None:
        project.addMapLayer(world)
    extent = QgsRectangle()
    groups = []
    for files in results:
        summary = json.loads(files["json"].read_text()) if files["json"].exists() else {}
        photo = str(Path(files["photo"]).resolve()) if files.get("photo") else None
        group = layers.add_result_group(summary.get("name") or files["geotiff"].stem, files, summary, photo, project)
        groups.append(group)
        extent.combineExtentWith(layers.group_extent(group, min_size_deg=20))
    world_box = QgsRectangle(-180, -90, 180, 90)
    extent = world_box if extent.isNull() else extent.intersect(world_box)
    crs = project.crs() if project.crs().isValid() else QgsCoordinateReferenceSystem("EPSG:4326")
    basemap = [world] if world is not None else []
    image = _render(project.layerTreeRoot().checkedLayers(), extent, crs, size)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(out), "PNG"):
        raise SystemExit(f"render_map: cannot write {out}")
    per_photo = []
    if len(groups) > 1:  # stacked rasters hide each other: one picture per photo as well
        for files, group in zip(results, groups, strict=True):
            one = [n.layer() for n in group.findLayers() if n.isVisible()] + basemap
            path = out.with_name(f"{out.stem}-{files['geotiff'].stem}.png")
            _render(one, layers.group_extent(group, min_size_deg=20).intersect(world_box), crs, size).save(str(path))
            per_photo.append(path)
    if project_path is not None:
        project.write(str(project_path))
    return {"groups": len(groups), "extent": extent.toString(2), "size": f"{image.width()}x{image.height()}",
            "per_photo": per_photo}


def _render(map_layers: list, extent, crs, size):
    """One picture of `map_layers` (top first) over `extent`, rendered in parallel, waited for."""
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    settings = QgsMapSettings()
    settings.setOutputSize(QSize(*size))
    settings.setBackgroundColor(QColor("#1b2733"))
    settings.setDestinationCrs(crs)
    settings.setLayers(map_layers)
    settings.setExtent(extent)
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder with <stem>.tif/.gpkg/.json results")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--project", type=Path, help="also save a QGIS project with the styled layers")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)

    results = find_results(args.folder)
    if not results:
        print(f"render_map: no results (*.tif + *.gpkg) in {args.folder}", file=sys.stderr)
        return 1
    from qgis.core import QgsApplication, QgsProject

    app = QgsApplication([], False)
    app.initQgis()
    try:
        figures = render(results, args.out, (args.width, args.height), args.project)
        print(f"map: {args.out} ({figures['size']}, {figures['groups']} result groups, extent {figures['extent']})")
        for path in figures["per_photo"]:
            print(f"map: {path}")
        if args.project:
            print(f"project: {args.project}")
    finally:
        QgsProject.instance().clear()
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
