"""Server lifecycle: CURVE, refusing open binds without keys, parent death, idle timeout, SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import zmq.auth

from geoplonk_service.client import GeoPlonkClient, ServerUnavailable
from geoplonk_service.launcher import free_port, start_local_server
from model_server.server.curve_keys import make_keys

from .conftest import REPO, server_command, server_env


def wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


def test_curve_keys_encrypt_and_authenticate(tiny_model, tmp_path):
    keys = tmp_path / "keys"
    make_keys(keys)
    srv = start_local_server(
        server_command("--model", str(tiny_model), "--no-preload", "--curve-keys", str(keys)), env=server_env()
    )
    try:
        server_public, _ = zmq.auth.load_certificate(keys / "server.key")
        client_keys = zmq.auth.load_certificate(keys / "client-1.key_secret")
        with GeoPlonkClient(srv.endpoint, timeout_s=20, server_public_key=server_public, client_keys=client_keys) as c:
            assert c.info()["default_model"] == "tiny-test"
        # A client whose key is not in authorized_clients is not let in.
        with GeoPlonkClient(srv.endpoint, timeout_s=1, retries=0, server_public_key=server_public) as c:
            with pytest.raises(ServerUnavailable):
                c.info()
        # Nor is a plain-text client.
        with GeoPlonkClient(srv.endpoint, timeout_s=1, retries=0) as c, pytest.raises(ServerUnavailable):
            c.info()
    finally:
        assert srv.stop() == 0


def test_open_bind_without_keys_is_refused(tiny_model):
    proc = subprocess.run(
        [sys.executable, "-m", "model_server.cli", "serve", "--model", str(tiny_model), "--no-preload",
         "--bind", f"tcp://0.0.0.0:{free_port()}"],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, **server_env()},
    )
    assert proc.returncode != 0
    assert "CURVE" in proc.stderr and "GEOPLONK READY" not in proc.stdout


def test_exits_when_its_parent_dies(tiny_model):
    parent = subprocess.Popen(["sleep", "120"])
    srv = start_local_server(server_command("--model", str(tiny_model), "--no-preload"),
                             parent_pid=parent.pid, env=server_env())
    parent.kill()
    parent.wait()
    assert wait_exit(srv.process, 15) == 0


def test_idle_timeout_and_sigterm(tiny_model):
    t0 = time.monotonic()
    idle = start_local_server(server_command("--model", str(tiny_model), "--no-preload"), idle_timeout=2,
                              env=server_env())
    busy = start_local_server(server_command("--model", str(tiny_model), "--no-preload"), env=server_env())
    assert wait_exit(idle.process, 20) == 0
    assert time.monotonic() - t0 >= 2.0
    assert busy.running
    assert busy.stop(timeout=10) == 0  # SIGTERM: a clean exit
