"""Load: 8 clients x 25 requests in flight at once on one server, loopback only, tiny options.

Every request gets exactly its own replies (no reply lost, none crossed to another request or client), and
the server's memory stays flat: its RSS (from /proc) after the load is within a generous bound of before.
The first request of each client carries a real photo (the model runs); the others carry a truncated JPEG,
which the worker answers `failed` at decode: the load is on the sockets, the queue and the leases, in bounded
time on two shared cores.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import zmq

from geoplonk_service import protocol as P

from .conftest import jpeg_bytes

CLIENTS = 8
REQUESTS = 25
TINY = {"samples": 16, "steps": 1, "resolution": 10.0, "top_k": 1}
LIMIT_S = 120


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def run_client(endpoint: str, ctx: zmq.Context, c: int, report: dict) -> None:
    """One DEALER with all its requests in flight at once, renewing their leases while it waits."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    expected: dict[str, str] = {}
    try:
        for r in range(REQUESTS):
            name = f"c{c}-r{r}.jpg"
            photo = jpeg_bytes(c * 1000 + r, size=(64, 48))
            req = P.geolocate_request([(name, photo if r == 0 else photo[: len(photo) // 3])], TINY,
                                      request_id=f"client{c}-req{r}")
            expected[req.id] = name
            sock.send_multipart(P.encode(req))
        open_ids = set(expected)
        results: dict[str, list[P.Message]] = {}
        deadline = time.monotonic() + LIMIT_S
        next_renew = 0.0
        while open_ids and time.monotonic() < deadline:
            if time.monotonic() >= next_renew:
                for rid in open_ids:
                    sock.send_multipart(P.encode(P.renew_request(rid)))
                next_renew = time.monotonic() + 0.5
            if not sock.poll(100):
                continue
            msg = P.decode(sock.recv_multipart(), P.SERVER_TYPES)
            if msg.id not in expected:
                report.setdefault("foreign", []).append(msg.id)  # a reply meant for someone else
                continue
            if msg.type == P.RESULT:
                results.setdefault(msg.id, []).append(msg)
            elif msg.type == P.DONE:
                open_ids.discard(msg.id)
            elif msg.type == P.ERROR:
                report.setdefault("errors", []).append(msg.fields)
                open_ids.discard(msg.id)
        report["open"] = sorted(open_ids)
        report["results"] = results
        report["expected"] = expected
    finally:
        sock.close(linger=0)


def test_eight_clients_of_25_requests_lose_nothing_and_memory_stays_flat(server, endpoint):
    ctx = zmq.Context()
    try:
        warm: dict = {}
        run_client(endpoint, ctx, 99, warm)  # the model, the geocoder and the allocator's pools warm up
        assert not warm["open"]
        before = rss_mb(server.process.pid)
        reports = [{} for _ in range(CLIENTS)]
        threads = [threading.Thread(target=run_client, args=(endpoint, ctx, c, reports[c])) for c in range(CLIENTS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(LIMIT_S + 30)
        took = time.monotonic() - t0
        after = rss_mb(server.process.pid)
    finally:
        ctx.destroy(linger=0)
    lost = mismatched = 0
    for report in reports:
        assert not report.get("foreign") and not report.get("errors"), report.get("foreign") or report.get("errors")
        lost += len(report["open"])
        for rid, name in report["expected"].items():
            got = report["results"].get(rid, [])
            lost += len(got) != 1
            mismatched += sum(m.fields["name"] != name or m.fields["index"] != 0 for m in got)
            if rid.endswith("-req0"):
                assert all(m.fields["status"] == P.STATUS_OK and len(m.blobs) == 2 for m in got), got
            else:
                assert all(m.fields["status"] == P.STATUS_FAILED for m in got), got
    print(f"\nload: {CLIENTS} clients x {REQUESTS} requests in {took:.1f} s; replies lost {lost}, "
          f"mismatched {mismatched}; server RSS {before:.0f} MB before, {after:.0f} MB after")
    assert lost == 0 and mismatched == 0
    assert after < before * 1.25 + 100, f"server RSS grew from {before:.0f} MB to {after:.0f} MB"
