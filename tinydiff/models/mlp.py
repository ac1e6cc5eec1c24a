"""A small residual MLP for 2-D toys: model(x_t [B, D], t [B]) -> prediction [B, D].

The network that learns the score (as epsilon) of a 2-D distribution in about a
minute on a CPU. Its parts, in the order the data flows:

    h = Linear(x_t)                                   lift the point to ``hidden`` features
    e = TimeEmbedding(t)                              sinusoidal features of t + a 2-layer MLP (models.embeddings)
    h = h + Block(h, e)    (n_blocks times)           pre-norm residual blocks, t added inside each
    out = Linear(SiLU(LayerNorm(h)))                  back to D numbers, zero-initialised

The time embedding enters every block, so the network can be a different
function at every noise level -- which it must be: the optimal epsilon at
t = 0 and at t = T-1 are unrelated functions of x_t.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import TimeEmbedding


class ResidualBlock(nn.Module):
    """h + Linear(SiLU(Linear(SiLU(LayerNorm(h))) + time_proj(e))): h [B, H], e [B, H] -> [B, H]."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.time_proj = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        z = self.fc1(self.act(self.norm(h))) + self.time_proj(e)
        return h + self.fc2(self.act(z))


class MLP(nn.Module):
    """Residual MLP with a time embedding (see the module docstring).

    ``dim`` data dimension D (2 for the toys); ``hidden`` width H; ``n_blocks`` residual
    blocks. forward(x [B, D], t [B]) -> [B, D], where t holds 0-based timestep indices
    (LongTensor) or real-valued noise levels. About 47 k parameters with the defaults.
    """

    def __init__(self, dim: int = 2, hidden: int = 64, n_blocks: int = 3) -> None:
        super().__init__()
        if dim < 1 or hidden < 2 or hidden % 2 or n_blocks < 0:
            raise ValueError(f"need dim >= 1, an even hidden >= 2 and n_blocks >= 0; got dim={dim}, hidden={hidden}, n_blocks={n_blocks}")
        self.dim = dim
        self.time_embedding = TimeEmbedding(hidden, freq_dim=hidden)
        self.lift = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(n_blocks))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        # Start by predicting 0: a zero epsilon-prediction has loss exactly E|eps|^2 / D = 1.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}], got {list(x.shape)}")
        if not isinstance(t, Tensor) or t.shape != (x.shape[0],):
            got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(
                f"t must be a tensor of shape [B] = [{x.shape[0]}] (one timestep per point), got {got}; "
                "for one t for the whole batch use torch.full((B,), t)"
            )
        e = self.time_embedding(t).to(x.dtype)
        h = self.lift(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(torch.nn.functional.silu(self.out_norm(h)))
