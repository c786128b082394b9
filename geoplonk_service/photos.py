"""Photo files on the client side: which files are photos, finding them in folders, reading them.

Standard library only.  The extension list is what the server decodes (Pillow, with pillow-heif for
HEIC/HEIF); the toolbar, Processing and `geoplonk locate` all collect photos by it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from .protocol import E_TOO_LARGE

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif", ".bmp", ".gif")

PathT = TypeVar("PathT", str, os.PathLike)

# The error code of a photo file the client cannot read (the server's codes are in protocol.py).
E_UNREADABLE = "unreadable"


class PhotoFileError(OSError):
    """A photo file that is not sent: `code` is E_UNREADABLE or protocol.E_TOO_LARGE, the message says why."""

    def __init__(self, message: str, code: str = E_UNREADABLE):
        super().__init__(message)
        self.code = code


def is_photo_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(PHOTO_EXTENSIONS)


def photos_in_folder(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Photo files in `folder` (and its sub-folders when `recursive`), sorted; hidden files and folders skipped."""
    root = Path(folder)
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        p
        for p in found
        if is_photo_path(p) and p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def unique_paths(paths: Iterable[PathT]) -> list[PathT]:
    """Each file once (the first spelling of it), in order."""
    seen: set[str] = set()
    out = []
    for path in paths:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def collect_photos(paths: Iterable[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Files given directly (whatever their extension: the server judges them), plus the photos inside given
    folders; each once, in the given order."""
    found: list[Path] = []
    for path in map(Path, paths):
        found += photos_in_folder(path, recursive) if path.is_dir() else [path]
    return unique_paths(found)


def check_size(size: int, max_bytes: int) -> int:
    """`size`, or PhotoFileError(E_TOO_LARGE) when it is over `max_bytes`."""
    if size > max_bytes:
        raise PhotoFileError(f"the file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit", E_TOO_LARGE)
    return size


def photo_size(path: str | os.PathLike, max_bytes: int) -> int:
    """The file's size in bytes, without reading it; PhotoFileError when it cannot be read or is over `max_bytes`."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise PhotoFileError(f"cannot read the file: {exc.strerror or exc}") from None
    return check_size(size, max_bytes)


def read_photo(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The file's bytes; PhotoFileError when it cannot be read or is over `max_bytes`."""
    try:
        with open(path, "rb") as fh:
            check_size(os.fstat(fh.fileno()).st_size, max_bytes)
            return fh.read()
    except PhotoFileError:
        raise
    except OSError as exc:
        raise PhotoFileError(f"cannot read the file: {exc.strerror or exc}") from None
