"""Riemannian flow matching on the sphere: PLONK's training objective and loop.

Loss (the reference's): x0 ~ uniform, x1 = data, t ~ U(0, 1), g = gamma(t), x_g on the
geodesic from x0 to x1, target u = d x_g / d g = log_{x_g}(x1) / (1 - g), and
loss = mean ||net(x_g, g, c) - u||^2 / 3. With probability `cfg_dropout` the RAW embedding is
replaced by zeros (classifier-free guidance). Embeddings go through an affine input map for
training (standardisation, optionally a whitened low-rank projection) that is folded into
`cond_mapper` afterwards, so the saved network takes raw embeddings (published format) and a raw
zero embedding still means "unconditional".
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ..geodesy import EARTH_RADIUS_KM
from .network import FlowConfig, GeoAdaLNMLP
from .schedule import gamma
from .sphere import exp_map, geodesic_distance, normalize, project_tangent, uniform_sphere

OPTIMIZERS = ("adamw", "lamb")


@dataclass
class TrainConfig:
    steps: int = 10000
    batch_size: int = 512
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    warmup: int = 500
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1
    embedding_noise: float = 0.0  # Gaussian noise (in standardised units) on kept embeddings: fights memorising
    target_jitter_km: float = 0.0  # Gaussian tangent step on the targets: a photo's label is a place, not a point
    cond_rank: int = 0  # >0: condition on the top principal components only (whitened); folded back on save
    grad_clip: float = 1.0
    precision: str = "bf16"  # autocast dtype for the network's matmuls; master weights stay fp32
    land_weight: float = 1.0  # how much more often a photo taken on land is drawn than one at sea
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- pure pieces


def geodesic_target(x0: torch.Tensor, x1: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_g = exp_{x0}(g log_{x0} x1) and u = d x_g / d g (= log_{x_g}(x1) / (1 - g)); g is (B, 1).

    Written in closed form x_g = cos(g theta) x0 + sin(g theta) e, u = theta (-sin(g theta) x0 + cos(g theta) e),
    which stays finite as g -> 1 where the quotient form divides 0 by 0.
    """
    theta = geodesic_distance(x0, x1).unsqueeze(-1)
    e = project_tangent(x0, x1)
    e_norm = e.norm(dim=-1, keepdim=True)
    e = torch.where(e_norm > 1e-7, e / e_norm.clamp_min(1e-7), torch.zeros_like(e))
    xg = torch.cos(g * theta) * x0 + torch.sin(g * theta) * e
    u = theta * (-torch.sin(g * theta) * x0 + torch.cos(g * theta) * e)
    return normalize(xg), u


def jitter_targets(x1: torch.Tensor, sigma_km: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Move each target by a random tangent step, std sigma_km per axis.

    With a few thousand photos, each embedding has one exact label and the flow learns a spike there;
    test photos taken a few tens of km away then get almost no density. Jitter at the scale of the
    photo's footprint keeps the density at the scale the data can support.
    """
    if sigma_km <= 0:
        return x1
    step = torch.randn(x1.shape, generator=generator, device=x1.device) * (sigma_km / EARTH_RADIUS_KM)
    return exp_map(x1, project_tangent(x1, step))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * param (the correct direction; the reference's is reversed).

    One multi-tensor kernel for all parameters rather than one call each: the loop cost 5 % of a step.
    """
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in net.parameters()], 1.0 - decay)


def embedding_stats(emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over the training set (std floored so constant features stay finite)."""
    mean = emb.mean(dim=0)
    std = emb.std(dim=0)
    return mean, std.clamp_min(1e-3 * float(std.mean()) + 1e-8)


def standardisation_map(mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, m0) of (emb - mean) / std."""
    return torch.diag(1.0 / std), -mean / std


def input_map(emb: torch.Tensor, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine map raw embedding -> network input, as (M, m0) with input = emb @ M.T + m0.

    rank 0: per-dimension standardisation. rank k: the top-k principal components of the standardised
    embeddings, each scaled to unit variance. A few thousand photos cannot pin down a 1280-d
    conditioning; the bottleneck (plus noise in the whitened space) is what stops the flow memorising.
    """
    mean, std = embedding_stats(emb)
    if rank <= 0 or rank >= emb.shape[1]:
        return standardisation_map(mean, std)
    _, sing, vt = torch.linalg.svd((emb - mean) / std, full_matrices=False)  # already centred
    comp_std = sing[:rank] / math.sqrt(max(1, emb.shape[0] - 1))
    proj = vt[:rank] / comp_std.clamp_min(1e-6)[:, None]  # (k, D) on standardised embeddings
    m = proj / std[None, :]
    return m, -(m @ mean)


@torch.no_grad()
def fold_input_map(net: GeoAdaLNMLP, m: torch.Tensor, m0: torch.Tensor, config: FlowConfig) -> GeoAdaLNMLP:
    """A network of `config` (raw cond_dim) with cond_mapper(emb @ M.T + m0) folded in exactly."""
    out = GeoAdaLNMLP(config).to(next(net.parameters()).dtype)
    own = {k: v for k, v in net.state_dict().items() if not k.startswith("cond_mapper.")}
    missing, _ = out.load_state_dict(own, strict=False)
    assert set(missing) == {"cond_mapper.weight", "cond_mapper.bias"}, missing
    w = net.cond_mapper.weight
    out.cond_mapper.weight.copy_(w @ m.to(w))
    out.cond_mapper.bias.copy_(net.cond_mapper.bias + w @ m0.to(w))
    return out.eval()


def flow_matching_loss(
    net: GeoAdaLNMLP, x1: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The reference's loss for one batch: x1 (B, 3) unit vectors, cond (B, D) network inputs."""
    b = x1.shape[0]
    x0 = uniform_sphere(b, generator=generator, device=x1.device)
    t = torch.rand(b, 1, generator=generator, device=x1.device)
    g = gamma(t)
    xg, u = geodesic_target(x0, x1, g)
    v = net(xg, g[:, 0], cond).float()
    return ((v - u) ** 2).sum(-1).mean() / 3


# ---------------------------------------------------------------- the loop


def make_optimizer(net: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        # fused: one kernel over all parameters; the per-tensor loop took 18 % of a CPU step.
        return torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99),
                                 fused=True)
    if cfg.optimizer == "lamb":
        from pytorch_optimizer import Lamb

        return Lamb(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")


StepCallback = Callable[[int, int, float], None]
StateCallback = Callable[[dict], None]


def train_flow(
    embeddings: torch.Tensor,
    targets: torch.Tensor,
    config: FlowConfig,
    train: TrainConfig | None = None,
    *,
    on_land: torch.Tensor | None = None,
    on_step: StepCallback | None = None,
    resume: dict | None = None,
    on_state: StateCallback | None = None,
    state_every: int = 1000,
    threads: int | None = None,
    **overrides,
) -> GeoAdaLNMLP:
    """Train a flow head; returns the EMA network (eval mode, input map folded in, fp32, CPU).

    embeddings (N, D) raw encoder outputs, targets (N, 3) unit vectors; on_land (N,) bool, needed when
    land_weight is not 1, says which targets are on land. `overrides` set TrainConfig
    fields (steps=, batch_size=, lr=, ...). on_step(step, total, loss) after each step; on_state(state)
    every `state_every` steps and at the end with a dict that `resume=` accepts to continue.
    """
    cfg = _replace(train, overrides)
    if threads:
        torch.set_num_threads(threads)
    emb = torch.as_tensor(embeddings, dtype=torch.float32)
    x1_all = normalize(torch.as_tensor(targets, dtype=torch.float32))
    if emb.shape[0] != x1_all.shape[0] or emb.shape[1] != config.cond_dim:
        raise ValueError(f"embeddings {tuple(emb.shape)} and targets {tuple(x1_all.shape)} do not match "
                         f"cond_dim {config.cond_dim}")
    draw_weights = None
    if cfg.land_weight != 1.0:
        if on_land is None or len(on_land) != len(emb):
            raise ValueError("land_weight needs on_land, one flag per photo")
        draw_weights = torch.where(torch.as_tensor(on_land, dtype=torch.bool), cfg.land_weight, 1.0).double()
    torch.manual_seed(cfg.seed)
    m, m0 = input_map(emb, cfg.cond_rank)
    net_config = FlowConfig(**{**config.to_dict(), "cond_dim": m.shape[0]})
    net = GeoAdaLNMLP(net_config)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = make_optimizer(net, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if resume is not None:
        net.load_state_dict(resume["net"])
        ema.load_state_dict(resume["ema"])
        opt.load_state_dict(resume["optimizer"])
        gen.set_state(resume["generator"])
        step = int(resume["step"])
        if "input_map" in resume:
            m, m0 = resume["input_map"], resume["input_offset"]
        else:  # a state holding only the mean and std: their plain standardisation
            m, m0 = standardisation_map(resume["mean"], resume["std"])
    z = emb @ m.T + m0
    zero_z = m0.unsqueeze(0)  # a raw zero embedding, mapped: still "unconditional" after the fold
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def state() -> dict:
        return {"net": net.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "generator": gen.get_state(), "input_map": m, "input_offset": m0, "step": step,
                "train_config": cfg.to_dict(), "flow_config": config.to_dict()}

    net.train()
    while step < cfg.steps:
        if draw_weights is None:
            idx = torch.randint(0, emb.shape[0], (cfg.batch_size,), generator=gen)
        else:
            idx = torch.multinomial(draw_weights, cfg.batch_size, replacement=True, generator=gen)
        cond = z[idx]
        if cfg.embedding_noise:
            cond = cond + cfg.embedding_noise * torch.randn(cond.shape, generator=gen)
        drop = torch.rand(cfg.batch_size, 1, generator=gen) < cfg.cfg_dropout
        cond = torch.where(drop, zero_z, cond)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg.warmup, cfg.steps)
        with autocast:
            loss = flow_matching_loss(net, jitter_targets(x1_all[idx], cfg.target_jitter_km, gen), cond, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, net, min(cfg.ema_decay, (1 + step) / (10 + step)))
        step += 1
        if on_step is not None:
            on_step(step, cfg.steps, float(loss.detach()))
        if on_state is not None and (step % state_every == 0 or step == cfg.steps):
            on_state(state())
    return fold_input_map(copy.deepcopy(ema).float(), m, m0, config)


def _replace(train: TrainConfig | None, overrides: dict) -> TrainConfig:
    data = (train or TrainConfig()).to_dict()
    unknown = set(overrides) - set(data)
    if unknown:
        raise TypeError(f"unknown training options: {', '.join(sorted(unknown))}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**data)


class Timer:
    """Wall-clock seconds since creation (for the provenance record)."""

    def __init__(self) -> None:
        self.start = time.time()

    def elapsed(self) -> float:
        return time.time() - self.start
