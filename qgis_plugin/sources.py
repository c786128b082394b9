"""Where the photos come from: layer features, files, the Browser panel (folders: geoplonk_service.photos).

Path logic is pure (testable without QGIS); the few functions that touch QGIS
objects take them as arguments.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from geoplonk_service.photos import PHOTO_EXTENSIONS, is_photo_path, unique_paths

# Field names that hold a photo path, in order of preference (matched case-insensitively).
PHOTO_FIELD_NAMES = ("photo", "path", "filepath", "image")
FILE_DIALOG_FILTER = "Photos (" + " ".join(f"*{e} *{e.upper()}" for e in PHOTO_EXTENSIONS) + ");;All files (*)"


def detect_photo_field(field_names: Iterable[str]) -> str | None:
    """The field holding photo paths: an exact common name first, then one containing it; None if unsure."""
    names = list(field_names)
    lowered = {n.lower(): n for n in names}
    for wanted in PHOTO_FIELD_NAMES:
        if wanted in lowered:
            return lowered[wanted]
    for wanted in PHOTO_FIELD_NAMES:
        for name in names:
            if wanted in name.lower():
                return name
    return None


def guess_photo_field(field_names: Iterable[str], sample_values: dict[str, list[Any]] | None = None) -> str | None:
    """detect_photo_field, then any field whose sample values all look like photo paths."""
    names = list(field_names)
    found = detect_photo_field(names)
    if found is not None:
        return found
    for name in names:
        values = [v for v in (sample_values or {}).get(name, []) if isinstance(v, str) and v]
        if values and all(is_photo_path(v) for v in values):
            return name
    return None


def resolve_photo_path(value, base_dir: str | None = None) -> str | None:
    """A field value as an absolute path (relative paths are taken from `base_dir`), or None when empty."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or text.upper() == "NULL":
        return None
    if text.startswith("file://"):
        text = text[len("file://") :]
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir:
        path = Path(base_dir) / path
    return str(path)


def photos_from_layer(layer, field_name: str) -> list[str]:
    """Photo paths from a vector layer's selected features; relative paths resolve from the layer's folder."""
    base_dir = layer_folder(layer)
    paths = (resolve_photo_path(f[field_name], base_dir) for f in layer.getSelectedFeatures())
    return unique_paths(p for p in paths if p)


def layer_folder(layer) -> str | None:
    """The folder of a file-based layer's source (relative photo paths resolve from it), else None."""
    source = layer.source().split("|")[0] if layer is not None else ""
    return os.path.dirname(source) if source and os.path.exists(source) else None


def layer_field_names(layer) -> list[str]:
    return [f.name() for f in layer.fields()]


def browser_selected_paths(main_window) -> list[str]:
    """Image files selected in any Browser panel (QgsBrowserTreeView) under `main_window`."""
    if main_window is None:
        return []
    from qgis.gui import QgsBrowserTreeView

    paths: list[str] = []
    for view in main_window.findChildren(QgsBrowserTreeView):
        model = view.model()
        selection = view.selectionModel()
        if model is None or selection is None or not hasattr(model, "dataItem"):
            continue
        for index in selection.selectedRows():
            item = model.dataItem(index)
            if item is None:
                continue
            for candidate in _item_paths(item):
                if is_photo_path(candidate) and os.path.isfile(candidate):
                    paths.append(candidate)
                    break
    return unique_paths(paths)


def _item_paths(item) -> list[str]:
    """Candidate file paths of a Browser data item (layer items carry it in uri(), file items in path())."""
    out = []
    for getter in ("uri", "path"):
        fn = getattr(item, getter, None)
        if fn is None:
            continue
        value = str(fn() or "")
        if value.startswith("/vsi"):
            continue
        out.append(value.split("|")[0])
    return out
