"""Latent diffusion: the same diffusion model, trained and sampled on an autoencoder's latents.

Latent diffusion (Rombach et al. 2022, sec. 3-4) trains an autoencoder once
(:class:`tinydiff.models.Autoencoder`), then runs *ordinary* diffusion on
z = E(x) instead of on x: the same L_simple, the same UNet (with latent channels in
and out), the same samplers and guidance -- only the data changed. Sampling ends with
one decoder pass, x = D(z_0).

**The scale factor.** DDPM's forward process assumes data of roughly unit variance:
x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps mixes signal and noise in the
ratio the schedule was designed for only if x_0 has variance ~1. An autoencoder's
latents have whatever scale training gave them (Stable Diffusion's VAE: std ~5.5),
so LDM multiplies them by scale_factor = 1 / std(z), measured once on training
latents (Rombach et al. 2022, sec. 4.3.2 and app. D.1 -- Stable Diffusion's 0.18215 is
1 / 5.49). :class:`LatentCodec` applies it both ways, so training and samplers see
unit-variance latents and never know the difference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .tensors import randn


@torch.no_grad()
def latent_scale_factor(latents: Tensor) -> float:
    """scale_factor = 1 / std(z) over every element of latents [N, *z] (LDM's ``scale_by_std``)."""
    if latents.ndim < 2 or latents.shape[0] < 2:
        raise ValueError(f"latents must be a batch [N, *z] with N >= 2, got {list(latents.shape)}")
    std = float(latents.float().std())
    if not std > 0:
        raise ValueError(f"the latents have standard deviation {std}; the autoencoder's encoder is degenerate")
    return 1.0 / std


class LatentCodec(nn.Module):
    """Images <-> scaled latents: ``encode(x) = scale_factor * mean(q(z | x))``, ``decode(z) = D(z / scale_factor)``.

    Shapes: x [B, *autoencoder.image_shape] <-> z [B, *autoencoder.latent_shape]. The
    autoencoder is frozen (eval mode, no gradients): it was trained once, before the
    diffusion model.
    """

    def __init__(self, autoencoder: nn.Module, scale_factor: float) -> None:
        super().__init__()
        if not scale_factor > 0:
            raise ValueError(f"scale_factor must be positive (1 / std of the latents), got {scale_factor}")
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)
        self.image_shape = tuple(autoencoder.image_shape)
        self.latent_shape = tuple(autoencoder.latent_shape)

    @torch.no_grad()
    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = scale_factor * E(x): the posterior mean, or with ``generator`` a sample z ~ q(z | x).

        x [B, C, H, W] -> [B, *latent_shape]. diffusers calls these ``latent_dist.mode()`` and
        ``latent_dist.sample()``; its training scripts sample, and with this package's small
        posterior variance the two differ little (notebook 08 measures it).
        """
        mean, logvar = self.autoencoder.encode(x)
        if generator is not None:
            mean = mean + torch.exp(0.5 * logvar) * randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self.scale_factor * mean

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """x = D(z / scale_factor): z [B, *latent_shape] -> images [B, C, H, W]."""
        return self.autoencoder.decode(z / self.scale_factor)

    def decode_differentiable(self, z: Tensor) -> Tensor:
        """:meth:`decode` with gradients flowing back to z (the weights stay frozen): what CLIP guidance
        differentiates through. z [B, *latent_shape] -> images [B, C, H, W]."""
        return self.autoencoder.decode(z / self.scale_factor)

    @torch.no_grad()
    def encode_dataset(self, images: Tensor, batch_size: int = 500) -> Tensor:
        """Posterior means (scaled) of a whole dataset [N, C, H, W] -> [N, *latent_shape], on the codec's device,
        computed once so that training draws latents as cheaply as it draws images."""
        device = next(self.autoencoder.parameters()).device
        return torch.cat([self.encode(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)])
