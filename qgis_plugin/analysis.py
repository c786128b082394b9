"""The case the analyst is working on: claims to check and an area of interest, set from the toolbar and sent
with every geolocation until cleared.

Kept for the QGIS session only (a case's claims are not a preference to carry into the next case).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geoplonk_service import protocol as P


@dataclass
class Analysis:
    claims: list[dict[str, Any]] = field(default_factory=list)  # protocol claims: clicked or from a layer
    claim_exif: bool = False  # also check each photo's own EXIF GPS position
    aoi: dict[str, Any] | None = None  # GeoJSON MultiPolygon in lon/lat
    aoi_name: str = ""  # where the area came from, for the analyst: "countries (2 polygons)"
    aoi_weight: float = P.AOI_WEIGHT.default

    def options(self) -> dict[str, Any]:
        """The geolocate options of this case (none of them when nothing is set)."""
        out: dict[str, Any] = {}
        if self.claims:
            out["claims"] = list(self.claims)
        if self.claim_exif:
            out["claim_exif"] = True
        if self.aoi is not None:
            out["aoi"] = self.aoi
            out["aoi_weight"] = float(self.aoi_weight)
        return out

    def describe(self) -> str:
        """One line for the message bar: what the next geolocation will check."""
        parts = []
        if self.claims:
            labels = ", ".join(c["label"] for c in self.claims[:3]) + (" …" if len(self.claims) > 3 else "")
            parts.append(f"{len(self.claims)} claim{'s' if len(self.claims) != 1 else ''} ({labels})")
        if self.claim_exif:
            parts.append("each photo's EXIF GPS as a claim")
        if self.aoi is not None:
            weight = "the maps restricted to it" if self.aoi_weight == 0 else \
                f"outside it weighted {self.aoi_weight:g}"
            parts.append(f"area of interest {self.aoi_name}, {weight}")
        return "; ".join(parts) if parts else "no claim and no area of interest"
