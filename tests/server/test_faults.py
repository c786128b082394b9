"""Faults: a client killed mid-request, a server stopped mid-batch, a full queue, odd framing, IPv6.

Each test starts its own server (tiny model, loopback only) with short heartbeats and leases, so that what
is measured in seconds stays small; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import zmq

from geoplonk_service import protocol as P
from geoplonk_service.client import GeoPlonkClient
from geoplonk_service.launcher import start_local_server

from .conftest import FAST, REPO, jpeg_bytes, server_command, server_env

# A request that keeps the worker busy for far longer than any bound below unless it is cancelled:
# one unit of 8 photos, each with many samples on a fine raster.
HEAVY = {"samples": 8192, "steps": 64, "resolution": 0.25, "top_k": 3}


def start(tiny_model, *extra: str):
    return start_local_server(server_command("--model", str(tiny_model), *extra), parent_pid=os.getpid(),
                              idle_timeout=300, ready_timeout=120, env=server_env())


def dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def recv(sock: zmq.Socket, timeout_s: float) -> P.Message:
    assert sock.poll(int(timeout_s * 1000)), f"no message within {timeout_s} s"
    return P.decode(sock.recv_multipart(), P.SERVER_TYPES)


def until(sock: zmq.Socket, request_id: str, kind: str, timeout_s: float) -> list[P.Message]:
    """Messages of `request_id` up to and including the first of type `kind`."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while True:
        msg = recv(sock, max(0.01, deadline - time.monotonic()))
        if msg.id == request_id:
            seen.append(msg)
            if msg.type == kind:
                return seen


# Runs in a child process: a GeoPlonkClient mid-request that the test kills with SIGKILL.
CHILD = """
import sys
sys.path.insert(0, {repo!r})
from geoplonk_service.client import GeoPlonkClient
from tests.server.conftest import jpeg_bytes
photos = [("p%d.jpg" % i, jpeg_bytes(i)) for i in range(8)]
def progress(fields):
    if fields.get("stage") not in ("queued", "load"):
        print("WORKING", flush=True)
with GeoPlonkClient({endpoint!r}, timeout_s=60) as client:
    client.geolocate(photos, {options!r}, on_progress=progress)
"""


def test_killed_client_work_is_cancelled_and_another_client_is_served(tiny_model):
    """SIGKILL a client mid-request: its lease runs out, its work stops, and the next client is served."""
    lease = 3  # the living client must renew within it even on two loaded cores
    srv = start(tiny_model, "--batch-size", "8", "--heartbeat", "0.2", "--lease", str(lease))
    try:
        code = CHILD.format(repo=str(REPO), endpoint=srv.endpoint, options=HEAVY)
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, **server_env()})
        try:
            assert child.stdout.readline().strip() == "WORKING"  # its photos are in the worker's hands
        finally:
            child.kill()
            child.wait(10)
        killed = time.monotonic()
        with GeoPlonkClient(srv.endpoint, timeout_s=30) as other:
            stages = []
            results = other.geolocate([("b.jpg", jpeg_bytes(99))], FAST, on_progress=lambda f: stages.append(
                (round(time.monotonic() - killed, 2), f["stage"])))
        assert [r.status for r in results] == ["ok"]
        # Its photo reaches the worker within the lease + 4 s: the orphan's unit, which runs for minutes
        # otherwise, stopped. (The photo's own compute is not bounded.)
        started = next(t for t, stage in stages if stage != "queued")
        assert started < lease + 4, f"the other client's work started {started:.1f} s after the kill\n{stages}"
        assert "lease expired" in srv.stderr_tail()
        print(f"\nkilled client: the next client's photo reached the worker {started:.2f} s after the SIGKILL "
              f"(lease {lease} s) and was answered ok {stages[-1][0]:.1f} s after it")
    finally:
        srv.stop()


def test_renewing_client_keeps_a_request_longer_than_its_lease(tiny_model):
    srv = start(tiny_model, "--batch-size", "1", "--heartbeat", "0.2", "--lease", "1", "--no-preload")
    try:
        with GeoPlonkClient(srv.endpoint, timeout_s=30) as client:
            t0 = time.monotonic()
            results = client.geolocate([(f"p{i}.jpg", jpeg_bytes(i)) for i in range(3)], FAST)
            took = time.monotonic() - t0
        assert took > 1  # (model load alone takes longer) the request outlived its lease several times over
        assert [r.status for r in results] == ["ok"] * 3
    finally:
        srv.stop()


def test_request_never_renewed_is_cancelled_after_its_lease(tiny_model):
    """A client that does not renew (written against the earlier protocol text) loses its request."""
    srv = start(tiny_model, "--batch-size", "1", "--heartbeat", "0.2", "--lease", "0.6", "--no-preload")
    ctx = zmq.Context()
    try:
        sock = dealer(ctx, srv.endpoint)
        req = P.geolocate_request([(f"p{i}.jpg", jpeg_bytes(i)) for i in range(6)], HEAVY)
        sock.send_multipart(P.encode(req))
        queued = recv(sock, 10)
        assert queued.fields["stage"] == "queued"
        assert queued.fields["lease_s"] == 0.6 and queued.fields["heartbeat_s"] == 0.2
        seen = until(sock, req.id, P.DONE, 60)
        results = [m for m in seen if m.type == P.RESULT]
        assert sorted(m.fields["index"] for m in results) == list(range(6))  # every photo answered once
        cancelled = [m for m in results if m.fields["status"] == P.STATUS_CANCELLED]
        assert cancelled and any("lease" in m.fields["error"]["message"] for m in cancelled)
        assert seen[-1].fields["cancelled"] == len(cancelled)
    finally:
        ctx.destroy(linger=0)
        srv.stop()


def test_sigterm_mid_batch_exits_0_with_finished_results_intact(tiny_model, tmp_path):
    """SIGTERM while a batch runs: finished photos arrive whole, the rest are cancelled, `done` follows, exit 0."""
    srv = start(tiny_model, "--batch-size", "1", "--no-preload")
    got: list = []
    outcome: dict = {}

    def job():
        try:
            with GeoPlonkClient(srv.endpoint, timeout_s=30) as client:
                outcome["results"] = client.geolocate(
                    [(f"p{i}.jpg", jpeg_bytes(i)) for i in range(6)], {"samples": 1024, "steps": 32, "resolution": 1.0},
                    on_result=got.append)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 120
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got, "no photo finished within 120 s"
    srv.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    try:
        code = srv.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        srv.process.kill()
        code = None
    exited = time.monotonic() - signalled
    thread.join(30)
    assert code == 0, srv.stderr_tail()
    assert "error" not in outcome, outcome.get("error")
    results = outcome["results"]
    assert len(results) == 6 and results[0].ok
    assert {r.status for r in results} <= {"ok", "cancelled"} and results[-1].status == "cancelled"
    print(f"\nSIGTERM mid-batch: exit {code} {exited:.1f} s after the signal; "
          f"{sum(r.ok for r in results)} photos ok (files checked), "
          f"{sum(not r.ok for r in results)} cancelled, none lost")
    for r in results:
        if r.ok:  # intact: the files open and hold what the summary says
            import rasterio

            paths = r.save(tmp_path)
            with rasterio.open(paths["geotiff"]) as ds:
                assert (ds.width, ds.height) == (r.summary["raster"]["width"], r.summary["raster"]["height"])
                assert abs(float(ds.read(1).sum()) - 1.0) < 1e-3
        else:
            assert "shutting down" in r.error["message"] or "cancel" in r.error["message"]


def test_full_queue_answers_busy_and_the_client_retries(tiny_model):
    srv = start(tiny_model, "--batch-size", "1", "--queue-photos-per-client", "2", "--queue-photos", "3",
                "--no-preload")
    ctx = zmq.Context()
    try:
        a, b, c = (dealer(ctx, srv.endpoint) for _ in range(3))
        first = P.geolocate_request([("a0.jpg", jpeg_bytes(0)), ("a1.jpg", jpeg_bytes(1))], HEAVY)
        a.send_multipart(P.encode(first))
        assert recv(a, 10).fields["stage"] == "queued"
        more = P.geolocate_request([("a2.jpg", jpeg_bytes(2))], FAST)
        a.send_multipart(P.encode(more))  # over this client's 2 photos
        busy = until(a, more.id, P.ERROR, 10)[-1]
        assert busy.fields["code"] == P.E_BUSY and busy.fields["retry_after_s"] > 0
        other = P.geolocate_request([("b0.jpg", jpeg_bytes(3))], FAST)
        b.send_multipart(P.encode(other))  # another client still fits: 3 photos in all
        assert until(b, other.id, P.PROGRESS, 10)[-1].fields["stage"] == "queued"
        third = P.geolocate_request([("c0.jpg", jpeg_bytes(4))], FAST)
        c.send_multipart(P.encode(third))  # over the 3 photos in all
        assert until(c, third.id, P.ERROR, 10)[-1].fields["code"] == P.E_BUSY
        # The reference client waits and retries while the queue is full, and gets through once it frees.
        with GeoPlonkClient(srv.endpoint, timeout_s=30) as client:
            threading.Timer(1.0, lambda: a.send_multipart(P.encode(P.cancel_request(first.id)))).start()
            results = client.geolocate([("d.jpg", jpeg_bytes(5))], FAST)
            assert [r.status for r in results] == ["ok"] and client.busy_retries >= 1
    finally:
        ctx.destroy(linger=0)
        srv.stop()


def test_empty_first_frame_is_a_req_delimiter_and_is_echoed(endpoint):
    """Documented: an empty frame before the header is taken as REQ's delimiter and comes back with the reply."""
    ctx = zmq.Context()
    try:
        sock = dealer(ctx, endpoint)
        sock.send_multipart([b"", *P.encode(P.info_request("e1"))])
        assert sock.poll(20000)
        frames = sock.recv_multipart()
        assert frames[0] == b"" and json.loads(frames[1])["id"] == "e1"
    finally:
        ctx.destroy(linger=0)


def test_ipv6_loopback_binds_without_curve(tiny_model):
    proc = subprocess.Popen(
        [sys.executable, "-m", "model_server.cli", "serve", "--model", str(tiny_model), "--no-preload",
         "--bind", "tcp://[::1]:*", "--parent-pid", str(os.getpid()), "--idle-timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, **server_env()})
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("GEOPLONK READY tcp://[::1]:"), (line, proc.stderr.read() if proc.poll() else "")
        with GeoPlonkClient(line.split()[-1], timeout_s=20) as client:
            assert client.info()["default_model"] == "tiny-test"
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
