"""`geoplonk batch` on a real local Ray cluster over loopback (a head node and one worker node, `ray start`):
photos geolocated into GeoParquet rows equal to the server's products for the same photos, the worker node
killed in the middle of the job, a rerun from a CSV manifest that skips what is done and turns a missing file
and a malformed URI into failed rows, and a forced rerun that leaves one row per path."""

from __future__ import annotations

import csv
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import shapely
from server.conftest import REPO, jpeg_bytes, make_tiny_model, server_command, server_env

from geoplonk_service.client import GeoPlonkClient
from geoplonk_service.launcher import free_port, start_local_server
from model_server.batch.job import geo_metadata, load_rows
from model_server.batch.rows import GEO_METADATA, region_wkb

OPTIONS = {"samples": 16, "steps": 2, "resolution": 5}
CLI_OPTIONS = ["--samples", "16", "--steps", "2", "--resolution", "5"]
PHOTOS = 50
RAY = str(Path(sys.executable).with_name("ray"))
# Ray's processes on the test's ports only; a worker's torch on one thread, as the reference server below
# Ray turns a 127.0.0.1 address into this machine's own address (a cluster of several nodes cannot live on
# 127.0.0.1), so the nodes talk over that local interface.  The cluster's auth token is the test's own.
ENV = {**os.environ, **server_env(), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
       "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def start_node(args: list[str], log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own session, so the node (raylet and its workers) is killed as a group."""
    with open(log, "w") as out:
        return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=ENV, start_new_session=True)


def kill_node(node: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(node.pid, sig)
    except ProcessLookupError:
        pass
    try:
        node.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)


def ray_processes(temp_dir: Path) -> list[int]:
    """The processes whose command line names `temp_dir`: those of a Ray node started with it as --temp-dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if str(temp_dir).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def alive_nodes(address: str) -> int:
    code = (f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node (4 logical CPUs: room to restart a lost actor) and a worker node (2 CPUs) on this machine,
    each with its own --temp-dir (short: Ray's socket paths must stay under 108 bytes); once torn down, no
    process of either is left."""
    logs = tmp_path_factory.mktemp("ray-logs")
    temp = {name: tmp_path_factory.mktemp(name, numbered=False) for name in ("rh", "rw")}
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-gpus", "0"]
    head = start_node(["--head", "--port", str(port), "--num-cpus", "4", "--include-dashboard", "false",
                       "--temp-dir", str(temp["rh"]), *common], logs / "head.log")
    worker = None
    try:
        deadline = time.monotonic() + 180
        while head.poll() is None and alive_nodes(address) < 1:
            assert time.monotonic() < deadline, (logs / "head.log").read_text()[-3000:]
            time.sleep(2)
        assert head.poll() is None, (logs / "head.log").read_text()[-3000:]
        worker = start_node(["--address", address, "--num-cpus", "2", "--temp-dir", str(temp["rw"]), *common],
                            logs / "worker.log")
        while worker.poll() is None and alive_nodes(address) < 2:
            assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-3000:]
            time.sleep(2)
        assert worker.poll() is None, (logs / "worker.log").read_text()[-3000:]
        assert ray_processes(temp["rh"]) and ray_processes(temp["rw"])
        yield {"address": address, "head": head, "worker": worker, "worker_temp": temp["rw"]}
    finally:
        for node in (worker, head):
            if node is not None:
                kill_node(node, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while (left := ray_processes(temp["rh"]) + ray_processes(temp["rw"])) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not left, f"Ray processes left after the cluster stopped: {left}"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-test")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """50 photos in a folder tree (two with EXIF GPS) and one that is not a photo."""
    root = tmp_path_factory.mktemp("archive")
    for i in range(PHOTOS):
        folder = root / f"roll{i % 3}"
        folder.mkdir(exist_ok=True)
        gps = (48.85, 2.35) if i % 25 == 0 else None
        (folder / f"img{i:03d}.jpg").write_bytes(jpeg_bytes(1000 + i, gps=gps, size=(64, 48)))
    (root / "roll0" / "broken.jpg").write_bytes(b"not a photo")
    return root


def server_results(model: Path, paths: list[str]) -> dict[str, object]:
    """The products of a real `geoplonk serve` (one torch thread, as the Ray workers) for these photos."""
    server = start_local_server(server_command("--model", str(model)), parent_pid=os.getpid(), idle_timeout=600,
                                ready_timeout=180, env={**server_env(), "OMP_NUM_THREADS": "1"})
    try:
        with GeoPlonkClient(server.endpoint, timeout_s=120) as client:
            results = client.geolocate(paths, {**OPTIONS, "model": str(model)})
    finally:
        server.stop()
    return dict(zip(paths, results, strict=True))


def batch(log: Path, *args: str) -> subprocess.Popen:
    """`geoplonk batch` in the background, its output (Ray's progress) into `log`."""
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "model_server.cli", "batch", *args], cwd=REPO, env=ENV,
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop(job: subprocess.Popen) -> None:
    if job.poll() is None:
        job.kill()
        job.wait()


def finish(job: subprocess.Popen, log: Path, timeout: float = 900) -> str:
    try:
        job.wait(timeout=timeout)
    finally:
        stop(job)
    text = log.read_text(errors="replace")
    assert job.returncode == 0, text[-5000:]
    return text


def ran_pipeline_work(temp_dir: Path) -> bool:
    """Whether the node's workers ran a task or actor of the job (Ray names it in the worker's log)."""
    for log in temp_dir.glob("session_*/logs/worker-*"):
        if b"MapBatches(" in log.read_bytes():
            return True
    return False


def test_batch_on_a_cluster_survives_a_lost_node_and_equals_the_server(cluster, tiny_model, photos, tmp_path):
    out = tmp_path / "dataset"
    job = batch(tmp_path / "job.log", str(photos), "--out", str(out), "--address", cluster["address"],
                "--model", str(tiny_model),
                "--actors", "2", "--batch-size", "2", "--files", *CLI_OPTIONS)
    try:
        # kill the worker node once the job is under way: the first photos' files are written
        deadline = time.monotonic() + 600
        while len(list((out / "files").glob("*.gpkg"))) < 4 if (out / "files").is_dir() else True:
            assert job.poll() is None, (tmp_path / "job.log").read_text(errors="replace")[-5000:]
            assert time.monotonic() < deadline, "the job wrote nothing in 600 s"
            time.sleep(0.2)
        kill_node(cluster["worker"])
        killed_at = len(list((out / "files").glob("*.gpkg")))
        finish(job, tmp_path / "job.log")
    finally:
        stop(job)
    assert killed_at < PHOTOS, "the node was killed after the job had finished its photos"
    assert ran_pipeline_work(cluster["worker_temp"]), "the killed node had run none of the job's work"

    rows = load_rows(str(out))
    by_path = {r["path"]: r for r in rows}
    assert len(rows) == len(by_path) == PHOTOS + 1  # every photo once, whatever was retried
    broken = by_path.pop(str(photos / "roll0" / "broken.jpg"))
    assert (broken["status"], broken["error_code"]) == ("failed", "bad_image")
    parts = list(out.glob("*.parquet"))
    assert parts and all(geo_metadata(part) == GEO_METADATA for part in parts)

    server = server_results(tiny_model, sorted(by_path))
    for path, row in by_path.items():
        result = server[path]
        assert row["status"] == "ok" and result.ok, (path, row["error"])
        expected = {k: v for k, v in result.summary.items() if k != "timings"}
        assert json.loads(row["summary"]) == expected, path
        best = expected["best_guess"]
        assert (row["lat"], row["lon"], row["localizability"]) == (best["lat"], best["lon"],
                                                                   expected["localizability"])
        assert row["region_90"] == region_wkb(result.gpkg)
        assert shapely.from_wkb(row["geometry"]).equals(shapely.Point(best["lon"], best["lat"]))
        assert shapely.from_wkb(row["region_90"]).geom_type == "MultiPolygon"
        assert Path(row["gpkg"]).read_bytes() == result.gpkg and Path(row["geotiff"]).read_bytes() == result.geotiff
    print(f"\nworker node killed after {killed_at} of {PHOTOS} photos; the dataset is complete")

    # a rerun from a CSV manifest: the done photos are skipped by content, a new one is located; a missing
    # file and a URI no filesystem reads are failed rows, not a failed job
    new = photos / "new.jpg"
    new.write_bytes(jpeg_bytes(4242))
    malformed = "nosuchscheme://bucket/photo.jpg"
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path"])
        writer.writerows([[p] for p in sorted(by_path)] + [[str(new)], [str(photos / "missing.jpg")], [malformed]])
    again = batch(tmp_path / "rerun.log", str(manifest), "--out", str(out), "--address", cluster["address"],
                  "--model", str(tiny_model), *CLI_OPTIONS)
    try:
        assert "1 already done" not in finish(again, tmp_path / "rerun.log")  # a manifest's skips are not counted
    finally:
        stop(again)
    rows = load_rows(str(out))
    assert len(rows) == PHOTOS + 4
    latest = {r["path"]: r for r in rows}
    assert latest[str(new)]["status"] == "ok"
    for failed in (str(photos / "missing.jpg"), malformed):
        assert (latest[failed]["status"], latest[failed]["error_code"]) == ("failed", "unreadable"), failed

    # --force locates the listed photos again: their earlier rows go, one row per path stays
    forced = sorted(by_path)[:2]
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in forced))
    force = batch(tmp_path / "force.log", str(manifest), "--out", str(out), "--address", cluster["address"],
                  "--model", str(tiny_model), "--force", *CLI_OPTIONS)
    try:
        finish(force, tmp_path / "force.log")
    finally:
        stop(force)
    rows = load_rows(str(out))
    assert len(rows) == len({r["path"] for r in rows}) == PHOTOS + 4
    assert sorted(r["path"] for r in rows if r["path"] in forced) == forced
