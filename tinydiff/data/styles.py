"""Deterministic styles of handwriting, and the measures that detect them, for digits in [-1, 1].

A style here is a function of the image alone, so a learner sees it at a glance and a number can check it:

- :func:`thicken` / :func:`thin`: morphological dilation / erosion of the strokes (a max / min filter over a
  (2r+1) x (2r+1) square, Gonzalez & Woods 2018, sec. 9.2); measured by :func:`ink`, the mean ink per image.
- :func:`shear`: a horizontal shear x' = x + s (y_c - y) about the centre, so s > 0 leans the digit to the
  right; measured by :func:`slant`, from the image's second moments (the moment-based "deskewing" often applied
  to MNIST, read the other way).

Shapes: images [B, 1, H, W] in [-1, 1] (-1 background, +1 ink); measures return [B].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 1:
        got = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [B, 1, H, W] of digits in [-1, 1], got {got}")


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise ValueError(f"radius must be a positive int number of pixels, got {radius!r}")
    return radius


def thicken(images: Tensor, radius: int = 1) -> Tensor:
    """Dilation: each pixel becomes the maximum over the (2r+1) x (2r+1) square around it, so strokes grow by
    ``radius`` pixels on every side. [B, 1, H, W] -> [B, 1, H, W]."""
    _check_images(images)
    r = _check_radius(radius)
    return F.max_pool2d(images, 2 * r + 1, stride=1, padding=r)


def thin(images: Tensor, radius: int = 1) -> Tensor:
    """Erosion: the minimum over the same square (dilation of the background), so strokes lose ``radius`` pixels
    on every side. [B, 1, H, W] -> [B, 1, H, W]."""
    _check_images(images)
    r = _check_radius(radius)
    return -F.max_pool2d(-images, 2 * r + 1, stride=1, padding=r)


def shear(images: Tensor, amount: float | Tensor) -> Tensor:
    """Lean the digits: the pixel at (x, y) moves to (x + amount (y_c - y), y), y counted downwards from the top, so
    ``amount`` > 0 leans to the right (the top moves right). ``amount``: one number, or a tensor [B] of one per image.
    Bilinear, background outside. [B, 1, H, W] -> same."""
    _check_images(images)
    B, _, H, W = images.shape
    k = torch.as_tensor(amount, dtype=images.dtype, device=images.device).expand(B) * (H / W)
    # affine_grid maps each output pixel (normalised coords u, v in [-1, 1]) to the input pixel it reads:
    # out(u, v) = in(u + k v, v), with k = amount * H / W so that the shear is in pixels per pixel.
    theta = torch.zeros(B, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 1] = 1.0, k, 1.0
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    shifted = F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return shifted - 1


def _weights(images: Tensor) -> Tensor:
    # ink in [0, 1] per pixel: [B, H*W], float64 on the CPU (exact, and MPS has no float64)
    return ((images.clamp(-1, 1) + 1) / 2).flatten(1).cpu().to(torch.float64)


def ink(images: Tensor) -> Tensor:
    """The fraction of the image covered by ink: mean of (x + 1) / 2 over the pixels, [B] (float64, on the CPU)."""
    _check_images(images)
    return _weights(images).mean(1)


def slant(images: Tensor) -> Tensor:
    """The shear that best explains each digit's shape: -mu_11 / mu_02 of its ink (second central moments, y down),
    positive when the digit leans to the right. Upright digits are near 0; :func:`shear` by s adds about s. [B]."""
    _check_images(images)
    B, _, H, W = images.shape
    w = _weights(images)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    xs, ys = xs.flatten(), ys.flatten()
    mass = w.sum(1).clamp(min=1e-12)
    cx, cy = (w * xs).sum(1) / mass, (w * ys).sum(1) / mass
    dx, dy = xs[None] - cx[:, None], ys[None] - cy[:, None]
    mu11, mu02 = (w * dx * dy).sum(1), (w * dy * dy).sum(1).clamp(min=1e-12)
    return -mu11 / mu02


def thin_half(images: Tensor) -> Tensor:
    """A gentler erosion: the minimum over a 2 x 2 square, so strokes lose about one pixel of width (on MNIST's
    two-to-three-pixel strokes :func:`thin` erases most of the digit, this keeps it). [B, 1, H, W] -> same."""
    _check_images(images)
    return -F.max_pool2d(F.pad(-images, (0, 1, 0, 1), value=1.0), 2, stride=1)


def deskew(images: Tensor) -> Tensor:
    """Stand each digit upright: :func:`shear` by minus its own :func:`slant`, so the result's slant is about 0.
    [B, 1, H, W] -> same."""
    _check_images(images)
    return shear(images, -slant(images).to(images.dtype))


def hollow(images: Tensor, radius: int = 1) -> Tensor:
    """Outlined digits: ink where the dilated stroke is and the stroke is not, (thicken(x, r) - x) in ink units --
    the stroke's boundary traced outwards (boundary extraction, Gonzalez & Woods 2018, sec. 9.5, with dilation in
    place of erosion). Where the stroke was is now dark, ringed by a line ``radius`` pixels wide: a style no
    shipped digit has (notebook 16's new concept). [B, 1, H, W] in [-1, 1] -> same."""
    _check_images(images)
    ink_in = (images + 1) / 2
    ring = (thicken(images, radius) + 1) / 2 - ink_in
    return (2 * ring - 1).clamp(-1, 1)
