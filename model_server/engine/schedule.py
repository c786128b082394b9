"""PLONK's sigmoid noise schedule: gamma(0) = 1 is data, gamma(1) = 0 is noise."""

from __future__ import annotations

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
