"""`geoplonk locate` against the shared test server: files per photo, run summary, exit codes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from geoplonk_service.launcher import free_port

from .conftest import FAST, REPO, jpeg_bytes, server_env


def locate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_server.cli", "locate", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={**os.environ, **server_env()})


def fast_args() -> list[str]:
    return ["--samples", str(FAST["samples"]), "--steps", str(FAST["steps"]), "--resolution", str(FAST["resolution"])]


def test_locate_folder_writes_products_and_summary(endpoint, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "one.jpg").write_bytes(jpeg_bytes(31, gps=(-33.9, 151.2)))
    (photos / "two.jpeg").write_bytes(jpeg_bytes(32))
    (photos / "broken.jpg").write_bytes(b"not a photo")
    (photos / "notes.txt").write_text("ignored: not a photo extension")
    out = tmp_path / "out"
    proc = locate(str(photos), "--out", str(out), "--endpoint", endpoint, *fast_args())
    assert proc.returncode == 0, proc.stderr
    assert "2 of 3 photos located" in proc.stdout
    for stem in ("one", "two"):
        assert {(out / f"{stem}{ext}").is_file() for ext in (".tif", ".gpkg", ".json")} == {True}
    assert (out / "broken.json").is_file() and not (out / "broken.tif").exists()
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["photo"].rsplit("/", 1)[-1]: r["status"] for r in rows} == {
        "broken.jpg": "failed", "one.jpg": "ok", "two.jpeg": "ok"}
    assert float(next(r for r in rows if r["photo"].endswith("one.jpg"))["exif_error_km"]) >= 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"ok": 2, "failed": 1, "cancelled": 0}
    assert "broken.jpg" in proc.stderr  # the failure is explained


def test_locate_all_failed_or_server_down(endpoint, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    proc = locate(str(bad), "--out", str(tmp_path / "o1"), "--endpoint", endpoint, *fast_args())
    assert proc.returncode == 1
    down = locate(str(bad), "--out", str(tmp_path / "o2"), "--endpoint", f"tcp://127.0.0.1:{free_port()}",
                  "--timeout", "1")
    assert down.returncode == 3 and "not answering" in down.stderr


def test_locate_starts_and_stops_its_own_server(tiny_model, tmp_path):
    photo = tmp_path / "harbour.jpg"
    photo.write_bytes(jpeg_bytes(33))
    out = tmp_path / "out"
    command = f"{sys.executable} -m model_server.cli serve --model {tiny_model}"
    proc = locate(str(photo), "--out", str(out), "--start-server", "--server-command", command, *fast_args())
    assert proc.returncode == 0, proc.stderr
    assert "Starting a local GeoPlonk server" in proc.stderr and "1 of 1 photos located" in proc.stdout
    (row,) = list(csv.DictReader((out / "summary.csv").open()))
    assert (row["photo"], row["path"], row["status"]) == ("harbour.jpg", str(photo), "ok")
    assert -90 <= float(row["lat"]) <= 90 and row["model"] == "tiny-test"


def test_locate_refuses_options_outside_the_protocols_ranges(tmp_path):
    for args, needle in ((["--samples", "3"], "samples must be an integer in [16, 65536]"),
                         (["--solver", "leapfrog"], "invalid choice"),
                         (["--levels", "0.5,1.5"], "probabilities in (0, 1)")):
        proc = locate("x.jpg", "--out", str(tmp_path), *args)
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr


def test_locate_sends_levels_top_k_and_solver(endpoint, tmp_path):
    photo = tmp_path / "quay.jpg"
    photo.write_bytes(jpeg_bytes(34))
    out = tmp_path / "out"
    proc = locate(str(photo), "--out", str(out), "--endpoint", endpoint, *fast_args(),
                  "--levels", "0.6,0.95", "--top-k", "2", "--solver", "heun")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "quay.json").read_text())
    assert summary["options"]["levels"] == [0.6, 0.95]
    assert (summary["options"]["top_k"], summary["options"]["solver"]) == (2, "heun")
    assert [r["level"] for r in summary["credible_regions"]] == [0.6, 0.95]
    assert 1 <= len(summary["top_places"]) <= 2
