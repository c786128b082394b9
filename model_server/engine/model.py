"""A loaded geolocation model: the flow network, its image encoder and its manifest.

`load_model(name_or_dir)` resolves names against the committed default models, the user's
models folder and the Hugging Face cache, all local. The encoder loads lazily on first use, so
commands that take ready-made embeddings work without the encoder's (large) weights.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from .checkpoint import ModelNotFoundError, load_flow, read_manifest, resolve_model_dir
from .encoders import ImageEncoder, load_encoder, query_encoder_name
from .guidance import Guidance, guidance_from_calibration
from .network import GeoAdaLNMLP

PACKAGE_MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = "earth-tiles"
CACHE_SIZE = 2

# Published PLONK folders carry no manifest: their encoder follows from the training data in the name.
_ENCODER_BY_NAME = (("osv_5m", "streetclip"), ("osv5m", "streetclip"), ("yfcc", "dinov2-reg"), ("inat", "dinov2-reg"))


def user_models_dir() -> Path:
    return Path(os.environ.get("GEOPLONK_MODELS") or Path.home() / ".local" / "share" / "geoplonk" / "models")


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else cuda, then mps, then cpu."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def search_paths(name: str) -> list[Path]:
    """Where a model name is looked for, in order."""
    paths = [PACKAGE_MODELS / name, user_models_dir() / name]
    repo = name if "/" in name else f"nicolas-dufour/{name}"
    paths.append(hf_cache_dir() / ("models--" + repo.replace("/", "--")))
    return paths


def find_model_dir(name_or_dir: str | os.PathLike | None = None) -> Path:
    """A folder path, or a model name -> the model's folder (ModelNotFoundError if none)."""
    target = str(name_or_dir) if name_or_dir is not None else DEFAULT_MODEL
    direct = Path(target).expanduser()
    if direct.exists() or direct.is_absolute() or target.startswith((".", "~")):
        return resolve_model_dir(direct)
    for candidate in search_paths(target):
        if candidate.exists():
            return resolve_model_dir(candidate)
    looked = ", ".join(str(p) for p in search_paths(target))
    raise ModelNotFoundError(
        f"model {target!r} not found (looked in {looked}). Copy the model folder to {user_models_dir()}, "
        "or run `geoplonk models unpack BUNDLE.tar` (made with `geoplonk models pack`), "
        "or `geoplonk models pull NAME` on a connected machine."
    )


def no_encoder_message(model_dir: Path) -> str:
    return (f"{model_dir} names no encoder: add a geoplonk.json manifest with "
            '{"encoder": {"name": "streetclip" | "dinov2-reg" | "efficientnet-lite0"}}, or give ready-made '
            "embeddings (--embedding)")


def manifest_encoder(manifest: dict | None) -> str | None:
    """The encoder photos to locate go through, from the manifest's entry (a name, or {name, views}), or None."""
    spec = (manifest or {}).get("encoder")
    if isinstance(spec, dict):
        return query_encoder_name(spec["name"], spec.get("views")) if spec.get("name") else None
    return spec or None


def infer_encoder(model_dir: Path, manifest: dict | None, required: bool = True) -> tuple[str | None, Path | None]:
    """(encoder name, weights folder or None) from the manifest, else from the published folder's name.

    A published folder (config.json + model.safetensors) under any other name has no known encoder:
    ModelNotFoundError when `required`, else (None, None) (the flow alone, for ready-made embeddings).
    """
    name = manifest_encoder(manifest)
    if name:
        spec = manifest["encoder"]
        rel = spec.get("path") if isinstance(spec, dict) else None
        return name, (model_dir / rel) if rel else None
    lowered = str(model_dir).lower()
    for key, encoder in _ENCODER_BY_NAME:
        if key in lowered:
            return encoder, (model_dir / "encoder") if (model_dir / "encoder").is_dir() else None
    if required:
        raise ModelNotFoundError(no_encoder_message(model_dir))
    return None, None


class GeoModel:
    """Flow + encoder + manifest. `.encoder` loads on first access."""

    def __init__(
        self,
        flow: GeoAdaLNMLP,
        manifest: dict,
        name: str,
        path: Path,
        device: torch.device,
        encoder_name: str | None,
        encoder_dir: Path | None = None,
    ):
        self.flow = flow
        self.manifest = manifest
        self.name = name
        self.path = path
        self.device = device
        self.encoder_name = encoder_name
        self.encoder_dir = encoder_dir
        self._encoder: ImageEncoder | None = None
        self._lock = threading.Lock()

    @property
    def cond_dim(self) -> int:
        return self.flow.config.cond_dim

    @property
    def weights_sha256(self) -> str | None:
        """sha256 of model.safetensors, for the record of a result: the manifest's, else hashed once."""
        files = self.manifest.get("files") if isinstance(self.manifest, dict) else None
        if isinstance(files, dict) and isinstance(files.get("model.safetensors"), str):
            return files["model.safetensors"]
        if not hasattr(self, "_weights_sha256"):
            from .checkpoint import file_sha256

            weights = Path(self.path) / "model.safetensors"
            self._weights_sha256 = file_sha256(weights) if weights.is_file() else None
        return self._weights_sha256

    @property
    def guidance(self) -> Guidance:
        """Guidance of the distribution the map shows: the manifest's calibration (`geoplonk calibrate`), one
        w or one for land-looking photos and one for the others; else w = 0, the distribution as trained
        (published checkpoints)."""
        return guidance_from_calibration(self.manifest.get("calibration"), str(self.path / "geoplonk.json"))

    @property
    def distribution_cfg(self) -> float:
        """The calibrated w of photos that no land rule singles out (every photo's when there is none)."""
        return self.guidance.cfg

    @property
    def training_encoder_name(self) -> str:
        """The encoder the training photos went through: the manifest's encoder before its query-time views."""
        spec = self.manifest.get("encoder")
        return spec["name"] if isinstance(spec, dict) and spec.get("views") else self.encoder_name

    @property
    def encoder(self) -> ImageEncoder:
        with self._lock:
            if self._encoder is None:
                if self.encoder_name is None:
                    raise ModelNotFoundError(no_encoder_message(self.path))
                encoder = load_encoder(self.encoder_name, self.encoder_dir, device=self.device)
                if encoder.dim != self.cond_dim:
                    raise ValueError(
                        f"encoder {self.encoder_name} gives {encoder.dim}-d embeddings "
                        f"but model {self.name} expects {self.cond_dim}"
                    )
                self._encoder = encoder
            return self._encoder

    def __repr__(self) -> str:
        return f"GeoModel(name={self.name!r}, encoder={self.encoder_name!r}, device={self.device}, path={self.path})"


_CACHE: OrderedDict[tuple, GeoModel] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def load_model(
    name_or_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    encoder_dir: str | os.PathLike | None = None,
    need_encoder: bool = True,
) -> GeoModel:
    """Load (or reuse from a small cache) a model by folder or name; None = the default model.

    encoder_dir (or $GEOPLONK_ENCODER_DIR) points a published PLONK folder at its encoder's weights.
    need_encoder=False accepts a folder whose encoder is unknown (any published config.json +
    model.safetensors folder): the flow works on ready-made embeddings, and `.encoder` raises.
    """
    model_dir = find_model_dir(name_or_dir)
    dev = pick_device(device)
    encoder_dir = encoder_dir or os.environ.get("GEOPLONK_ENCODER_DIR") or None
    key = (str(model_dir.resolve()), str(dev), str(encoder_dir))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            if need_encoder and _CACHE[key].encoder_name is None:
                raise ModelNotFoundError(no_encoder_message(model_dir))
            return _CACHE[key]
    manifest = read_manifest(model_dir) or {}
    enc_name, enc_dir = infer_encoder(model_dir, manifest, required=need_encoder)
    if encoder_dir:
        enc_dir = Path(encoder_dir)
    name = manifest.get("name") or display_name(model_dir)
    model = GeoModel(load_flow(model_dir, dev), manifest, name, model_dir, dev, enc_name, enc_dir)
    with _CACHE_LOCK:
        _CACHE[key] = model
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return model


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def display_name(model_dir: Path) -> str:
    """A model's name when its manifest gives none: "owner/name" for a Hugging Face cache snapshot, else the
    folder's name."""
    for part in reversed(model_dir.parts):
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return model_dir.name
