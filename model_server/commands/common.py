"""What the subcommands share: the user-error exception and its guard, the model and photo arguments, .npy I/O,
the settings a record keeps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


class CommandError(Exception):
    """A user mistake (path, shape); printed as one line, exit status 2."""


def run_guarded(func, args: argparse.Namespace) -> int:
    """func(args), with a CommandError printed as one `error:` line and exit status 2."""
    try:
        return func(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --encoder-dir, --device, the photo (--embedding or --image) and the guidance --cfg."""
    parser.add_argument("--model", default=None, help="model folder or name (default: the built-in default model)")
    parser.add_argument("--encoder-dir", default=None, help="encoder weights folder, for published PLONK models")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--embedding", type=Path, help="E.npy: one embedding, shape (cond_dim,) or (1, cond_dim)")
    src.add_argument("--image", type=Path, help="a photo to embed with the model's encoder")
    parser.add_argument("--cfg", type=float, default=None,
                        help="guidance weight w (default: the model's calibrated distribution, 0 if it has none)")


def jsonable_settings(args: argparse.Namespace) -> dict:
    """The parsed options as a record keeps them: paths as strings, repeated options as lists."""
    def jsonable(value: object) -> object:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list):
            return [jsonable(v) for v in value]
        return value

    return {k: jsonable(v) for k, v in vars(args).items() if not k.startswith("_")}


def truth_tolerance_problem(value: float) -> str | None:
    """Why a --truth-tolerance (eval and calibrate) cannot be used, or None."""
    return None if 0 <= value < 1 else f"--truth-tolerance must be 0 (off) or a small positive tolerance, got {value}"


def load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise CommandError(f"{what} file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CommandError(f"{what} file {path} is not a readable .npy array ({exc})") from None


def save_npy(path: Path, array: np.ndarray) -> None:
    """Atomic write: a reader never sees half an array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


def load_model_for(args: argparse.Namespace):
    """The model named by --model (and --encoder-dir) on --device."""
    from model_server.engine.checkpoint import ModelNotFoundError
    from model_server.engine.encoders import EncoderNotFoundError
    from model_server.engine.model import load_model

    try:
        # Ready-made embeddings need no encoder: any published folder (config.json + model.safetensors) will do.
        need_encoder = getattr(args, "embedding", None) is None
        return load_model(args.model, device=args.device, encoder_dir=args.encoder_dir, need_encoder=need_encoder)
    except (ModelNotFoundError, EncoderNotFoundError) as exc:
        raise CommandError(str(exc)) from None


def embedding_for(args: argparse.Namespace, model):
    """(1, cond_dim) from --embedding or by encoding --image."""
    import torch

    if args.embedding is not None:
        emb = load_npy(args.embedding, "embedding")
        if emb.ndim == 2 and emb.shape[0] == 1:
            emb = emb[0]
        if emb.shape != (model.cond_dim,):
            raise CommandError(
                f"embedding {args.embedding} has shape {emb.shape}; model {model.name} expects "
                f"({model.cond_dim},) or (1, {model.cond_dim})"
            )
        return torch.from_numpy(emb.astype(np.float32))[None]
    from model_server.images import ImageError, decode_image

    if not args.image.is_file():
        raise CommandError(f"image not found: {args.image}")
    try:
        image = decode_image(args.image.read_bytes())
    except ImageError as exc:
        raise CommandError(f"{args.image}: {exc}") from None
    return model.encoder.embed([image])


def guidance_for(args: argparse.Namespace, model, emb) -> float:
    """--cfg, else the w the model was calibrated to show the photo's distribution at (photo_guidance)."""
    if args.cfg is not None:
        return args.cfg
    from model_server.photo_guidance import cfg_for_photo

    return cfg_for_photo(model, emb)
