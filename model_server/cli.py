"""`geoplonk` command line: a thin dispatcher; each subcommand lives in model_server/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# Subcommand name -> module in model_server.commands defining add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "serve": "serve",
    "locate": "locate",
    "batch": "batch",
    "sample": "sample",
    "density": "density",
    "train": "train",
    "eval": "evaluate",
    "calibrate": "calibrate",
    "models": "models",
    "data": "data",
    "keys": "keys",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geoplonk", description="Photo geolocation as probability maps (PLONK).")
    parser.add_argument("--version", action="version", version=f"geoplonk {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"model_server.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"model_server.commands.{module_name}":
                raise
            continue  # subcommand not built into this installation
        doc = (module.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _configure_numerics() -> None:
    """Denormal flushing for every torch-side command; a no-op cost when torch is absent."""
    try:
        from .engine.runtime import configure_cpu_math
    except ImportError:
        return
    configure_cpu_math()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_numerics()
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
