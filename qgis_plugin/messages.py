"""Plain-language messages for the message bar; details go to the log panel (tag "GeoPlonk").

Pure functions returning (title, text, details) so they can be tested without QGIS.
"""

from __future__ import annotations

import sys
from html import escape
from typing import Any

LOG_TAG = "GeoPlonk"

PYZMQ_HELP = {
    "linux": "Debian/Ubuntu: sudo apt install python3-zmq   (other distributions: the python3 'zmq'/'pyzmq' package)",
    "win32": "Windows: open the 'OSGeo4W Shell' as administrator and run:  python -m pip install pyzmq",
    "darwin": "macOS: in a terminal run:  /Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install pyzmq",
}


def pyzmq_missing(platform: str | None = None) -> tuple[str, str, str]:
    """pyzmq is not importable in QGIS's Python: tell the user how to install it on their system."""
    platform = platform or sys.platform
    key = "linux" if platform.startswith("linux") else platform
    first = PYZMQ_HELP.get(key, PYZMQ_HELP["linux"])
    others = "\n".join(v for k, v in PYZMQ_HELP.items() if k != key)
    text = f"GeoPlonk needs the 'pyzmq' Python package in QGIS's Python. {first}. Then restart QGIS."
    return ("GeoPlonk: pyzmq is missing", text, f"{first}\n{others}")


def server_unreachable(endpoint: str, auto_start: bool, detail: str = "") -> tuple[str, str, str]:
    hint = (
        "Start it with 'geoplonk serve', or turn on 'start a local server automatically' in GeoPlonk settings."
        if not auto_start
        else "Check the server endpoint and start command in GeoPlonk settings."
    )
    return ("GeoPlonk: no server", f"No GeoPlonk server answers at {endpoint}. {hint}", detail)


def server_start_failed(command: str, error: str) -> tuple[str, str, str]:
    first = next((ln for ln in reversed(error.strip().splitlines()) if ln.strip()), "no output")
    return (
        "GeoPlonk: the local server did not start",
        f"'{command}' failed: {first}",
        f"command: {command}\n{error}",
    )


def model_missing(message: str) -> tuple[str, str, str]:
    return (
        "GeoPlonk: model missing",
        f"The server cannot load the model: {message}. Pick an installed model in GeoPlonk settings.",
        message,
    )


def no_photos() -> tuple[str, str, str]:
    return (
        "GeoPlonk",
        "No photos selected: select photo features, image files in the Browser panel, or pick files.",
        "",
    )


def skipped_features(layer_name: str, field: str, skipped: dict[str, int], used: int) -> tuple[str, str, str]:
    """Selected features whose photo path is empty or points at no file: how many, and why."""
    reasons = []
    if skipped.get("empty"):
        n = skipped["empty"]
        reasons.append(f"{n} with an empty '{field}' field")
    if skipped.get("missing"):
        n = skipped["missing"]
        reasons.append(f"{n} whose photo file does not exist")
    total = sum(skipped.values())
    head = f"{total} of the {total + used} selected feature{'s' if total + used != 1 else ''} in '{layer_name}' skipped"
    return ("GeoPlonk", f"{head}: {' and '.join(reasons)}.", "")


def no_photos_in_features(layer_name: str, field: str, skipped: dict[str, int]) -> tuple[str, str, str]:
    title, text, _ = skipped_features(layer_name, field, skipped, 0)
    return (title, f"No photos to geolocate. {text} Fill the '{field}' field or pick other features.", "")


def saved_to(folder: str) -> str:
    """Where the results are, as a link the message bar opens."""
    from pathlib import Path

    path = Path(folder).expanduser().resolve()
    return f'Results saved in <a href="{escape(path.as_uri())}">{escape(str(path))}</a>'


def cancelled(ok: int, cancelled: int, failed: int) -> str:
    parts = [f"{ok} photo{'s' if ok != 1 else ''} geolocated before the cancel", f"{cancelled} not geolocated"]
    if failed:
        parts.append(f"{failed} failed")
    return ", ".join(parts) + "."


def summary(ok: int, failed: int, cancelled: int, seconds: float) -> str:
    parts = [f"{ok} photo{'s' if ok != 1 else ''} geolocated"]
    if failed:
        parts.append(f"{failed} failed")
    if cancelled:
        parts.append(f"{cancelled} cancelled")
    return ", ".join(parts) + f" in {seconds:.1f} s"


class JobNotes:
    """What a job's photos had to say (failures, model warnings, claim verdicts, the joint map), told in the one
    message its end puts on the bar: a batch must not stack a message per photo there.  Each method returns its
    note's line for the log panel, written at once, so a long batch's troubles can be read while it runs."""

    INLINE = 2  # notes of a kind named in the bar's text; more are counted there and listed under "more"

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.warnings: list[str] = []
        self.verdicts: list[str] = []
        self.joint: list[str] = []

    def failed(self, name: str, message: str) -> str:
        return self._add(self.failures, f"{name}: could not geolocate this photo ({message})")

    def not_loaded(self, name: str, message: str) -> str:
        return self._add(self.failures, f"{name}: geolocated, but its layers could not be loaded ({message})")

    def warned(self, name: str, warning: str) -> str:
        return self._add(self.warnings, f"{name}: check the model: {warning}")

    def judged(self, name: str, quotes: list[str]) -> str:
        return self._add(self.verdicts, f"{name}: " + " | ".join(quotes))

    def joint_made(self, title: str) -> str:
        return self._add(self.joint, f"{title}: one map for the photos of one place is in the Layers panel")

    def joint_failed(self, message: str) -> str:
        return self._add(self.failures, f"no joint map: {message}")

    @staticmethod
    def _add(notes: list[str], line: str) -> str:
        notes.append(line)
        return line

    @property
    def troubled(self) -> bool:
        """A failure or a model warning: the job's message is a warning, not a success."""
        return bool(self.failures or self.warnings)

    def message(self, title: str, head: str) -> tuple[str, str, str]:
        """The job's one message: `head` (what ran, where it is saved), then each kind of note, named when there
        are few, counted when there are many; the counted notes are the details ("More" on the bar), each note
        once (the log panel has every note already)."""
        parts, counted = [head.rstrip(".") + "."], []
        for notes, kind in ((self.failures, "failed"), (self.warnings, "model warnings"),
                            (self.verdicts, "claim checks"), (self.joint, "joint map")):
            if len(notes) <= self.INLINE:  # the bar shows rich text: a claim's label is the user's own
                parts.extend(f"{escape(note, quote=False)}." for note in notes)
            else:
                parts.append(f"{len(notes)} {kind}: see \"More\".")
                counted.extend(notes)
        return (title, " ".join(parts), "\n".join(counted))


def details_html(text: str, details: str) -> str:
    """What the bar's "More" opens: the message as the bar shows it (rich text: its links work), then the details
    as plain lines.  QGIS's own "Show more" shows both as plain text, the links' markup and all."""
    return f"<p>{text}</p><p style=\"white-space: pre-wrap\">{escape(details, quote=False)}</p>"


def describe_info(info: dict[str, Any], separator: str = "\n") -> str:
    """The server's `info` reply in a few short lines (version, device, models)."""
    names = [m.get("name", "?") if isinstance(m, dict) else str(m) for m in info.get("models") or []]
    lines = [
        f"GeoPlonk server {info.get('server_version') or info.get('version') or ''}".strip(),
        f"Device: {info.get('device', 'unknown')}",
        f"Models: {', '.join(names) if names else 'none reported'}",
    ]
    if info.get("default_model"):
        lines.append(f"Default model: {info['default_model']}")
    return separator.join(lines)


def case_set(what: str, case: str) -> tuple[str, str, str]:
    """A claim or an area was set from the toolbar: what, and what the next geolocation will check."""
    return ("GeoPlonk", f"{what}. The next geolocation checks: {case}.", "")


def input_refused(problem: str) -> tuple[str, str, str]:
    """Bad input for an analyst's tool (a line layer as an area, no point selected): the problem, in words."""
    return ("GeoPlonk: cannot use this input", problem[:1].upper() + problem[1:] + ".", "")


def joint_photo_count(count: int, most: int) -> tuple[str, str, str]:
    """'Geolocate as one place' needs at least two photos and at most `most`."""
    if count < 2:
        return ("GeoPlonk", f"A joint map needs at least two photos of one place; {count} selected. Select the "
                "photos in the Browser panel or as features of a photo layer.", "")
    return ("GeoPlonk", f"A joint map combines at most {most} photos; {count} selected.", "")


def report_written(path: str) -> tuple[str, str, str]:
    """Where the case report is, as a link the message bar opens."""
    from pathlib import Path

    uri = Path(path).resolve().as_uri()
    return ("GeoPlonk", f'Case report written: <a href="{escape(uri)}">{escape(path)}</a>', path)


def report_not_written(reason: str, details: str = "") -> tuple[str, str, str]:
    return ("GeoPlonk", f"The case report could not be written: {reason}.", details)


def weight_out_of_range(weight: float, allowed: str) -> str:
    return f"the weight outside the area must be {allowed}, got {weight:g}"
