"""Requests and the fair work queue: photos of each request cut into batches ("units"),
handed out so that every client with work waiting gets the same number of photos processed,
whatever the size of its requests: one client's big job (or its many small ones) cannot starve
another's.  Thread-safe: the socket thread enqueues and cancels, the worker takes.

Fairness is per photo (start-time fair queueing with one photo as the unit of cost): each client
has a count of photos served; the next unit goes to the waiting client with the lowest count, and a
client that starts waiting again is brought up to the lowest count of those already waiting, so
idle time earns no credit.  A unit holds at most `batch_size` photos, fewer when each photo asks
for many samples (protocol.photos_per_unit), so one unit's memory is bounded.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from geoplonk_service.protocol import photos_per_unit


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
    joint: Any = None  # a joint request's JointState (server.joint): its combined map is its last unit
    joint_status: str | None = None  # set once its `joint` message is sent
    joint_dropped: bool = False  # its joint unit was taken off the queue (a cancel) before it ran

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
        """Every unit done and every photo answered (and a joint request's combined map, which its last unit
        always answers unless that unit was dropped from the queue)."""
        return (self.units_left == 0 and len(self.answered) >= self.total
                and (self.joint is None or self.joint_status is not None))


@dataclass(eq=False)
class Unit:
    """A batch of photo indices of one request, processed together."""

    request: Request
    indices: list[int]
    joint: bool = False  # the request's combined map, after all its photos


class FairQueue:
    """Per-photo fair queueing over clients; each client's units in arrival order."""

    def __init__(self) -> None:
        self._clients: OrderedDict[bytes, deque[Unit]] = OrderedDict()
        self._served: dict[bytes, float] = {}  # photos handed out per client (virtual time)
        self._cond = threading.Condition()
        self._closed = False

    def put(self, request: Request, batch_size: int) -> None:
        size = photos_per_unit(request.options.get("samples", 1), batch_size)
        units = [Unit(request, list(range(i, min(i + size, request.total))))
                 for i in range(0, request.total, size)]
        if request.joint is not None:  # one worker takes a client's units in order: the photos are done by then
            units.append(Unit(request, [], joint=True))
        with self._cond:
            request.units_left += len(units)
            if request.client not in self._clients:  # (re)starts waiting: no credit for idle time
                floor = min((self._served.get(c, 0.0) for c in self._clients), default=None)
                if floor is None:
                    floor = max(self._served.values(), default=0.0)
                self._served[request.client] = max(self._served.get(request.client, 0.0), floor)
            self._clients.setdefault(request.client, deque()).extend(units)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Unit | None:
        """The next unit, fairly; None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._clients or self._closed, timeout):
                return None
            if self._closed:
                return None
            # lowest count first; ties go to the client waiting longest (insertion order)
            client = min(self._clients, key=lambda c: self._served.get(c, 0.0))
            units = self._clients[client]
            unit = units.popleft()
            self._served[client] = self._served.get(client, 0.0) + len(unit.indices)
            del self._clients[client]
            if units:
                self._clients[client] = units  # back of the line
            elif len(self._served) > 4096:  # forget idle clients' counts now and then
                self._served = {c: v for c, v in self._served.items() if c in self._clients or c == client}
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
                    request.joint_dropped |= unit.joint
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
