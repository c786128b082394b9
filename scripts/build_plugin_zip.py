#!/usr/bin/env python3
"""Build the QGIS plugin zip: a top folder `geoplonk/` with qgis_plugin's files, metadata.txt and icon.svg,
and the shared service layer (`geoplonk_service`) bundled under `geoplonk/libs/`.

Standard library only (runs with Debian's /usr/bin/python3).  Reproducible: sorted entries and a
fixed timestamp, so the same sources give the same zip.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "qgis_plugin"
SERVICE = ROOT / "geoplonk_service"
LIBS = "libs"
PACKAGE = "geoplonk"
INCLUDE_SUFFIXES = {".py", ".svg", ".png", ".txt", ".md", ".qml", ".ui", ".json", ".ts", ".qm"}
EXCLUDE_PARTS = {"__pycache__", "tests", ".pytest_cache", ".ruff_cache"}
FIXED_TIME = (2024, 1, 1, 0, 0, 0)


def tree_files(source: Path, prefix: str) -> list[tuple[Path, str]]:
    """(file on disk, name in the zip under `prefix`) for the shippable files of `source`."""
    out = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if not path.is_file() or EXCLUDE_PARTS.intersection(rel.parts) or path.suffix not in INCLUDE_SUFFIXES:
            continue
        if path.name.startswith("."):
            continue
        out.append((path, f"{prefix}/{rel.as_posix()}"))
    return out


def plugin_files(source: Path = SOURCE, service: Path = SERVICE) -> list[tuple[Path, str]]:
    """(file on disk, name in the zip) for everything the plugin needs, sorted."""
    out = tree_files(source, PACKAGE) + tree_files(service, f"{PACKAGE}/{LIBS}/{service.name}")
    names = {name for _, name in out}
    metadata = ROOT / "metadata.txt"
    if f"{PACKAGE}/metadata.txt" not in names:
        out.append((metadata, f"{PACKAGE}/metadata.txt"))
    for extra in ("LICENSE", "LICENSE.txt"):
        if (ROOT / extra).is_file() and f"{PACKAGE}/{extra}" not in names:
            out.append((ROOT / extra, f"{PACKAGE}/{extra}"))
    return sorted(out, key=lambda item: item[1])


def check(files: list[tuple[Path, str]]) -> None:
    """Fail early on a zip QGIS would refuse or that would break at import."""
    names = {name for _, name in files}
    for needed in ("__init__.py", "metadata.txt", "icon.svg", "plugin.py",
                   *(f"{LIBS}/geoplonk_service/{m}.py" for m in ("__init__", "protocol", "client", "launcher",
                                                                 "output_files", "photos", "result_rows",
                                                                 "server_manager"))):
        if f"{PACKAGE}/{needed}" not in names:
            raise SystemExit(f"build_plugin_zip: {needed} is missing from the plugin")


def build(out: Path) -> list[str]:
    files = plugin_files()
    check(files)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, name in files:
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    tmp.replace(out)
    return [name for _, name in files]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "geoplonk.zip")
    args = parser.parse_args(argv)
    names = build(args.out)
    print(f"wrote {args.out} ({len(names)} files, {args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
