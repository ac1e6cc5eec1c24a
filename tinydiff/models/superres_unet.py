"""An image-conditioned UNet: ``model(x_t, t, cond=image, level=s) -> prediction``, SR3's network in miniature.

SR3 (Saharia et al. 2021, sec. 2.4) conditions a diffusion model on a low-resolution image in the simplest
possible way: the image, upsampled to the output size, is *concatenated* to x_t as extra input channels::

    prediction = UNet(concat(x_t, cond), t)        x_t [B, C, H, W], cond [B, C_cond, H, W] -> [B, C, H, W]

Everything else -- the schedule, L_simple, the samplers -- is the unconditional model's. The UNet sees the
conditioning image at every resolution through its skips, so it can copy what the input already says (the
low frequencies) and spend its capacity on what it does not (the strokes' sharp edges).

Noise-conditioning augmentation (Ho et al. 2022, "Cascaded diffusion models", sec. 4.1; ``noise_levels=True``):
the conditioning image is itself corrupted, cond = sqrt(alpha_bar_s) up(low) + sqrt(1 - alpha_bar_s) eps', at
a level s the network is told. s enters exactly as t does -- sinusoidal features and an MLP -- and is *added*
to the time embedding, so every ResBlock knows how much to trust the conditioning image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import TimeEmbedding
from .unet import UNet


class SuperResUNet(nn.Module):
    """A :class:`~tinydiff.models.UNet` over ``in_channels + cond_channels`` input channels that predicts
    ``in_channels``: see the module docstring.

    Args:
        in_channels: C of the images it generates (1 for digits, 3 for colour).
        cond_channels: C_cond of the conditioning image (default: ``in_channels``).
        noise_levels: read the augmentation level s of the conditioning image (``level=``), as a cascade's
            super-resolution stage does; False for a model trained on clean conditioning images only.
        **unet: the UNet's other arguments (channels, mults, n_res, heads, dropout); no classes, no text.
    """

    def __init__(self, in_channels: int = 1, cond_channels: int | None = None, noise_levels: bool = False,
                 **unet) -> None:
        super().__init__()
        if unet.get("num_classes") is not None or unet.get("context_dim") is not None:
            raise ValueError("a SuperResUNet is conditioned on an image only: give it no num_classes and no context_dim")
        cond_channels = in_channels if cond_channels is None else cond_channels
        if in_channels < 1 or cond_channels < 1:
            raise ValueError(f"in_channels and cond_channels must be positive, got {in_channels} and {cond_channels}")
        self.unet = UNet(in_channels=in_channels + cond_channels, out_channels=in_channels, **unet)
        emb_dim = self.unet.time_emb.mlp[-1].out_features
        self.level_emb = TimeEmbedding(emb_dim, freq_dim=64) if noise_levels else None
        self.in_channels, self.cond_channels = in_channels, cond_channels
        self.config = dict(in_channels=in_channels, cond_channels=cond_channels, noise_levels=noise_levels,
                           **{k: v for k, v in self.unet.config.items()
                              if k not in ("in_channels", "out_channels", "num_classes")})

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (the UNet's)."""
        return self.unet.size_multiple

    @property
    def noise_levels(self) -> bool:
        """Whether the network reads the conditioning image's augmentation level s."""
        return self.level_emb is not None

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, level: Tensor | None = None) -> Tensor:
        """x [B, C, H, W], t LongTensor [B], cond [B, C_cond, H, W] (the upsampled low-resolution image),
        level LongTensor [B] (its augmentation level s; only for ``noise_levels=True``) -> prediction [B, C, H, W]."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape [B, {self.in_channels}, H, W], got {list(x.shape)}")
        expected = [x.shape[0], self.cond_channels, *x.shape[2:]]
        if not isinstance(cond, Tensor) or list(cond.shape) != expected:
            got = list(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
            raise ValueError(f"cond must be the conditioning image upsampled to x's size, {expected}, got {got} "
                             "(upsample the low-resolution image first: tinydiff.superres.upsample)")
        if self.level_emb is None:
            if level is not None:
                raise ValueError("this SuperResUNet was built without noise_levels; call it without level")
            emb = None
        else:
            if level is None or level.shape != t.shape:
                got = list(level.shape) if isinstance(level, Tensor) else level
                raise ValueError(f"this SuperResUNet reads the conditioning image's noise level: give level, a "
                                 f"LongTensor [B] = [{t.shape[0]}] (0 = clean), got {got}")
            emb = self.level_emb(level)
        return self.unet(torch.cat([x, cond.to(dtype=x.dtype)], dim=1), t, emb=emb)

