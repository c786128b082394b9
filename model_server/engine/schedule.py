"""PLONK's sigmoid noise schedule: gamma(0) = 1 is data, gamma(1) = 0 is noise."""

from __future__ import annotations

import math

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


def balanced_grid(steps: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """gamma at N + 1 points, noise (~0) to data (1), with a step density in gamma that is the geometric mean of
    sampling_grid's and a uniform one's.

    sampling_grid spends a quarter of its steps on the last 1 % of gamma, where few suffice; spread over the
    middle instead, the same steps about halved the midpoint solver's endpoint error on the default model
    (benchmarks/bench_solvers.py). sampling_grid's density is 1 / (s (1 - s)) with
    s = sigmoid((START + (END - START) t) / TAU), linear in gamma, whatever TAU; its square root integrates in
    closed form, so the points are uniform in asin(sqrt(s)).
    """
    first, last = math.asin(math.sqrt(_V_END)), math.asin(math.sqrt(_V_START))
    k = torch.arange(steps + 1, dtype=torch.float64, device=device)
    s = torch.sin(first + (last - first) * k / steps) ** 2
    return ((_V_END - s) / (_V_END - _V_START)).clamp(CLIP_MIN, 1.0).to(dtype)
