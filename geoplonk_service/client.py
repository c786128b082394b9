"""GeoPlonkClient: the one client shared by the QGIS plugin and `geoplonk locate`.

Standard library + pyzmq only (runs in QGIS's Python).  A DEALER socket talks to the
server's ROUTER.  Short requests (`info`) use the Lazy Pirate pattern: poll with a
timeout, and on silence close the socket with LINGER 0, reopen it and resend, a bounded
number of times.  A `geolocate` job is long, so it is never resent once the server has
answered: the server's `progress` messages are heartbeats, and a silence longer than
`timeout_s` means the server is gone (ServerUnavailable).

A client object owns one socket and must be used from one thread only.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from . import protocol as P
from .output_files import JOINT_NAME, atomic_write, safe_stem
from .photos import PhotoFileError, check_size, photo_size, read_photo

# How often the geolocate loop wakes up to look at is_cancelled(), in seconds.
CANCEL_POLL_S = 0.1
# Photos per request unless told otherwise: bounds the memory a job holds and keeps results flowing photo by photo.
BATCH_PHOTOS = 8
# Resends of a request the server has not answered at all (Lazy Pirate).
RETRIES = 2
# A `busy` server (its queue is full): resend after a backoff doubling from BUSY_FIRST_S up to BUSY_MAX_S,
# for at most `busy_timeout_s` in all (then ServerError busy).
BUSY_FIRST_S = 0.25
BUSY_MAX_S = 8.0
BUSY_TIMEOUT_S = 600.0

# A photo to geolocate: a file path, or (display name, file bytes).
Photo = str | os.PathLike | tuple[str, bytes]


class ServerUnavailable(ConnectionError):
    """No answer from the server within the timeout, after the allowed retries."""


class ServerError(RuntimeError):
    """The server answered with an `error` message."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class PhotoResult:
    """The outcome for one photo of a geolocate request (see docs/protocol.md, `result`)."""

    index: int
    name: str
    status: str
    summary: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    geotiff: bytes | None = field(default=None, repr=False)
    gpkg: bytes | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == P.STATUS_OK

    def default_stem(self) -> str:
        """A file-name-safe stem from the photo's name (its base name without extension)."""
        return safe_stem(self.name, self.index)

    def save(self, out_dir: str | os.PathLike, stem: str | None = None,
             extra: dict[str, Any] | None = None) -> dict[str, Path]:
        """Write `<stem>.tif`, `<stem>.gpkg` and `<stem>.json` atomically; returns the paths by kind.

        A failed or cancelled photo writes only `<stem>.json` with its status and error.  `extra`: more fields
        for the JSON (e.g. what `geoplonk locate` compares before skipping a photo).  An earlier `<stem>.json`
        goes first and the new one is written last, so a save cut short never leaves a JSON beside files it
        does not describe.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = stem or self.default_stem()
        paths: dict[str, Path] = {}
        if self.ok:
            if self.geotiff is None or self.gpkg is None:
                raise ValueError(f"result for {self.name!r} is ok but lacks its GeoTIFF/GeoPackage blobs")
            (out / f"{stem}.json").unlink(missing_ok=True)
            paths["geotiff"] = atomic_write(out / f"{stem}.tif", self.geotiff)
            paths["gpkg"] = atomic_write(out / f"{stem}.gpkg", self.gpkg)
            doc: dict[str, Any] = {"name": self.name, "status": self.status, **(self.summary or {})}
        else:
            doc = {"name": self.name, "status": self.status, "error": self.error}
        doc.update(extra or {})
        text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)
        paths["json"] = atomic_write(out / f"{stem}.json", text.encode("utf-8"))
        return paths


def _job_progress(
    on_progress: Callable[[dict[str, Any]], None] | None,
    images: list[tuple[int, str, bytes]],
    done_before: int,
    total: int | None,
) -> Callable[[dict[str, Any]], None]:
    """One request's progress messages as the job's: `index` counted in the caller's photos, and `fraction`, the
    share of the job's `total` photos done (`done_before` of them finished before this request)."""

    def forward(fields: dict[str, Any]) -> None:
        out = dict(fields)
        index, done, count = out.get("index"), out.get("done"), out.get("total")
        if isinstance(index, int) and 0 <= index < len(images):
            out["index"] = images[index][0]
        if total:
            part = done / count if P.is_number(done) and P.is_number(count) and count > 0 else 0.0
            out["fraction"] = min(1.0, (done_before + min(max(part, 0.0), 1.0) * len(images)) / total)
        if on_progress is not None:
            on_progress(out)

    return forward


def _failed(index: int, name: str, code: str, message: str, status: str = P.STATUS_FAILED) -> PhotoResult:
    return PhotoResult(index, name, status, error={"code": code, "message": message})


def _result_from_message(msg: P.Message, index: int) -> PhotoResult:
    f = msg.fields
    blobs = msg.blobs
    ok = f.get("status") == P.STATUS_OK
    return PhotoResult(
        index=index,
        name=str(f.get("name", "")),
        status=str(f.get("status", P.STATUS_FAILED)),
        summary=f.get("summary"),
        error=f.get("error"),
        geotiff=blobs[0] if ok and len(blobs) > 0 else None,
        gpkg=blobs[1] if ok and len(blobs) > 1 else None,
    )


def plan_batches(
    sizes: list[int], max_images: int = P.MAX_IMAGES_PER_REQUEST, max_bytes: int = P.MAX_MESSAGE_BYTES
) -> list[list[int]]:
    """Group image indices into consecutive requests that respect the per-request count and size limits."""
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    budget = max_bytes - P.MAX_HEADER_BYTES
    for i, size in enumerate(sizes):
        if current and (len(current) >= max_images or total + size > budget):
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += size
    if current:
        batches.append(current)
    return batches


class GeoPlonkClient:
    """Talks to `geoplonk serve`.  Use as a context manager, or call close()."""

    def __init__(
        self,
        endpoint: str = P.DEFAULT_ENDPOINT,
        timeout_s: float = 30.0,
        retries: int = RETRIES,
        server_public_key: bytes | None = None,
        client_keys: tuple[bytes, bytes] | None = None,
        batch_photos: int = BATCH_PHOTOS,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ):
        """`server_public_key` (Z85) turns on CURVE; `client_keys` = (public, secret), generated if omitted."""
        self.endpoint = endpoint
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.batch_photos = max(1, int(batch_photos))
        self.busy_timeout_s = float(busy_timeout_s)
        self.busy_retries = 0  # requests sent again after a `busy` answer, over this client's life
        self._server_key = server_public_key
        self._client_keys = client_keys
        if server_public_key is not None and client_keys is None:
            self._client_keys = zmq.curve_keypair()
        self._context = zmq.Context()
        self._socket: zmq.Socket | None = None
        # The server's limits (its `info` reply updates them); photos are checked against them before sending.
        self.limits: dict[str, int] = {
            "max_image_bytes": P.MAX_IMAGE_BYTES,
            "max_images_per_request": P.MAX_IMAGES_PER_REQUEST,
            "max_message_bytes": P.MAX_MESSAGE_BYTES,
        }

    # -- socket lifecycle -------------------------------------------------

    def _open(self) -> zmq.Socket:
        if self._socket is None:
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if "[" in self.endpoint:  # an IPv6 address such as tcp://[::1]:5555
                sock.setsockopt(zmq.IPV6, 1)
            if self._server_key is not None and self._client_keys is not None:
                sock.curve_serverkey = self._server_key
                sock.curve_publickey, sock.curve_secretkey = self._client_keys
            sock.connect(self.endpoint)
            self._socket = sock
        return self._socket

    def _reset(self, linger_ms: int = 0) -> None:
        """Drop the socket (LINGER 0 discards queued messages): the Lazy Pirate reconnect."""
        if self._socket is not None:
            self._socket.close(linger=linger_ms)
            self._socket = None

    def close(self) -> None:
        self._reset()
        self._context.term()

    def __enter__(self) -> GeoPlonkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, msg: P.Message) -> None:
        self._open().send_multipart(P.encode(msg), copy=False)

    def _recv(self, timeout_s: float) -> P.Message | None:
        """The next well-formed server message within timeout_s, or None on silence."""
        sock = self._open()
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                return None
            frames = sock.recv_multipart()
            try:
                return P.decode(frames, P.SERVER_TYPES)
            except P.ProtocolError:
                continue  # a garbled frame from a misbehaving peer: ignore it, keep waiting

    # -- requests -----------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Server version, protocol version, models, device and limits (Lazy Pirate: retried on silence)."""
        request = P.info_request()
        for _attempt in range(self.retries + 1):
            self._send(request)
            deadline = time.monotonic() + self.timeout_s
            while (remaining := deadline - time.monotonic()) > 0:
                msg = self._recv(remaining)
                if msg is None:
                    break
                if msg.id != request.id:
                    continue  # a stale reply to an earlier request
                if msg.type == P.ERROR:
                    raise ServerError(msg.fields.get("code", P.E_INTERNAL), msg.fields.get("message", ""))
                if msg.type == P.INFO:
                    limits = msg.fields.get("limits") or {}
                    self.limits.update({k: int(v) for k, v in limits.items() if k in self.limits})
                    return msg.fields
            self._reset()
        raise ServerUnavailable(
            f"no answer from the GeoPlonk server at {self.endpoint} within {self.timeout_s:g} s "
            f"({self.retries + 1} attempts)"
        )

    def geolocate(
        self,
        photos: Sequence[Photo],
        options: dict[str, Any] | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_result: Callable[[PhotoResult], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> list[PhotoResult]:
        """Geolocate photos, given as file paths or as (name, bytes); one PhotoResult per photo, in input order.

        Keeps every result (with its GeoTIFF and GeoPackage bytes) to return them: for a job of thousands of
        photos use geolocate_each, which keeps none.  Arguments, callbacks and errors as in geolocate_each.
        """
        results: dict[int, PhotoResult] = {}

        def keep(result: PhotoResult) -> None:
            results[result.index] = result
            if on_result is not None:
                on_result(result)

        self.geolocate_each(photos, options, on_progress, keep, is_cancelled, total=len(photos))
        return [results[i] for i in range(len(photos))]

    def geolocate_each(
        self,
        photos: Iterable[Photo],
        options: dict[str, Any] | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_result: Callable[[PhotoResult], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        total: int | None = None,
    ) -> int:
        """Geolocate photos as they come from `photos` (paths or (name, bytes)), handing each result to `on_result`
        and keeping none; returns how many photos there were.  Memory stays flat however many photos there are.

        Photos go in requests of at most `batch_photos` (fewer where the server's count and size limits say so),
        one request in flight, and a file is read only when its request is about to be sent: a job holds one
        request's photos in memory.  A file that cannot be read or is over the server's size limit fails alone,
        without being sent.  `on_progress` gets the server's progress fields with `index` counted in `photos`,
        plus `fraction`: the share of the whole job done, in [0, 1], when `total` (the number of photos) is
        given.  Raises ServerError when the server rejects a whole request (e.g. a bad option) and
        ServerUnavailable when it stops answering.  While it waits it renews the request's lease every heartbeat
        (docs/protocol.md, `renew`): the callbacks must return within the server's `lease_s` (10 s by default),
        or the server cancels the request.  A `busy` server is retried with a doubling backoff for up to
        `busy_timeout_s`.
        """
        max_bytes = self.limits["max_image_bytes"]
        max_images = max(1, min(self.limits["max_images_per_request"], self.batch_photos))
        budget = self.limits["max_message_bytes"] - P.MAX_HEADER_BYTES
        delivered = 0
        cancelled = False

        def deliver(result: PhotoResult) -> None:
            nonlocal delivered
            delivered += 1
            if on_result is not None:
                on_result(result)

        def load(i: int, name: str, photo: Photo, measure: bool) -> int | bytes | None:
            """The size (measure) or the bytes of a photo; None, with its failure delivered, when it is unusable."""
            try:
                if isinstance(photo, tuple):
                    check_size(len(photo[1]), max_bytes)
                    return len(photo[1]) if measure else photo[1]
                return photo_size(photo, max_bytes) if measure else read_photo(photo, max_bytes)
            except PhotoFileError as exc:
                deliver(_failed(i, name, exc.code, str(exc)))
                return None

        def send(batch: list[tuple[int, str, Photo]]) -> None:
            nonlocal cancelled
            if cancelled or (is_cancelled is not None and is_cancelled()):
                cancelled = True
                for i, name, _ in batch:
                    deliver(_failed(i, name, P.E_CANCELLED, "cancelled before sending", P.STATUS_CANCELLED))
                return
            images = [(i, name, data) for i, name, photo in batch
                      if (data := load(i, name, photo, measure=False)) is not None]
            if not images:
                return

            progress = _job_progress(on_progress, images, delivered, total)
            cancelled = self._geolocate_batch(images, options, progress, deliver, is_cancelled)

        batch: list[tuple[int, str, Photo]] = []
        batch_bytes = 0
        count = 0
        for i, photo in enumerate(photos):
            count = i + 1
            name = photo[0] if isinstance(photo, tuple) else Path(photo).name
            size = load(i, name, photo, measure=True)
            if size is None:
                continue
            if batch and (len(batch) >= max_images or batch_bytes + size > budget):
                send(batch)
                batch, batch_bytes = [], 0
            batch.append((i, name, photo))
            batch_bytes += size
        if batch:
            send(batch)
        return count

    def geolocate_joint(
        self,
        photos: Sequence[Photo],
        options: dict[str, Any] | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_result: Callable[[PhotoResult], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> tuple[list[PhotoResult], PhotoResult]:
        """Photos of one place: each photo's result and their combined map (a PhotoResult named JOINT_NAME,
        index -1; its summary's `joint` says which photos it combines and how far each agrees).

        All photos go in one request (the server multiplies their maps once the last is done), so they must
        fit one request: at most protocol.MAX_JOINT_PHOTOS, within the message size limit; ValueError
        otherwise.  A photo that cannot be read fails alone and is left out of the joint map.  Progress as in
        geolocate_each, with `fraction` counted in protocol.job_units: all `photos` (an unreadable one counts as
        done) and the combined map after them.  No progress message follows the joint result, so `fraction`
        stays below 1: the caller completes its bar when the joint result arrives.
        """
        if len(photos) > P.MAX_JOINT_PHOTOS:
            raise ValueError(f"a joint map combines at most {P.MAX_JOINT_PHOTOS} photos, got {len(photos)}")
        results: dict[int, PhotoResult] = {}
        joint: list[PhotoResult] = []

        def keep(result: PhotoResult) -> None:
            results[result.index] = result
            if on_result is not None:
                on_result(result)

        images = []
        for i, photo in enumerate(photos):
            name = photo[0] if isinstance(photo, tuple) else Path(photo).name
            try:
                data = photo[1] if isinstance(photo, tuple) else read_photo(photo, self.limits["max_image_bytes"])
                check_size(len(data), self.limits["max_image_bytes"])
            except PhotoFileError as exc:
                keep(_failed(i, name, exc.code, str(exc)))
                continue
            images.append((i, name, data))
        if sum(len(d) for _, _, d in images) > self.limits["max_message_bytes"] - P.MAX_HEADER_BYTES:
            raise ValueError("the photos of a joint map must fit one request: together they are over the "
                             f"{self.limits['max_message_bytes']:,} byte message limit")
        if images:
            progress = _job_progress(on_progress, images, len(photos) - len(images), P.job_units(len(photos), True))
            self._geolocate_batch(images, {**(options or {}), "joint": True}, progress, keep, is_cancelled,
                                  on_joint=joint.append)
        if not joint:
            status = P.STATUS_CANCELLED if is_cancelled is not None and is_cancelled() else P.STATUS_FAILED
            joint.append(_failed(-1, JOINT_NAME, P.E_CANCELLED if status == P.STATUS_CANCELLED else P.E_BAD_IMAGE,
                                 "no joint map: no photo was located", status))
        return [results[i] for i in range(len(photos))], joint[0]

    def _geolocate_batch(
        self,
        images: list[tuple[int, str, bytes]],
        options: dict[str, Any] | None,
        on_progress: Callable[[dict[str, Any]], None],
        deliver: Callable[[PhotoResult], None],
        is_cancelled: Callable[[], bool] | None,
        on_joint: Callable[[PhotoResult], None] | None = None,
    ) -> bool:
        """Run one request for (index in the job, name, bytes) photos; returns True when it was cancelled.
        `on_joint` receives the combined map of a joint request."""
        request = P.geolocate_request([(name, data) for _, name, data in images], options)
        pending = set(range(len(images)))
        cancel_sent = False
        answered = False
        attempts = 0
        busy_waits = 0
        busy_since: float | None = None
        # the server's heartbeat_s, from its `queued` progress; a server that announces no lease gets no renew
        renew_every: float | None = None
        next_renew = float("inf")

        def unanswered(code: str, message: str, status: str) -> None:
            for j in sorted(pending):
                deliver(_failed(images[j][0], images[j][1], code, message, status))

        self._send(request)
        last_heard = time.monotonic()
        while True:
            if not cancel_sent and is_cancelled is not None and is_cancelled():
                self._send(P.cancel_request(request.id))
                cancel_sent = True
                last_heard = time.monotonic()
            if renew_every is not None and time.monotonic() >= next_renew:  # keep the request's lease
                self._send(P.renew_request(request.id))
                next_renew = time.monotonic() + renew_every
            msg = self._recv(min(CANCEL_POLL_S, max(0.0, next_renew - time.monotonic())))
            if msg is None:
                if time.monotonic() - last_heard < self.timeout_s:
                    continue
                if not answered and not cancel_sent and attempts < self.retries:
                    attempts += 1  # nothing heard yet: the request may be lost, so resend it (Lazy Pirate)
                    self._reset()
                    self._send(request)
                    last_heard = time.monotonic()
                    continue
                self._give_up(request.id)
                if cancel_sent:
                    unanswered(P.E_CANCELLED, "cancelled", P.STATUS_CANCELLED)
                    return True
                raise ServerUnavailable(
                    f"the GeoPlonk server at {self.endpoint} went silent for {self.timeout_s:g} s "
                    f"({len(pending)} of {len(images)} photos unfinished)"
                )
            if msg.id != request.id:
                continue
            if msg.type == P.ERROR and msg.fields.get("code") == P.E_BUSY and not answered and not cancel_sent:
                # nothing was accepted: wait (backing off) and send the same request again
                now = time.monotonic()
                busy_since = now if busy_since is None else busy_since
                if now - busy_since >= self.busy_timeout_s:
                    raise ServerError(P.E_BUSY, str(msg.fields.get("message", "")))
                hint = msg.fields.get("retry_after_s")
                delay = min(BUSY_MAX_S, BUSY_FIRST_S * 2 ** busy_waits)
                delay = max(delay, float(hint) if P.is_number(hint) and 0 < hint <= BUSY_MAX_S else 0.0)
                busy_waits += 1
                self.busy_retries += 1
                wake = now + delay * random.uniform(0.75, 1.25)
                while time.monotonic() < wake:
                    if is_cancelled is not None and is_cancelled():
                        unanswered(P.E_CANCELLED, "cancelled while the server was busy", P.STATUS_CANCELLED)
                        return True
                    time.sleep(min(CANCEL_POLL_S, max(0.0, wake - time.monotonic())))
                self._send(request)
                last_heard = time.monotonic()
                continue
            answered = True
            last_heard = time.monotonic()
            if msg.type == P.PROGRESS:
                heartbeat, lease = msg.fields.get("heartbeat_s"), msg.fields.get("lease_s")
                if P.is_number(heartbeat) and heartbeat > 0 and "lease_s" in msg.fields:
                    renew_every = min(float(heartbeat), P.HEARTBEAT_S * 5)
                    if P.is_number(lease) and lease > 0:
                        renew_every = min(renew_every, float(lease) / 3)
                    next_renew = min(next_renew, time.monotonic() + renew_every)
                on_progress(msg.fields)
            elif msg.type == P.RESULT:
                j = int(msg.fields.get("index", -1))
                if j in pending:
                    pending.discard(j)
                    deliver(_result_from_message(msg, images[j][0]))
            elif msg.type == P.JOINT and on_joint is not None:
                joint = _result_from_message(msg, -1)
                joint.name = JOINT_NAME
                on_joint(joint)
            elif msg.type == P.DONE:  # a server that ends early: never leave a photo without an answer
                if cancel_sent:
                    unanswered(P.E_CANCELLED, "no result from the server", P.STATUS_CANCELLED)
                else:
                    unanswered(P.E_INTERNAL, "no result from the server", P.STATUS_FAILED)
                return cancel_sent
            elif msg.type == P.ERROR:
                if cancel_sent:  # e.g. "busy" or "no such request" crossing our cancel: the outcome is a cancel
                    unanswered(P.E_CANCELLED, "cancelled", P.STATUS_CANCELLED)
                    return True
                raise ServerError(msg.fields.get("code", P.E_INTERNAL), msg.fields.get("message", ""))

    def _give_up(self, request_id: str) -> None:
        """Best-effort cancel so a server that comes back does not keep working for nobody."""
        try:
            self._send(P.cancel_request(request_id))
        except zmq.ZMQError:
            pass
        self._reset(linger_ms=200)
