"""Timestep embeddings shared by every network in tinydiff."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal features of the timestep (Vaswani et al. 2017, sec. 3.5; Ho et al. 2020, appendix B).

    emb[b, i]          = cos(t_b * w_i),  emb[b, dim/2 + i] = sin(t_b * w_i),
    w_i = max_period^(-i / (dim/2)),  i = 0 .. dim/2 - 1.

    Shapes: t [B] (integer indices or real-valued noise levels) -> [B, dim], float32
    on t's device (cast it to your model's dtype if needed). ``dim`` must be even.
    """
    if dim % 2 != 0:
        raise ValueError(f"embedding dim must be even, got {dim}")
    if t.ndim != 1:
        raise ValueError(f"t must have shape [B], got {list(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class TimeEmbedding(nn.Module):
    """Sinusoidal features followed by a two-layer MLP (Ho et al. 2020's time embedding): t [B] -> [B, out_dim]."""

    def __init__(self, out_dim: int, freq_dim: int = 64) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: Tensor) -> Tensor:
        emb = sinusoidal_embedding(t, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
