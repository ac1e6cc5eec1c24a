"""Moving digits: short clips of shipped digits flying and bouncing in a box, with their physics known (Part 15,
notebook 17).

A clip is ``frames`` images of ``size`` x ``size`` pixels. Each digit, shrunk to ``digit_size`` pixels (block
means, as :func:`tinydiff.superres.downsample` does), starts at a random position with a random velocity and moves in a
straight line; where it would leave the box it bounces elastically: the position is reflected at the wall and that
component of the velocity changes sign. So between bounces the acceleration is exactly zero, and at a bounce it is
the reflection -- which is what a video model's samples are measured against (a smooth trajectory, the digit's class
and ink kept in every frame). The moving-MNIST of Srivastava et al. 2015, made from the course's own digits.

Two digits in one clip are drawn with the pixel-wise maximum, so a crossing shows both.

Shapes: clips [B, frames, 1, size, size] in [-1, 1]; positions [B, digits, frames, 2] (row, column of the digit's
top-left corner, in pixels, float); velocities [B, digits, 2] at the start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bounce(start: Tensor, velocity: Tensor, frames: int, high: float) -> Tensor:
    """Positions [..., frames, 2] of points moving from ``start`` [..., 2] with ``velocity`` [..., 2] per frame,
    reflected elastically at 0 and ``high``: the unfolded straight line x0 + k v folded back into [0, high] (a
    triangle wave of period 2 high), which is what reflection at both walls gives in closed form."""
    if high <= 0:
        raise ValueError(f"the box must leave room to move: high = size - digit_size must be > 0, got {high}")
    k = torch.arange(frames, dtype=start.dtype, device=start.device)
    line = start[..., None, :] + k[:, None] * velocity[..., None, :]  # [..., frames, 2]
    folded = torch.remainder(line, 2 * high)
    return torch.where(folded > high, 2 * high - folded, folded)


def shrink(images: Tensor, digit_size: int) -> Tensor:
    """Digits [N, 1, H, W] in [-1, 1] -> [N, 1, digit_size, digit_size] by area averaging."""
    return F.interpolate(images, size=(digit_size, digit_size), mode="area")


def render(digits: Tensor, positions: Tensor, size: int) -> Tensor:
    """Draw digits [B, D, 1, s, s] in [-1, 1] at integer-rounded positions [B, D, frames, 2] on a black canvas of
    ``size`` x ``size``: clips [B, frames, 1, size, size], the maximum where digits overlap."""
    B, D, _, s, _ = digits.shape
    frames = positions.shape[2]
    canvas = torch.full((B, frames, 1, size, size), -1.0, dtype=digits.dtype, device=digits.device)
    corner = positions.round().long()
    for b in range(B):
        for d in range(D):
            for k in range(frames):
                r, c = int(corner[b, d, k, 0]), int(corner[b, d, k, 1])
                patch = canvas[b, k, :, r: r + s, c: c + s]
                canvas[b, k, :, r: r + s, c: c + s] = torch.maximum(patch, digits[b, d])
    return canvas


def moving_digits(images: Tensor, labels: Tensor, n: int, *, frames: int = 12, size: int = 32, digit_size: int = 16,
                  digits: int = 1, speed: tuple[float, float] = (1.0, 3.0),
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``n`` clips of ``digits`` digits each, drawn from ``images`` [N, 1, H, W] (e.g. the shipped MNIST, padded or
    not) with their ``labels`` [N]: each digit shrunk to ``digit_size``, started at a uniform position with a
    uniform direction and a speed uniform in ``speed`` (pixels per frame), moved by :func:`bounce` and drawn by
    :func:`render`. Returns (clips [n, frames, 1, size, size], labels [n, digits], positions [n, digits, frames, 2],
    velocities [n, digits, 2]). ``generator`` (a CPU generator) draws everything."""
    if images.ndim != 4 or images.shape[1] != 1 or len(images) != len(labels):
        raise ValueError(f"images must be [N, 1, H, W] with one label each, got {list(images.shape)} and "
                         f"{len(labels)} labels")
    if not 1 <= digit_size < size:
        raise ValueError(f"digit_size must lie in 1..size - 1 = {size - 1}, got {digit_size}")
    if frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {frames}")
    high = float(size - digit_size)
    pick = torch.randint(0, len(images), (n, digits), generator=generator)
    start = torch.rand(n, digits, 2, generator=generator, dtype=torch.float64) * high
    angle = torch.rand(n, digits, generator=generator, dtype=torch.float64) * 2 * torch.pi
    magnitude = speed[0] + (speed[1] - speed[0]) * torch.rand(n, digits, generator=generator, dtype=torch.float64)
    velocity = torch.stack([magnitude * torch.sin(angle), magnitude * torch.cos(angle)], -1)
    positions = bounce(start, velocity, frames, high)
    small = shrink(images.cpu()[pick.flatten()], digit_size).reshape(n, digits, 1, digit_size, digit_size)
    clips = render(small, positions, size)
    return clips.to(images.dtype), labels.cpu()[pick], positions, velocity


def clip_stream(images: Tensor, labels: Tensor, *, frames: int | None = 12, **kwargs):
    """A data source for :func:`tinydiff.train.train`: ``data(batch_size, generator=g)`` returns fresh one-digit clips
    (clips [B, frames, 1, 32, 32], their digits [B]) at every call, so a model never sees the same clip twice. With
    ``frames=None`` it returns single frames [B, 1, 32, 32] instead (the first frame of each clip, where the digit
    sits at a uniform position): the training data of a per-frame image model. ``kwargs`` go to
    :func:`moving_digits`."""
    if frames is not None and frames < 2:
        raise ValueError(f"a clip needs at least 2 frames (frames=None for single frames), got {frames}")

    def data(batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        clips, digit, _, _ = moving_digits(images, labels, batch_size, frames=frames or 2, digits=1,
                                           generator=generator, **kwargs)
        return (clips if frames else clips[:, 0]), digit[:, 0]

    return data
