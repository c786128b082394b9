"""ODE solvers that carry points on the sphere from noise (gamma ~ 0) to data (gamma = 1).

`velocity(x, g)` is the (guided) network velocity d x / d gamma; solvers are pure
functions of it, in the manner of Meta's flow_matching ODESolver. The network is evaluated on the sphere
only. "euler" (the reference sampler) and "heun" step the network's raw output on sampling_grid;
"midpoint", "rk3" and "rk4" step its tangent part on a schedule.weighted_grid, where they need far fewer
evaluations for the same endpoints (benchmarks/bench_solvers.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import balanced_grid, sampling_grid, weighted_grid
from .sphere import normalize, project_tangent

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int], None]

# rk3's grid keeps more of the reference's steps near the data end than balanced_grid (weight 1/2): at 6 steps on
# the default model's sample tiles, weight 0.7 more than halves the median endpoint error of 0.5 and keeps its
# 99th percentile (docs/samplers.md).
RK3_GRID_WEIGHT = 0.7


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
    """Heun predictor-corrector with projection on sampling_grid; two evaluations per step.

    Second order only where the network's output is tangent to the sphere (see _tangent).
    """
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


def _tangent(velocity: Velocity, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The field at y / |y|, projected onto the sphere's tangent plane there.

    The network's output has a radial part; normalising x + h v scales the tangent step by 1 / (1 + h v_r),
    an error of order h^2 per step that keeps any method first order. Without it the stages solve an ODE in
    R^3 whose flow stays on the sphere, at the method's own order.
    """
    x = normalize(y)
    return project_tangent(x, velocity(x, g))


def midpoint_sphere(
    velocity: Velocity, x: torch.Tensor, steps: int, on_step: StepCallback | None = None
) -> torch.Tensor:
    """Second-order explicit midpoint on balanced_grid, on the tangent field; two evaluations per step."""
    gammas = balanced_grid(steps, device=x.device)
    for k in range(steps):
        g, dg = gammas[k], gammas[k + 1] - gammas[k]
        x_half = x + 0.5 * dg * _tangent(velocity, x, g)
        x = normalize(x + dg * _tangent(velocity, x_half, g + 0.5 * dg))
        if on_step is not None:
            on_step(k + 1, steps)
    return x


def rk3_sphere(
    velocity: Velocity, x: torch.Tensor, steps: int, on_step: StepCallback | None = None, *,
    grid_weight: float = RK3_GRID_WEIGHT,
) -> torch.Tensor:
    """Ralston's third-order Runge-Kutta (the smallest error bound of the three-stage family) on the grid of
    weight `grid_weight`, on the tangent field; three evaluations per step."""
    gammas = weighted_grid(steps, grid_weight, device=x.device)
    for k in range(steps):
        g, dg = gammas[k], gammas[k + 1] - gammas[k]
        k1 = _tangent(velocity, x, g)
        k2 = _tangent(velocity, x + 0.5 * dg * k1, g + 0.5 * dg)
        k3 = _tangent(velocity, x + 0.75 * dg * k2, g + 0.75 * dg)
        x = normalize(x + dg / 9 * (2 * k1 + 3 * k2 + 4 * k3))
        if on_step is not None:
            on_step(k + 1, steps)
    return x


def rk4_sphere(
    velocity: Velocity, x: torch.Tensor, steps: int, on_step: StepCallback | None = None
) -> torch.Tensor:
    """Classical fourth-order Runge-Kutta on balanced_grid, on the tangent field; four evaluations per step."""
    gammas = balanced_grid(steps, device=x.device)
    for k in range(steps):
        g, dg = gammas[k], gammas[k + 1] - gammas[k]
        k1 = _tangent(velocity, x, g)
        k2 = _tangent(velocity, x + 0.5 * dg * k1, g + 0.5 * dg)
        k3 = _tangent(velocity, x + 0.5 * dg * k2, g + 0.5 * dg)
        k4 = _tangent(velocity, x + dg * k3, gammas[k + 1])
        x = normalize(x + dg / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
        if on_step is not None:
            on_step(k + 1, steps)
    return x


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": euler_sphere, "heun": heun_sphere, "midpoint": midpoint_sphere, "rk3": rk3_sphere, "rk4": rk4_sphere,
}
# Network evaluations per step, in the order each solver makes them: cost comparisons, and guided_velocity's
# hold_unguided, which counts the calls to find each step's first stage.
EVALUATIONS = {"euler": 1, "heun": 2, "midpoint": 2, "rk3": 3, "rk4": 4}


def get_solver(name: str) -> Callable[..., torch.Tensor]:
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}") from None


def guided_velocity(net: torch.nn.Module, emb: torch.Tensor, cfg: float, hold_unguided: int = 1) -> Velocity:
    """(1 + w) v(x, g, c) - w v(x, g, 0), with the images' embeddings broadcast over samples.

    emb is (E, 1, cond_dim) for x of shape (E, N, 3). Both fields in one network call on the doubled batch:
    fewer, larger matmuls (the likelihood's field does the same, likelihood.field_and_divergence).

    hold_unguided = k > 1 evaluates the unguided field at every k-th call only and holds it over the k - 1 calls
    after: with k a solver's evaluations per step, at each step's first stage. The guided field weighs it by
    |w|, so at a small |w| and few steps holding it moves the endpoints less than the step error (the held term
    is first order: sampling.HOLD_UNGUIDED_MAX_CFG), while a step costs (k + 1) / 2k of the doubled batch's rows.
    """
    if hold_unguided < 1:
        raise ValueError(f"hold_unguided must be a positive number of calls, got {hold_unguided}")
    if cfg == 0:
        return lambda x, g: net(x, g, emb)
    both = torch.cat([emb, torch.zeros_like(emb)], dim=0)
    calls, held = 0, None

    def velocity(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        nonlocal calls, held
        if calls % hold_unguided == 0:
            v_cond, held = net(torch.cat([x, x], dim=0), g, both).chunk(2, dim=0)
        else:
            v_cond = net(x, g, emb)
        calls += 1
        return (1 + cfg) * v_cond - cfg * held

    return velocity
