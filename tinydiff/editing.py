"""Editing with a trained diffusion model, no retraining: inpainting (replacement and RePaint) and SDEdit.

Both are ordinary samplers run on the same ``model(x_t, t)`` + :class:`~tinydiff.schedules.Schedule`
interface, built from DDIM's update rule (:func:`tinydiff.samplers.ddim_update`; eta = 1 on
all T steps is DDPM's ancestral sampler) and the loop :func:`tinydiff.samplers.run`:

1. :func:`check_mask`        a mask [B, *data] of 0/1, 1 = known
2. :func:`noise_to_level`    x_0 -> x at a visited level, in closed form (the forward process)
3. :func:`repaint_path`      the order in which RePaint visits the grid (down, with jumps back up)
4. :func:`inpaint`           replacement (resample = 1) and RePaint (Lugmayr et al. 2022, Algorithm 1)
5. :func:`sdedit`            noise an input to step t0, then denoise it (Meng et al. 2022)
6. :func:`block_sketch`      a rough input for SDEdit: which blocks of an image hold ink

Levels: a sampler over the visited steps tau_0 > tau_1 > ... > tau_{S-1} moves through S + 1
states, the noisiest x_{tau_0} at position 0 and the clean sample (alpha_bar = 1) at position S.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .samplers import Model, Trajectory, _check_eta, _check_prediction, ddim_timesteps, ddim_update, run, start
from .schedules import Schedule


def check_mask(mask: Tensor, x: Tensor) -> Tensor:
    """Check an inpainting mask and return it in x's dtype and device, broadcast to x's shape.

    ``mask`` [B, *data] (or [1, *data], shared by the batch) holds 1 where x is known and
    0 where it is to be generated. Raises ``ValueError`` for another shape or for values
    other than 0 and 1 (a soft mask is not what these samplers assume).
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor of 0s and 1s shaped like x {list(x.shape)}, got {type(mask).__name__}")
    if mask.shape != x.shape and not (mask.ndim == x.ndim and mask.shape[0] == 1 and mask.shape[1:] == x.shape[1:]):
        raise ValueError(
            f"mask has shape {list(mask.shape)} but x has shape {list(x.shape)}: the mask must be [B, *data] "
            f"like x (or [1, *data], shared by the batch), with 1 = known, 0 = to generate"
        )
    if not bool(((mask == 0) | (mask == 1)).all()):
        bad = mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist()
        raise ValueError(f"mask values must be exactly 0 or 1 (1 = known), got e.g. {bad}; threshold a soft mask first")
    return mask.to(device=x.device, dtype=x.dtype).expand_as(x)


def noise_to_level(x0: Tensor, alpha_bar: float, noise: Tensor | None) -> Tensor:
    """q(x_t | x_0) at a level given by its alpha_bar (Ho et al. 2020, eq. 4):
    sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps; alpha_bar = 1 returns x_0 itself (``noise`` may then be None).
    Shapes [B, *data]."""
    if alpha_bar == 1.0:
        return x0
    if noise is None:
        raise ValueError(f"noise is needed below the clean level (alpha_bar = {alpha_bar:.4g} < 1)")
    return math.sqrt(alpha_bar) * x0 + math.sqrt(1.0 - alpha_bar) * noise


def renoise(x: Tensor, alpha_bar_from: float, alpha_bar_to: float, noise: Tensor) -> Tensor:
    """Run the forward process up from one level to a noisier one in one jump:
    q(x_to | x_from) = N(sqrt(ab_to / ab_from) x_from, (1 - ab_to / ab_from) I)
    (Ho et al. 2020, eq. 2 composed over the steps between; RePaint's way back up, Lugmayr et al. 2022, sec. 4.2).
    Shapes [B, *data]."""
    ratio = alpha_bar_to / alpha_bar_from
    return math.sqrt(ratio) * x + math.sqrt(1.0 - ratio) * noise


def repaint_path(steps: int, resample: int = 1, jump: int = 1) -> list[int]:
    """The positions RePaint visits on a grid of ``steps`` denoising steps (0 = noisiest, ``steps`` = clean).

    Going down one position is one denoising step; every ``jump`` positions (at jump, 2 jump, ...,
    short of the clean end) the sampler goes back up ``jump`` positions and down again, until each
    of those stretches has been done ``resample`` times in all (Lugmayr et al. 2022, sec. 4.2:
    "jump length" j and "resampling" r; their schedule, written over grid positions). ``resample = 1``
    is a single pass down: plain replacement. Returns the positions in order, from 0 to ``steps``;
    the number of denoising steps is about resample x steps.
    """
    for name, value in (("steps", steps), ("resample", resample), ("jump", jump)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if jump >= steps and resample > 1:
        raise ValueError(f"jump = {jump} must be smaller than the {steps} steps to jump back at all")
    left = {p: resample - 1 for p in range(jump, steps, jump)}
    path, p = [0], 0
    while p < steps:
        p += 1
        path.append(p)
        if left.get(p, 0) > 0:
            left[p] -= 1
            for _ in range(jump):
                p -= 1
                path.append(p)
    return path


def _grid(schedule: Schedule, steps: int | None, spacing: str) -> list[int]:
    return list(range(schedule.T - 1, -1, -1)) if steps is None else ddim_timesteps(schedule.T, steps, spacing).tolist()


@torch.no_grad()
def inpaint(
    model: Model,
    schedule: Schedule,
    x_known: Tensor,
    mask: Tensor,
    *,
    steps: int | None = None,
    spacing: str = "leading",
    eta: float = 1.0,
    resample: int = 1,
    jump: int = 1,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    progress: bool = True,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """Fill in the unknown part of ``x_known`` (where ``mask`` = 0) with a model trained on whole samples.

    At each denoising step from level tau to the next level tau' (Lugmayr et al. 2022, eq. 8):

        unknown = one sampler step from x_tau                    (DDIM eq. 12 with eta; DDPM for eta = 1, all T steps)
        known   = sqrt(alpha_bar_tau') x_known + sqrt(1 - alpha_bar_tau') z       (the forward process, eq. 4)
        x_tau'  = mask * known + (1 - mask) * unknown

    ``resample = 1``: one pass down -- "replacement" (Song et al. 2021, appendix I.2). Each step sees
    the known part only through x_tau, so the generated part never fully agrees with it at the
    seams. ``resample = r > 1`` (RePaint): after a stretch of ``jump`` steps, go back up with the
    forward process (:func:`renoise`) and down again, r times in all (:func:`repaint_path`),
    which lets the generated part harmonise with the known part; about r times the network calls.

    ``steps``: None for all T steps, else a ``steps``-step grid (:func:`ddim_timesteps` with
    ``spacing``). Shapes: x_known, mask [B, *data] (mask also [1, *data]); returns [B, *data] whose
    known part is x_known exactly. The known part's noise is drawn only if the mask has a 1,
    so an all-zero mask with resample = 1 is ``ddim_sample`` with the same seed, bit for bit.
    """
    mask = check_mask(mask, x_known)
    eta = _check_eta(eta)
    _check_prediction(prediction)
    timesteps = _grid(schedule, steps, spacing)
    path = repaint_path(len(timesteps), resample, jump)
    x, noise = start(model, tuple(x_known.shape), x_T, generator)
    step = ddim_update(model, schedule, timesteps, eta, noise, prediction, clip_x0)
    alpha_bars = schedule.alpha_bars.tolist()
    alpha_bar_at = [alpha_bars[t] for t in timesteps] + [1.0]  # at each grid position, 1 at the clean end
    any_known = bool(mask.any())
    known = x_known.to(x)

    def update(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        here, there = path[i], path[i + 1]
        if there < here:  # a RePaint jump: back up the forward process
            return renoise(x, alpha_bar_at[here], alpha_bar_at[there], noise()), x
        x = step(here, x)[0]
        if any_known:
            z = noise() if alpha_bar_at[there] < 1.0 else None
            x = mask * noise_to_level(known, alpha_bar_at[there], z) + (1 - mask) * x
        return x, x

    desc = "replacement" if resample == 1 else f"RePaint r={resample} j={jump}"
    visited = [timesteps[level] for level in path[:-1]]
    return run(update, x, visited, desc=desc, progress=progress, return_trajectory=return_trajectory)


@torch.no_grad()
def sdedit(
    model: Model,
    schedule: Schedule,
    x: Tensor,
    t0: int,
    *,
    steps: int | None = None,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    progress: bool = True,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """SDEdit (Meng et al. 2022): perturb ``x`` to step ``t0`` with the forward process, then denoise -- the
    variance-preserving form (the paper's appendix, Algorithm 3, and its code; Algorithm 1 is the VE-SDE form).

        x_t0 = sqrt(alpha_bar_t0) x + sqrt(1 - alpha_bar_t0) z       (eq. 4 of Ho et al. 2020)
        x_0  = a sampler run from x_t0 at step t0 down to the clean sample

    The realism-faithfulness knob is t0 (0-based, 0..T-1): small t0 keeps the input's details
    (and its flaws); t0 near T-1 forgets it and draws a fresh sample. The sampler is DDIM
    (eq. 12) with ``eta`` on ``steps`` steps from t0 down (``trailing`` spacing of the first
    t0 + 1 steps, so it starts exactly at t0); ``steps = None`` takes every step, which with
    eta = 1 is DDPM's ancestral sampler (the paper's SDE solver, discretised).
    Shapes: x [B, *data] -> [B, *data].
    """
    if isinstance(t0, bool) or not isinstance(t0, int) or not 0 <= t0 < schedule.T:
        raise ValueError(f"t0 must be an integer step in 0..{schedule.T - 1} (0-based; how far to noise the input), got {t0!r}")
    eta = _check_eta(eta)
    _check_prediction(prediction)
    if steps is None:
        steps = t0 + 1
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= t0 + 1:
        raise ValueError(f"steps must be an integer in 1..t0 + 1 = {t0 + 1} (the steps from t0 down), got {steps!r}")
    timesteps = ddim_timesteps(t0 + 1, steps, "trailing").tolist()
    _, noise = start(model, tuple(x.shape), x, generator)
    x_t0 = noise_to_level(x, float(schedule.alpha_bars[t0]), noise())
    update = ddim_update(model, schedule, timesteps, eta, noise, prediction, clip_x0)
    return run(update, x_t0, timesteps, desc=f"SDEdit t0={t0}", progress=progress,
               return_trajectory=return_trajectory)


def block_sketch(images: Tensor, block: int = 4, threshold: float = -0.5) -> Tensor:
    """A rough sketch of each image for SDEdit: every ``block`` x ``block`` tile whose mean exceeds ``threshold``
    becomes a solid white square (1), every other tile black (-1) -- the layout of a digit with none of its strokes.

    Shapes: images [B, C, H, W] in [-1, 1] (H and W divisible by ``block``) -> [B, C, H, W] of -1 and 1.
    """
    if images.dim() != 4:
        raise ValueError(f"block_sketch takes images [B, C, H, W], got shape {list(images.shape)}")
    if images.shape[-1] % block or images.shape[-2] % block:
        raise ValueError(f"the image size {list(images.shape[-2:])} must be divisible by block={block}")
    inked = torch.nn.functional.avg_pool2d(images, block) > threshold
    return torch.nn.functional.interpolate(inked.to(images.dtype), scale_factor=block, mode="nearest") * 2 - 1
