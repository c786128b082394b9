"""Geolocate photos through a GeoPlonk server: per photo a GeoTIFF, a GeoPackage and a JSON summary."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
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
    tools = parser.add_argument_group("analyst tools (docs/analyst-tools.md)")
    tools.add_argument("--claim", dest="claims", type=claim_type, action="append", metavar="LAT,LON",
                       help="check a claimed location against each photo's map (repeat for several claims; "
                       "write --claim=-33.9,151.2 for a negative latitude)")
    tools.add_argument("--claim-exif", dest="claim_exif", action="store_true",
                       help="check each photo's own EXIF GPS position as a claim")
    tools.add_argument("--aoi", type=aoi_type, metavar="FILE.geojson",
                       help="area of interest: restrict the maps to the polygons of this GeoJSON file")
    tools.add_argument("--aoi-weight", dest="aoi_weight", type=number_type(P.AOI_WEIGHT), default=None,
                       help="with --aoi: the prior's weight outside the area against inside, "
                       f"{P.AOI_WEIGHT.describe()} (default 0: the maps are restricted to it)")
    tools.add_argument("--joint", action="store_true",
                       help=f"the photos show one place: also write one combined map of them (joint.*; at most "
                       f"{P.MAX_JOINT_PHOTOS} photos)")
    tools.add_argument("--report", action="store_true",
                       help="write a self-contained HTML case report beside each photo's GeoTIFF and GeoPackage")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds of server silence before giving up")
    parser.add_argument("--recursive", action="store_true", help="look into sub-folders too")
    parser.add_argument("--force", action="store_true",
                        help="geolocate every photo again, also those whose outputs are already complete")
    parser.add_argument("--in-flight", type=positive_int, default=8, metavar="N",
                        help="photos sent at a time (one request; the server's limits may cut it): what the "
                        "run holds in memory (default %(default)s)")


def number_type(option: P.NumberOption) -> Callable[[str], float | int]:
    """An argparse type that parses `option`'s kind and refuses values outside its range."""

    def parse(text: str) -> float | int:
        value = option.kind(text)
        if not option.accepts(value):
            raise argparse.ArgumentTypeError(f"{option.name} must be {option.describe()}, got {text}")
        return value

    parse.__name__ = option.kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def levels_type(text: str) -> list[float]:
    try:
        return P.validate_options({"levels": [float(v) for v in text.split(",") if v.strip()]})["levels"]
    except (ValueError, P.ProtocolError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def claim_type(text: str) -> dict[str, Any]:
    """'LAT,LON' -> a claim of source "user"."""
    try:
        lat, lon = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a claim is LAT,LON in degrees (e.g. 48.85,2.35), got {text!r}") from None
    try:
        return P.validate_claims([{"lat": lat, "lon": lon, "source": "user", "label": text}])[0]
    except P.ProtocolError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("option 'claims'[0]", f"claim {text!r}")) from None


def aoi_type(text: str) -> dict[str, Any]:
    """A GeoJSON file -> the `aoi` option (its polygons as one MultiPolygon)."""
    from geoplonk_service.geojson import AoiFileError, read_aoi_file

    try:
        return read_aoi_file(text)
    except AoiFileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    """The geolocate options the arguments give (those a command lacks or leaves unset: the server's default)."""
    options = {name: getattr(args, name) for name in P.DEFAULT_OPTIONS if getattr(args, name, None) is not None}
    for flag in ("claim_exif", "joint"):  # store_true: only when asked, so older servers see no new option
        if not options.get(flag):
            options.pop(flag, None)
    return options


class RunSummary:
    """summary.csv and summary.json written row by row, in the photos' order, so a run of any size holds only
    the rows not yet in order (at most one request's).  Both files appear atomically when the run closes them."""

    def __init__(self, out: Path):
        from geoplonk_service.output_files import current_umask
        from geoplonk_service.result_rows import RESULT_COLUMNS

        self.out = out
        self.mode = 0o666 & ~current_umask()
        self.counts = {k: 0 for k in (P.STATUS_OK, P.STATUS_FAILED, P.STATUS_CANCELLED)}
        self.next_index = 0
        self.waiting: dict[int, dict[str, Any]] = {}
        self._csv_tmp = self._temp("summary.csv")
        self._rows_tmp = self._temp("summary.json.rows")
        self._csv_file = open(self._csv_tmp, "w", encoding="utf-8", newline="")
        self._rows_file = open(self._rows_tmp, "w", encoding="utf-8")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=RESULT_COLUMNS)
        self._csv.writeheader()

    def _temp(self, name: str) -> Path:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.out)
        os.close(fd)
        return Path(tmp)

    def add(self, index: int, row: dict[str, Any], row_at: Callable[[int], dict[str, Any] | None]) -> None:
        """The row of photo `index`; rows are written once every earlier photo's row is known (`row_at(i)`
        gives the row of a photo that needs no answer, e.g. one skipped as already done, else None)."""
        self.waiting[index] = row
        self.flush(row_at)

    def flush(self, row_at: Callable[[int], dict[str, Any] | None]) -> None:
        while True:
            row = self.waiting.pop(self.next_index, None) or row_at(self.next_index)
            if row is None:
                return
            self._write(row)
            self.next_index += 1

    def _write(self, row: dict[str, Any]) -> None:
        self._csv.writerow(row)
        if row["status"] in self.counts:
            self.counts[row["status"]] += 1
        self._rows_file.write(json.dumps(row, ensure_ascii=False) + "\n")

    def finish(self, info: dict[str, Any]) -> tuple[Path, Path]:
        """Close both files and put them in place: summary.json = the server, the counts and every row."""
        self._csv_file.close()
        self._rows_file.close()
        os.chmod(self._csv_tmp, self.mode)
        os.replace(self._csv_tmp, self.out / "summary.csv")
        json_tmp = self._temp("summary.json")
        server = {k: info.get(k) for k in ("version", "default_model", "device")}
        with open(json_tmp, "w", encoding="utf-8") as doc, open(self._rows_tmp, encoding="utf-8") as rows:
            doc.write('{\n  "server": ' + json.dumps(server, ensure_ascii=False) + ',\n  "counts": '
                      + json.dumps(self.counts) + ',\n  "photos": [')
            for n, line in enumerate(rows):
                doc.write(("," if n else "") + "\n    " + line.rstrip("\n"))
            doc.write("\n  ]\n}\n")
        os.unlink(self._rows_tmp)
        os.chmod(json_tmp, self.mode)
        os.replace(json_tmp, self.out / "summary.json")
        return self.out / "summary.csv", self.out / "summary.json"

    def abandon(self) -> None:
        for fh, path in ((self._csv_file, self._csv_tmp), (self._rows_file, self._rows_tmp)):
            fh.close()
            path.unlink(missing_ok=True)


def photo_identity(photo: Path) -> dict[str, Any] | None:
    """What a saved result must name to stand for `photo`: its resolved path, size and modification time
    (a photo replaced or edited in place, or another photo given the same output stem, does not match)."""
    try:
        stat = photo.stat()
        return {"path": str(photo.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    except OSError:
        return None


def requested_options(options: dict[str, Any]) -> dict[str, Any]:
    """Every option as requested, those left to the server (cfg, model) as null: what a rerun compares, so a
    result is reused only for the same request.  In its JSON form, to compare with a saved one."""
    return json.loads(json.dumps(P.validate_options(options)))


def complete_result(out: Path, stem: str, photo: Path, request: dict[str, Any]):
    """The saved result of `photo` when its three files are complete for this request, else None.

    `<stem>.json` goes before a new result's files and is written last (PhotoResult.save), so an `ok` JSON
    that names this very photo (photo_identity) and this request means its GeoTIFF and GeoPackage are whole;
    a failed photo is never complete, so a rerun tries it again."""
    from geoplonk_service.client import PhotoResult

    try:
        doc = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("status") != P.STATUS_OK or doc.get("name") != photo.name:
        return None
    identity = photo_identity(photo)
    if identity is None or doc.get("source") != identity or doc.get("request") != request:
        return None
    if not all((out / f"{stem}{ext}").is_file() and (out / f"{stem}{ext}").stat().st_size > 0
               for ext in (".tif", ".gpkg")):
        return None
    summary = {k: v for k, v in doc.items() if k not in ("name", "status", "source", "request")}
    return PhotoResult(0, photo.name, P.STATUS_OK, summary=summary)


def save_joint(joint, out: Path, stems: set[str], request: dict[str, Any], report: bool = False) -> str:
    """Write the joint map beside the photos' files (joint.tif/.gpkg/.json, or joint_2.* when a photo is
    named joint); the line that says where, or why there is none."""
    from geoplonk_service.output_files import joint_stem

    stem = joint_stem(stems)
    paths = joint.save(out, stem, extra={"request": request})
    if report and joint.ok:
        paths["report"] = write_report(joint, "joint map", paths, out / f"{stem}.html")
    if not joint.ok:
        return f"no joint map: {(joint.error or {}).get('message')} ({paths['json']})"
    combined = len((joint.summary or {}).get("joint", {}).get("photos", []))
    return "joint map of {} photos: {}".format(combined, ", ".join(str(p) for p in paths.values()))


PICTURE_NOTE = ("Drawn without QGIS (Pillow): the density over NASA Blue Marble, the credible regions outlined "
                "(white: the smallest level), the top places numbered, the best guess as a cyan cross, claims as "
                "diamonds coloured by verdict (green: likely … red: very unlikely).")


def write_report(result, name: str, paths: dict[str, Path], html_path: Path) -> Path:
    """The result's self-contained HTML case report, beside its files (atomically)."""
    from geoplonk_service.case_report import write_case_report
    from model_server.map_picture import render_map

    return write_case_report(result, html_path, render_map(result.geotiff, result.gpkg), PICTURE_NOTE, paths, name)


def default_server_command() -> str:
    return f"{sys.executable} -m model_server.cli serve"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from geoplonk_service.client import ServerError, ServerUnavailable
    from geoplonk_service.launcher import ServerStartError
    from geoplonk_service.output_files import unique_stems
    from geoplonk_service.photos import collect_photos
    from geoplonk_service.result_rows import RESULT_COLUMNS, summary_row
    from geoplonk_service.server_manager import LocalServerManager

    if args.aoi_weight is not None and args.aoi is None:
        print("geoplonk locate: --aoi-weight needs --aoi (the area it weighs)", file=sys.stderr)
        return 2
    photos = collect_photos(args.photos, args.recursive)
    if not photos:
        print("geoplonk locate: no photos found", file=sys.stderr)
        return 2
    options = options_from(args)
    try:
        request = requested_options(options)
    except P.ProtocolError as exc:
        print(f"geoplonk locate: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stems = unique_stems(photos)
    files = {kind: ext for kind, ext in (("geotiff", ".tif"), ("gpkg", ".gpkg"), ("json", ".json"))}

    def done_row(i: int) -> dict[str, Any] | None:
        """The row of a photo whose outputs are complete (None: it must be sent)."""
        if args.force:
            return None
        result = complete_result(args.out, stems[i], photos[i], request)
        if result is None or (args.report and not (args.out / f"{stems[i]}.html").is_file()):
            return None
        return summary_row(photos[i], result, {k: args.out / f"{stems[i]}{ext}" for k, ext in files.items()})

    if args.joint and len(photos) > P.MAX_JOINT_PHOTOS:
        print(f"geoplonk locate: --joint combines at most {P.MAX_JOINT_PHOTOS} photos, got {len(photos)}",
              file=sys.stderr)
        return 2
    # one byte per photo: 1 = its outputs are complete, skip it (a joint map needs every photo again)
    skip = bytearray(not args.joint and done_row(i) is not None for i in range(len(photos)))
    skipped = sum(skip)
    todo = len(photos) - skipped
    summary = RunSummary(args.out)
    # index among the photos sent -> (index in photos, its identity before it was read), for those not yet answered
    in_flight: dict[int, tuple[int, dict[str, Any] | None]] = {}

    def row_at(i: int) -> dict[str, Any] | None:
        if i >= len(photos) or not skip[i]:
            return None
        return done_row(i) or {**dict.fromkeys(RESULT_COLUMNS), "photo": photos[i].name, "path": str(photos[i]),
                               "status": P.STATUS_FAILED, "error": "its outputs changed during the run"}

    def to_send():
        sent = 0
        for i, photo in enumerate(photos):
            if not skip[i]:
                in_flight[sent] = (i, photo_identity(photo))  # geolocate_each counts the photos it is given
                sent += 1
                yield photo

    bar = tqdm(total=len(photos), initial=skipped, unit="photo", desc="geolocating", file=sys.stderr)

    def on_result(result) -> None:
        i, identity = in_flight.pop(result.index)
        if args.report:
            (args.out / f"{stems[i]}.html").unlink(missing_ok=True)
        saved = result.save(args.out, stems[i], extra={"source": identity, "request": request})
        if args.report and result.ok:
            write_report(result, photos[i].name, saved, args.out / f"{stems[i]}.html")
        summary.add(i, summary_row(photos[i], result, saved), row_at)
        if not result.ok:
            tqdm.write(f"{photos[i]}: {result.status}: {(result.error or {}).get('message')}", file=sys.stderr)
        bar.update(1)

    def on_progress(progress: dict) -> None:
        bar.set_postfix_str(str(progress.get("stage", "")))

    info: dict[str, Any] = {}
    joint_note = ""
    start_command = (args.server_command or default_server_command()) if args.start_server else None
    try:
        if todo:
            with LocalServerManager(log=lambda text: tqdm.write(text, file=sys.stderr)) as servers:
                with servers.connect(None if args.start_server else args.endpoint, start_command, args.timeout,
                                     model=args.model) as client:
                    client.batch_photos = args.in_flight
                    info = client.info()
                    if args.joint:
                        _, joint = client.geolocate_joint(list(to_send()), options, on_progress=on_progress,
                                                          on_result=on_result)
                        joint_note = save_joint(joint, args.out, set(stems), request, args.report)
                    else:
                        client.geolocate_each(to_send(), options, on_progress=on_progress, on_result=on_result,
                                              total=todo)
        summary.flush(row_at)
    except ServerStartError as exc:
        summary.abandon()
        print(f"geoplonk locate: could not start a local server: {exc}", file=sys.stderr)
        return 3
    except ServerUnavailable as exc:
        summary.abandon()
        print(f"geoplonk locate: the server is not answering: {exc}. Start one with `geoplonk serve`, "
              "or pass --start-server.", file=sys.stderr)
        return 3
    except ServerError as exc:
        summary.abandon()
        print(f"geoplonk locate: the server refused the request: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        summary.abandon()
        raise
    finally:
        bar.close()
    csv_path, json_path = summary.finish(info)
    ok = summary.counts[P.STATUS_OK]
    note = f" ({skipped} already done, skipped; --force redoes them)" if skipped else ""
    print(f"{ok} of {len(photos)} photos located{note}; summary: {csv_path}, {json_path}")
    if joint_note:
        print(joint_note)
    return 0 if ok > 0 else 1
