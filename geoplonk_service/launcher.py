"""Start and stop a local `geoplonk serve` process (stdlib only: runs in QGIS's Python).

QGIS's own Python cannot import torch, so the model runs in a separate process
started from a user-configurable command (desktop QGIS's `sys.executable` is not
a usable interpreter).  The server is told our pid so that it exits when we die,
and an idle timeout so that a forgotten server does not hold memory forever.
"""

from __future__ import annotations

import collections
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

READY_PREFIX = "GEOPLONK READY "
STDERR_TAIL_LINES = 40


class ServerStartError(RuntimeError):
    """The local server did not come up; `stderr` holds the server's own last output lines."""

    def __init__(self, message: str, stderr: str = "", returncode: int | None = None):
        super().__init__(message if not stderr else f"{message}\n{stderr}")
        self.summary = message
        self.stderr = stderr
        self.returncode = returncode


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def build_command(
    command: str, port: int, parent_pid: int | None = None, idle_timeout: float | None = None, model: str | None = None
) -> list[str]:
    """The argv for `command` (shell-like string) serving on loopback `port`."""
    argv = shlex.split(command, posix=os.name != "nt")
    if not argv:
        raise ServerStartError("the server start command is empty: set it in GeoPlonk settings")
    argv += ["--bind", f"tcp://127.0.0.1:{port}"]
    if parent_pid is not None:
        argv += ["--parent-pid", str(int(parent_pid))]
    if idle_timeout is not None and idle_timeout > 0:
        argv += ["--idle-timeout", f"{float(idle_timeout):g}"]
    if model:
        argv += ["--model", model]
    return argv


@dataclass
class LocalServer:
    """A running local server; `stop()` is idempotent."""

    endpoint: str
    process: subprocess.Popen
    _stderr_tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES))

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stderr_tail(self) -> str:
        return "".join(self._stderr_tail)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate, then kill if it does not exit within `timeout` seconds; returns the exit code."""
        proc = self.process
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
            except OSError:
                pass
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        return proc.returncode


def _drain(stream, sink: collections.deque | None) -> None:
    """Read `stream` to EOF so the child never blocks on a full pipe; keep the tail in `sink`."""
    try:
        for line in iter(stream.readline, ""):
            if sink is not None:
                sink.append(line)
    except (OSError, ValueError):
        pass


def start_local_server(
    command: str = "geoplonk serve",
    port: int | None = None,
    parent_pid: int | None = os.getpid(),  # noqa: B008 - evaluated once on purpose: this process
    idle_timeout: float | None = None,
    ready_timeout: float = 120,
    model: str | None = None,
    env: dict[str, str] | None = None,
) -> LocalServer:
    """Run `command` on a free loopback port and wait for its "GEOPLONK READY <endpoint>" line.

    Raises ServerStartError (with the server's stderr tail) if the command cannot
    be run, exits early, or is not ready within `ready_timeout` seconds.
    """
    port = port or free_port()
    argv = build_command(command, port, parent_pid, idle_timeout, model)
    creationflags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env={**os.environ, **(env or {})},
            creationflags=creationflags,
        )
    except OSError as exc:
        raise ServerStartError(
            f"could not run the server command {argv[0]!r}: {exc.strerror or exc}. "
            "Check the start command in GeoPlonk settings (e.g. /path/to/venv/bin/geoplonk serve)."
        ) from None

    server = LocalServer(endpoint=f"tcp://127.0.0.1:{port}", process=proc)
    threading.Thread(target=_drain, args=(proc.stderr, server._stderr_tail), daemon=True).start()

    ready: list[str] = []
    stdout_done = threading.Event()

    def watch_stdout() -> None:
        try:
            for line in iter(proc.stdout.readline, ""):
                if not ready and line.startswith(READY_PREFIX):
                    ready.append(line[len(READY_PREFIX) :].strip())
                    stdout_done.set()
        except (OSError, ValueError):
            pass
        stdout_done.set()

    threading.Thread(target=watch_stdout, daemon=True).start()

    deadline = time.monotonic() + ready_timeout
    while not ready:
        if proc.poll() is not None and stdout_done.wait(timeout=1.0) and not ready:
            time.sleep(0.2)  # let the stderr reader catch the last lines
            raise ServerStartError(
                f"the local GeoPlonk server exited with code {proc.returncode} before it was ready",
                server.stderr_tail(),
                proc.returncode,
            )
        if time.monotonic() > deadline:
            server.stop()
            raise ServerStartError(
                f"the local GeoPlonk server was not ready within {ready_timeout:g} s", server.stderr_tail()
            )
        stdout_done.wait(timeout=0.1)
    if ready[0]:
        server.endpoint = ready[0]
    return server
