"""Exact log-density of locations under a flow model, by the probability-flow ODE.

With t = 0 data and t = 1 noise, points move by dx/dt = u(x, t) = gamma'(t) v(x, gamma(t)).
For an ODE, d/dt log p_t(x_t) = -div u, so integrating from the location (t = 0) to noise (t = 1):

    log p(x) = log p_base(x_1) + integral_0^1 div u(x_t, t) dt,    log p_base = -log(4 pi) (uniform).

The divergence must be the sphere's. We evaluate the field at x / |x| and project it onto the
tangent plane: that extension is constant along rays, so the trace of its 3x3 ambient Jacobian
equals the surface divergence exactly, and the points stay on the sphere. `projected=False`
reproduces the authors' pipeline instead (raw ambient field, points allowed to leave the sphere),
which is what they published; it is kept to compare against their code.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .network import GeoAdaLNMLP
from .runtime import configure_cpu_math, row_workers
from .sampling import as_embeddings, holds_unguided, sample, supported_precision
from .schedule import gamma, gamma_derivative
from .sphere import LOG_SPHERE_AREA, normalize

try:
    from torchdiffeq import odeint
except ImportError:  # pragma: no cover - torchdiffeq is in the server extra
    odeint = None

FIXED_STEP_METHODS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")
KNN_NEIGHBOURS = 5
MIN_POINTS_PER_WORKER = 32  # per row worker: fewer leave its matmuls too thin to pay for a thread
# mean_log_density's strata of the draws by kNN density (upper quantiles) and each one's share of the exact
# draws: on the default model log p - c spreads 1.5 nats in the sparsest 5 % down to 0.5 in the densest
# 40 %, and a share in proportion to stratum size times spread gives the least variance (Neyman).
DENSITY_STRATA = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
STRATUM_SHARES = (0.11, 0.07, 0.12, 0.21, 0.18, 0.16, 0.15)


class TangentField:
    """The flow's velocity and its Jacobian-vector products, by forward-mode differentiation written out.

    The input is 3-D, so the exact divergence needs only 2 (on the sphere) or 3 directional derivatives:
    the tangents ride through the same weights as the point, about 3 or 4 times a forward pass, where
    autograd took a forward, three backward passes and a graph. The AdaLN modulations depend on the image
    and time only, so they come outside the points' pass (for a fixed-step solve, every stage's at once).
    `matmul_dtype` bfloat16 runs the MLPs' matmuls and GELUs in bf16 (weights converted once); the
    residual stream, the norms, the modulations and the ODE state stay fp32.
    """

    def __init__(self, flow: GeoAdaLNMLP, matmul_dtype: torch.dtype | None = None):
        self.flow = flow
        self.mm_dtype = matmul_dtype or next(flow.parameters()).dtype
        for block in flow.blocks:  # the derivative below is written for exactly these layers
            if block.mlp[1].approximate != "none" or block.ln.weight is not None:
                raise ValueError("TangentField expects exact GELU and LayerNorm without affine parameters")

        def weight(layer):
            return layer.weight.detach().to(self.mm_dtype), layer.bias.detach().to(self.mm_dtype)

        self.mlps = [(*weight(b.mlp[0]), *weight(b.mlp[3]), b.ln.eps) for b in flow.blocks]
        # every block's AdaLN map and the head's as one matmul, the 1 of (1 + scale) folded into the biases
        ada = [b.ada_map[1] for b in flow.blocks] + [flow.final_adaln[1]]
        self.ada_weight = torch.cat([m.weight.detach() for m in ada])
        self.ada_bias = torch.cat([m.bias.detach() for m in ada]).clone()
        dim = flow.config.dim
        for i in range(len(ada)):
            self.ada_bias[3 * i * dim : (3 * i + 1) * dim] += 1

    @torch.no_grad()
    def modulations(self, cond: torch.Tensor, g: torch.Tensor):
        """Per block (1 + scale, shift, gate) and the head's (1 + scale, shift), each (E, 1, dim), at time g.

        cond: flow.cond_mapper(emb) (E, 1, dim), the part of the conditioning that does not depend on time
        (guided: the K fields' stacked on the image axis, guided_conditions' (K E, 1, dim)).
        g of shape (T,) gives a list, one per time, from one matmul (the AdaLN weights are read once).
        """
        flow, dim = self.flow, self.flow.config.dim
        time = flow.time_embedder(g.reshape(-1).to(cond.dtype))[:, None, None, :]
        mods = F.linear(F.silu(cond + time), self.ada_weight, self.ada_bias)  # (T, E, 1, all)
        table = []
        for row in mods.unbind(0):
            parts = row.split(dim, dim=-1)
            table.append(([parts[3 * i : 3 * i + 3] for i in range(len(flow.blocks))], parts[-2:]))
        return table if g.dim() else table[0]

    @staticmethod
    def _layer_norm(h: torch.Tensor, dh: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """LayerNorm of h and its derivative along dh: rstd (dh - mean(dh) - n mean(n dh))."""
        n, _, rstd = torch.native_layer_norm(h, h.shape[-1:], None, None, eps)
        nt = n.unsqueeze(-2)
        dn = dh - dh.mean(-1, keepdim=True) - nt * (nt * dh).mean(-1, keepdim=True)
        return n, dn.mul_(rstd.unsqueeze(-2))

    @torch.no_grad()
    def __call__(self, mods, x: torch.Tensor, dx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v(x) (..., 3) and J_v(x) dx (..., k, 3) for tangents dx (..., k, 3)."""
        flow, mm, (blocks, (final_scale, final_shift)) = self.flow, self.mm_dtype, mods
        h = flow.initial_mapper(x)
        dh = F.linear(dx, flow.initial_mapper.weight)
        for (w1, b1, w2, b2, eps), (scale, shift, gate) in zip(self.mlps, blocks, strict=True):
            n, dn = self._layer_norm(h, dh, eps)
            # the point and its tangents as rows of one matmul per layer: fewer, fuller matmuls
            rows = torch.cat([torch.addcmul(shift, n, scale).unsqueeze(-2), dn.mul_(scale.unsqueeze(-2))], dim=-2)
            q = F.linear(rows.to(mm), w1)
            p, dp = q[..., 0, :] + b1, q[..., 1:, :]
            slope = torch.ops.aten.gelu_backward(torch.ones_like(p), p)  # GELU'(p)
            r = F.linear(torch.cat([F.gelu(p).unsqueeze(-2), dp * slope.unsqueeze(-2)], dim=-2), w2)
            # back to fp32 before meeting the residual: mixed-dtype elementwise ops take a slow path on CPUs
            r = r.to(h.dtype)
            h = h.addcmul(r[..., 0, :] + b2.to(h.dtype), gate)
            dh = dh.addcmul(r[..., 1:, :], gate.unsqueeze(-2))
        n, dn = self._layer_norm(h, dh, flow.final_ln.eps)
        out = flow.final_linear(torch.addcmul(final_shift, n, final_scale))
        dout = F.linear(dn.mul_(final_scale.unsqueeze(-2)), flow.final_linear.weight)
        return out, dout


def tangent_frame(y: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit vectors -> (..., 2, 3): two unit vectors orthogonal to y and to each other.

    Branchless (Duff et al. 2017, "Building an orthonormal basis, revisited"); continuous except where z
    changes sign, which the divergence, a trace, does not see.
    """
    x_, y_, z_ = y.unbind(-1)
    sign = torch.where(z_ >= 0, 1.0, -1.0).to(y.dtype)
    a = -1 / (sign + z_)
    b = x_ * y_ * a
    e1 = torch.stack([1 + sign * x_ * x_ * a, sign * b, -sign * x_], dim=-1)
    e2 = torch.stack([b, sign + y_ * y_ * a, -y_], dim=-1)
    return torch.stack([e1, e2], dim=-2)


class EvaluationFrame(NamedTuple):
    """Where the fields are evaluated and along which directions their Jacobians are taken."""

    point: torch.Tensor  # (..., 3): x / |x| projected, else x
    directions: torch.Tensor  # (..., k, 3)
    radius: torch.Tensor | None  # |x| (..., 1) projected, else None


def field_and_divergence(field: TangentField, weights: tuple[float, ...], mods, x: torch.Tensor, t: torch.Tensor,
                         projected: bool = True, signs: torch.Tensor | None = None,
                         held: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """u(x, t) and the trace of its 3x3 Jacobian per point, from 2 (projected) or 3 directional derivatives.

    With `signs` (..., 2) of +-1 (projected only), Hutchinson's estimate of the trace instead, from the one
    direction e = s1 e1 + s2 e2: e.(J e) is the trace plus s1 s2 (e1.(J e2) + e2.(J e1)), unbiased, one
    derivative instead of two.

    The guided field is sum_k weights[k] v_k, its K fields' conditionings stacked on the image axis of `mods`
    (from `guided_conditions`): all K in one pass on the K-fold batch, fewer and fuller matmuls than K passes.
    Projected, u(x) = P(y) v(y) with y = x / |x|: u is constant along rays, so J y = 0, and for a unit e
    orthogonal to y, e.(J e) = (e.(J_v e) - y.v) / |x|; the trace is the sum over two such e.
    `held` (a list, x (E, m, 3)) holds the unguided field over a step: where `mods` carries every field, the
    parts of all but the first are kept in it; where it carries the first alone (_first_field), the kept
    parts stand in for the others.
    """
    at = _evaluation_frame(x, projected, signs)
    if held is not None and mods[1][0].shape[0] == x.shape[0]:  # one field's rows per image: the guided alone
        parts = [*_field_parts(field, mods, at, 1), *held]
    else:
        parts = _field_parts(field, mods, at, len(weights))
        if held is not None:
            held[:] = parts[1:]
    return _guided(weights, parts, at, t)


def _evaluation_frame(x: torch.Tensor, projected: bool, signs: torch.Tensor | None) -> EvaluationFrame:
    """The projected field is evaluated at x / |x| along two tangent directions (or Hutchinson's one), the raw
    one at x along the three axes."""
    if not projected:
        if signs is not None:
            raise ValueError("Hutchinson's divergence is written for the projected field")
        return EvaluationFrame(x, torch.eye(3, dtype=x.dtype, device=x.device).expand(*x.shape[:-1], 3, 3), None)
    r = x.norm(dim=-1, keepdim=True)
    point = x / r
    frame = tangent_frame(point)
    if signs is not None:
        frame = (signs.unsqueeze(-1) * frame).sum(-2, keepdim=True)
    return EvaluationFrame(point, frame, r)


def _field_parts(field: TangentField, mods, at: EvaluationFrame, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each of the k fields stacked in `mods`: its raw velocity at the point and sum_e e.(J e) over the frame's
    directions, from one pass on the k-fold batch. The guided field is linear in these, so parts can be held."""
    point, frame, _ = at
    out, dout = field(mods, torch.cat([point] * k), torch.cat([frame] * k)) if k > 1 else field(mods, point, frame)
    return [(o, (frame * do).sum((-2, -1))) for o, do in zip(out.chunk(k), dout.chunk(k), strict=True)]


def _guided(weights: tuple[float, ...], parts, at: EvaluationFrame,
            t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u and its divergence from the fields' parts (_field_parts, some maybe held from an earlier stage)."""
    point, _, r = at
    v = sum(weight * o for weight, (o, _) in zip(weights, parts, strict=True))
    trace = sum(weight * tr for weight, (_, tr) in zip(weights, parts, strict=True))
    if r is not None:  # projected; the 2 is e1.e1 + e2.e2, or |s1 e1 + s2 e2|^2 for Hutchinson's direction
        radial = (point * v).sum(-1)
        v = v - radial.unsqueeze(-1) * point
        trace = (trace - 2 * radial) / r.squeeze(-1)
    speed = gamma_derivative(t)
    return speed * v, speed * trace


def guided_conditions(flow: GeoAdaLNMLP, emb: torch.Tensor, cfg: float) -> tuple[tuple[float, ...], torch.Tensor]:
    """The guided field's weights and its fields' time-free conditionings stacked on the image axis:
    (1,) and cond(emb) unguided; (1 + w, -w) and [cond(emb); cond(0)] at guidance w. emb: (E, 1, cond_dim)."""
    if cfg == 0:
        return (1.0,), flow.cond_mapper(emb)
    return (1 + cfg, -cfg), flow.cond_mapper(torch.cat([emb, torch.zeros_like(emb)]))


def log_density(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    points: torch.Tensor,
    *,
    cfg: float = 0.0,
    method: str = "dopri5",
    atol: float = 1e-6,
    rtol: float = 1e-6,
    steps: int | None = None,
    projected: bool = True,
    chunk: int = 4096,
    dtype: torch.dtype = torch.float32,
    on_step: Callable[[], None] | None = None,
    divergence: str = "exact",
    hold_unguided: bool = False,
) -> torch.Tensor:
    """Natural log-density per steradian at `points`, for each image -> (E, M) float32.

    points: (M, 3) unit vectors shared by every image, or (E, M, 3). Uniform on the sphere is
    -log(4 pi) = -2.531. Adaptive `method`s use atol/rtol; fixed-step ones take `steps` (default 32).
    on_step is called before every evaluation of the field; it may raise to stop the solve (the server's cancel).
    divergence "hutchinson" (fixed-step methods, projected) estimates the divergence from one random direction
    per point and evaluation instead of two exact ones (see field_and_divergence): fewer matmul rows, unbiased,
    with noise; its signs are seeded by the points, so a point gets the same value whatever its batch.
    Called under torch.autocast (bfloat16), the network's matmuls run in bf16 and the rest in fp32: on the
    default model about 1e-3 nats from fp32 and several times faster on CPUs with bf16 units.
    hold_unguided (euler, midpoint, rk4): at the |w| and steps where the sampler may (sampling.holds_unguided),
    evaluate the unguided field and its divergence at each step's first stage only and hold them over its other
    stages, as solvers.guided_velocity does for the draws: an approximation, off by default.
    """
    if odeint is None:
        raise RuntimeError("log_density needs torchdiffeq: pip install torchdiffeq")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    if divergence == "hutchinson" and (method not in _OWN_STEPPERS or not projected):
        raise ValueError(f"the Hutchinson divergence needs a fixed-step method ({', '.join(_OWN_STEPPERS)}) "
                         "and the projected field")
    if hold_unguided and method not in _OWN_STEPPERS:
        raise ValueError(f"holding the unguided field needs one of {', '.join(_OWN_STEPPERS)}, got {method!r}")
    configure_cpu_math()
    device = next(flow.parameters()).device
    emb = as_embeddings(emb, flow.config.cond_dim).to(device)
    n_img = emb.shape[0]
    points = torch.as_tensor(points)
    if points.dim() == 2:
        points = points.unsqueeze(0).expand(n_img, -1, -1)
    if points.dim() != 3 or points.shape[0] != n_img or points.shape[-1] != 3:
        raise ValueError(f"points must be (M, 3) or ({n_img}, M, 3) unit vectors, got {tuple(points.shape)}")
    flow_dtype = next(flow.parameters()).dtype
    if dtype != flow_dtype:
        raise ValueError(f"dtype {dtype} differs from the network's {flow_dtype}; cast the network first")
    autocast = torch.is_autocast_enabled(device.type)
    matmul_dtype = torch.get_autocast_dtype(device.type) if autocast else None
    with torch.autocast(device.type, enabled=False), torch.no_grad():
        return _solve(flow, emb.to(dtype).unsqueeze(1), normalize(points.to(device, dtype)), float(cfg), method,
                      atol, rtol, steps, projected, chunk, on_step, matmul_dtype, divergence == "hutchinson",
                      hold_unguided)


def _solve(flow, emb, points, cfg, method, atol, rtol, steps, projected, chunk, on_step, matmul_dtype,
           hutchinson, hold_unguided=False) -> torch.Tensor:
    dtype, device = points.dtype, points.device
    field = TangentField(flow, matmul_dtype)
    weights, cond = guided_conditions(flow, emb, cfg)

    def rhs(t, x, mods, signs=None, held=None):
        if on_step is not None:
            on_step()
        return field_and_divergence(field, weights, mods, x, t, projected, signs, held)

    def tuple_rhs(t, state):
        return rhs(t, state[0], field.modulations(cond, gamma(t)))

    def packed_rhs(t, state, mods, signs=None, held=None):
        u, div = rhs(t, state[..., :3], mods, signs, held)
        return torch.cat([u, div.unsqueeze(-1)], dim=-1)

    if method in _OWN_STEPPERS:
        plan = _fixed_grid(method, steps or 32, dtype, device)
        times = torch.stack([t for _, stage_times in plan for t in stage_times])
        stage_mods = field.modulations(cond, gamma(times))  # every stage's, at once
        stages = len(plan[0][1])
        hold = stages if stages > 1 and hold_unguided and holds_unguided(cfg, len(plan)) else 0
        if hold:  # the later stages' modulations of the guided field alone (the first of the stacked two)
            stage_mods = [mods if i % hold == 0 else _first_field(mods, emb.shape[0])
                          for i, mods in enumerate(stage_mods)]
    else:
        options = {"step_size": 1.0 / (steps or 32)} if method in FIXED_STEP_METHODS else {}
        span = torch.tensor([0.0, 1.0], dtype=dtype, device=device)

    def solve(x: torch.Tensor, signs: torch.Tensor | None = None) -> torch.Tensor:
        if method in _OWN_STEPPERS:  # one state tensor: the point and its log-density change
            mods = iter(stage_mods)
            stage_signs = iter(signs.unbind(-2)) if signs is not None else itertools.repeat(None)
            state = torch.cat([x, torch.zeros_like(x[..., :1])], dim=-1)
            held = [] if hold else None  # this solve's: each row worker's points hold their own unguided field
            logdet = _integrate(method, plan, lambda t, y: packed_rhs(t, y, next(mods), next(stage_signs), held),
                                state)[..., 3]
        else:  # a tuple, for the adaptive solvers' error norm (the largest of the two parts')
            state = (x, torch.zeros(x.shape[:-1], dtype=dtype, device=device))
            logdet = odeint(tuple_rhs, state, span, method=method, atol=atol, rtol=rtol, options=options)[1][-1]
        return logdet - LOG_SPHERE_AREA

    out = []
    for start in range(0, points.shape[1], chunk):
        x = points[:, start : start + chunk]
        signs = _hutchinson_signs(x, len(times)) if hutchinson else None  # (E, m, evaluations, 2)
        # Every point takes the same fixed steps, so on a CPU the points can be split among row workers (one
        # intra-op thread each, no barrier per operator: see runtime.RowWorkers) for the same values.
        count = min(torch.get_num_threads(), x.shape[1] // MIN_POINTS_PER_WORKER)
        if method in _OWN_STEPPERS and device.type == "cpu" and count >= 2:
            parts = zip(x.tensor_split(count, dim=1),
                        signs.tensor_split(count, dim=1) if hutchinson else [None] * count, strict=True)
            out.extend(row_workers(count).map(solve, list(parts)))
        else:
            out.append(solve(x, signs))
    return torch.cat(out, dim=1).float()


_OWN_STEPPERS = ("euler", "midpoint", "rk4")
DIVERGENCES = ("exact", "hutchinson")


def _first_field(mods, images: int):
    """TangentField.modulations' table cut to its first field's `images` rows (the guided, not the unguided)."""
    blocks, head = mods
    return [[m[:images] for m in block] for block in blocks], [m[:images] for m in head]


def _hutchinson_signs(points: torch.Tensor, evaluations: int) -> torch.Tensor:
    """(E, m, 3) -> (E, m, evaluations, 2) of +-1, each point's own draw seeded by its bits: a point gets the
    same signs, so the same log-density, in any batch or split."""
    rows = points.detach().float().cpu().reshape(-1, 3).numpy()
    signs = torch.empty(len(rows), evaluations, 2, dtype=points.dtype)
    for i, row in enumerate(rows):
        signs[i] = torch.randint(0, 2, (evaluations, 2), generator=_generator_of(row))
    return (signs * 2 - 1).reshape(*points.shape[:-1], evaluations, 2).to(points.device)


def _fixed_grid(method: str, steps: int, dtype, device) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """(dt, stage times) per step, as torchdiffeq's fixed-grid solvers compute them."""
    span = torch.tensor([0.0, 1.0], dtype=dtype, device=device)
    step_size = 1.0 / steps
    count = int(torch.ceil((span[-1] - span[0]) / step_size + 1).item())
    grid = torch.arange(0, count, dtype=dtype, device=device) * step_size + span[0]
    grid[-1] = span[-1]
    plan = []
    for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
        dt = t1 - t0
        if method == "euler":
            plan.append((dt, [t0]))
        elif method == "midpoint":
            plan.append((dt, [t0, t0 + 0.5 * dt]))
        else:
            plan.append((dt, [t0, t0 + dt * (1 / 3), t0 + dt * (2 / 3), t1]))
    return plan


def _integrate(method: str, plan, f, y: torch.Tensor) -> torch.Tensor:
    """torchdiffeq's euler, midpoint and rk4 (its 3/8 rule) steps, with the same arithmetic; the stage
    times come from the plan so that the field's modulations can be computed for all of them at once."""
    for dt, (t0, *stages) in plan:
        k1 = f(t0, y)
        if method == "euler":
            dy = dt * k1
        elif method == "midpoint":
            half_dt = 0.5 * dt
            dy = dt * f(stages[0], y + k1 * half_dt)
        else:
            k2 = f(stages[0], y + dt * k1 * (1 / 3))
            k3 = f(stages[1], y + dt * (k2 - k1 * (1 / 3)))
            k4 = f(stages[2], y + dt * (k1 - k2 + k3))
            dy = (k1 + 3 * (k2 + k3) + k4) * dt * 0.125
        y = y + dy
    return y


def truth_and_draws_log_density(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    truth_xyz: torch.Tensor,
    n: int,
    *,
    cfg: float = 0.0,
    steps: int = 32,
    solver: str = "euler",
    precision: str = "fp32",
    generator: torch.Generator | None = None,
    method: str = "rk4",
    likelihood_steps: int | None = 16,
    truth_tolerance: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E,) log-density of each photo's true location and (E, n) of n of the model's own draws, all under
    guidance cfg: what coverage and calibration compare (evaluation.metrics.coverage). The draws take
    `precision` where the device runs it natively, as the server's do (sampling.supported_precision).

    Without `truth_tolerance`, truths and draws in one solve by `method`. With it, the truths by dopri5 at that
    atol = rtol: a fixed-step solve overstates the density where the model puts little, as at a truth it
    misses (rk4 in 16 steps by about 1 nat at log p -15 to -30, 10 below: benchmarks/check_log_density_error.py),
    while its error at the draws, where the density is high, stays near 0.001 nats."""
    precision = supported_precision(precision, next(flow.parameters()).device)
    drawn = sample(flow, emb, n, steps=steps, solver=solver, cfg=cfg, generator=generator, precision=precision)
    truth = torch.as_tensor(truth_xyz, dtype=torch.float32)
    if truth_tolerance:
        return (truth_log_density(flow, emb, truth, cfg=cfg, truth_tolerance=truth_tolerance),
                log_density(flow, emb, drawn, cfg=cfg, method=method, steps=likelihood_steps))
    lp = log_density(flow, emb, torch.cat([truth[:, None], drawn], dim=1), cfg=cfg, method=method,
                     steps=likelihood_steps)
    return lp[:, 0], lp[:, 1:]


def truth_log_density(flow: GeoAdaLNMLP, emb: torch.Tensor, truth_xyz: torch.Tensor, *, cfg: float = 0.0,
                      truth_tolerance: float | None, method: str = "rk4", steps: int | None = 16) -> torch.Tensor:
    """(E,) log-density of each photo's one true location (E, 3): by dopri5 at atol = rtol = `truth_tolerance`,
    or without it by `method` in `steps` (see truth_and_draws_log_density for why)."""
    solve = ({"method": "dopri5", "atol": truth_tolerance, "rtol": truth_tolerance} if truth_tolerance
             else {"method": method, "steps": steps})
    return log_density(flow, emb, torch.as_tensor(truth_xyz, dtype=torch.float32)[:, None], cfg=cfg, **solve)[:, 0]


def localizability(draws_log_density):
    """The reference's localizability per image, from the log-densities (E, n) (torch or numpy) of n of the
    model's own draws per image -> (E,).

    Defined in the authors' pipeline (`compute_localizability`) as the mean log-density (nats per
    steradian) of the model's own samples divided by 4 pi ln 2: a Monte-Carlo estimate of the
    negative entropy, on their scale. Higher = more localizable; uniform gives
    -log(4 pi) / (4 pi ln 2) = -0.2906. The reference draws the samples with guidance and takes their
    density without it.
    """
    return draws_log_density.mean(-1) / (4 * math.pi * math.log(2))


def knn_log_density(points: torch.Tensor, k: int = KNN_NEIGHBOURS,
                    on_search: Callable[[], None] | None = None) -> torch.Tensor:
    """(E, n, 3) unit vectors -> (E, n) float32: each point's k-nearest-neighbour log-density among the others.

    psi(k) - log(n - 1) - log(area of the spherical cap out to the k-th neighbour), per steradian (the
    Kozachenko-Leonenko estimate). The k-th neighbour's chord is the straight-line distance in 3-D, found with a
    k-d tree (about n log n: a whole distance matrix would be n^2, 16 GiB at the 65,536 draws a request may ask
    for) in float64 from coordinate differences, so close neighbours keep their precision. on_search is called
    before each image's search and may raise to stop (the server's cancel).
    """
    from scipy.spatial import cKDTree

    x = normalize(torch.as_tensor(points).float())
    n = x.shape[-2]
    if not 0 < k < n:
        raise ValueError(f"k must be between 1 and n - 1 = {n - 1}, got {k}")
    kth = []
    for image in x.detach().reshape(-1, n, 3).cpu().double().numpy():
        if on_search is not None:
            on_search()
        distances, _ = cKDTree(image).query(image, k=k + 1)
        kth.append(distances[:, k])  # [:, 0] is the point itself
    kth = torch.from_numpy(np.stack(kth)).reshape(x.shape[:-1]).to(x.device)
    cap_area = (math.pi * kth.square()).clamp_min(1e-12)  # 2 pi (1 - cos theta) = pi chord^2
    digamma_k = sum(1 / j for j in range(1, k)) - 0.5772156649015329  # psi(k) for a whole k
    return (digamma_k - math.log(n - 1) - cap_area.log()).float()


def mean_log_density(
    flow: GeoAdaLNMLP,
    emb: torch.Tensor,
    draws: torch.Tensor,
    *,
    exact: int = 96,
    k: int = KNN_NEIGHBOURS,
    method: str = "rk4",
    steps: int = 8,
    precision: str = "fp32",
    cfg: float = 0.0,
    on_step: Callable[[], None] | None = None,
    divergence: str = "exact",
    hold_unguided: bool = False,
) -> torch.Tensor:
    """Each image's mean log-density, under guidance cfg, over its n i.i.d. draws (E, n, 3) -> (E,) float32.

    Unbiased for the mean over all n draws from the exact log-density of about `exact` of them: with c the
    k-nearest-neighbour log-density of every draw as a control variate, mean_n(c) + sum_h W_h mean(log p - c)
    over the exact draws of each stratum h of draws ranked by c (W_h its share of the n). The spread that
    remains is that of log p - c within strata: on the default model about 0.7 nats where log p's is about
    2, the accuracy of 8 times as many exact draws. Each stratum's exact draws are drawn at random, seeded
    by the draws themselves (see _draw_order).
    precision "bf16" runs the network's matmuls in bf16 and hold_unguided holds the unguided field over each
    step (see log_density). With n <= exact, the plain mean.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    device = next(flow.parameters()).device
    draws = torch.as_tensor(draws).to(device)
    n = draws.shape[-2]

    def exact_log_density(points):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return log_density(flow, emb, points, cfg=cfg, method=method, steps=steps, on_step=on_step,
                               divergence=divergence, hold_unguided=hold_unguided)

    if n <= exact or n <= k:
        return exact_log_density(draws).mean(-1)
    c = knn_log_density(draws, k, on_step)
    rank = torch.empty_like(c, dtype=torch.long).scatter_(
        -1, c.argsort(dim=-1, stable=True), torch.arange(n, device=device).expand(c.shape))
    upper = [round(n * q) for q in DENSITY_STRATA]
    sizes = torch.tensor(upper, device=device).diff(prepend=torch.zeros(1, dtype=torch.long, device=device))
    cum_share = torch.tensor(STRATUM_SHARES).cumsum(0)
    wanted = (exact * cum_share).round().long().diff(prepend=torch.zeros(1, dtype=torch.long)).to(device)
    take = torch.minimum(wanted.clamp_min(1), sizes)  # exact draws per stratum, the same for every image
    stratum = torch.bucketize(rank, torch.tensor(upper, device=device), right=True)  # (E, n) in 0..H-1
    order = _draw_order(draws)  # (E, n): the draws in a random order of their own
    member = F.one_hot(stratum.gather(-1, order), len(upper)).bool()  # (E, n, H), in that order
    chosen = (member & (member.cumsum(-2) <= take)).any(-1)  # the first `take` of each stratum
    index = order.gather(-1, (~chosen).to(torch.uint8).argsort(dim=-1, stable=True)[..., : int(take.sum())])
    lp = exact_log_density(draws.gather(-2, index.unsqueeze(-1).expand(*index.shape, 3)))
    residual = F.one_hot(stratum.gather(-1, index), len(upper)) * (lp - c.gather(-1, index)).unsqueeze(-1)
    return c.mean(-1) + (residual.sum(-2) / take * (sizes / n)).sum(-1)


def _draw_order(draws: torch.Tensor) -> torch.Tensor:
    """(E, n, 3) -> (E, n): a permutation of each image's draws, seeded by the draws' own bits.

    Not draw order: the server starts every photo from the same points, so the same start points' draws in
    every photo would share their errors, a common offset across photos (docs/samplers.md, localizability).
    Seeded by the values, a photo's result stays the same run to run.
    """
    orders = [torch.randperm(row.shape[0], generator=_generator_of(row))
              for row in draws.detach().float().cpu().numpy()]
    return torch.stack(orders).to(draws.device)


def _generator_of(values) -> torch.Generator:
    """A generator seeded by an array's bits: the same values, the same draws, run to run and batch to batch."""
    seed = int.from_bytes(hashlib.blake2b(values.tobytes(), digest_size=8).digest(), "little") >> 1
    return torch.Generator().manual_seed(seed)
