"""`geoplonk locate` on many photos: memory stays flat (peak RSS of the locate process for N and 10 N photos),
and a rerun skips the photos whose outputs are complete unless --force."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import REPO, jpeg_bytes, server_env

TINY = ["--samples", "16", "--steps", "2", "--resolution", "5"]


def locate_peak_rss(tmp: Path, *args: str) -> tuple[int, str, str, int]:
    """Run `geoplonk locate`: (exit code, stdout, stderr, the peak RSS of that process in bytes, from wait4)."""
    out_path, err_path = tmp / "locate.out", tmp / "locate.err"
    with open(os.devnull, "rb") as stdin, open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "model_server.cli", "locate", *args], cwd=REPO, stdin=stdin,
                                stdout=out, stderr=err, env={**os.environ, **server_env()})
    deadline = time.monotonic() + 600
    while True:  # wait4, not Popen.wait: it reports the child's own peak RSS
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("locate ran over 600 s")
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out_path.read_text(), err_path.read_text(), usage.ru_maxrss * 1024


def small_photos(folder: Path, n: int) -> Path:
    """n distinct 48 x 48 JPEGs (a few hundred bytes each)."""
    folder.mkdir()
    rng = np.random.default_rng(n)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(buf, "JPEG", quality=50)
        (folder / f"p{i:05d}.jpg").write_bytes(buf.getvalue())
    return folder


def test_locate_memory_stays_flat_from_n_to_10n_photos(endpoint, tmp_path):
    n = 6  # a photo costs 1-4 s on the shared 2-core machine (embedding, GeoPackage)
    peaks = {}
    for count in (n, 10 * n):
        run_dir = tmp_path / f"run{count}"
        run_dir.mkdir()
        photos = small_photos(run_dir / "photos", count)
        code, out, err, peak = locate_peak_rss(run_dir, str(photos), "--out", str(run_dir / "out"),
                                               "--endpoint", endpoint, *TINY)
        assert code == 0, err
        assert f"{count} of {count} photos located" in out
        assert len(list(csv.DictReader((run_dir / "out" / "summary.csv").open()))) == count
        peaks[count] = peak
    growth = peaks[10 * n] - peaks[n]
    print(f"\nlocate peak RSS: {n} photos {peaks[n] / 2**20:.1f} MiB, {10 * n} photos "
          f"{peaks[10 * n] / 2**20:.1f} MiB (growth {growth / 2**20:+.1f} MiB)")
    # Holding every result would add each photo's GeoTIFF and GeoPackage bytes, about 195 kB: 10 MiB over 54 photos
    assert growth < 4 * 2**20, peaks


def test_rerun_skips_complete_outputs_unless_forced(endpoint, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"ok{i}.jpg").write_bytes(jpeg_bytes(60 + i))
    (photos / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "out"
    args = [str(photos), "--out", str(out), "--endpoint", endpoint, *TINY]
    first = subprocess.run([sys.executable, "-m", "model_server.cli", "locate", *args], capture_output=True,
                           text=True, timeout=300, cwd=REPO, env={**os.environ, **server_env()})
    assert first.returncode == 0 and "3 of 4 photos located" in first.stdout, first.stderr
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("ok*")}
    (out / "ok1.json").unlink()  # an interrupted run: ok1's summary never written
    again = subprocess.run([sys.executable, "-m", "model_server.cli", "locate", *args], capture_output=True,
                           text=True, timeout=300, cwd=REPO, env={**os.environ, **server_env()})
    assert again.returncode == 0 and "3 of 4 photos located (2 already done" in again.stdout, again.stderr
    assert "broken.jpg" in again.stderr  # a failed photo is tried again
    for name in ("ok0.tif", "ok0.gpkg", "ok0.json", "ok2.tif"):
        assert (out / name).stat().st_mtime_ns == written[name]
    assert (out / "ok1.tif").stat().st_mtime_ns != written["ok1.tif"]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["photo"], r["status"]) for r in rows] == [
        ("broken.jpg", "failed"), ("ok0.jpg", "ok"), ("ok1.jpg", "ok"), ("ok2.jpg", "ok")]
    assert rows[1]["lat"] and rows[1]["json"].endswith("ok0.json")
    doc = json.loads((out / "summary.json").read_text())
    assert doc["counts"] == {"ok": 3, "failed": 1, "cancelled": 0} and len(doc["photos"]) == 4
    assert not list(out.glob(".*.tmp"))

    other = subprocess.run([sys.executable, "-m", "model_server.cli", "locate", *args[:-1], "10"],
                           capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, **server_env()})
    assert other.returncode == 0 and "already done" not in other.stdout  # other options: nothing is complete
    forced = subprocess.run([sys.executable, "-m", "model_server.cli", "locate", *args[:-1], "10", "--force"],
                            capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, **server_env()})
    assert forced.returncode == 0 and "3 of 4 photos located;" in forced.stdout, forced.stderr
    assert (out / "ok0.tif").stat().st_mtime_ns != written["ok0.tif"]


def test_rerun_with_everything_done_needs_no_server(endpoint, tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(jpeg_bytes(70))
    out = tmp_path / "out"
    run = [sys.executable, "-m", "model_server.cli", "locate", str(photo), "--out", str(out), *TINY]
    env = {**os.environ, **server_env()}
    assert subprocess.run([*run, "--endpoint", endpoint], capture_output=True, timeout=300, cwd=REPO,
                          env=env).returncode == 0
    again = subprocess.run([*run, "--endpoint", "tcp://127.0.0.1:9", "--timeout", "1"], capture_output=True,
                           text=True, timeout=300, cwd=REPO, env=env)
    assert again.returncode == 0 and "1 of 1 photos located (1 already done" in again.stdout, again.stderr
