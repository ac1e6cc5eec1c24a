"""Samplers: turn a noise-prediction model into samples.

The model convention, shared by every sampler here:

    model(x_t, t) -> output      x_t [B, *data], t LongTensor [B] of 0-based indices (see tinydiff.schedules)

where ``output`` is the network's prediction of epsilon (default), x_0 or v
(``prediction=``). :func:`denoise` turns any of these into the pair
(x0_hat, eps_hat) -- the one place that conversion happens -- so the samplers
below never change when the prediction target does.

Noise is drawn through ``generator`` (a ``torch.Generator``): the same seed
gives the same samples, on any device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .diffusion import predict_eps, predict_x0, q_posterior
from .schedules import Schedule
from .tensors import device_and_dtype, gather, randn

Model = Callable[[Tensor, Tensor], Tensor]
VARIANCES = ("beta_tilde", "beta")


@dataclass
class Trajectory:
    """The path a sampler took, kept on the CPU.

    ``timesteps`` [S] the 0-based steps visited, in order; ``xs`` [S+1, B, *data]
    the states x_T, ..., x_0 (``xs[i]`` is the input at ``timesteps[i]``,
    ``xs[-1]`` the final sample); ``x0_preds`` [S, B, *data] the model's
    predicted clean sample at each visited step.
    """

    timesteps: Tensor
    xs: Tensor
    x0_preds: Tensor


def denoise(
    model: Model,
    schedule: Schedule,
    x_t: Tensor,
    t: Tensor,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the model once and return (x0_hat, eps_hat), both [B, *data].

    The conversions are :func:`tinydiff.diffusion.predict_x0` / ``predict_eps``.
    With ``clip_x0 = c``, x0_hat is clamped to [-c, c] (images live in [-1, 1]) and
    eps_hat recomputed from the clamped x0_hat so the two stay consistent
    (as in Ho et al.'s code and diffusers' ``clip_sample``).
    """
    output = model(x_t, t)
    if not isinstance(output, Tensor) or output.shape != x_t.shape:
        got = list(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"the model must return a tensor shaped like x_t {list(x_t.shape)}, got {got}")
    x0_hat = predict_x0(schedule, x_t, t, output, prediction)
    if clip_x0 is None:
        return x0_hat, predict_eps(schedule, x_t, t, output, prediction)
    x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
    return x0_hat, predict_eps(schedule, x_t, t, x0_hat, "x0")


def _check_shape(shape, x_T: Tensor | None) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be [B, *data] with positive sizes, got {list(shape)}")
    if x_T is not None and tuple(x_T.shape) != shape:
        raise ValueError(f"x_T has shape {list(x_T.shape)} but shape={list(shape)} was asked for")
    return shape


@torch.no_grad()
def ddpm_sample(
    model: Model,
    schedule: Schedule,
    shape,
    *,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    variance: str = "beta_tilde",
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    progress: bool = True,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) from x_T ~ N(0, I) down to x_0.

    At each step t = T-1, ..., 0 (0-based):

        x0_hat, eps_hat = denoise(model, x_t, t)
        mean  = posterior mean of q(x_{t-1} | x_t, x0_hat)        (eq. 7; equals eq. 11 for epsilon models)
        x_{t-1} = mean + sigma_t z,   z ~ N(0, I),   no noise at the last step (t = 0)

    ``variance`` picks sigma_t^2: ``"beta_tilde"`` (the posterior variance, eq. 7;
    optimal when x_0 is a point) or ``"beta"`` (beta_t; optimal for x_0 ~ N(0, I))
    -- Ho et al. sec. 3.2 report similar results for both.

    Shapes: ``shape`` = [B, *data]; returns x_0 [B, *data] on the device and dtype of
    ``x_T`` (else of the model's parameters, else CPU float32), and with
    ``return_trajectory=True`` also a :class:`Trajectory`.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    shape = _check_shape(shape, x_T)
    device, dtype = device_and_dtype(model, x_T)
    x = x_T if x_T is not None else randn(shape, generator=generator, device=device, dtype=dtype)
    xs, x0s, steps = [x.cpu()], [], []
    for step in tqdm(range(schedule.T - 1, -1, -1), desc="DDPM", disable=not progress, leave=False):
        t = torch.full((shape[0],), step, dtype=torch.long, device=device)
        x0_hat, _ = denoise(model, schedule, x, t, prediction, clip_x0)
        mean, posterior_var = q_posterior(schedule, x0_hat, x, t)
        if step > 0:
            var = posterior_var if variance == "beta_tilde" else gather(schedule.betas, t, x)
            x = mean + var.sqrt() * randn(shape, generator=generator, device=device, dtype=dtype)
        else:
            x = mean
        if return_trajectory:
            xs.append(x.cpu())
            x0s.append(x0_hat.cpu())
            steps.append(step)
    if not return_trajectory:
        return x
    return x, Trajectory(torch.tensor(steps, dtype=torch.long), torch.stack(xs), torch.stack(x0s))
