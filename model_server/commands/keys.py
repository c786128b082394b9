"""Make CURVE key pairs for a server reachable beyond loopback (`geoplonk serve --curve-keys DIR`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write the keys into")
    parser.add_argument("--clients", type=int, default=1, help="client key pairs to make (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from model_server.server.curve_keys import make_keys

    paths = make_keys(args.out, args.clients)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    print(f"serve with: geoplonk serve --bind tcp://0.0.0.0:5555 --curve-keys {args.out}")
    print("give each client the server's public key (server.key) and its own client-N.key_secret")
    return 0
