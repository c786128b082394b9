"""The case report: one self-contained HTML file per result (a photo's, or a joint map's), to file with a
case.  Standard library only: `geoplonk locate --report` hands it a picture drawn with Pillow
(model_server.map_picture), the plugin one rendered by QGIS; everything else comes from the result's summary.

The file holds what a reader needs to weigh and reproduce the result: the map, the top places with their
probabilities, the credible regions' areas, the claim checks, the localizability, and the record (the
photo's sha256, the model and its weights' sha256, the options and seed, the software version, the time).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
from pathlib import Path
from typing import Any

from .output_files import atomic_write

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:960px;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #e4e4e4;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #aaa}.verdict{font-weight:600}.muted{color:#666;font-size:.9em}
code{font-size:.85em;word-break:break-all}.warn{color:#8a4b00}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _pct(p: Any) -> str:
    return f"{float(p) * 100:.1f} %" if isinstance(p, (int, float)) else "–"


def _km2(a: Any) -> str:
    return f"{float(a):,.0f} km²" if isinstance(a, (int, float)) else "–"


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td class='n'>{c}</td>" if i in numeric else f"<td>{c}</td>"
                                     for i, c in enumerate(row)) + "</tr>")
    return "".join(out) + "</table>"


def _options_for_record(options: dict[str, Any]) -> dict[str, Any]:
    """The options as run; an area of interest summarised by its polygons and vertices (not thousands of
    coordinates)."""
    out = dict(options)
    aoi = out.get("aoi")
    if isinstance(aoi, dict):
        polygons = aoi.get("coordinates") or []
        polygons = [polygons] if aoi.get("type") == "Polygon" else polygons
        vertices = sum(len(ring) for polygon in polygons for ring in polygon)
        out["aoi"] = f"{aoi.get('type')}: {len(polygons)} polygon(s), {vertices} vertices"
    return out


def case_report_html(name: str, summary: dict[str, Any], picture_png: bytes | None,
                     picture_note: str = "", files: dict[str, str] | None = None,
                     now: dt.datetime | None = None) -> str:
    """The report of one result.  `picture_png`: the map (PNG bytes) or None; `picture_note` says how it was
    drawn; `files`: the result's files by kind, named in the record; `now`: the report's time (UTC)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    best = summary.get("best_guess") or {}
    joint = summary.get("joint")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>GeoPlonk case report: {_e(name)}"
             f"</title><style>{STYLE}</style></head><body>"]
    title = "Joint map of several photos" if joint else "Photo"
    parts.append(f"<h1>GeoPlonk case report</h1><p>{title}: <b>{_e(name)}</b></p>")
    if picture_png:
        parts.append(f"<img alt='map of {_e(name)}' src='data:image/png;base64,"
                     f"{base64.b64encode(picture_png).decode('ascii')}'>")
        parts.append(f"<p class='muted'>{_e(picture_note)}</p>")
    parts.append("<h2>Best guess and localizability</h2>")
    parts.append(_table(["", ""], [
        ["best guess", f"{_e(best.get('place'))} {_e(best.get('country'))} "
                       f"({float(best.get('lat', 0)):.4f}, {float(best.get('lon', 0)):.4f})"],
        ["localizability", f"{float(summary.get('localizability', float('nan'))):.3f} "
                           "<span class='muted'>(uniform −0.291; higher is more localizable)</span>"],
    ]))
    parts.append("<h2>Top places</h2>")
    parts.append(_table(
        ["rank", "place", "country", "lat", "lon", "within 100 km", "within 500 km", "basin share"],
        [[_e(p.get("rank")), _e(p.get("place")), _e(p.get("country")), f"{p.get('lat', 0):.3f}",
          f"{p.get('lon', 0):.3f}", _pct(p.get("p_within_100km")), _pct(p.get("p_within_500km")),
          _pct(p.get("basin_share"))] for p in summary.get("top_places") or []],
        {0, 3, 4, 5, 6, 7}))
    parts.append("<h2>Credible regions</h2>")
    parts.append(_table(["level", "area"], [[_pct(r.get("level")), _km2(r.get("area_km2"))]
                                            for r in summary.get("credible_regions") or []], {0, 1}))
    claims = summary.get("claims") or []
    parts.append("<h2>Claim check</h2>")
    if claims:
        parts.append(_table(
            ["claim", "source", "lat", "lon", "smallest credible region holding it", "verdict"],
            [[_e(c.get("label")), _e(c.get("source")), f"{c.get('lat', 0):.4f}", f"{c.get('lon', 0):.4f}",
              _pct(c.get("credible_level")), f"<span class='verdict'>{_e(c.get('words'))}</span>"]
             for c in claims], {2, 3, 4}))
    else:
        parts.append("<p class='muted'>No claim was checked.</p>")
    aoi = summary.get("aoi")
    if aoi:
        weight = aoi.get("weight")
        parts.append("<h2>Area of interest</h2>")
        parts.append(_table(["", ""], [
            ["prior", "restricted to the area" if not weight else f"outside weighted {weight:g} against inside"],
            ["area", _km2(aoi.get("area_km2"))],
            ["the photo's own map inside it", _pct(aoi.get("prior_mass"))]]))
    if joint:
        parts.append("<h2>Photos combined</h2>")
        parts.append(f"<p class='muted'>{_e(joint.get('method'))}</p>")
        parts.append(_table(
            ["photo", "log-density at the joint best guess", "its own credible level there", "KL (nats)", ""],
            [[_e(c.get("name")), f"{c.get('log_density_at_guess', 0):.2f}", _pct(c.get("level_at_guess")),
              f"{c.get('kl_nats', 0):.2f}", _e(c.get("words"))] for c in joint.get("contributions") or []],
            {1, 2, 3}))
        if joint.get("left_out"):
            parts.append("<p class='warn'>Left out (not located): "
                         + ", ".join(_e(p.get("name")) for p in joint["left_out"]) + "</p>")
    warnings = summary.get("warnings") or []
    if warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{_e(w)}</li>" for w in warnings)
                     + "</ul>")
    options = summary.get("options") or {}
    record = [
        ["photo sha256", f"<code>{_e(summary.get('photo_sha256') or ('–' if joint else 'not recorded'))}</code>"],
        ["model", _e(summary.get("model"))],
        ["weights sha256", f"<code>{_e(summary.get('model_sha256'))}</code>"],
        ["encoder", _e(summary.get("encoder"))],
        ["seed", _e(options.get("seed"))],
        ["options", f"<code>{_e(json.dumps(_options_for_record(options), sort_keys=True))}</code>"],
        ["software version", _e(summary.get("software_version"))],
        ["server device", _e(summary.get("device"))],
        ["report written", _e(now.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))],
    ]
    for kind, path in (files or {}).items():
        record.append([f"{kind} file", f"<code>{_e(path)}</code>"])
    parts.append("<h2>Record</h2>" + _table(["", ""], record))
    parts.append("<p class='muted'>The probabilities are the model's; a credible region holds the place with "
                 "that probability if the model is calibrated for photos like this one.</p></body></html>")
    return "\n".join(parts)


def write_case_report(result, html_path: str | os.PathLike, picture_png: bytes | None, picture_note: str = "",
                      files: dict[str, Any] | None = None, name: str | None = None) -> Path:
    """Write the report of a located result (a client PhotoResult, or the joint map) atomically; returns its
    path.  The plugin calls it with a QGIS-rendered picture; `geoplonk locate --report` with Pillow's."""
    if not result.ok:
        raise ValueError(f"{result.name!r} was not located ({result.status}): there is nothing to report")
    text = case_report_html(name or result.name, result.summary or {}, picture_png, picture_note,
                            {kind: str(path) for kind, path in (files or {}).items()})
    return atomic_write(Path(html_path), text.encode("utf-8"))
