"""Claimed locations from QGIS (a clicked point, a point layer's features) as the protocol's `claims`, and the
server's verdicts on them as a few quotable fields.

A claim is checked in lon/lat degrees: points in another CRS are transformed to EPSG:4326 first, and a point
that lands outside the globe's range is refused with the reason rather than sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsPointXY,
    QgsProject,
    QgsWkbTypes,
)

from geoplonk_service import protocol as P

WGS84 = "EPSG:4326"
# Fields of the best-guess layer (Processing) on a photo's claims, beside the result rows' claim_level and
# claim_words (the first claim's).
CLAIM_FIELDS: tuple[tuple[str, type], ...] = (
    ("claims_checked", int),
    ("claim_label", str),  # the first claim's label (its source when it has none)
    ("claim_verdict", str),  # its verdict: "plausible under the model", ...
    ("all_claims", str),  # every claim's verdict in words, "label: words", joined by CLAIM_SEPARATOR
)
CLAIM_SEPARATOR = " | "
# Field names a claim layer's label is taken from, in order (case-insensitive), when none is named.
LABEL_FIELD_NAMES = ("label", "name", "claim", "title", "description")


class ClaimError(ValueError):
    """A claim that cannot be checked, with the reason in words for the analyst."""


def to_wgs84(point: QgsPointXY, crs: QgsCoordinateReferenceSystem | None) -> QgsPointXY:
    """`point` in lon/lat degrees; ClaimError when it has no place on the globe in that CRS."""
    if crs is None or not crs.isValid() or crs.authid() == WGS84:
        return QgsPointXY(point)
    transform = QgsCoordinateTransform(crs, QgsCoordinateReferenceSystem(WGS84), QgsProject.instance())
    try:
        return transform.transform(point)
    except QgsCsException:
        raise ClaimError(f"the point ({point.x():g}, {point.y():g}) in {crs.authid()} has no position on the "
                         "globe") from None


def claim_at(point: QgsPointXY, crs: QgsCoordinateReferenceSystem | None, source: str, label: str = "") -> dict:
    """One claim {"lat", "lon", "source", "label"} from a point in `crs`, checked against the protocol."""
    where = to_wgs84(point, crs)
    lon, lat = where.x(), where.y()
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ClaimError(f"the claimed point lies at longitude {lon:g}, latitude {lat:g}: out of range "
                         "(longitude -180 to 180, latitude -90 to 90 degrees); check the layer's CRS")
    label = label.strip()[: P.MAX_CLAIM_TEXT] or f"{source} claim at {lat:.4f}, {lon:.4f}"
    try:
        return P.validate_claims([{"lat": lat, "lon": lon, "source": source, "label": label}])[0]
    except P.ProtocolError as exc:
        raise ClaimError(str(exc).replace("option 'claims'[0]", "the claim")) from None


def label_field(field_names: Iterable[str]) -> str | None:
    """The field a claim layer's labels come from, or None."""
    lowered = {n.lower(): n for n in field_names}
    return next((lowered[n] for n in LABEL_FIELD_NAMES if n in lowered), None)


def claims_from_features(features: Iterable, crs, layer_name: str, wkb_type: int,
                         field: str | None = None) -> list[dict]:
    """Claims from point features (source "layer"), labelled from `field`; ClaimError names the problem."""
    if QgsWkbTypes.geometryType(wkb_type) != QgsWkbTypes.PointGeometry:
        kind = QgsWkbTypes.geometryDisplayString(QgsWkbTypes.geometryType(wkb_type)).lower()
        raise ClaimError(f"'{layer_name}' holds {kind} features, not points: a claim is a point")
    claims = []
    for feature in features:
        geometry = feature.geometry()
        if geometry is None or geometry.isEmpty():
            continue
        points = geometry.asMultiPoint() if geometry.isMultipart() else [geometry.asPoint()]
        label = str(feature[field]) if field and feature[field] not in (None, "") else ""
        label = label if label and label != "NULL" else f"{layer_name} #{feature.id()}"
        claims.extend(claim_at(p, crs, "layer", label) for p in points)
    if not claims:
        raise ClaimError(f"'{layer_name}' has no point to check as a claim: select point features first")
    if len(claims) > P.MAX_CLAIMS:
        raise ClaimError(f"'{layer_name}' gives {len(claims)} claims; at most {P.MAX_CLAIMS} are checked at once")
    return claims


def claims_from_layer(layer, selected_only: bool = True) -> list[dict]:
    """Claims from a vector layer's selected (or all) point features."""
    from qgis.core import QgsVectorLayer

    if not isinstance(layer, QgsVectorLayer):
        raise ClaimError("the active layer is not a vector layer: pick a point layer for the claims")
    if selected_only and layer.selectedFeatureCount() == 0 and \
            QgsWkbTypes.geometryType(layer.wkbType()) == QgsWkbTypes.PointGeometry:
        raise ClaimError(f"no feature is selected in '{layer.name()}': select the claimed points first")
    features = layer.getSelectedFeatures() if selected_only else layer.getFeatures()
    return claims_from_features(features, layer.crs(), layer.name(), layer.wkbType(),
                                label_field(layer.fields().names()))


def claim_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """The CLAIM_FIELDS of one photo's result summary (None where no claim was checked)."""
    checks = [c for c in (summary or {}).get("claims") or [] if isinstance(c, dict)]
    if not checks:
        return {"claims_checked": 0, **{name: None for name, _ in CLAIM_FIELDS[1:]}}
    first = checks[0]
    return {
        "claims_checked": len(checks),
        "claim_label": first.get("label") or first.get("source"),
        "claim_verdict": first.get("verdict"),
        "all_claims": CLAIM_SEPARATOR.join(quote(c) for c in checks),
    }


def quote(check: dict[str, Any]) -> str:
    """'EXIF GPS: unlikely under the model: outside the 97 % region ...': a claim's verdict, ready to quote."""
    label = check.get("label") or check.get("source") or "claim"
    return f"{label}: {check.get('words') or check.get('verdict') or ''}".strip()
