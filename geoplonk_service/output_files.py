"""Output files for photos' results: their names (one rule, shared by the plugin, Processing and
`geoplonk locate`) and how they are written (atomically, also by the server side's tools).

Standard library only, so the plugin can name files before (or without) importing pyzmq.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

RESULT_EXTENSIONS = (".tif", ".gpkg", ".json")


# The name (and file stem) of a joint request's combined map.
JOINT_NAME = "joint"


def safe_stem(name: str, index: int = 0) -> str:
    """A file-name-safe stem from a photo's name (its base name without extension)."""
    base = Path(str(name).replace("\\", "/")).stem or f"photo-{index}"
    return re.sub(r"[^\w.\-]+", "_", base).strip("._") or f"photo-{index}"


def first_free(stem: str, is_taken: Callable[[str], bool]) -> str:
    """`stem`, or `stem_2`, `stem_3`... the first that `is_taken` refuses."""
    candidate, n = stem, 1
    while is_taken(candidate):
        n += 1
        candidate = f"{stem}_{n}"
    return candidate


def unique_stems(names: Iterable[str | os.PathLike]) -> list[str]:
    """One output stem per photo, so a batch never overwrites itself: same-named photos get `_2`, `_3`...

    Case-insensitive, because Windows and macOS file systems are.
    """
    used: set[str] = set()
    stems = []
    for index, name in enumerate(names):
        stem = first_free(safe_stem(Path(name).name, index), lambda s: s.lower() in used)
        used.add(stem.lower())
        stems.append(stem)
    return stems


def joint_stem(photo_stems: Iterable[str]) -> str:
    """A batch's joint map stem: JOINT_NAME, or `joint_2`... when one of the batch's photos has that stem, as
    same-named photos are told apart (case-insensitive)."""
    taken = {stem.lower() for stem in photo_stems}
    return first_free(JOINT_NAME, lambda s: s in taken)


def unused_stem(folder: Path, stem: str, taken: set[str] | None = None) -> str:
    """`stem`, or `stem_2`... so a new result never overwrites files that open layers use (the plugin's rule;
    a Processing or `geoplonk locate` batch writes into the folder it is given, named by `unique_stems`)."""
    taken_lower = {t.lower() for t in taken or ()}
    return first_free(
        stem, lambda s: s.lower() in taken_lower or any((folder / f"{s}{ext}").exists() for ext in RESULT_EXTENSIONS)
    )


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> Path:
    """Write via a temporary file in the same folder and os.replace, so readers never see half a file.

    The temporary file is private (0600) while it is written; before the replace it gets `mode`, by default
    the permissions any program's new file gets under the user's umask (0644 with the usual 022), so
    colleagues on a shared drive can open the results.
    """
    if mode is None:
        mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _umask_by_setting() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Setting and restoring the umask changes it for every thread for a moment: do it once, at import.
_UMASK_AT_IMPORT = _umask_by_setting()


def current_umask() -> int:
    """The process's umask: from /proc where the kernel shows it (no side effect), else as it was at import."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT
