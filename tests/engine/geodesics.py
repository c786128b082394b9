"""Textbook geodesic formulas on the sphere, the oracles the engine's closed forms are checked against."""

from __future__ import annotations

import torch

from model_server.engine.sphere import EPS, exp_map, geodesic_distance, project_tangent


def log_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Tangent vector at x pointing to y with length the geodesic distance."""
    u = project_tangent(x, y - x)
    dist = geodesic_distance(x, y).unsqueeze(-1)
    u_norm = u.norm(dim=-1, keepdim=True)
    return torch.where(u_norm > EPS, u * dist / u_norm.clamp_min(EPS), torch.zeros_like(u))


def geodesic_interpolant(x0: torch.Tensor, x1: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Point a fraction g of the way from x0 to x1 along the geodesic (g broadcast as (..., 1))."""
    return exp_map(x0, g * log_map(x0, x1))
