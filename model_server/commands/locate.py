"""Geolocate photos through a GeoPlonk server: per photo a GeoTIFF, a GeoPackage and a JSON summary."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif", ".bmp", ".gif"}
SUMMARY_COLUMNS = ["photo", "status", "error", "best_lat", "best_lon", "country", "place", "localizability",
                   "area_90_km2", "exif_error_km", "geotiff", "gpkg", "json"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs="+", type=Path, help="photos, or folders of photos")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--endpoint", default=None, help="server endpoint (default tcp://127.0.0.1:5555)")
    where.add_argument("--start-server", action="store_true", help="start a local server for this run")
    parser.add_argument("--server-command", default=None,
                        help="command that starts a server with --start-server (default: this geoplonk's serve)")
    parser.add_argument("--model", help="model name (default: the server's default)")
    parser.add_argument("--samples", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg", type=float, help="guidance w of the distribution (default: the model's calibrated w)")
    parser.add_argument("--precision", choices=("bf16", "fp32"),
                        help="the sampler's matmuls (server default bf16; fp32 is the reference's)")
    parser.add_argument("--resolution", type=float)
    parser.add_argument("--crop", action="store_true", help="crop rasters to the area holding 99.9 %% of the mass")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds of server silence before giving up")
    parser.add_argument("--recursive", action="store_true", help="look into sub-folders too")


def collect_photos(paths: list[Path], recursive: bool = False) -> list[Path]:
    """Files given directly, plus the photos (by extension) inside given folders, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found += sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    names = ("model", "samples", "steps", "precision", "cfg", "resolution", "seed")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.crop:
        options["crop"] = True
    return options


def summary_row(photo: Path, result, paths: dict[str, Path]) -> dict[str, Any]:
    s = result.summary or {}
    best = s.get("best_guess") or {}
    areas = {r["level"]: r["area_km2"] for r in s.get("credible_regions", [])}
    return {
        "photo": str(photo),
        "status": result.status,
        "error": (result.error or {}).get("message", ""),
        "best_lat": best.get("lat", ""),
        "best_lon": best.get("lon", ""),
        "country": best.get("country", ""),
        "place": best.get("place", ""),
        "localizability": s.get("localizability", ""),
        "area_90_km2": areas.get(0.9, ""),
        "exif_error_km": (s.get("exif") or {}).get("error_km", ""),
        "geotiff": str(paths.get("geotiff", "")),
        "gpkg": str(paths.get("gpkg", "")),
        "json": str(paths.get("json", "")),
    }


def write_run_summary(out: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> tuple[Path, Path]:
    from geoplonk_service.output_files import atomic_write

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "summary.csv", buf.getvalue().encode("utf-8"))
    counts = {k: sum(r["status"] == k for r in rows) for k in ("ok", "failed", "cancelled")}
    doc = {"server": {k: info.get(k) for k in ("version", "default_model", "device")}, "counts": counts,
           "photos": rows}
    atomic_write(out / "summary.json", json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8"))
    return out / "summary.csv", out / "summary.json"


def default_server_command() -> str:
    return f"{sys.executable} -m model_server.cli serve"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from geoplonk_service.client import GeoPlonkClient, ServerError, ServerUnavailable
    from geoplonk_service.output_files import unique_stems

    photos = collect_photos(args.photos, args.recursive)
    if not photos:
        print("geoplonk locate: no photos found", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stems = unique_stems(photos)
    rows: list[dict[str, Any] | None] = [None] * len(photos)
    images: list[tuple[str, bytes]] = []
    for photo in photos:
        try:
            images.append((photo.name, photo.read_bytes()))
        except OSError as exc:
            images.append((photo.name, b""))  # the server reports it as an empty file
            print(f"warning: cannot read {photo}: {exc.strerror or exc}", file=sys.stderr)

    server = None
    endpoint = args.endpoint or "tcp://127.0.0.1:5555"
    if args.start_server:
        from geoplonk_service.launcher import ServerStartError, start_local_server

        try:
            server = start_local_server(args.server_command or default_server_command(), model=args.model)
        except ServerStartError as exc:
            print(f"geoplonk locate: could not start a local server: {exc}", file=sys.stderr)
            return 3
        endpoint = server.endpoint
    bar = tqdm(total=len(photos), unit="photo", desc="geolocating", file=sys.stderr)

    def on_result(result) -> None:
        paths = result.save(args.out, stems[result.index])
        rows[result.index] = summary_row(photos[result.index], result, paths)
        if not result.ok:
            tqdm.write(f"{photos[result.index]}: {result.status}: {(result.error or {}).get('message')}",
                       file=sys.stderr)
        bar.update(1)

    def on_progress(progress: dict) -> None:
        bar.set_postfix_str(str(progress.get("stage", "")))

    try:
        with GeoPlonkClient(endpoint, timeout_s=args.timeout) as client:
            info = client.info()
            client.geolocate(images, options_from(args), on_progress=on_progress, on_result=on_result)
    except ServerUnavailable as exc:
        bar.close()
        print(f"geoplonk locate: the server is not answering: {exc}. Start one with `geoplonk serve`, "
              "or pass --start-server.", file=sys.stderr)
        return 3
    except ServerError as exc:
        bar.close()
        print(f"geoplonk locate: the server refused the request: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
    bar.close()
    done = [r for r in rows if r is not None]
    csv_path, json_path = write_run_summary(args.out, done, info)
    ok = sum(r["status"] == "ok" for r in done)
    print(f"{ok} of {len(photos)} photos located; summary: {csv_path}, {json_path}")
    return 0 if ok > 0 else 1
