"""The ZeroMQ model server: one ROUTER socket owned by the main thread, inference in a worker thread.

Only the main thread touches the ROUTER.  The worker hands its events to a queue and
pokes an inproc PAIR socket so the main thread's zmq.Poller wakes up and forwards them
(the pattern of pyzmq's examples).  The main thread also answers `info` and `cancel`
while a job runs, sends a heartbeat `progress` for every open request at least every
HEARTBEAT_S seconds, and watches the parent process, the idle timeout and signals.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from geoplonk_service import protocol as P

from .. import __version__
from ..products.aoi import AoiError, aoi_geometry
from ..products.grid import Grid
from .joint import JointState, run_joint
from .models import ModelRegistry, available_models, model_cards
from .pipeline import run_unit
from .scheduler import FairQueue, Request, Unit
from .stage_clock import StageClock, cost_key

log = logging.getLogger("geoplonk.server")

HEARTBEAT_S = P.HEARTBEAT_S
POLL_MS = 200
# At shutdown, how long the worker gets to finish its current step once its requests are cancelled.
STOP_JOIN_S = 10.0
# How long the answers of a shutdown (cancelled results, done) may take to leave the socket.
STOP_LINGER_MS = 2000


@dataclass
class ServerConfig:
    bind: str = P.DEFAULT_ENDPOINT
    model: str | None = None
    device: str | None = None
    parent_pid: int | None = None
    idle_timeout: float | None = None
    curve_keys: Path | None = None
    batch_size: int = 8
    preload: bool = True
    heartbeat_s: float = P.HEARTBEAT_S
    lease_s: float | None = None  # None: P.LEASE_HEARTBEATS heartbeats
    queue_photos_per_client: int = P.QUEUE_PHOTOS_PER_CLIENT
    queue_photos_total: int = P.QUEUE_PHOTOS_TOTAL
    queue_bytes_total: int = P.QUEUE_BYTES_TOTAL

    @property
    def lease(self) -> float:
        return self.lease_s if self.lease_s is not None else self.heartbeat_s * P.LEASE_HEARTBEATS


def is_loopback(endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1", "0:0:0:0:0:0:0:1") or host.startswith("127.")


def parent_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Server:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.models = ModelRegistry(config.model, config.device)
        self.stage_clock = StageClock()  # the worker's: the progress messages' `share`
        self.queue = FairQueue()
        self.events: queue.Queue = queue.Queue()
        self.requests: dict[tuple[bytes, str], Request] = {}
        self.ctx = zmq.Context()
        self._stop = threading.Event()
        self._auth = None
        self.endpoint = ""
        self.router: zmq.Socket | None = None
        self._wake_addr = f"inproc://geoplonk-wake-{id(self)}"
        self._last_activity = time.monotonic()
        self._lease_until: dict[tuple[bytes, str], float] = {}  # open request -> when its lease runs out
        self.worker_alive = False  # still running after serve() returned: the caller must exit with os._exit

    # ------------------------------------------------------------ setup

    def bind(self) -> str:
        """Bind the ROUTER (CURVE when keys are given); returns the endpoint actually bound."""
        router = self.ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        router.setsockopt(zmq.MAXMSGSIZE, P.MAX_MESSAGE_BYTES)
        if "[" in self.config.bind:  # an IPv6 address such as tcp://[::1]:5555
            router.setsockopt(zmq.IPV6, 1)
        if self.config.curve_keys is not None:
            self._setup_curve(router, Path(self.config.curve_keys))
        elif not is_loopback(self.config.bind):
            raise SystemExit(
                f"refusing to bind {self.config.bind} without encryption: binding beyond loopback needs "
                "CURVE keys (make them with `geoplonk keys --out DIR`, then `geoplonk serve --curve-keys DIR`)"
            )
        router.bind(self.config.bind)
        self.router = router
        self.endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
        return self.endpoint

    def _setup_curve(self, router: zmq.Socket, keys: Path) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        public, secret = zmq.auth.load_certificate(keys / "server.key_secret")
        self._auth = ThreadAuthenticator(self.ctx)
        self._auth.start()
        clients = keys / "authorized_clients"
        if clients.is_dir():
            self._auth.configure_curve(domain="*", location=str(clients))
        else:
            self._auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        router.curve_publickey = public
        router.curve_secretkey = secret
        router.curve_server = True

    # ------------------------------------------------------------ worker thread

    def _worker(self) -> None:
        wake = self.ctx.socket(zmq.PAIR)
        wake.connect(self._wake_addr)

        def post(event: tuple) -> None:
            self.events.put(event)
            wake.send(b"", zmq.NOBLOCK)

        if self.config.preload:
            try:
                self.models.get(self.models.resolve(None))
                from ..products.place_names import warm_up

                warm_up()
            except Exception:  # noqa: BLE001 - reported again, per photo, when a request needs it
                log.error("preloading the default model failed:\n%s", traceback.format_exc())
        while not self._stop.is_set():
            unit = self.queue.get(timeout=0.5)
            if unit is None:
                continue
            self._run_unit(unit, post)
            self.queue.unit_finished(unit.request)
            post(("unit_done", unit.request))
        wake.close(linger=0)

    def _run_unit(self, unit: Unit, post) -> None:
        req = unit.request
        key = None  # the stage clock's, once the model is known

        def emit(kind: str, *args: Any) -> None:
            if kind == "progress":
                stage, index, name = args
                share = self.stage_clock.share(key, stage) if key is not None and index is not None else None
                req.stage = {"stage": stage, "index": index, "name": name, "share": share}
                args = (*args, share)
            elif kind == "result":  # set before the result leaves: a heartbeat never repeats an answered photo's stage
                req.stage = {"stage": "queued", "index": None, "name": None}
                status, summary = args[1], args[2]
                if key is not None and status == P.STATUS_OK and isinstance(summary, dict):
                    self.stage_clock.record(key, summary.get("timings") or {})
            post((kind, req, *args))

        try:
            emit("progress", "load", None, None)
            model = self.models.get(self.models.resolve(req.options["model"]))
            key = cost_key(model.name, req.options)
        except Exception as exc:  # noqa: BLE001
            log.error("model load failed:\n%s", traceback.format_exc())
            for i in unit.indices:
                emit("result", i, P.STATUS_FAILED, None, {"code": P.E_MODEL, "message": str(exc)}, None)
            if unit.joint:
                emit("joint", P.STATUS_FAILED, None, {"code": P.E_MODEL, "message": str(exc)}, None)
            return
        if unit.joint:
            run_joint(model, self.models.device, req.joint, req.names, req.options, emit, req.cancelled.is_set)
            return
        run_unit(model, self.models.device, req.names, req.blobs, unit.indices, req.options, emit,
                 req.cancelled.is_set, req.joint.collect if req.joint is not None else None)

    # ------------------------------------------------------------ socket thread

    def send(self, envelope: list[bytes], msg: P.Message) -> None:
        assert self.router is not None
        try:
            self.router.send_multipart([*envelope, *P.encode(msg)], copy=False)
        except zmq.ZMQError as exc:  # peer gone: nothing to do
            log.warning("could not send to a client: %s", exc)

    def _progress(self, req: Request, stage: dict | None = None) -> None:
        """Send `stage` (the event's own, so fast stages are not lost) or the latest one (heartbeats)."""
        st = stage or req.stage
        self.send(req.envelope, P.progress_message(req.id, st["stage"], len(req.answered), req.total,
                                                   st.get("index"), st.get("name"), st.get("share")))
        req.last_sent = time.monotonic()

    def _result(self, req: Request, index: int, status: str, summary, error, blobs) -> None:
        if index in req.answered:
            return
        req.answered.add(index)
        req.counts[status] = req.counts.get(status, 0) + 1
        msg = P.result_message(req.id, index, req.names[index], status, summary, error, blobs)
        self.send(req.envelope, msg)
        req.last_sent = time.monotonic()
        self._finish_if_done(req)

    def _joint(self, req: Request, status: str, summary, error, blobs) -> None:
        """The request's one `joint` message (the first answer counts: a cancel may cross the worker's)."""
        if req.joint is None or req.joint_status is not None:
            return
        req.joint_status = status
        self.send(req.envelope, P.joint_message(req.id, status, summary, error, blobs))
        req.last_sent = time.monotonic()

    def _answer_joint(self, req: Request, message: str) -> None:
        """A joint request whose combined map will not be made (its unit dropped by a cancel, or the server
        shutting down) still gets its answer: cancelled."""
        if req.joint is not None and req.joint_status is None:
            self._joint(req, P.STATUS_CANCELLED, None, {"code": P.E_CANCELLED, "message": message}, None)

    def _finish_if_done(self, req: Request) -> None:
        if req.finished and req.key in self.requests:
            del self.requests[req.key]
            self._lease_until.pop(req.key, None)
            c = req.counts
            self.send(req.envelope, P.done_message(req.id, c["ok"], c["failed"], c["cancelled"], req.joint_status))
            req.blobs = []  # free the photos
            req.joint = None

    def _handle_event(self, event: tuple) -> None:
        kind, req, *args = event
        if req.key not in self.requests:
            return
        if kind == "progress":
            stage, index, name, share = args
            self._progress(req, {"stage": stage, "index": index, "name": name, "share": share})
        elif kind == "result":
            self._result(req, *args)
        elif kind == "joint":
            self._joint(req, *args)
        elif kind == "unit_done":
            self._finish_if_done(req)

    def handle_frames(self, frames: list[bytes]) -> None:
        envelope, body = P.split_envelope(frames)
        request_id = "-"
        try:
            size = sum(len(f) for f in body)
            if size > P.MAX_MESSAGE_BYTES:
                raise P.ProtocolError(f"message is {size} bytes, over the {P.MAX_MESSAGE_BYTES} limit",
                                      P.E_TOO_LARGE)
            msg = P.decode(body, P.CLIENT_TYPES)
            request_id = msg.id
            if msg.type == P.INFO:
                self._expect_blobs(msg, 0)
                self.send(envelope, P.Message(P.INFO, msg.id, self.info_fields()))
            elif msg.type == P.CANCEL:
                self._expect_blobs(msg, 0)
                self.cancel(envelope, msg.id)
            elif msg.type == P.RENEW:  # silent; a renew of an unknown or finished request is ignored
                self._expect_blobs(msg, 0)
                key = (b"\0".join(envelope), msg.id)
                if key in self._lease_until:
                    self._lease_until[key] = time.monotonic() + self.config.lease
            elif msg.type == P.GEOLOCATE:
                self.accept(envelope, msg)
        except P.ProtocolError as exc:
            if request_id == "-":
                request_id = _salvage_id(body)
            self.send(envelope, P.error_message(request_id, exc.code, str(exc)))

    @staticmethod
    def _expect_blobs(msg: P.Message, n: int) -> None:
        if len(msg.blobs) != n:
            raise P.ProtocolError(f"a {msg.type!r} message carries {n} binary frames, got {len(msg.blobs)}")

    def accept(self, envelope: list[bytes], msg: P.Message) -> None:
        images = msg.fields.get("images")
        if not isinstance(images, list) or not images:
            raise P.ProtocolError("'images' must be a non-empty list of {\"name\": ...} objects")
        if len(images) > P.MAX_IMAGES_PER_REQUEST:
            raise P.ProtocolError(f"{len(images)} images, over the {P.MAX_IMAGES_PER_REQUEST} per request limit",
                                  P.E_TOO_LARGE)
        self._expect_blobs(msg, len(images))
        names = []
        for i, item in enumerate(images):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                raise P.ProtocolError(f"images[{i}] lacks a string 'name'")
            names.append(name[:1024])
        options = P.validate_options(msg.fields.get("options"))
        if options["aoi"] is not None:
            try:
                aoi_geometry(options["aoi"])
            except AoiError as exc:
                raise P.ProtocolError(str(exc), P.E_BAD_OPTION) from None
        if options["joint"] and len(images) > P.MAX_JOINT_PHOTOS:
            raise P.ProtocolError(f"a joint map combines at most {P.MAX_JOINT_PHOTOS} photos, got {len(images)}",
                                  P.E_BAD_OPTION)
        if abs(180.0 / options["resolution"] - round(180.0 / options["resolution"])) > 1e-6:
            raise P.ProtocolError("option 'resolution' must divide 180 degrees (e.g. 0.1, 0.25, 0.5, 1)",
                                  P.E_BAD_OPTION)
        if self.models.resolve(options["model"]) is None:
            raise P.ProtocolError(
                f"model {options['model']!r} is not available here; available: "
                f"{', '.join(available_models(self.config.model))}", P.E_MODEL)
        req = Request(envelope, msg.id, names, msg.blobs, options)
        if options["joint"]:
            req.joint = JointState(Grid.global_grid(options["resolution"]))
        if req.key in self.requests:
            raise P.ProtocolError(f"request id {msg.id!r} is already in progress")
        full = self._queue_full(req)
        if full:
            self.send(envelope, P.Message(P.ERROR, msg.id, {
                "code": P.E_BUSY, "message": f"the server is busy ({full}); nothing was accepted, retry later",
                "retry_after_s": self.config.heartbeat_s}))
            return
        self.requests[req.key] = req
        self._lease_until[req.key] = time.monotonic() + self.config.lease
        # "queued": the client knows it was received, and how often to renew the request's lease
        self.send(envelope, P.Message(P.PROGRESS, req.id, {
            **P.progress_message(req.id, "queued", 0, req.total).fields,
            "heartbeat_s": self.config.heartbeat_s, "lease_s": self.config.lease}))
        req.last_sent = time.monotonic()
        self.queue.put(req, self.config.batch_size)

    def _queue_full(self, new: Request) -> str:
        """Why `new` would overflow the queue bounds (photos per client, photos and bytes in all), or ''."""
        mine = photos = size = 0
        for req in self.requests.values():
            left = req.total - len(req.answered)
            photos += left
            size += sum(len(b) for b in req.blobs)
            if req.client == new.client:
                mine += left
        cfg = self.config
        if mine + new.total > cfg.queue_photos_per_client:
            return f"{mine} photos of this client are waiting; at most {cfg.queue_photos_per_client} per client"
        if photos + new.total > cfg.queue_photos_total:
            return f"{photos} photos are waiting; at most {cfg.queue_photos_total} in all"
        if size + sum(len(b) for b in new.blobs) > cfg.queue_bytes_total:
            return f"{size} bytes of photos are waiting; at most {cfg.queue_bytes_total} in all"
        return ""

    def cancel(self, envelope: list[bytes], request_id: str) -> None:
        req = self.requests.get((b"\0".join(envelope), request_id))
        if req is None:
            self.send(envelope, P.error_message(request_id, P.E_MALFORMED, "no request with this id is in progress"))
            return
        self._cancel(req, "cancelled")

    def _cancel(self, req: Request, message: str) -> None:
        req.cancelled.set()
        for i in self.queue.remove(req):
            self._result(req, i, P.STATUS_CANCELLED, None, {"code": P.E_CANCELLED, "message": message}, None)
        if req.joint_dropped:
            self._answer_joint(req, f"{message} before the joint map was made")
        self._finish_if_done(req)

    def _close_request(self, req: Request, message: str) -> None:
        """Answer every photo not yet answered with `cancelled`, then `done` (at shutdown)."""
        req.cancelled.set()
        for i in range(req.total):
            if i not in req.answered:
                req.answered.add(i)
                req.counts[P.STATUS_CANCELLED] += 1
                self.send(req.envelope, P.result_message(req.id, i, req.names[i], P.STATUS_CANCELLED, None,
                                                         {"code": P.E_CANCELLED, "message": message}))
        if self.requests.pop(req.key, None) is not None:
            self._answer_joint(req, message)
            c = req.counts
            self.send(req.envelope, P.done_message(req.id, c["ok"], c["failed"], c["cancelled"], req.joint_status))

    def info_fields(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "protocol": P.PROTOCOL_VERSION,
            "models": available_models(self.config.model),
            "model_cards": model_cards(self.config.model),
            "default_model": self.models.default_name,
            "loaded_models": self.models.loaded(),
            "device": self.models.device,
            "stages": list(P.STAGES),
            "heartbeat_s": self.config.heartbeat_s,
            "lease_s": self.config.lease,
            "limits": {
                "max_header_bytes": P.MAX_HEADER_BYTES,
                "max_image_bytes": P.MAX_IMAGE_BYTES,
                "max_images_per_request": P.MAX_IMAGES_PER_REQUEST,
                "max_message_bytes": P.MAX_MESSAGE_BYTES,
                "queue_photos_per_client": self.config.queue_photos_per_client,
                "queue_photos_total": self.config.queue_photos_total,
                "queue_bytes_total": self.config.queue_bytes_total,
                "max_sample_cells": P.MAX_SAMPLE_CELLS,
                "max_unit_samples": P.MAX_UNIT_SAMPLES,
            },
            "default_options": P.DEFAULT_OPTIONS,
            "queued_units": self.queue.queued(),
            "open_requests": len(self.requests),
        }

    # ------------------------------------------------------------ main loop

    def _drain_events(self) -> None:
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle_event(event)

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT, the parent's death or the idle timeout; returns the exit code."""
        assert self.router is not None
        wake = self.ctx.socket(zmq.PAIR)
        wake.bind(self._wake_addr)
        worker = threading.Thread(target=self._worker, name="geoplonk-worker", daemon=True)
        worker.start()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        next_parent_check = 0.0
        # When the watched process is our real parent, being re-parented also means it died
        # (os.kill(pid, 0) still succeeds on a dead parent that nobody has reaped yet).
        real_parent = self.config.parent_pid if self.config.parent_pid == os.getppid() else None
        reason = "stopped"
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(POLL_MS))
                if wake in ready:
                    while wake.poll(0):
                        wake.recv()
                self._drain_events()
                if self.router in ready:
                    for _ in range(64):  # bounded, so events and heartbeats are never starved
                        try:
                            frames = self.router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._last_activity = time.monotonic()
                        self.handle_frames(frames)
                now = time.monotonic()
                for req in list(self.requests.values()):
                    if now > self._lease_until.get(req.key, now):
                        log.warning("request %s: lease expired (its client stopped renewing): cancelled", req.id)
                        self._lease_until.pop(req.key, None)
                        self._cancel(req, "cancelled: the client stopped renewing the request's lease")
                    elif now - req.last_sent >= self.config.heartbeat_s:
                        self._progress(req)
                if self.requests:
                    self._last_activity = now
                if self.config.parent_pid and now >= next_parent_check:
                    next_parent_check = now + 1.0
                    if not parent_alive(self.config.parent_pid) or (real_parent and os.getppid() != real_parent):
                        reason = f"parent process {self.config.parent_pid} is gone"
                        break
                if self.config.idle_timeout and now - self._last_activity > self.config.idle_timeout:
                    reason = f"idle for {self.config.idle_timeout:g} s"
                    break
        finally:
            self._stop.set()
            self.queue.close()
            for req in list(self.requests.values()):
                req.cancelled.set()  # the worker returns at its next cancel check
            worker.join(timeout=STOP_JOIN_S)
            self._drain_events()  # the photos finished before the stop are delivered
            for req in list(self.requests.values()):
                self._close_request(req, "cancelled: the server is shutting down")
            wake.close(linger=0)
            self.router.close(linger=STOP_LINGER_MS)
            if self._auth is not None:
                self._auth.stop()
            self.worker_alive = worker.is_alive()
            if not self.worker_alive:  # a worker stuck in a long torch call keeps its socket: skip term
                self.ctx.term()
        log.info("server stopping: %s", reason)
        return 0


def _salvage_id(body: list[bytes]) -> str:
    """The request id of a message that failed validation, when its header is readable JSON."""
    import json

    try:
        rid = json.loads(bytes(body[0]).decode("utf-8")).get("id")
        return rid if isinstance(rid, str) and 0 < len(rid) <= 128 else "-"
    except Exception:  # noqa: BLE001
        return "-"


def install_signal_handlers(server: Server) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, server.request_stop)
