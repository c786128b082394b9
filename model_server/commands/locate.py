"""Geolocate photos through a GeoPlonk server: per photo a GeoTIFF, a GeoPackage and a JSON summary."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geoplonk_service import protocol as P


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs="+", type=Path, help="photos, or folders of photos")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--endpoint", default=P.DEFAULT_ENDPOINT, help="server endpoint (default %(default)s)")
    where.add_argument("--start-server", action="store_true", help="start a local server for this run")
    parser.add_argument("--server-command", default=None,
                        help="command that starts a server with --start-server (default: this geoplonk's serve)")
    parser.add_argument("--model", help="model name (default: the server's default)")
    for option in P.NUMBER_OPTIONS.values():
        default = "%(default)s" if option.default is not None else "the model's calibrated w"
        parser.add_argument(f"--{option.name.replace('_', '-')}", type=number_type(option), default=option.default,
                            help=f"{option.label}: {option.describe()} (default {default})")
    parser.add_argument("--solver", choices=P.SOLVERS, default=P.DEFAULT_OPTIONS["solver"],
                        help="ODE solver (default %(default)s)")
    parser.add_argument("--precision", choices=P.PRECISIONS, default=P.DEFAULT_OPTIONS["precision"],
                        help="the sampler's matmuls (default %(default)s; fp32 is the reference's)")
    parser.add_argument("--levels", type=levels_type, default=P.DEFAULT_OPTIONS["levels"],
                        help=f"credible region levels, comma separated, 1 to {P.MAX_LEVELS} in (0, 1) "
                        f"(default {','.join(map(str, P.DEFAULT_OPTIONS['levels']))})")
    parser.add_argument("--crop", action="store_true", help="crop rasters to the area holding 99.9 %% of the mass")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds of server silence before giving up")
    parser.add_argument("--recursive", action="store_true", help="look into sub-folders too")


def number_type(option: P.NumberOption) -> Callable[[str], float | int]:
    """An argparse type that parses `option`'s kind and refuses values outside its range."""

    def parse(text: str) -> float | int:
        value = option.kind(text)
        if not option.accepts(value):
            raise argparse.ArgumentTypeError(f"{option.name} must be {option.describe()}, got {text}")
        return value

    parse.__name__ = option.kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


def levels_type(text: str) -> list[float]:
    try:
        return P.validate_options({"levels": [float(v) for v in text.split(",") if v.strip()]})["levels"]
    except (ValueError, P.ProtocolError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in P.DEFAULT_OPTIONS if getattr(args, name) is not None}


def write_run_summary(out: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> tuple[Path, Path]:
    from geoplonk_service.output_files import atomic_write
    from geoplonk_service.result_rows import RESULT_COLUMNS

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "summary.csv", buf.getvalue().encode("utf-8"))
    counts = {k: sum(r["status"] == k for r in rows) for k in (P.STATUS_OK, P.STATUS_FAILED, P.STATUS_CANCELLED)}
    doc = {"server": {k: info.get(k) for k in ("version", "default_model", "device")}, "counts": counts,
           "photos": rows}
    atomic_write(out / "summary.json", json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8"))
    return out / "summary.csv", out / "summary.json"


def default_server_command() -> str:
    return f"{sys.executable} -m model_server.cli serve"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from geoplonk_service.client import ServerError, ServerUnavailable
    from geoplonk_service.launcher import ServerStartError
    from geoplonk_service.output_files import unique_stems
    from geoplonk_service.photos import collect_photos
    from geoplonk_service.result_rows import summary_row
    from geoplonk_service.server_manager import LocalServerManager

    photos = collect_photos(args.photos, args.recursive)
    if not photos:
        print("geoplonk locate: no photos found", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stems = unique_stems(photos)
    rows: list[dict[str, Any] | None] = [None] * len(photos)
    bar = tqdm(total=len(photos), unit="photo", desc="geolocating", file=sys.stderr)

    def on_result(result) -> None:
        rows[result.index] = summary_row(photos[result.index], result, result.save(args.out, stems[result.index]))
        if not result.ok:
            tqdm.write(f"{photos[result.index]}: {result.status}: {(result.error or {}).get('message')}",
                       file=sys.stderr)
        bar.update(1)

    def on_progress(progress: dict) -> None:
        bar.set_postfix_str(str(progress.get("stage", "")))

    start_command = (args.server_command or default_server_command()) if args.start_server else None
    try:
        with LocalServerManager(log=lambda text: tqdm.write(text, file=sys.stderr)) as servers:
            with servers.connect(None if args.start_server else args.endpoint, start_command, args.timeout,
                                 model=args.model) as client:
                info = client.info()
                client.geolocate(photos, options_from(args), on_progress=on_progress, on_result=on_result)
    except ServerStartError as exc:
        print(f"geoplonk locate: could not start a local server: {exc}", file=sys.stderr)
        return 3
    except ServerUnavailable as exc:
        print(f"geoplonk locate: the server is not answering: {exc}. Start one with `geoplonk serve`, "
              "or pass --start-server.", file=sys.stderr)
        return 3
    except ServerError as exc:
        print(f"geoplonk locate: the server refused the request: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    done = [r for r in rows if r is not None]
    csv_path, json_path = write_run_summary(args.out, done, info)
    ok = sum(r["status"] == P.STATUS_OK for r in done)
    print(f"{ok} of {len(photos)} photos located; summary: {csv_path}, {json_path}")
    return 0 if ok > 0 else 1
