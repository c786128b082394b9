"""Sphere geometry as pure torch functions (the manifold of Riemannian flow matching)."""

from __future__ import annotations

import math

import torch

EPS = 1e-7


def latlon_to_xyz(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """Radians to unit vectors, the reference's convention (x toward lon 0, z north)."""
    cos_lat = torch.cos(lat)
    return torch.stack((cos_lat * torch.cos(lon), cos_lat * torch.sin(lon), torch.sin(lat)), dim=-1)


def xyz_to_latlon(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit (or any non-zero) vectors to radians; normalised first so near-unit inputs stay exact."""
    xyz = normalize(xyz)
    lat = torch.asin(xyz[..., 2].clamp(-1.0, 1.0))
    lon = torch.atan2(xyz[..., 1], xyz[..., 0])
    return lat, lon


def degrees_to_xyz(latlon_deg: torch.Tensor) -> torch.Tensor:
    rad = torch.deg2rad(latlon_deg)
    return latlon_to_xyz(rad[..., 0], rad[..., 1])


def xyz_to_degrees(xyz: torch.Tensor) -> torch.Tensor:
    lat, lon = xyz_to_latlon(xyz)
    return torch.rad2deg(torch.stack((lat, lon), dim=-1))


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def project_tangent(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return v - (x * v).sum(-1, keepdim=True) * x


def geodesic_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Great-circle angle; atan2 form stays accurate for tiny and near-antipodal angles."""
    cross = torch.linalg.cross(x, y, dim=-1).norm(dim=-1)
    dot = (x * y).sum(-1)
    return torch.atan2(cross, dot)


def exp_map(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    norm = v.norm(dim=-1, keepdim=True)
    safe = norm.clamp_min(EPS)
    out = torch.cos(norm) * x + torch.sin(norm) * v / safe
    return normalize(torch.where(norm > EPS, out, x + v))


def uniform_sphere(n: int, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Uniform points on S^2: normalised Gaussians."""
    return normalize(torch.randn(n, 3, generator=generator, device=device, dtype=dtype))


LOG_SPHERE_AREA = math.log(4 * math.pi)
