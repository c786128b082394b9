"""The analyst's parameters of `geoplonk:geolocatephotos`: claims to check, an area of interest, a joint map.

Kept apart from the algorithm so its photo parameters stay readable: `add_parameters` declares them, and
`options` turns their values into the protocol's geolocate options (raising QgsProcessingException with the
problem in words: a line layer given as an area, a point off the globe).
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterPoint,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication

from geoplonk_service import protocol as P

from ..aoi import AoiError, aoi_from_features
from ..claims import ClaimError, claim_at, claims_from_features, label_field

CLAIM_POINT = "CLAIM_POINT"
CLAIM_LABEL = "CLAIM_LABEL"
CLAIM_LAYER = "CLAIM_LAYER"
CLAIM_LABEL_FIELD = "CLAIM_LABEL_FIELD"
CLAIM_EXIF = "CLAIM_EXIF"
AOI = "AOI"
AOI_WEIGHT = "AOI_WEIGHT"
JOINT = "JOINT"
REPORT = "REPORT"

HELP = (
    "Claims: a point (click it on the map or type 'x,y [EPSG:...]'), the points of a layer (its selected "
    "features with 'Selected features only'), or each photo's own EXIF GPS position. Each is checked against "
    "the photo's map: the smallest credible region holding it, its density against the best guess's and its "
    "distance to each region, in words an analyst can quote (the best-guess layer's claim_* fields and the "
    "claims layer of each GeoPackage).\n\n"
    "Area of interest: polygons (a country, a coastline strip) the photos are known to come from; the maps "
    "are restricted to it, or with a weight above 0 only favour it (1: no effect).\n\n"
    "Joint map: the photos are of one place; their maps are multiplied into one map, written as joint.tif, "
    f"joint.gpkg and joint.json (joint_2.* when a photo is named joint; at most {P.MAX_JOINT_PHOTOS} photos).\n\n"
    "Case reports: one self-contained HTML file per result (<stem>.html, and joint.html), with the map as QGIS "
    "draws it, the top places, the claim verdicts and the record of the run."
)


def _tr(text: str) -> str:
    return QCoreApplication.translate("GeoPlonk", text)


def add_parameters(alg) -> None:
    """Declare the analyst's parameters on `alg` (all optional: a plain run is unchanged)."""
    alg.addParameter(QgsProcessingParameterPoint(CLAIM_POINT, _tr("Claimed location to check"), optional=True))
    alg.addParameter(QgsProcessingParameterString(CLAIM_LABEL, _tr("Label of the claimed location"), "",
                                                  optional=True))
    alg.addParameter(QgsProcessingParameterFeatureSource(
        CLAIM_LAYER, _tr("Claimed locations (point layer)"), [QgsProcessing.TypeVectorPoint], optional=True))
    alg.addParameter(QgsProcessingParameterField(
        CLAIM_LABEL_FIELD, _tr("Claim label field (detected when empty)"), parentLayerParameterName=CLAIM_LAYER,
        optional=True))
    alg.addParameter(QgsProcessingParameterBoolean(CLAIM_EXIF, _tr("Check each photo's EXIF GPS as a claim"),
                                                   False))
    alg.addParameter(QgsProcessingParameterFeatureSource(
        AOI, _tr("Area of interest (polygons)"), [QgsProcessing.TypeVectorPolygon], optional=True))
    weight = P.AOI_WEIGHT
    alg.addParameter(QgsProcessingParameterNumber(
        AOI_WEIGHT, _tr("Weight outside the area of interest (0: restricted to it, 1: no effect)"),
        QgsProcessingParameterNumber.Double, weight.default, False, weight.minimum, weight.maximum))
    alg.addParameter(QgsProcessingParameterBoolean(JOINT, _tr("Photos of one place: also make one joint map"),
                                                   False))
    alg.addParameter(QgsProcessingParameterBoolean(REPORT, _tr("Write an HTML case report per result"), False))


def given(parameters: dict, name: str) -> bool:
    return parameters.get(name) not in (None, "")


def options(alg, parameters: dict, context, feedback) -> dict[str, Any]:
    """The geolocate options the analyst's parameters ask for (none when they are left empty)."""
    out: dict[str, Any] = {}
    try:
        claims = _claims(alg, parameters, context)
        if claims:
            out["claims"] = claims
        if alg.parameterAsBoolean(parameters, CLAIM_EXIF, context):
            out["claim_exif"] = True
        if given(parameters, AOI):
            source = alg.parameterAsSource(parameters, AOI, context)
            if source is None:
                raise QgsProcessingException(alg.invalidSourceError(parameters, AOI))
            area = aoi_from_features(source.getFeatures(), source.sourceCrs(), source.sourceName(), source.wkbType())
            out["aoi"] = area.geometry
            feedback.pushInfo(f"Area of interest: {area.describe(source.sourceName())}")
            out["aoi_weight"] = alg.parameterAsDouble(parameters, AOI_WEIGHT, context)
    except (ClaimError, AoiError) as exc:
        raise QgsProcessingException(str(exc)[:1].upper() + str(exc)[1:]) from None
    if alg.parameterAsBoolean(parameters, JOINT, context):
        out["joint"] = True
    return out


def _claims(alg, parameters: dict, context) -> list[dict]:
    claims = []
    if given(parameters, CLAIM_POINT):
        point = alg.parameterAsPoint(parameters, CLAIM_POINT, context)
        crs = alg.parameterAsPointCrs(parameters, CLAIM_POINT, context)
        label = alg.parameterAsString(parameters, CLAIM_LABEL, context) or ""
        claims.append(claim_at(point, crs, "user", label))
    if given(parameters, CLAIM_LAYER):
        source = alg.parameterAsSource(parameters, CLAIM_LAYER, context)
        if source is None:
            raise QgsProcessingException(alg.invalidSourceError(parameters, CLAIM_LAYER))
        field = alg.parameterAsString(parameters, CLAIM_LABEL_FIELD, context) or label_field(source.fields().names())
        claims.extend(claims_from_features(source.getFeatures(), source.sourceCrs(), source.sourceName(),
                                           source.wkbType(), field))
    if len(claims) > P.MAX_CLAIMS:
        raise ClaimError(f"{len(claims)} claims given; at most {P.MAX_CLAIMS} are checked at once")
    return claims
