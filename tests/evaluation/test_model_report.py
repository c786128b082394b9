"""The default model's figures in README.md and its model card are rendered from the committed evaluation
records (scripts/render_model_report.py), with their intervals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from model_server.evaluation.report import report_sections

from .test_report import methods

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import render_model_report as R  # noqa: E402


def record(n: int, land_every: int) -> dict:
    ms = methods(n)
    land = np.arange(n) % land_every == 0
    return {"n": n, **report_sections(ms, land)}


def test_blocks_show_every_figure_with_its_interval(tmp_path):
    for split, doc in (("report", record(200, 3)), ("land", record(120, 1))):
        (tmp_path / f"earth-tiles-eval-{split}.json").write_text(json.dumps(doc))
    blocks = R.blocks(tmp_path)
    report = json.loads((tmp_path / "earth-tiles-eval-report.json").read_text())
    guess = next(r for r in report["rows"] if r["key"] == "flow_guess")
    lo, hi = guess["geoscore_ci"]
    assert f"| {guess['geoscore']:.0f} [{lo:.0f}, {hi:.0f}] |" in blocks["summary"]
    assert "n = 200" in blocks["tables"] and "n = 120" in blocks["tables"]
    difference = report["comparisons"][0]
    assert f"{difference['geoscore_difference']:+.0f}" in blocks["summary"]
    assert "Land tiles: the land split, 120 held-out tiles" in blocks["summary"]
    text = f"before\n{R.BEGIN.format(name='summary')}\nold\n{R.END.format(name='summary')}\nafter\n"
    assert R.replace_block(text, "summary", blocks["summary"]) == f"before\n{blocks['summary']}\nafter\n"


def test_records_of_other_weights_are_refused(tmp_path):
    for split, doc in (("report", record(50, 3)), ("land", record(40, 1))):
        doc["model_sha256"] = "ab" * 32
        (tmp_path / f"earth-tiles-eval-{split}.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="the report record scored weights abababab..., but the committed model's"):
        R.blocks(tmp_path)
    manifest = {"files": {"model.safetensors": "ab" * 32}}
    R.check_same_model({"report": {"model_sha256": "ab" * 32}, "land": {}}, manifest)  # the same weights, or no sha
    with pytest.raises(ValueError, match="the land record"):
        R.check_same_model({"report": {}, "land": {"model_sha256": "cd" * 32}}, manifest)


def test_committed_figures_match_their_records():
    from geoplonk_service import protocol as P

    calibration = json.loads(R.MANIFEST.read_text())["calibration"]
    for split in R.SPLITS:
        doc = R.load(split)
        assert doc["model_name"] == "earth-tiles" and doc["n"] >= {"report": 1000, "land": 300}[split]
        # the figures are those of what ships: the server's default sampler at the manifest's guidance
        ran = doc["settings"]
        assert (ran["solver"], ran["steps"], ran["precision"]) == (P.DEFAULT_SOLVER, P.STEPS.default,
                                                                    P.DEFAULT_OPTIONS["precision"])
        assert ran["distribution_cfg"] == calibration["distribution_cfg"]
        assert ran.get("land_cfg") == calibration.get("land_cfg")  # the manifest's rule by land share, if any
        if "land_cfg" in calibration:
            assert ran["land_share_threshold"] == calibration["land_share_threshold"]
        assert all(len(e) == doc["n"] for e in doc["per_image"]["error_km"].values())  # per-tile errors kept
    assert R.load("land")["land"]["water_share"] == 0.0
    assert R.main(["--check"]) == 0
