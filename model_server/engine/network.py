"""PLONK's flow network (GeoAdaLNMLP) with the reference's module names, so that the
authors' `model.safetensors` files load with strict key matching.

The conditioning c depends only on (image, gamma), never on the sample, so forward()
broadcasts: emb of shape (E, 1, cond_dim) with x of shape (E, N, 3) computes every
AdaLN modulation once per image rather than once per sample as the reference does.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import row_workers


@dataclass(frozen=True)
class FlowConfig:
    """The published `config.json` keys."""

    cond_dim: int = 1024
    depth: int = 12
    dim: int = 512
    expansion: int = 4
    input_dim: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FlowConfig:
        known = {k: int(data[k]) for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class PositionalEmbedding(nn.Module):
    """EDM sinusoidal embedding; `freqs` is a persistent buffer in the published checkpoints."""

    def __init__(self, num_channels: int, max_positions: int = 10000):
        super().__init__()
        freqs = torch.arange(0, num_channels // 2, dtype=torch.float32)
        freqs = (1 / max_positions) ** (2 * freqs / num_channels)
        self.register_buffer("freqs", freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.outer(x, self.freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class TimeEmbedder(nn.Module):
    def __init__(self, dim: int, time_scaling: float = 1000.0):
        super().__init__()
        channels = dim // 4
        self.encode_time = PositionalEmbedding(channels)
        self.time_scaling = time_scaling
        self.map_time = nn.Sequential(nn.Linear(channels, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        """g of any shape -> (*g.shape, dim)."""
        time = self.encode_time(g.reshape(-1) * self.time_scaling)
        time = (time - time.mean(dim=-1, keepdim=True)) / time.std(dim=-1, keepdim=True)
        return self.map_time(time).reshape(*g.shape, -1)


class AdaLNMLPBlock(nn.Module):
    def __init__(self, dim: int, expansion: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim * expansion), nn.GELU(), nn.Dropout(0.0), nn.Linear(dim * expansion, dim)
        )
        self.ada_map = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 3))
        self.ln = nn.LayerNorm(dim, elementwise_affine=False)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift, gate = self.ada_map(c).chunk(3, dim=-1)
        return x + self.mlp((1 + scale) * self.ln(x) + shift) * gate


class GeoAdaLNMLP(nn.Module):
    """v(x, gamma, emb): the velocity field of the flow, in ambient R^3."""

    def __init__(self, config: FlowConfig = FlowConfig()):
        super().__init__()
        self.config = config
        dim = config.dim
        self.time_embedder = TimeEmbedder(dim)
        self.cond_mapper = nn.Linear(config.cond_dim, dim)
        self.initial_mapper = nn.Linear(config.input_dim, dim)
        self.blocks = nn.ModuleList([AdaLNMLPBlock(dim, config.expansion) for _ in range(config.depth)])
        self.final_adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 2))
        self.final_ln = nn.LayerNorm(dim, elementwise_affine=False)
        self.final_linear = nn.Linear(dim, config.input_dim)

    def condition(self, g: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """c = cond_mapper(emb) + time embedding; g has emb's batch shape (or broadcasts to it)."""
        g = torch.as_tensor(g, dtype=emb.dtype, device=emb.device).expand(emb.shape[:-1])
        return self.cond_mapper(emb) + self.time_embedder(g)

    def forward(self, x: torch.Tensor, g: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (..., 3); g and emb broadcast against x's batch shape (emb (..., cond_dim))."""
        c = self.condition(g, emb)
        h = self.initial_mapper(x)
        for block in self.blocks:
            h = block(h, c)
        scale, shift = self.final_adaln(c).chunk(2, dim=-1)
        return self.final_linear((1 + scale) * self.final_ln(h) + shift)


class FastVelocity:
    """Inference-only evaluation of a GeoAdaLNMLP with its MLPs' matmuls in `dtype` (bf16, or fp32), callable like
    its forward(); the sampler's network at both precisions.

    Autocast would convert every fp32 weight to bf16 on every call and round the activations in extra
    passes. Here the MLP weights are converted once; the modulations of all blocks come from one fp32
    matmul per call (they depend on the image and gamma only); the residual stream stays fp32; GELU runs
    as the first matmul's epilogue. On a CPU, chunks of the sample rows go to row workers (see
    runtime.RowWorkers); rows never interact, and a row's result does not depend on its chunk. In fp32 it
    differs from forward() by float rounding only, and is no slower on CPUs, faster on a busy one (docs/benchmarks.md,
    "Precision by CPU").
    """

    MIN_ROWS = 128  # per worker: thinner matmuls are not worth a thread

    def __init__(self, net: GeoAdaLNMLP, dtype: torch.dtype = torch.bfloat16):
        # the layers, not the module: the cache below must not keep the module alive
        self.cond_mapper, self.time_embedder = net.cond_mapper, net.time_embedder
        self.initial_mapper, self.final_linear = net.initial_mapper, net.final_linear
        self.dim, self.dtype = net.config.dim, dtype
        self.mlps = [
            tuple(t.detach().to(dtype).contiguous()
                  for t in (b.mlp[0].weight, b.mlp[0].bias, b.mlp[3].weight, b.mlp[3].bias))
            for b in net.blocks
        ]
        ada = [b.ada_map[1] for b in net.blocks] + [net.final_adaln[1]]
        self.ada_weight = torch.cat([m.weight.detach() for m in ada]).contiguous()
        bias = torch.cat([m.bias.detach() for m in ada]).clone()
        for i in range(len(ada)):  # the 1 of (1 + scale) folded into each scale's bias
            bias[3 * i * self.dim : (3 * i + 1) * self.dim] += 1
        self.ada_bias = bias
        self.on_cpu = self.ada_weight.device.type == "cpu"
        self.fused = self.on_cpu and _onednn_fused(dtype)

    def modulations(self, g: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Every block's (1 + scale, shift, gate) and the head's (1 + scale, shift), concatenated: (..., 1, M)."""
        g = torch.as_tensor(g, dtype=emb.dtype, device=emb.device).expand(emb.shape[:-1])
        c = self.cond_mapper(emb) + self.time_embedder(g)  # as GeoAdaLNMLP.condition
        return F.linear(F.silu(c), self.ada_weight, self.ada_bias)

    def rows(self, x: torch.Tensor, mods: torch.Tensor) -> torch.Tensor:
        """The velocity at points x (..., n, 3) under modulations from modulations()."""
        dim = self.dim
        h = self.initial_mapper(x)
        shape = h.shape
        one_image = mods.shape[:-1].numel() == 1  # then LayerNorm applies the modulation itself, in one pass
        z = None if one_image else torch.empty(shape, dtype=self.dtype, device=h.device)
        for i, mlp in enumerate(self.mlps):
            scale, shift, gate = mods[..., 3 * i * dim : 3 * (i + 1) * dim].split(dim, dim=-1)
            if one_image:
                z = F.layer_norm(h, (dim,), scale.reshape(dim), shift.reshape(dim)).to(self.dtype)
            else:
                torch.addcmul(shift, F.layer_norm(h, (dim,)), scale, out=z)
            h.addcmul_(self._mlp(z.reshape(-1, dim), *mlp).reshape(shape), gate)
        scale, shift = mods[..., -2 * dim :].split(dim, dim=-1)
        return self.final_linear(torch.addcmul(shift, F.layer_norm(h, (dim,)), scale))

    def _mlp(self, z, w1, b1, w2, b2):
        if self.fused:  # oneDNN directly: GELU as the first matmul's epilogue, biases inside the matmuls
            up = torch.ops.mkldnn._linear_pointwise(z, w1, b1, "gelu", [], "none")
            return torch.ops.mkldnn._linear_pointwise(up, w2, b2, "none", [], "")
        return F.linear(F.gelu(F.linear(z, w1, b1)), w2, b2)

    def __call__(self, x: torch.Tensor, g: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        mods = self.modulations(g, emb)
        count = min(torch.get_num_threads(), x.shape[-2] // self.MIN_ROWS) if self.on_cpu and x.dim() > 1 else 1
        if count < 2:
            return self.rows(x, mods)
        chunks = [(part, mods) for part in x.tensor_split(count, dim=-2)]
        return torch.cat(row_workers(count).map(self.rows, chunks), dim=-2)


@functools.cache
def native_cpu_bf16() -> bool:
    """Whether this CPU has bf16 dot products (AVX-512 BF16 or AMX) and oneDNN uses them. Elsewhere oneDNN emulates
    bf16 or refuses it, and torch's fallback runs the sampler several times slower than fp32 (docs/benchmarks.md)."""
    try:
        units = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # a torch without these probes: trust oneDNN alone
        units = True
    return bool(units) and _onednn_fused(torch.bfloat16)


@functools.cache
def _onednn_fused(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs `dtype` matmuls with a GELU epilogue here (CPUs without bf16 support refuse bf16)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        w = torch.ones(4, 4, dtype=dtype)
        torch.ops.mkldnn._linear_pointwise(w, w, w[0], "gelu", [], "none")
    except (RuntimeError, AttributeError):
        return False
    return True


_FAST_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _version(p: torch.Tensor) -> int:
    try:
        return p._version
    except RuntimeError:  # an inference tensor: it has no version counter
        return -1


def fast_velocity(net: GeoAdaLNMLP, dtype: torch.dtype = torch.bfloat16) -> FastVelocity:
    """The net's FastVelocity in `dtype`, converted once and reused until a parameter changes (in place or
    replaced)."""
    key = tuple((p.data_ptr(), _version(p), p.device, p.dtype) for p in net.parameters())
    per_dtype = _FAST_CACHE.setdefault(net, {})
    cached = per_dtype.get(dtype)
    if cached is None or cached[0] != key:
        cached = per_dtype[dtype] = (key, FastVelocity(net, dtype))
    return cached[1]
