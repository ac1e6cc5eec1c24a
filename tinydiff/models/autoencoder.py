"""A small convolutional VAE: 32 x 32 digits <-> latents [4, 8, 8], the first stage of latent diffusion.

Latent diffusion (Rombach et al. 2022, sec. 3.1) splits image generation in two:
a *perceptual compression* model -- an autoencoder trained once, with a reconstruction
loss and a small KL penalty -- and a diffusion model trained in its latent space.
This is the first stage, shrunk for digits::

    encoder:  x [B, 1, 32, 32] -> conv_in -> ConvBlock (16 ch) -> down (16 x 16) -> ConvBlock (32 ch)
              -> down (8 x 8) -> ConvBlock (64 ch) -> GN, SiLU, conv -> (mean, log-variance) [B, 4, 8, 8] each
    decoder:  z [B, 4, 8, 8] -> conv_in -> ConvBlock (64 ch) -> up (16 x 16) -> ConvBlock (32 ch)
              -> up (32 x 32) -> ConvBlock (16 ch) -> GN, SiLU, conv -> x_hat [B, 1, 32, 32]

Each spatial step halves (or doubles) H and W; with ``mults`` of length L the
downsampling factor is f = 2^(L-1) (LDM's "f" -- Stable Diffusion uses f = 8 with 4
latent channels; ours is f = 4 for 32 x 32 digits, 1,024 pixels -> 256 latent numbers).

The encoder outputs a diagonal Gaussian q(z | x) = N(mean, exp(logvar)) (Kingma &
Welling 2014, sec. 2.4); training samples z from it by the reparameterisation trick
and adds beta * KL(q(z | x) || N(0, I)) to the reconstruction loss
(:func:`tinydiff.losses.autoencoder_loss`). LDM's "KL-reg" autoencoders use a tiny
beta (1e-6 with their sums): enough to keep the posterior from collapsing to points
and the latents at a moderate scale -- not enough to make them unit-variance, which
is why latent diffusion rescales them (:mod:`tinydiff.latent`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tensors import randn
from .unet import _groups


class ConvBlock(nn.Module):
    """Residual block without a time embedding: h [B, c_in, H, W] -> [B, c_out, H, W].

    out = skip(h) + conv2(SiLU(GN(conv1(SiLU(GN(h))))))   (the ResNet block of LDM's autoencoder)
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor) -> Tensor:
        z = self.conv1(F.silu(self.norm1(h)))
        z = self.conv2(F.silu(self.norm2(z)))
        return self.skip(h) + z


class Autoencoder(nn.Module):
    """The VAE of the module docstring: ``encode(x) -> (mean, logvar)``, ``decode(z) -> x_hat``.

    Args:
        in_channels: C of the images (1 for MNIST).
        channels: base width; level i has ``channels * mults[i]`` channels.
        mults: width per resolution level; there are len(mults) - 1 down (and up) steps.
        latent_channels: channels of the latent z (4, as in Stable Diffusion).
        image_size: H = W of the images the encoder accepts (32: pad MNIST's 28 x 28).

    ``model.config`` holds these arguments (what :mod:`tinydiff.checkpoint` stores);
    ``model.latent_shape`` is the shape of one latent, e.g. (4, 8, 8).
    """

    LOGVAR_RANGE = (-30.0, 20.0)  # clamp as LDM's DiagonalGaussianDistribution does, so exp() stays finite

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 16,
        mults: tuple[int, ...] | list[int] = (1, 2, 4),
        latent_channels: int = 4,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        if min(in_channels, channels, latent_channels, image_size) < 1 or not mults or min(mults) < 1:
            raise ValueError("in_channels, channels, latent_channels, image_size and every entry of mults must be positive")
        factor = 2 ** (len(mults) - 1)
        if image_size % factor:
            raise ValueError(f"image_size {image_size} must be divisible by the downsampling factor {factor}")
        self.config = dict(in_channels=in_channels, channels=channels, mults=list(mults),
                           latent_channels=latent_channels, image_size=image_size)
        self.image_shape = (in_channels, image_size, image_size)
        self.latent_shape = (latent_channels, image_size // factor, image_size // factor)
        widths = [channels * m for m in mults]

        enc: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        c = widths[0]
        for i, w in enumerate(widths):
            enc.append(ConvBlock(c, w))
            c = w
            if i < len(widths) - 1:
                enc.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        enc += [nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv2d(latent_channels, widths[-1], 3, padding=1)]
        c = widths[-1]
        for i, w in reversed(list(enumerate(widths))):
            dec.append(ConvBlock(c, w))
            c = w
            if i > 0:  # nearest-neighbour x2, then a conv: no checkerboard artefacts (Odena et al. 2016)
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        dec += [nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x) = N(mean, exp(logvar)): x [B, C, H, W] -> (mean, logvar), each [B, *latent_shape]."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"the encoder takes images [B, {', '.join(map(str, self.image_shape))}], got {list(x.shape)}"
                + (" (pad 28x28 MNIST to 32x32: load_mnist(pad_to_32=True))" if tuple(x.shape[-2:]) == (28, 28) else "")
            )
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*self.LOGVAR_RANGE)

    def decode(self, z: Tensor) -> Tensor:
        """x_hat = D(z): z [B, *latent_shape] -> [B, C, H, W] (unclipped; the data lie in [-1, 1])."""
        if z.ndim != 4 or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(
                f"the decoder takes latents [B, {', '.join(map(str, self.latent_shape))}], got {list(z.shape)}; "
                "is this an image rather than a latent, or a latent of another autoencoder?"
            )
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None,
                noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """One training pass: (x_hat, mean, logvar) with z = mean + exp(logvar / 2) * eps (reparameterisation,
        Kingma & Welling 2014, eq. 10), eps = ``noise`` if given, else drawn with ``generator``.
        Shapes: x [B, C, H, W] -> x_hat like x; mean, logvar, noise [B, *latent_shape]."""
        mean, logvar = self.encode(x)
        if noise is not None and noise.shape != mean.shape:
            raise ValueError(f"noise must have the latents' shape {list(mean.shape)}, got {list(noise.shape)}")
        eps = noise if noise is not None else randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self.decode(mean + torch.exp(0.5 * logvar) * eps), mean, logvar
