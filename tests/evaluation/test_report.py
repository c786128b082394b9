"""The report's rows with their intervals, the land rows and the paired comparison, on known per-tile scores."""

from __future__ import annotations

import numpy as np

from model_server.evaluation.report import (
    MethodScores,
    format_report,
    format_table,
    method_row,
    per_tile_errors,
    report_sections,
)
from model_server.products.place_names import is_land

# Paris, Nairobi, Sao Paulo, Beijing on land; the mid-Pacific, the South Atlantic and the Indian Ocean at sea.
PLACES = np.array([[48.8566, 2.3522], [-1.2921, 36.8219], [-23.55, -46.63], [39.9, 116.4],
                   [0.0, -150.0], [-40.0, -20.0], [-20.0, 80.0]])


def test_land_split_on_known_places():
    assert is_land(PLACES[:, 0], PLACES[:, 1]).tolist() == [True] * 4 + [False] * 3
    assert is_land(np.array([48.8566]), np.array([362.3522]))[0]  # longitudes past 180 wrap


def methods(n: int = 200) -> list[MethodScores]:
    rng = np.random.default_rng(0)
    d = rng.exponential(3000.0, n)
    inside = rng.uniform(size=(n, 1)) < np.array([0.5, 0.9, 0.99])
    return [
        MethodScores("retrieval_kde", "retrieval top-32 kernel density", d, -rng.normal(1.0, 1.0, n)),
        MethodScores("flow_guess", "flow, cfg=2 best guess of 8 samples", d * 0.8),
        MethodScores("flow_distribution", "flow, distribution (cfg=0)", d * 0.8, -rng.normal(0.5, 1.0, n), inside,
                     localizability=-d + rng.normal(0, 500.0, n), extra={"note": "guess's distances"}),
        MethodScores("flow_map", "flow, the server's map", logp=-rng.normal(0.5, 1.0, n), inside=inside),
    ]


def test_rows_carry_intervals_that_hold_their_figures():
    rows = [method_row(m) for m in methods()]
    dist = rows[2]
    for key in ("geoscore", "mean_km", "median_km", "acc_750km", "acc_2500km", "nll_mean", "coverage_50",
                "coverage_90", "coverage_99"):
        lo, hi = dist[f"{key}_ci"]
        assert lo <= dist[key] <= hi, key
    assert dist["note"] == "guess's distances" and dist["spearman_localizability_vs_error"] < -0.5
    assert list(dist)[:4] == ["method", "key", "n", "mean_km"] and list(dist)[4] == "mean_km_ci"
    assert "geoscore" not in rows[3] and "coverage_90_ci" in rows[3] and rows[3]["n"] == 200
    assert "nll_mean_ci" not in rows[1] and "coverage_50" not in rows[1]
    table = format_table(rows)
    geo = f"{dist['geoscore']:.0f} [{dist['geoscore_ci'][0]:.0f}, {dist['geoscore_ci'][1]:.0f}]"
    assert geo in table.splitlines()[4]


def test_land_rows_water_share_and_paired_comparison():
    ms = methods()
    land = np.arange(200) % 4 == 0
    sections = report_sections(ms, land)
    assert sections["land"]["n"] == 50 and sections["land"]["water_share"] == 0.75
    assert [r["n"] for r in sections["land"]["rows"]] == [50] * 4
    assert sections["land"]["rows"][1]["geoscore"] == method_row(ms[1].subset(land))["geoscore"]
    by_subset = {c["subset"]: c for c in sections["comparisons"]}
    assert set(by_subset) == {"all", "land"} and by_subset["land"]["n"] == 50
    c = by_subset["all"]
    assert (c["a"], c["b"]) == ("flow_guess", "retrieval_kde")
    assert c["geoscore_difference"] == c["geoscore_a"] - c["geoscore_b"] > 0
    assert 0 < c["geoscore_difference_ci"][0] < c["geoscore_difference"] < c["geoscore_difference_ci"][1]
    assert set(per_tile_errors(ms)) == {"retrieval_kde", "flow_guess", "flow_distribution"}
    document = {"n": 200, "intervals": {"level": 0.95}, **sections}
    text = format_report(document)
    assert "Land tiles (n=50; water share of the split 75.0 %)" in text and "paired bootstrap" in text


def test_without_retrieval_or_land_the_sections_stay_well_formed():
    ms = methods(20)[1:]
    sections = report_sections(ms, np.zeros(20, dtype=bool))
    assert sections["comparisons"] == [] and sections["land"]["rows"] == [] and sections["land"]["water_share"] == 1
    text = format_report({"n": 20, "intervals": {"level": 0.95}, **sections})
    assert "no land tiles" in text and "paired" not in text
    # a land subset of 2 tiles: intervals still given, the rank correlation undefined
    rows = report_sections(ms, np.arange(20) < 2)["land"]["rows"]
    assert rows[1]["spearman_localizability_vs_error"] is None and len(rows[1]["geoscore_ci"]) == 2
