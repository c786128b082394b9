"""Sphere coordinates (poles, antimeridian) and the sigmoid schedule."""

from __future__ import annotations

import math

import pytest
import torch

from model_server.engine import schedule
from model_server.engine.sphere import degrees_to_xyz, exp_map, geodesic_distance, uniform_sphere, xyz_to_degrees

from .geodesics import geodesic_interpolant, log_map


def test_degrees_round_trip_including_poles_and_antimeridian():
    pts = torch.tensor([[0.0, 0.0], [45.0, 90.0], [-33.9, 151.2], [10.0, 179.999], [10.0, -179.999],
                        [89.9999, 12.0], [-89.9999, -77.0]], dtype=torch.float64)
    back = xyz_to_degrees(degrees_to_xyz(pts))
    assert torch.allclose(back, pts, atol=1e-9)
    assert torch.allclose(degrees_to_xyz(torch.tensor([[0.0, 0.0]])), torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.allclose(degrees_to_xyz(torch.tensor([[90.0, 0.0]])), torch.tensor([[0.0, 0.0, 1.0]]), atol=1e-7)
    pole = xyz_to_degrees(torch.tensor([[0.0, 0.0, 1.0]]))
    assert pole[0, 0] == 90.0
    # 180 and -180 are the same place: 0.002 degrees apart across the antimeridian
    a, b = degrees_to_xyz(torch.tensor([[10.0, 179.999], [10.0, -179.999]], dtype=torch.float64))
    assert math.degrees(geodesic_distance(a, b)) < 0.0021


def test_geodesics_and_maps():
    x, y = uniform_sphere(100, generator=torch.Generator().manual_seed(0), dtype=torch.float64).chunk(2)
    assert torch.allclose(exp_map(x, log_map(x, y)), y, atol=1e-9)
    mid = geodesic_interpolant(x, y, torch.full((50, 1), 0.25, dtype=torch.float64))
    assert torch.allclose(geodesic_distance(x, mid), 0.25 * geodesic_distance(x, y), atol=1e-9)
    assert torch.allclose(mid.norm(dim=-1), torch.ones(50, dtype=torch.float64))


def test_schedule_endpoints_and_derivative():
    assert schedule.gamma(torch.tensor(0.0)).item() == 1.0
    assert schedule.gamma(torch.tensor(1.0)).item() == pytest.approx(schedule.CLIP_MIN, rel=1e-6)
    grid = schedule.sampling_grid(32)
    assert grid.shape == (33,) and torch.all(grid[1:] > grid[:-1]) and grid[-1] == 1.0
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    numeric = (schedule.gamma(t + h) - schedule.gamma(t - h)) / (2 * h)
    assert torch.allclose(schedule.gamma_derivative(t), numeric, rtol=1e-5)
