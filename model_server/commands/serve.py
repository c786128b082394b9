"""Run the GeoPlonk model server (ZeroMQ ROUTER) that the QGIS plugin and `geoplonk locate` talk to."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from geoplonk_service import protocol as P
from geoplonk_service.protocol import DEFAULT_ENDPOINT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", default=DEFAULT_ENDPOINT, help="ZeroMQ endpoint to bind (default %(default)s)")
    parser.add_argument("--port", type=int, help="shortcut for --bind tcp://127.0.0.1:PORT (0 = any free port)")
    parser.add_argument("--model", help="default model: a name or a folder (default: the embedded earth-tiles)")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--parent-pid", type=int, help="exit when this process dies")
    parser.add_argument("--idle-timeout", type=float, help="exit after this many seconds without requests")
    parser.add_argument("--curve-keys", type=Path, help="folder made by `geoplonk keys`: encrypt with CURVE")
    parser.add_argument("--batch-size", type=int, default=8, help="photos processed together (default %(default)s)")
    parser.add_argument("--no-preload", action="store_true", help="load the model on the first request only")
    parser.add_argument("--heartbeat", type=float, default=P.HEARTBEAT_S,
                        help="seconds between heartbeats; clients renew their requests as often (default %(default)s)")
    parser.add_argument("--lease", type=float,
                        help=f"cancel a request its client has not renewed for this long "
                             f"(default {P.LEASE_HEARTBEATS} heartbeats)")
    parser.add_argument("--queue-photos-per-client", type=int, default=P.QUEUE_PHOTOS_PER_CLIENT,
                        help="photos one client may have waiting; beyond, `busy` (default %(default)s)")
    parser.add_argument("--queue-photos", type=int, default=P.QUEUE_PHOTOS_TOTAL,
                        help="photos all clients together may have waiting; beyond, `busy` (default %(default)s)")
    parser.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pyogrio").setLevel(logging.WARNING)
    from ..engine.checkpoint import ModelNotFoundError
    from ..server.app import Server, ServerConfig, install_signal_handlers

    if args.lease is not None and args.lease <= 2 * max(0.05, args.heartbeat):
        print(f"geoplonk serve: --lease {args.lease:g} must be more than two heartbeats "
              f"(--heartbeat {args.heartbeat:g}): clients renew once a heartbeat", file=sys.stderr)
        return 2
    bind = f"tcp://127.0.0.1:{args.port}" if args.port is not None else args.bind
    if args.port == 0:
        bind = "tcp://127.0.0.1:*"
    config = ServerConfig(bind=bind, model=args.model, device=args.device, parent_pid=args.parent_pid,
                          idle_timeout=args.idle_timeout, curve_keys=args.curve_keys,
                          batch_size=max(1, args.batch_size), preload=not args.no_preload,
                          heartbeat_s=max(0.05, args.heartbeat), lease_s=args.lease,
                          queue_photos_per_client=max(1, args.queue_photos_per_client),
                          queue_photos_total=max(1, args.queue_photos))
    server = Server(config)
    try:
        server.models.check_default()
    except ModelNotFoundError as exc:
        print(f"geoplonk serve: {exc}", file=sys.stderr)
        return 2
    install_signal_handlers(server)
    try:
        endpoint = server.bind()
    except Exception as exc:  # noqa: BLE001 - e.g. address in use: say so plainly
        print(f"geoplonk serve: cannot bind {bind}: {exc}", file=sys.stderr)
        return 2
    print(f"GEOPLONK READY {endpoint}", flush=True)
    logging.getLogger("geoplonk.server").info("serving on %s (device %s)", endpoint, server.models.device)
    code = server.serve()
    if server.worker_alive:
        # The worker is still inside a long torch call: letting the interpreter finalise around it aborts
        # ("terminate called without an active exception", exit 134). Its requests were already answered.
        logging.getLogger("geoplonk.server").warning("worker still busy at exit: leaving without waiting")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
