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
    return selected_layer_photos(layer, field_name)[0]


def selected_layer_photos(layer, field_name: str) -> tuple[list[str], dict[str, int]]:
    """(photo paths, skipped features by reason) from a vector layer's selected features.

    Reasons: "empty" (no photo path in the field), "missing" (no such file).  Relative paths resolve
    from the layer's folder.
    """
    base_dir = layer_folder(layer)
    paths: list[str] = []
    skipped = {"empty": 0, "missing": 0}
    for feature in layer.getSelectedFeatures():
        path = resolve_photo_path(feature[field_name], base_dir)
        if not path:
            skipped["empty"] += 1
        elif not os.path.isfile(path):
            skipped["missing"] += 1
        else:
            paths.append(path)
    return unique_paths(paths), {k: v for k, v in skipped.items() if v}


def layer_folder(layer) -> str | None:
    """The folder of a file-based layer's source (relative photo paths resolve from it), else None."""
    source = layer.source().split("|")[0] if layer is not None else ""
    return os.path.dirname(source) if source and os.path.exists(source) else None


def layer_field_names(layer) -> list[str]:
    return [f.name() for f in layer.fields()]


BROWSER_VIEW_CLASSES = ("QgsBrowserTreeView", "QgsDockBrowserTreeView")


def browser_views(main_window) -> list:
    """The Browser panels' tree views under `main_window`.

    The real Browser dock's view is a C++ QgsDockBrowserTreeView that sip hands back as a plain QTreeView,
    so `findChildren(QgsBrowserTreeView)` misses it: look at every QTreeView's Qt class instead.
    """
    if main_window is None:
        return []
    from qgis.PyQt.QtWidgets import QTreeView

    views = []
    for view in main_window.findChildren(QTreeView):
        meta = view.metaObject()
        while meta is not None:
            if meta.className() in BROWSER_VIEW_CLASSES:
                views.append(view)
                break
            meta = meta.superClass()
    return views


def browser_selected_paths(main_window) -> list[str]:
    """Image files selected in any Browser panel under `main_window` (the dock's, or a Browser widget's).

    Paths are read through the view's model with QgsBrowserModel's data roles, which work through the
    dock's QgsBrowserProxyModel as well as on a plain QgsBrowserModel.
    """
    paths: list[str] = []
    for view in browser_views(main_window):
        model = view.model()
        selection = view.selectionModel()
        if model is None or selection is None:
            continue
        for index in selection.selectedRows():
            for candidate in _index_paths(model, index):
                if is_photo_path(candidate) and os.path.isfile(candidate):
                    paths.append(candidate)
                    break
    return unique_paths(paths)


def _index_paths(model, index) -> list[str]:
    """Candidate file paths of one Browser row: the path and layer-URI roles, then the data item's getters."""
    from qgis.core import QgsBrowserModel

    out = []
    value = model.data(index, QgsBrowserModel.PathRole)
    if isinstance(value, str) and value and not value.startswith("/vsi"):
        out.append(value.split("|")[0])
    while not hasattr(model, "dataItem") and hasattr(model, "mapToSource"):  # the dock's proxy model
        model, index = model.sourceModel(), model.mapToSource(index)
    item = model.dataItem(index) if hasattr(model, "dataItem") else None
    if item is not None:
        out.extend(_item_paths(item))
    return out


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
