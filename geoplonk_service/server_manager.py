"""LocalServerManager: a client to a GeoPlonk server that answers, starting a local one when none does.

The toolbar task, the Processing algorithm and `geoplonk locate` all get their client here.  The
configured endpoint is tried first; when nothing answers there and a start command is given, a local
`geoplonk serve` is started with it (launcher.py) and used from then on in place of that endpoint,
until close() stops it.  Thread-safe: QGIS tasks and Processing runs ask from their own threads, and
close() (QGIS quitting, on its UI thread) never waits for a connect() that is probing or starting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .client import RETRIES, GeoPlonkClient, ServerUnavailable
from .launcher import LocalServer, start_local_server

# How long a probe waits for an endpoint's `info` reply: a server that answers does so at once. Our own local
# server is probed again while its process lives, up to the caller's timeout: busy with another job on a loaded
# machine it may answer late, and a restart would kill that job.
PROBE_TIMEOUT_S = 2.0
# A local server nobody asks for this long exits by itself (it also exits when this process does).
IDLE_TIMEOUT_S = 3600.0


class ManagerClosed(ServerUnavailable):
    """close() ran while this connect() was under way (GeoPlonk is closing): no local server was kept or started."""

    def __init__(self) -> None:
        super().__init__("GeoPlonk is closing: its local server was stopped and no other was started")


class LocalServerManager:
    """Hands out clients; owns at most one local server, stopped by close() (or leaving a `with` block)."""

    def __init__(
        self,
        log: Callable[[str], None] | None = None,
        idle_timeout: float | None = IDLE_TIMEOUT_S,
        ready_timeout: float = 300.0,
        env: dict[str, str] | None = None,
    ):
        """`log` reports starting a server; `env` adds to the started server's environment."""
        self.log = log
        self.idle_timeout = idle_timeout
        self.ready_timeout = ready_timeout
        self.env = env
        self.local_server: LocalServer | None = None
        self._stands_in_for: str | None = None  # the endpoint that did not answer when the local server started
        self._lock = threading.Lock()  # one connect() at a time
        self._state = threading.Lock()  # local_server and _closes, held only briefly
        self._closes = 0  # close() calls so far: a connect() under way when close() ran starts nothing

    def connect(
        self,
        endpoint: str | None,
        start_command: str | None = None,
        timeout_s: float = 30.0,
        model: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> GeoPlonkClient:
        """A client (the caller closes it) to a server that answers.

        `endpoint`: the server to use; our local server stands in for it once it failed to answer.  None: only
        a local server.  `start_command`: starts the local server when needed (`model` becomes its default
        model); None: never start one.  `log` overrides the manager's for this call.
        Our local server, its process alive, may take all of `timeout_s` to answer (busy on a loaded machine) before
        it is replaced; other callers wait meanwhile.
        Raises ServerUnavailable when nothing answers and nothing may start, ManagerClosed (a ServerUnavailable)
        when close() ran meanwhile, ServerStartError when the start fails.
        """
        with self._state:
            closes = self._closes  # before waiting for another connect(): a close() meanwhile counts too
        with self._lock:
            with self._state:
                local = self.local_server if self.local_server is not None and self.local_server.running else None
            candidates = [endpoint] if endpoint else []
            if local is not None and start_command:  # ours first where it stands in for the endpoint, else after it
                first = endpoint in (None, self._stands_in_for)
                candidates = [local.endpoint] if first else [*candidates, local.endpoint]
            failure: ServerUnavailable | None = None
            for candidate in dict.fromkeys(candidates):  # the endpoint may be our local server's own
                ours = local is not None and candidate == local.endpoint
                try:
                    client = self._probe_local(local, timeout_s) if ours else self._probe(candidate, timeout_s)
                except ServerUnavailable as exc:
                    failure = exc
                    continue
                if ours:
                    if self._closed_since(closes):  # it answered while close() was stopping it
                        client.close()
                        raise ManagerClosed()
                    self._stands_in_for = endpoint
                return client
            if not start_command:
                raise failure or ServerUnavailable("no server endpoint given and no local server to start")
            return self._start(endpoint, start_command, timeout_s, model, log or self.log, closes)

    def _closed_since(self, closes: int) -> bool:
        with self._state:
            return self._closes != closes

    def close(self) -> None:
        """Stop the local server, if one runs; a later connect() may start another. A connect() under way
        fails instead of starting one."""
        with self._state:
            server, self.local_server = self.local_server, None
            self._closes += 1
        if server is not None:
            server.stop()

    def __enter__(self) -> LocalServerManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def _probe_local(cls, local: LocalServer, timeout_s: float) -> GeoPlonkClient:
        """_probe of our local server, again while its process lives, for up to `timeout_s` in all."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return cls._probe(local.endpoint, timeout_s)
            except ServerUnavailable:
                if not local.running or time.monotonic() >= deadline:
                    raise

    @staticmethod
    def _probe(endpoint: str, timeout_s: float) -> GeoPlonkClient:
        """A client to `endpoint` once it answered `info` (which also tells the client the server's limits)."""
        client = GeoPlonkClient(endpoint, timeout_s=min(timeout_s, PROBE_TIMEOUT_S), retries=0)
        try:
            client.info()
        except BaseException:
            client.close()
            raise
        client.timeout_s = timeout_s
        client.retries = RETRIES
        return client

    def _start(
        self,
        endpoint: str | None,
        command: str,
        timeout_s: float,
        model: str | None,
        log: Callable[[str], None] | None,
        closes: int,
    ) -> GeoPlonkClient:
        with self._state:
            old, self.local_server = self.local_server, None
        if old is not None:
            old.stop()  # it died or stopped answering
        if self._closed_since(closes):
            raise ManagerClosed()
        if log is not None:
            log(f"Starting a local GeoPlonk server: {command}")
        server = start_local_server(
            command, idle_timeout=self.idle_timeout, ready_timeout=self.ready_timeout, model=model, env=self.env
        )
        with self._state:
            closed = self._closes != closes
            if not closed:
                self.local_server = server
        if closed:
            server.stop()
            raise ManagerClosed()
        self._stands_in_for = endpoint
        if log is not None:
            log(f"Local GeoPlonk server ready at {server.endpoint}")
        return GeoPlonkClient(server.endpoint, timeout_s=timeout_s)
