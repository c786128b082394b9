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
