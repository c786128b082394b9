"""`make bench`'s record and page, without measuring anything: bench_all.py --dry-run writes a record of made-up
figures that render_doc.py must accept and render (targets table, a section per part, README.md's table), and
the committed records still render into the committed page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import render_doc  # noqa: E402


def test_dry_run_record_validates_and_renders(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for file in render_doc.RESULTS.glob("*.json"):  # older records must keep rendering beside the new kind
        shutil.copy(file, results)
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_all.py"), "--dry-run", "--record",
                          str(results / "2099-01-01.json")], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Targets (issue 21):" in run.stdout
    record = json.loads((results / "2099-01-01.json").read_text())
    assert record["benchmark"] == "bench_all" and render_doc.validate(record) == []
    assert {t["key"] for t in record["targets"]} >= {"sampling_share", "density_rate", "one_photo", "raster",
                                                     "batch_first", "accuracy_cost.plonk-size"}
    assert {"cpu", "cores", "torch", "device"} <= set(record["machine"])
    weights = json.loads((REPO / "model_server/models/earth-tiles/geoplonk.json").read_text())["files"]
    assert f"weights sha256 {weights['model.safetensors'][:8]}..." in " ".join(record["notes"])  # which model

    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    page = tmp_path / "benchmarks.md"
    assert render_doc.main(["--results", str(results), "--out", str(page), "--readme", str(readme)]) == 0
    text = page.read_text()
    assert "#### Targets (issue 21): 4 of 9 met" in text
    for title in ("1. Matmul roofline", "2. Sampling at the PLONK size", "3. Accuracy against cost: PLONK size",
                  "3. Accuracy against cost: default model", "4. Exact log-density", "5. One photo through a warm",
                  "6. A batch of photos", "7. How the time grows"):
        assert f"#### {title}" in text
    assert "## One photo through the server" in text  # an older benchmark's section, still there
    table = readme.read_text()
    assert table.count(render_doc.README_END) == 1 and "| the targets of issue 21 met" in table
    assert "7,280 / 2,730 / 2,430 sample-steps/s" in table
    assert render_doc.main(["--results", str(results), "--out", str(page), "--readme", str(readme), "--check"]) == 0


def test_a_second_run_the_same_day_keeps_the_first_record(tmp_path):
    """A folder given to --record gets <date>.json, then <date>T<HHMM>.json: a rerun never overwrites a record."""
    for _ in range(2):
        run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_all.py"), "--dry-run", "--no-doc",
                              "--record", f"{tmp_path}{os.sep}"], capture_output=True, text=True, timeout=120,
                             cwd=REPO)
        assert run.returncode == 0, run.stdout + run.stderr
    names = sorted(path.name for path in tmp_path.glob("*.json"))
    assert len(names) == 2 and names[1].startswith(names[0][:-5] + "T"), names


def test_a_broken_record_is_named():
    assert render_doc.validate({"schema": 1}) == [f"missing {key}" for key in render_doc.REQUIRED]
    record = {"benchmark": "x", "title": "t", "date": "2099-01-01", "machine": {}, "command": "c",
              "figures": [{"what": "a", "value": 1, "part": "p"}], "parts": [{"part": "q", "title": "Q"}],
              "targets": [{"what": "w", "goal": "g", "value": 1, "met": "yes"}]}
    problems = render_doc.validate(record)
    assert any("does not list: p" in p for p in problems) and any("met (true or false)" in p for p in problems)


def test_committed_records_render_into_the_committed_page():
    assert render_doc.main(["--check"]) == 0, "run /usr/bin/python3 benchmarks/render_doc.py"


def test_a_cpu_without_bf16_units_is_judged_at_the_precision_the_server_runs():
    """There the server runs a bf16 request in fp32: the sampling target, the notes and README's table are about
    fp32, and say why bf16 is missing."""
    from suite.common import Sizes
    from suite.record import NO_BF16, build_record, synthetic_raw

    raw = synthetic_raw()
    raw["precisions"] = ["fp32"]
    del raw["roofline"]["bf16"], raw["sampling"]["seconds"]["ours bf16"]
    record = build_record(raw, sizes=Sizes(), quick=True, failures=[])
    assert render_doc.validate(record) == []
    share = next(t for t in record["targets"] if t["key"] == "sampling_share")
    flops, sampling = raw["flops"], raw["sampling"]
    work = sampling["steps"] * (sampling["n"] * flops["per_sample"] + flops["per_image"])
    expected = 100 * work / sampling["seconds"]["ours fp32"] / 1e9 / raw["roofline"]["fp32"]
    assert share["what"].startswith("sampling at the PLONK size, ours fp32") and share["value"] == round(expected, 1)
    assert share["goal"] == ">= 70 % of the fp32 roofline" and NO_BF16 in record["notes"]
    block = render_doc.readme_block([(Path("2099-01-01.json"), record)])
    assert "sample-steps per second: fp32 (bf16 not native here) / the reference's fp32" in block
    assert "share of this machine's fp32 matmul roofline" in block and "bf16 /" not in block


def test_on_a_cpu_without_bf16_units_the_engine_parts_time_fp32_only(monkeypatch):
    """Emulated bf16 is a path no request takes there (and minutes per figure): parts 2 and 4 leave it out."""
    import dataclasses

    import torch
    from suite import engine
    from suite.common import QUICK

    from model_server.engine import sampling
    from model_server.engine.network import FlowConfig, GeoAdaLNMLP
    from model_server.engine.sphere import uniform_sphere

    monkeypatch.setattr(sampling, "native_cpu_bf16", lambda: False)
    assert engine.precisions_run("cpu") == ("fp32",)
    flow = GeoAdaLNMLP(FlowConfig(cond_dim=8, dim=16, depth=1)).eval()
    emb = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    sizes = dataclasses.replace(QUICK, roofline_size=64)
    timed = engine.part_sampling(sizes, "cpu", flow, emb, uniform_sphere(sizes.samples), None)
    assert set(timed["seconds"]) == {"ours fp32"} and set(timed["roofline"]) == {"size", "fp32"}
    density = engine.part_density(sizes, "cpu", flow, emb)
    assert set(density) == {"rk4", "server"} and "fp32" in density["server"]["method"]
