"""The launcher against the real server command, and against commands that fail to start."""

from __future__ import annotations

import sys
import time

import pytest

from geoplonk_service.client import GeoPlonkClient
from geoplonk_service.launcher import ServerStartError, build_command, free_port, start_local_server


def test_build_command_appends_loopback_bind_and_watchdogs():
    argv = build_command("'/opt/my env/bin/geoplonk' serve", 6001, parent_pid=42, idle_timeout=60)
    assert argv[:2] == ["/opt/my env/bin/geoplonk", "serve"]
    assert argv[argv.index("--bind") + 1] == "tcp://127.0.0.1:6001"
    assert argv[argv.index("--parent-pid") + 1] == "42"
    assert argv[argv.index("--idle-timeout") + 1] == "60"


def test_empty_command_is_a_clear_error():
    with pytest.raises(ServerStartError, match="empty"):
        build_command("  ", 6001)


def test_missing_program_says_which_command():
    with pytest.raises(ServerStartError, match="no-such-geoplonk"):
        start_local_server("/nonexistent/no-such-geoplonk serve", ready_timeout=5)


def test_server_that_dies_reports_its_own_stderr():
    crash = f"{sys.executable} -c \"import sys; sys.stderr.write('model weights not found here\\n'); sys.exit(3)\""
    with pytest.raises(ServerStartError) as info:
        start_local_server(crash, ready_timeout=20)
    assert "model weights not found here" in info.value.stderr
    assert info.value.returncode == 3


def test_server_that_never_gets_ready_times_out_and_is_stopped():
    slow = f"{sys.executable} -c \"import time; time.sleep(60)\""
    t0 = time.monotonic()
    with pytest.raises(ServerStartError, match="not ready within"):
        start_local_server(slow, ready_timeout=1.5)
    assert time.monotonic() - t0 < 15


def test_real_server_starts_answers_and_stops(geoplonk_server_command):
    port = free_port()
    server = start_local_server(geoplonk_server_command, port=port, ready_timeout=300, idle_timeout=600)
    try:
        assert server.running
        assert server.endpoint.endswith(f":{port}")
        with GeoPlonkClient(server.endpoint, timeout_s=20) as client:
            info = client.info()
        assert info.get("models") is not None
    finally:
        code = server.stop()
    assert not server.running
    assert code is not None
    server.stop()  # idempotent
