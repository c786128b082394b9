"""Draw locations for one photo or embedding: writes an (N, 2) array of latitude, longitude (degrees)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from geoplonk_service import protocol as P

from . import common
from .common import CommandError

REFERENCE_STEPS = 32  # the authors' demo samples with Euler in 32 steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_model_arguments(parser)
    parser.add_argument("--n", type=int, default=1024, help="number of samples")
    server = f"{P.DEFAULT_SOLVER} in {P.DEFAULT_STEPS}"
    parser.add_argument("--steps", type=int, default=REFERENCE_STEPS,
                        help=f"solver steps (default %(default)s; the server: {server})")
    parser.add_argument("--solver", default="euler", choices=P.SOLVERS,
                        help=f"ODE solver (default %(default)s in {REFERENCE_STEPS} steps: the reference's sampler)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--seed", type=int, default=None, help="seed for the uniform starting points")
    start.add_argument("--initial-noise", type=Path, help="X0.npy: (N, 3) unit vectors to start from")
    parser.add_argument("--out", type=Path, required=True, help="OUT.npy")


def _run(args: argparse.Namespace) -> int:
    from model_server.engine.sampling import sample
    from model_server.engine.sphere import xyz_to_degrees

    if args.n < 1 or args.steps < 1:
        raise CommandError("--n and --steps must be positive")
    model = common.load_model_for(args)
    emb = common.embedding_for(args, model)
    x0 = generator = None
    if args.initial_noise is not None:
        x0 = common.load_npy(args.initial_noise, "initial noise")
        if x0.ndim != 2 or x0.shape[1] != 3 or not np.all(np.isfinite(x0)) or np.any(np.linalg.norm(x0, axis=1) == 0):
            raise CommandError(f"initial noise {args.initial_noise} must be an (N, 3) array of unit vectors, "
                               f"got shape {x0.shape}")
        args.n = x0.shape[0]
        x0 = torch.from_numpy(x0.astype(np.float32))
    elif args.seed is not None:
        generator = torch.Generator().manual_seed(args.seed)
    try:
        cfg = common.guidance_for(args, model, emb)
        x = sample(model.flow, emb, args.n, steps=args.steps, solver=args.solver, cfg=cfg, generator=generator,
                   x0=x0, precision=args.precision)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    common.save_npy(args.out, xyz_to_degrees(x[0].double()).cpu().numpy())
    return 0


def run(args: argparse.Namespace) -> int:
    return common.run_guarded(_run, args)
