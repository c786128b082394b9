"""ODE solvers that carry points on the sphere from noise (gamma ~ 0) to data (gamma = 1).

`velocity(x, g)` is the (guided) network velocity d x / d gamma; solvers are pure
functions of it, in the manner of Meta's flow_matching ODESolver.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import sampling_grid
from .sphere import normalize

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int], None]


def euler_sphere(
    velocity: Velocity, x: torch.Tensor, steps: int, on_step: StepCallback | None = None
) -> torch.Tensor:
    """The reference sampler: x <- normalise(x + (g_{k+1} - g_k) v(x, g_k))."""
    gammas = sampling_grid(steps, device=x.device)
    for k in range(steps):
        x = normalize(x + (gammas[k + 1] - gammas[k]) * velocity(x, gammas[k]))
        if on_step is not None:
            on_step(k + 1, steps)
    return x


def heun_sphere(
    velocity: Velocity, x: torch.Tensor, steps: int, on_step: StepCallback | None = None
) -> torch.Tensor:
    """Second-order (Heun) predictor-corrector with projection; two evaluations per step."""
    gammas = sampling_grid(steps, device=x.device)
    for k in range(steps):
        dg = gammas[k + 1] - gammas[k]
        v0 = velocity(x, gammas[k])
        x_pred = normalize(x + dg * v0)
        v1 = velocity(x_pred, gammas[k + 1])
        x = normalize(x + dg * 0.5 * (v0 + v1))
        if on_step is not None:
            on_step(k + 1, steps)
    return x


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {"euler": euler_sphere, "heun": heun_sphere}


def get_solver(name: str) -> Callable[..., torch.Tensor]:
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}") from None


def guided_velocity(net: torch.nn.Module, emb: torch.Tensor, cfg: float, *, joint: bool = True) -> Velocity:
    """(1 + w) v(x, g, c) - w v(x, g, 0), with the images' embeddings broadcast over samples.

    emb is (E, 1, cond_dim) for x of shape (E, N, 3). joint: both fields in one network call on the doubled
    batch (fewer, larger matmuls: how the sampler runs); otherwise one call each, as the likelihood runs.
    The two agree to float32 rounding but not bit for bit (the matmuls' blocking depends on the batch), and
    each caller keeps its own so that a seed or a recorded calibration reproduces exactly.
    """
    if cfg == 0:
        return lambda x, g: net(x, g, emb)
    zeros = torch.zeros_like(emb)
    if not joint:
        return lambda x, g: (1 + cfg) * net(x, g, emb) - cfg * net(x, g, zeros)
    both = torch.cat([emb, zeros], dim=0)

    def velocity(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        v_cond, v_uncond = net(torch.cat([x, x], dim=0), g, both).chunk(2, dim=0)
        return (1 + cfg) * v_cond - cfg * v_uncond

    return velocity
