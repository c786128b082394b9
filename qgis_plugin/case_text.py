"""The words of the analyst's tools on the map: claim verdicts, the area of interest, a joint map's photos.

Pure functions of a result summary (no Qt), shared by the map tips, the group names and the message bar.
"""

from __future__ import annotations

import html
from typing import Any

from .claims import quote

JOINT_PREFIX = "Joint map: "
# A claim feature's label on the map: who claims it and the verdict (the full words are in its map tip).
CLAIM_LABEL_EXPRESSION = "coalesce(nullif(\"label\", ''), \"source\") || ': ' || \"verdict\""
# A claim feature's map tip: the quotable sentence, as the server wrote it.
CLAIM_TIP_TEMPLATE = (
    "<b>[% coalesce(nullif(\"label\", ''), \"source\") %]</b> ([% \"source\" %] claim)<br/>"
    "[% \"words\" %]<br/>Smallest credible region holding it: [% format_number(\"credible_level\" * 100, 1) %] %"
)
MAX_NAMES = 4


def joint_title(summary: dict[str, Any]) -> str:
    """'Joint map: harbour.jpg + forest.tif': the photos a joint map combines (the first few, then a count)."""
    names = [str(p.get("name", "")) for p in (summary.get("joint") or {}).get("photos") or []]
    shown = " + ".join(names[:MAX_NAMES])
    if len(names) > MAX_NAMES:
        shown += f" + {len(names) - MAX_NAMES} more"
    return JOINT_PREFIX + (shown or "no photo")


def is_joint(summary: dict[str, Any]) -> bool:
    return bool((summary or {}).get("joint"))


def tip_lines(summary: dict[str, Any]) -> list[str]:
    """HTML lines for a result's map tip: each claim's verdict, the area of interest, each photo's agreement
    with a joint map."""
    lines = []
    for check in summary.get("claims") or []:
        lines.append(f"Claim: {html.escape(quote(check), quote=False)}")
    aoi = summary.get("aoi")
    if isinstance(aoi, dict):
        weight = aoi.get("weight") or 0.0
        how = "restricted to" if weight == 0 else f"weighted towards (outside weight {weight:g})"
        lines.append(f"Map {how} the area of interest ({aoi.get('area_km2', 0):,.0f} km², holding "
                     f"{aoi.get('prior_mass', 0) * 100:.1f} % of the map without it)")
    for part in (summary.get("joint") or {}).get("contributions") or []:
        lines.append(html.escape(str(part.get("words", "")), quote=False))
    return lines
