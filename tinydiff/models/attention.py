"""Attention with a padding mask, written out: the text encoder's self-attention and the UNet's cross-attention.

Scaled dot-product attention (Vaswani et al. 2017, eq. 1)::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V

A *key mask* removes keys before the softmax (their logit becomes -inf), so a padded text position gets
exactly zero weight and cannot change the output. The weights are computed explicitly, not by a fused
kernel, so a notebook can show them: which words each pixel attends to.

- :class:`TransformerBlock`: self-attention over text tokens, then an MLP, each with a residual and a LayerNorm
  in front (the pre-LN block of GPT-2 and CLIP's text encoder; Radford et al. 2019, sec. 2.3).
- :class:`CrossAttention`: queries from the image's positions, keys and values from the text's token states --
  how Stable Diffusion's UNet reads a prompt (Rombach et al. 2022, sec. 3.3, the equation after eq. 2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def masked_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(d) + mask) v (Vaswani et al. 2017, eq. 1), returning (output, weights).

    Shapes: q [B, h, Nq, d], k and v [B, h, Nk, d], key_mask BoolTensor [B, Nk] (True = a real key) or None
    -> output [B, h, Nq, d], weights [B, h, Nq, Nk] (each row sums to 1; zero at masked keys).
    """
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        if key_mask.shape != (k.shape[0], k.shape[2]) or key_mask.dtype != torch.bool:
            raise ValueError(f"key_mask must be a BoolTensor [B, Nk] = [{k.shape[0]}, {k.shape[2]}], "
                             f"got {key_mask.dtype} {list(key_mask.shape)}")
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    weights = logits.softmax(-1)
    return weights @ v, weights


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, N, h * d] -> [B, h, N, d]."""
    B, N, D = x.shape
    return x.reshape(B, N, heads, D // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """[B, h, N, d] -> [B, N, h * d]."""
    B, h, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, h * d)


def _check_heads(width: int, heads: int) -> None:
    if heads < 1 or width % heads:
        raise ValueError(f"the width ({width}) must be divisible by the number of heads ({heads})")


class TransformerBlock(nn.Module):
    """Pre-LN transformer block on token states x [B, L, width] with a key mask [B, L] -> [B, L, width].

    x = x + Attention(LN(x)) over the unmasked tokens;  x = x + MLP(LN(x)), MLP = Linear(4 width) -> GELU -> Linear.
    """

    def __init__(self, width: int, heads: int = 4) -> None:
        super().__init__()
        _check_heads(width, heads)
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        q, k, v = (_split_heads(z, self.heads) for z in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        out, _ = masked_attention(q, k, v, key_mask)
        x = x + self.proj(_merge_heads(out))
        return x + self.mlp(self.norm2(x))


class CrossAttention(nn.Module):
    """Image positions attend to text tokens (Rombach et al. 2022, sec. 3.3), residual: [B, C, H, W] -> same.

    Q = W_Q GroupNorm(h) (a 1 x 1 convolution at every pixel), K = W_K c, V = W_V c for the text states
    c [B, L, context_dim]; out = h + W_O Attention(Q, K, V) with the text's padding mask. W_O starts at zero,
    so a new cross-attention block is the identity and a trained UNet keeps working when it is added.

    With ``record = True`` the block keeps its last weights in ``last_weights`` [B, heads, H * W, L]:
    for each pixel, how much it read from each token. With ``enabled = False`` it returns h unchanged (an ablation:
    the UNet with its reading switched off). With ``attention_edit`` a function of the weights, the block uses
    ``attention_edit(weights)`` in their place (prompt-to-prompt's control, :mod:`tinydiff.prompt_editing`).
    """

    def __init__(self, channels: int, context_dim: int, heads: int = 4) -> None:
        super().__init__()
        _check_heads(channels, heads)
        self.heads = heads
        self.norm = nn.GroupNorm(next(g for g in (8, 4, 2, 1) if channels % g == 0), channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.record = False
        self.enabled = True
        self.last_weights: Tensor | None = None
        self.attention_edit = None

    def forward(self, h: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        B, C, H, W = h.shape
        if not self.enabled:
            return h
        if context.ndim != 3 or context.shape[0] != B or context.shape[2] != self.kv.in_features:
            raise ValueError(f"context must be text states [B, L, {self.kv.in_features}] with B = {B}, "
                             f"got {list(context.shape)}")
        q = _split_heads(self.q(self.norm(h)).flatten(2).transpose(1, 2), self.heads)  # [B, heads, H*W, d]
        k, v = (_split_heads(z, self.heads) for z in self.kv(context).chunk(2, dim=-1))  # [B, heads, L, d]
        out, weights = masked_attention(q, k, v, context_mask)
        if self.attention_edit is not None:  # Hertz et al. 2022, sec. 3.2: other maps, this prompt's values
            weights = self.attention_edit(weights)
            out = weights @ v
        if self.record:
            self.last_weights = weights.detach()
        return h + self.proj(_merge_heads(out).transpose(1, 2).reshape(B, C, H, W))
