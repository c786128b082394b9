"""PLONK's sigmoid noise schedule: gamma(0) = 1 is data, gamma(1) = 0 is noise."""

from __future__ import annotations

import functools

import numpy as np
import torch

START, END, TAU, CLIP_MIN = -7.0, 3.0, 1.0, 1e-9


def _sig(x: float) -> float:
    return float(torch.sigmoid(torch.tensor(x, dtype=torch.float64)))


_V_START = _sig(START / TAU)
_V_END = _sig(END / TAU)


def gamma(t: torch.Tensor) -> torch.Tensor:
    out = (_V_END - torch.sigmoid((t * (END - START) + START) / TAU)) / (_V_END - _V_START)
    return out.clamp(CLIP_MIN, 1.0)


def gamma_derivative(t: torch.Tensor) -> torch.Tensor:
    """d gamma / d t (ignoring the clamp, which only binds at t = 1)."""
    s = torch.sigmoid((t * (END - START) + START) / TAU)
    return -(END - START) * s * (1 - s) / (TAU * (_V_END - _V_START))


def sampling_grid(steps: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """gamma at t_k = 1 - k/N, k = 0..N: from noise (~0) to data (1), as the reference samples."""
    k = torch.arange(steps + 1, dtype=dtype, device=device)
    return gamma(1 - k / steps)


def weighted_grid(steps: int, weight: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """gamma at N + 1 points, noise (~0) to data (1), whose step density in gamma is sampling_grid's to the
    power `weight` times a uniform one's to the power 1 - weight (0 <= weight < 1).

    sampling_grid spends a quarter of its steps on the last 1 % of gamma, where a higher-order solver needs
    few; how many it should keep there depends on the solver (benchmarks/bench_solvers.py). sampling_grid's
    density in gamma is 1 / (s (1 - s)) with s = sigmoid((START + (END - START) t) / TAU), linear in gamma,
    whatever TAU; its power integrates to the regularised incomplete beta function I_s(1 - weight, 1 - weight),
    so the points are uniform in it.
    """
    if not 0 <= weight < 1:
        raise ValueError(f"grid weight {weight} is outside [0, 1)")
    points = torch.tensor(_weighted_points(steps, float(weight)), dtype=torch.float64)
    return points.clamp(CLIP_MIN, 1.0).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _weighted_points(steps: int, weight: float) -> tuple[float, ...]:
    """weighted_grid's gamma values, computed once per (steps, weight): every sampling call asks for them."""
    from scipy.special import betainc, betaincinv

    a = 1.0 - weight
    first, last = betainc(a, a, _V_END), betainc(a, a, _V_START)
    s = betaincinv(a, a, first + (last - first) * np.arange(steps + 1) / steps)
    return tuple(((_V_END - s) / (_V_END - _V_START)).tolist())


def balanced_grid(steps: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """weighted_grid at weight 1/2: the geometric mean of sampling_grid's step density and a uniform one's."""
    return weighted_grid(steps, 0.5, device=device, dtype=dtype)
