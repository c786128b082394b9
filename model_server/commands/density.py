"""Exact log-density (natural log per steradian; uniform = -log 4 pi) at each (lat, lon) row of P.npy."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .common import (
    CommandError,
    add_model_arguments,
    embedding_for,
    guidance_for,
    load_model_for,
    load_npy,
    run_guarded,
    save_npy,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--points", type=Path, required=True, help="P.npy: (M, 2) latitude, longitude in degrees")
    parser.add_argument("--method", default="dopri5", help="ODE solver (dopri5 adaptive; rk4, euler fixed-step)")
    parser.add_argument("--tol", type=float, default=1e-6, help="atol = rtol for adaptive solvers")
    parser.add_argument("--steps", type=int, default=None, help="steps for fixed-step solvers (default 32)")
    parser.add_argument("--out", type=Path, required=True, help="OUT.npy: (M,) log-densities")


def _run(args: argparse.Namespace) -> int:
    from model_server.engine.likelihood import log_density
    from model_server.engine.sphere import degrees_to_xyz

    points = load_npy(args.points, "points")
    if points.ndim == 1 and points.shape == (2,):
        points = points[None]
    if points.ndim != 2 or points.shape[1] != 2 or not np.all(np.isfinite(points)):
        raise CommandError(f"points {args.points} must be an (M, 2) array of latitude, longitude; got {points.shape}")
    if np.any(np.abs(points[:, 0]) > 90):
        raise CommandError(f"points {args.points}: latitudes must lie in [-90, 90] (is the order lat, lon?)")
    model = load_model_for(args)
    emb = embedding_for(args, model)
    xyz = degrees_to_xyz(torch.from_numpy(points.astype(np.float64))).float()
    try:
        logp = log_density(model.flow, emb, xyz, cfg=guidance_for(args, model, emb), method=args.method,
                           atol=args.tol, rtol=args.tol, steps=args.steps)
    except (ValueError, AssertionError) as exc:
        raise CommandError(str(exc)) from None
    save_npy(args.out, logp[0].cpu().numpy().astype(np.float64))
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_run, args)
