"""Draw locations for one photo or embedding: writes an (N, 2) array of latitude, longitude (degrees)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


class CommandError(Exception):
    """A user mistake (path, shape); printed as one line, exit status 2."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model folder or name (default: the built-in default model)")
    parser.add_argument("--encoder-dir", default=None, help="encoder weights folder, for published PLONK models")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--embedding", type=Path, help="E.npy: one embedding, shape (cond_dim,) or (1, cond_dim)")
    src.add_argument("--image", type=Path, help="a photo to embed with the model's encoder")
    parser.add_argument("--cfg", type=float, default=None,
                        help="guidance weight w (default: the model's calibrated distribution, 0 if it has none)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--n", type=int, default=1024, help="number of samples")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--solver", default="euler", help="euler (the reference sampler) or heun")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--seed", type=int, default=None, help="seed for the uniform starting points")
    start.add_argument("--initial-noise", type=Path, help="X0.npy: (N, 3) unit vectors to start from")
    parser.add_argument("--out", type=Path, required=True, help="OUT.npy")


def load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise CommandError(f"{what} file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CommandError(f"{what} file {path} is not a readable .npy array ({exc})") from None


def embedding_for(args: argparse.Namespace, model) -> torch.Tensor:
    """(1, cond_dim) from --embedding or by encoding --image."""
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


def guidance_for(args: argparse.Namespace, model) -> float:
    """--cfg, else the distribution the model was calibrated to show."""
    return model.distribution_cfg if args.cfg is None else args.cfg


def load_model_for(args: argparse.Namespace):
    from model_server.engine.checkpoint import ModelNotFoundError
    from model_server.engine.encoders import EncoderNotFoundError
    from model_server.engine.model import load_model

    try:
        return load_model(args.model, device=args.device, encoder_dir=args.encoder_dir)
    except (ModelNotFoundError, EncoderNotFoundError) as exc:
        raise CommandError(str(exc)) from None


def save_npy(path: Path, array: np.ndarray) -> None:
    """Atomic write: a reader never sees half an array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


def run_guarded(func, args: argparse.Namespace) -> int:
    try:
        return func(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from model_server.engine.sampling import sample
    from model_server.engine.sphere import xyz_to_degrees

    if args.n < 1 or args.steps < 1:
        raise CommandError("--n and --steps must be positive")
    model = load_model_for(args)
    emb = embedding_for(args, model)
    x0 = generator = None
    if args.initial_noise is not None:
        x0 = load_npy(args.initial_noise, "initial noise")
        if x0.ndim != 2 or x0.shape[1] != 3 or not np.all(np.isfinite(x0)) or np.any(np.linalg.norm(x0, axis=1) == 0):
            raise CommandError(f"initial noise {args.initial_noise} must be an (N, 3) array of unit vectors, "
                               f"got shape {x0.shape}")
        args.n = x0.shape[0]
        x0 = torch.from_numpy(x0.astype(np.float32))
    elif args.seed is not None:
        generator = torch.Generator().manual_seed(args.seed)
    try:
        x = sample(model.flow, emb, args.n, steps=args.steps, solver=args.solver, cfg=guidance_for(args, model),
                   generator=generator, x0=x0, precision=args.precision)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    save_npy(args.out, xyz_to_degrees(x[0].double()).cpu().numpy())
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_run, args)
