"""Requests and the fair work queue: photos of each request cut into batches ("units"),
handed out round-robin by client identity so that one client's big job cannot starve
another's.  Thread-safe: the socket thread enqueues and cancels, the worker takes."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Request:
    """One `geolocate` request in flight.  `answered` and `last_sent` belong to the socket thread."""

    envelope: list[bytes]
    id: str
    names: list[str]
    blobs: list[bytes]
    options: dict[str, Any]
    cancelled: threading.Event = field(default_factory=threading.Event)
    answered: set[int] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0, "cancelled": 0})
    units_left: int = 0
    stage: dict[str, Any] = field(default_factory=lambda: {"stage": "queued", "index": None, "name": None})
    last_sent: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[bytes, str]:
        return (b"\0".join(self.envelope), self.id)

    @property
    def client(self) -> bytes:
        return b"\0".join(self.envelope)

    @property
    def total(self) -> int:
        return len(self.names)

    @property
    def finished(self) -> bool:
        return self.units_left == 0 and len(self.answered) >= self.total


@dataclass(eq=False)
class Unit:
    """A batch of photo indices of one request, processed together."""

    request: Request
    indices: list[int]


class FairQueue:
    """Round-robin over clients; each client's units in arrival order."""

    def __init__(self) -> None:
        self._clients: OrderedDict[bytes, deque[Unit]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, request: Request, batch_size: int) -> None:
        units = [Unit(request, list(range(i, min(i + batch_size, request.total))))
                 for i in range(0, request.total, batch_size)]
        with self._cond:
            request.units_left += len(units)
            self._clients.setdefault(request.client, deque()).extend(units)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Unit | None:
        """The next unit, fairly; None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._clients or self._closed, timeout):
                return None
            if self._closed:
                return None
            client, units = next(iter(self._clients.items()))
            unit = units.popleft()
            del self._clients[client]
            if units:
                self._clients[client] = units  # back of the line
            return unit

    def unit_finished(self, request: Request) -> None:
        with self._cond:
            request.units_left -= 1

    def remove(self, request: Request) -> list[int]:
        """Drop a request's queued units; returns the photo indices they held."""
        removed: list[int] = []
        with self._cond:
            units = self._clients.get(request.client)
            if not units:
                return removed
            keep = deque(u for u in units if u.request is not request)
            for unit in units:
                if unit.request is request:
                    removed.extend(unit.indices)
                    request.units_left -= 1
            if keep:
                self._clients[request.client] = keep
            else:
                del self._clients[request.client]
        return removed

    def queued(self) -> int:
        with self._cond:
            return sum(len(u) for u in self._clients.values())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
