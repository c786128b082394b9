"""Models the server offers: the default one plus any found in the model folders; loaded lazily, kept resident."""

from __future__ import annotations

import threading
from pathlib import Path

from ..engine import model as engine_model


def available_models(default: str | None) -> list[str]:
    """Names a client may ask for: folders holding config.json in the package and user model folders."""
    names: list[str] = []
    for root in (engine_model.PACKAGE_MODELS, engine_model.user_models_dir()):
        if root.is_dir():
            names += sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())
    default_name = default_label(default)
    if default_name not in names:
        names.insert(0, default_name)
    return list(dict.fromkeys(names))


def default_label(default: str | None) -> str:
    """How the default model is named to clients (a folder's name, not its full path)."""
    if default is None:
        return engine_model.DEFAULT_MODEL
    return Path(default).name if ("/" in default or default.startswith(".")) else default


class ModelRegistry:
    """Loads each model once (flow + encoder) on first use and keeps it."""

    def __init__(self, default: str | None, device: str | None):
        self.default = default
        self.default_name = default_label(default)
        self.device = str(engine_model.pick_device(device))
        self._lock = threading.Lock()
        self._loaded: dict[str, object] = {}

    def check_default(self) -> Path:
        """The default model's folder (raises ModelNotFoundError): checked before announcing READY."""
        return engine_model.find_model_dir(self.default)

    def resolve(self, name: str | None) -> str | None:
        """The spec to load for a requested name, or None if this server does not offer it."""
        if name is None or name == self.default_name or name == self.default:
            return self.default if self.default is not None else engine_model.DEFAULT_MODEL
        if name in available_models(self.default):
            return name
        return None

    def get(self, spec: str):
        with self._lock:
            if spec not in self._loaded:
                model = engine_model.load_model(spec, device=self.device)
                _ = model.encoder  # load the encoder now, so the first photo does not pay for it
                self._loaded[spec] = model
            return self._loaded[spec]

    def loaded(self) -> list[str]:
        with self._lock:
            return [default_label(k) for k in self._loaded]


# --- model cards and fitness warnings -----------------------------------------------------------------------------

OVERHEAD = "overhead"
GROUND = "ground"
PURPOSE = {
    OVERHEAD: "overhead views (satellite or aerial tiles), not ground photos",
    GROUND: "ground-level photos",
}
# EXIF tags a camera writes: Make, Model (IFD0) and FocalLength (Exif IFD).
CAMERA_TAGS = {0x010F: "make", 0x0110: "model"}
EXIF_IFD, FOCAL_LENGTH = 0x8769, 0x920A
# Overhead tiles are square: a photo whose sides differ more than this is a camera frame.
SQUARE_TOLERANCE = 1.1


def imagery_kind(manifest: dict | None) -> str:
    """What a model was made for: the manifest's "imagery", else overhead when its encoder averages rotations
    (rot4 / d8: an overhead view has no "up") or its training data are tiles, else ground photos."""
    manifest = manifest or {}
    if manifest.get("imagery") in PURPOSE:
        return manifest["imagery"]
    encoder = engine_model.manifest_encoder(manifest) or ""
    data = str(manifest.get("training_data", "")).lower()
    return OVERHEAD if "+rot" in encoder or "+d8" in encoder or "tile" in data else GROUND


def model_card(name: str, manifest: dict | None) -> dict[str, str]:
    """One model's card for clients: what it is for, its encoder, its licence, and a one-line summary."""
    manifest = manifest or {}
    encoder = engine_model.manifest_encoder(manifest) or "unknown encoder"
    licence = str(manifest.get("licence") or "licence not stated").split(". ")[0].rstrip(".")
    kind = imagery_kind(manifest)
    purpose = str(manifest.get("purpose") or PURPOSE[kind])
    return {
        "name": name,
        "imagery": kind,
        "purpose": purpose,
        "encoder": encoder,
        "licence": licence,
        "card": f"{name}: for {purpose}; encoder {encoder}; {licence}",
    }


def model_cards(default: str | None) -> list[dict[str, str]]:
    """The cards of available_models(default), in the same order (a model without a manifest gets a bare card)."""
    from ..engine.checkpoint import read_manifest

    cards = []
    for name in available_models(default):
        spec = default if name == default_label(default) and default is not None else name
        try:
            manifest = read_manifest(engine_model.find_model_dir(spec))
        except Exception:  # noqa: BLE001 - a broken model folder still gets listed
            manifest = None
        cards.append(model_card(name, manifest))
    return cards


def photo_warnings(model_name: str, manifest: dict | None, blob: bytes, size: tuple[int, int]) -> list[str]:
    """Warnings when a photo is not the kind of view the model was made for (recorded in the result summary).

    An overhead model warns on camera EXIF (make, model, focal length) and on a non-square frame.
    """
    if imagery_kind(manifest) != OVERHEAD:
        return []
    out = []
    camera = camera_exif(blob)
    if camera:
        tags = ", ".join(f"{k} {v}" for k, v in camera.items())
        out.append(f"{model_name} expects overhead views (satellite or aerial); this photo has camera EXIF ({tags}):"
                   " its map is unreliable")
    width, height = size
    if min(width, height) > 0 and max(width, height) / min(width, height) > SQUARE_TOLERANCE:
        out.append(f"{model_name} expects square overhead tiles; this {width} x {height} frame looks like a"
                   " ground photo: its map is unreliable")
    return out


def camera_exif(blob: bytes) -> dict[str, str]:
    """Camera make, model and focal length from a photo's EXIF ({} when none or unreadable)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as image:
            exif = image.getexif()
            found = {label: str(exif[tag]).strip("\x00 ") for tag, label in CAMERA_TAGS.items() if exif.get(tag)}
            focal = exif.get_ifd(EXIF_IFD).get(FOCAL_LENGTH)
    except Exception:  # noqa: BLE001 - no EXIF is no warning
        return {}
    if focal:
        try:
            found["focal length"] = f"{float(focal):g} mm"
        except (TypeError, ValueError):  # a string or several rationals: still a camera's tag
            found["focal length"] = str(focal)
    return {k: v for k, v in found.items() if v}
