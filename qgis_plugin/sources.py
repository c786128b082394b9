"""Where the photos come from: layer features, files or a folder, the Browser panel.

Path logic is pure (testable without QGIS); the few functions that touch QGIS
objects take them as arguments.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif")
# Field names that hold a photo path, in order of preference (matched case-insensitively).
PHOTO_FIELD_NAMES = ("photo", "path", "filepath", "image")
FILE_DIALOG_FILTER = "Photos (" + " ".join(f"*{e} *{e.upper()}" for e in IMAGE_EXTENSIONS) + ");;All files (*)"


def is_image_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


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


def photos_in_folder(folder: str | os.PathLike, recursive: bool = False) -> list[str]:
    """Image files in `folder`, sorted by name (hidden files skipped)."""
    root = Path(folder)
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(str(p) for p in it if p.is_file() and is_image_path(p) and not p.name.startswith("."))


def unique(paths: Iterable[str]) -> list[str]:
    """Drop repeats, keep order."""
    seen: set[str] = set()
    out = []
    for p in paths:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def photos_from_layer(layer, field_name: str | None, selected_only: bool = True) -> list[str]:
    """Photo paths from a vector layer's (selected) features; relative paths resolve from the layer's folder."""
    if field_name is None:
        return []
    source = layer.source().split("|")[0]
    base_dir = os.path.dirname(source) if os.path.exists(source) else None
    feats = layer.getSelectedFeatures() if selected_only else layer.getFeatures()
    paths = (resolve_photo_path(f[field_name], base_dir) for f in feats)
    return unique(p for p in paths if p)


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
                if is_image_path(candidate) and os.path.isfile(candidate):
                    paths.append(candidate)
                    break
    return unique(paths)


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
