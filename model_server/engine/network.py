"""PLONK's flow network (GeoAdaLNMLP) with the reference's module names, so that the
authors' `model.safetensors` files load with strict key matching.

The conditioning c depends only on (image, gamma), never on the sample, so forward()
broadcasts: emb of shape (E, 1, cond_dim) with x of shape (E, N, 3) computes every
AdaLN modulation once per image rather than once per sample as the reference does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


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
