"""Draw locations from a flow model: uniform points on the sphere carried to the data by an ODE solver.

The network's conditioning is computed once per image and broadcast over that image's samples
(emb shaped (E, 1, cond_dim) against x (E, n, 3)), which is what makes 1024 samples per photo cheap.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .network import GeoAdaLNMLP, fast_velocity, native_cpu_bf16
from .runtime import configure_cpu_math
from .solvers import EVALUATIONS, get_solver, guided_velocity
from .sphere import normalize, uniform_sphere

PRECISIONS = ("fp32", "bf16")
# Where a multi-stage solver holds the unguided field over each step: at most this |w| and this many steps. The held
# term is integrated to first order, so its error grows with |w| and falls only as the step, while rk3's own falls
# as its cube: beyond these it would outgrow the solver's error (docs/samplers.md). The best guess's w = 2 runs on
# Euler, where nothing is held.
HOLD_UNGUIDED_MAX_CFG = 0.1
HOLD_UNGUIDED_MAX_STEPS = 8


def holds_unguided(cfg: float, steps: int) -> bool:
    """Whether a multi-stage solve at guidance `cfg` in `steps` steps may hold the unguided field over each step:
    the sampler's and the localizability's likelihood's one rule."""
    return cfg != 0 and abs(cfg) <= HOLD_UNGUIDED_MAX_CFG and steps <= HOLD_UNGUIDED_MAX_STEPS


def held_calls(solver: str, cfg: float, steps: int) -> int:
    """Over how many calls sample() holds the unguided field by default: the solver's evaluations per step where
    it holds it, else 1."""
    return EVALUATIONS[solver] if holds_unguided(cfg, steps) else 1


def unguided_field(cfg: float, steps: int, solver: str) -> str | None:
    """How sample()'s default treats the unguided field, for a result's record: None at w = 0 (there is none)."""
    if cfg == 0:
        return None
    return "held over each step" if held_calls(solver, cfg, steps) > 1 else "every stage"


def supported_precision(precision: str, device: str | torch.device) -> str:
    """`precision`, or fp32 where bf16 is not native, so slower than fp32: CPUs without bf16 dot products (most
    laptops': AVX2 only), GPUs without bf16 units (which torch would emulate) and Apple's MPS."""
    return "fp32" if precision == "bf16" and not _native_bf16(torch.device(device)) else precision


def _native_bf16(device: torch.device) -> bool:
    if device.type == "cpu":
        return native_cpu_bf16()
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    return False  # Apple's MPS: autocast to bf16 depends on the build


def as_embeddings(emb: torch.Tensor, cond_dim: int) -> torch.Tensor:
    """(cond_dim,) or (E, cond_dim) -> (E, cond_dim) float32, or ValueError naming the shapes."""
    emb = torch.as_tensor(emb)
    if emb.dim() == 1:
        emb = emb.unsqueeze(0)
    if emb.dim() != 2 or emb.shape[-1] != cond_dim:
        raise ValueError(f"embeddings must have shape (E, {cond_dim}) or ({cond_dim},), got {tuple(emb.shape)}")
    return emb.float()


def initial_points(
    n_images: int,
    n: int,
    x0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Starting points (E, n, 3): the given (n, 3) or (E, n, 3) unit vectors, else uniform ones.

    Uniform draws come from `generator` on the CPU so that a seed gives the same points on any device.
    """
    if x0 is None:
        return uniform_sphere(n_images * n, generator=generator).reshape(n_images, n, 3).to(device)
    x0 = torch.as_tensor(x0, dtype=torch.float32)
    if x0.dim() == 2:
        x0 = x0.unsqueeze(0).expand(n_images, -1, -1)
    if x0.shape != (n_images, n, 3):
        raise ValueError(f"x0 must have shape ({n}, 3) or ({n_images}, {n}, 3), got {tuple(x0.shape)}")
    return normalize(x0.to(device))


def start_points(n: int, seed: int) -> torch.Tensor:
    """The same seeded uniform start points for every photo: a photo's result does not depend on its batch."""
    return uniform_sphere(n, generator=torch.Generator().manual_seed(int(seed)))


def network_for(flow: GeoAdaLNMLP, precision: str) -> Callable[..., torch.Tensor]:
    """The flow's cached fast evaluator with its matmuls in `precision`; the points stay fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return fast_velocity(flow, torch.float32 if precision == "fp32" else torch.bfloat16)


@torch.inference_mode()
def sample(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    n: int,
    *,
    steps: int = 32,
    solver: str = "euler",
    cfg: float = 0.0,
    generator: torch.Generator | None = None,
    x0: torch.Tensor | None = None,
    on_step: Callable[[int, int], None] | None = None,
    precision: str = "fp32",
    solver_options: dict | None = None,
    hold_unguided: bool = True,
) -> torch.Tensor:
    """n samples per image -> (E, n, 3) unit vectors (float32, on the flow's device).

    cfg is the guidance weight w in (1 + w) v(x, c) - w v(x, 0); w = 0 samples the distribution.
    solver_options: the solver's own keywords (rk3's grid_weight), for benchmarks; the server sends none.
    hold_unguided: at 0 < |w| <= HOLD_UNGUIDED_MAX_CFG and at most HOLD_UNGUIDED_MAX_STEPS steps, evaluate the
    unguided field once per step of a multi-stage solver and hold it over the step's other stages
    (solvers.guided_velocity); False evaluates it at every stage. Euler is exact either way.
    """
    if n < 1 or steps < 1:
        raise ValueError(f"n and steps must be positive, got n={n}, steps={steps}")
    configure_cpu_math()
    device = next(flow.parameters()).device
    emb = as_embeddings(emb, flow.config.cond_dim).to(device)
    x = initial_points(emb.shape[0], n, x0, generator, device)
    solve = get_solver(solver)
    hold = held_calls(solver, cfg, steps) if hold_unguided else 1
    velocity = guided_velocity(network_for(flow, precision), emb.unsqueeze(1), float(cfg), hold)
    x = solve(velocity, x, steps, on_step, **(solver_options or {}))
    return normalize(x.float())
