"""The words of issue 23's tools without a server: group names of joint maps, map-tip lines, the claim fields
of Processing's rows, and the case the toolbar sends."""

from __future__ import annotations

from qgis_plugin import case_text
from qgis_plugin.analysis import Analysis
from qgis_plugin.claims import claim_fields

CHECK = {"lat": 48.85, "lon": 2.35, "source": "user", "label": "the caption's Paris", "credible_level": 0.973,
         "verdict": "unlikely under the model",
         "words": "unlikely under the model: outside the 97 % region (inside the 99 % region); density 0.4 % of "
                  "the best guess's"}


def test_joint_title_names_the_photos_then_counts_the_rest():
    photos = [{"index": i, "name": f"p{i}.jpg"} for i in range(6)]
    assert case_text.joint_title({"joint": {"photos": photos[:2]}}) == "Joint map: p0.jpg + p1.jpg"
    assert case_text.joint_title({"joint": {"photos": photos}}) == \
        "Joint map: p0.jpg + p1.jpg + p2.jpg + p3.jpg + 2 more"
    assert not case_text.is_joint({"claims": []}) and case_text.is_joint({"joint": {"photos": photos}})


def test_tip_lines_quote_claims_area_and_contributions_unaltered():
    summary = {"claims": [CHECK], "aoi": {"weight": 0.0, "area_km2": 551000.0, "prior_mass": 0.123},
               "joint": {"contributions": [{"words": "a.jpg: the joint best guess lies outside the 12 % region of "
                                                     "this photo's own map"}]}}
    lines = case_text.tip_lines(summary)
    assert lines[0] == f"Claim: the caption's Paris: {CHECK['words']}"  # apostrophes kept: the words are quoted
    assert lines[1] == ("Map restricted to the area of interest (551,000 km², holding 12.3 % of the map without "
                        "it)")
    assert "this photo's own map" in lines[2]
    soft = case_text.tip_lines({"aoi": {"weight": 0.1, "area_km2": 1.0, "prior_mass": 0.5}})
    assert soft[0].startswith("Map weighted towards (outside weight 0.1) the area of interest")
    tagged = {"claims": [{"source": "exif", "words": "a <b> tag"}]}
    assert case_text.tip_lines(tagged) == ["Claim: exif: a &lt;b&gt; tag"]


def test_claim_fields_of_processing_rows():
    second = {**CHECK, "label": "", "source": "exif", "verdict": "likely under the model", "words": "likely"}
    assert claim_fields({"claims": [CHECK, second]}) == {
        "claims_checked": 2, "claim_label": "the caption's Paris", "claim_verdict": "unlikely under the model",
        "all_claims": f"the caption's Paris: {CHECK['words']} | exif: likely"}
    assert claim_fields({}) == {"claims_checked": 0, "claim_label": None, "claim_verdict": None, "all_claims": None}


def test_the_case_sends_only_what_is_set():
    case = Analysis()
    assert case.options() == {} and case.describe() == "no claim and no area of interest"
    aoi = {"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]]]}
    case = Analysis(claims=[CHECK], claim_exif=True, aoi=aoi, aoi_name="'countries' (1 polygon)", aoi_weight=0.2)
    assert case.options() == {"claims": [CHECK], "claim_exif": True, "aoi": aoi, "aoi_weight": 0.2}
    assert case.describe() == ("1 claim (the caption's Paris); each photo's EXIF GPS as a claim; area of interest "
                               "'countries' (1 polygon), outside it weighted 0.2")
