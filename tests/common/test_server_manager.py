"""The local-server manager and the client's file reading against a real `geoplonk serve` (the default model).

One server per test at most, started by the manager itself through the launcher; each test stops it.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoplonk_service import protocol as P
from geoplonk_service.client import ServerUnavailable
from geoplonk_service.launcher import ServerStartError, free_port
from geoplonk_service.photos import E_UNREADABLE
from geoplonk_service.server_manager import LocalServerManager, ManagerClosed

REPO = Path(__file__).resolve().parents[2]
SERVE = f"{sys.executable} -m model_server.cli serve"
FAST = {"samples": 64, "steps": 4, "resolution": 2.0, "top_k": 3}


def dead_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def jpeg(path: Path, seed: int, size: tuple[int, int] = (128, 96)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    path.write_bytes(out.getvalue())
    return path


@pytest.fixture
def manager():
    logged: list[str] = []
    env = {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}
    with LocalServerManager(log=logged.append, idle_timeout=300, ready_timeout=240, env=env) as servers:
        servers.logged = logged
        yield servers
    assert servers.local_server is None  # leaving the block stopped it


def test_nothing_answers_and_nothing_may_start(manager):
    endpoint = dead_endpoint()
    with pytest.raises(ServerUnavailable, match=endpoint):
        manager.connect(endpoint, start_command=None, timeout_s=0.5)
    with pytest.raises(ServerUnavailable):
        manager.connect(None)
    assert manager.local_server is None and manager.logged == []


def test_a_failing_start_command_reports_the_servers_error(manager):
    crash = f"{sys.executable} -c \"import sys; sys.exit('no model here')\""
    with pytest.raises(ServerStartError, match="no model here"):
        manager.connect(dead_endpoint(), crash, timeout_s=1)


def test_starts_once_stands_in_for_the_endpoint_and_stops_on_close(manager):
    configured = dead_endpoint()
    with manager.connect(configured, SERVE, timeout_s=30) as client:
        assert client.info()["default_model"] == "earth-tiles"
    server = manager.local_server
    assert server is not None and server.running and client.endpoint == server.endpoint
    assert manager.logged == [f"Starting a local GeoPlonk server: {SERVE}",
                              f"Local GeoPlonk server ready at {server.endpoint}"]

    # Threads asking at once all get the one local server (no second start, no probe of the dead endpoint).
    endpoints: list[str] = []

    def ask() -> None:
        with manager.connect(configured, SERVE, timeout_s=30) as other:
            endpoints.append(other.endpoint)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert endpoints == [server.endpoint] * 4 and len(manager.logged) == 2

    # A server that answers at the given endpoint is used as is; with start allowed, ours serves any other one.
    with manager.connect(server.endpoint, None, timeout_s=5) as direct:
        assert direct.info()["protocol"] == P.PROTOCOL_VERSION
    with manager.connect(dead_endpoint(), SERVE, timeout_s=5) as fallback:
        assert fallback.endpoint == server.endpoint
    assert manager.local_server is server and len(manager.logged) == 2

    manager.close()
    assert not server.running and manager.local_server is None
    with manager.connect(configured, SERVE, timeout_s=30) as again:  # a later connect starts a new one
        assert again.endpoint == manager.local_server.endpoint != server.endpoint


def test_a_busy_local_server_is_waited_for_not_replaced(manager):
    """Our local server, alive but slow to answer (here: stopped for 3 s, as a loaded machine can hold it), is kept:
    replacing it after the 2 s probe would kill the job it is running."""
    import signal

    configured = dead_endpoint()
    with manager.connect(configured, SERVE, timeout_s=30):
        pass
    server = manager.local_server
    os.kill(server.process.pid, signal.SIGSTOP)
    resume = threading.Timer(3.0, os.kill, (server.process.pid, signal.SIGCONT))
    resume.start()
    try:
        with manager.connect(configured, SERVE, timeout_s=30) as client:
            assert client.endpoint == server.endpoint and client.info()["default_model"] == "earth-tiles"
    finally:
        resume.join()
    assert manager.local_server is server and server.running and len(manager.logged) == 2


def test_files_are_read_per_request_and_bad_files_fail_alone(manager, tmp_path):
    good = [jpeg(tmp_path / f"good-{i}.jpg", i) for i in range(3)]
    big = jpeg(tmp_path / "big.jpg", 9, size=(256, 192))
    late = jpeg(tmp_path / "late.jpg", 10)  # deleted once the first result is in: read only when its turn comes
    photos = [good[0], tmp_path / "missing.jpg", big, tmp_path, good[1], late, good[2]]
    with manager.connect(None, SERVE, timeout_s=60) as client:
        client.batch_photos = 1
        client.limits["max_image_bytes"] = big.stat().st_size - 1
        assert all(p.stat().st_size <= client.limits["max_image_bytes"] for p in (*good, late))
        fractions: list[float] = []

        def on_result(result) -> None:
            if late.exists():
                late.unlink()

        results = client.geolocate(photos, FAST, on_progress=lambda p: fractions.append(p["fraction"]),
                                   on_result=on_result)
    by_name = {r.name: r for r in results}
    assert [r.index for r in results] == list(range(len(photos)))
    assert [by_name[p.name].status for p in good] == ["ok"] * 3
    assert by_name["missing.jpg"].error == {"code": E_UNREADABLE,
                                            "message": "cannot read the file: No such file or directory"}
    assert by_name["big.jpg"].error["code"] == P.E_TOO_LARGE and "over the" in by_name["big.jpg"].error["message"]
    assert by_name[tmp_path.name].error["code"] == E_UNREADABLE
    assert by_name["late.jpg"].error["code"] == E_UNREADABLE
    assert fractions and all(0 <= f <= 1 for f in fractions) and fractions == sorted(fractions)


def test_close_does_not_wait_for_a_connect_that_waits_on_a_busy_server(manager):
    """QGIS quitting calls close() on its UI thread: it must not wait out a task's connect() probing our busy local
    server (here stopped, for all of its 60 s), and that connect() must fail rather than start another server."""
    import signal
    import time

    configured = dead_endpoint()
    with manager.connect(configured, SERVE, timeout_s=30):
        pass
    server = manager.local_server
    os.kill(server.process.pid, signal.SIGSTOP)
    outcome: list = []
    probing = threading.Event()

    def probe_local(local, timeout_s):
        probing.set()
        return LocalServerManager._probe_local(local, timeout_s)

    manager._probe_local = probe_local

    def ask() -> None:
        try:
            with manager.connect(configured, SERVE, timeout_s=60) as client:
                outcome.append(client.endpoint)
        except ServerUnavailable as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=ask)
    waiting.start()
    assert probing.wait(timeout=30)
    started = time.monotonic()
    manager.close()
    closed_after = time.monotonic() - started
    waiting.join(timeout=90)
    assert not waiting.is_alive()
    assert closed_after < 30, f"close() waited {closed_after:.1f} s for the connect"
    assert not server.running and manager.local_server is None and len(manager.logged) == 2
    assert len(outcome) == 1 and isinstance(outcome[0], ManagerClosed), outcome
