"""The forward process and the closed forms built on it.

Notation (Ho et al. 2020): x_0 data, eps ~ N(0, I), 0-based timestep
index t (see :mod:`tinydiff.schedules`), alpha_bar_t = ``schedule.alpha_bars[t]``.

Every function takes a batch: ``x`` of shape [B, *data] (any data shape:
[B, 2] points or [B, C, H, W] images) and ``t`` a LongTensor [B] (or one int
for the whole batch). Results have the dtype and device of ``x``. With one int
``t`` (what every sampler step passes) the schedule's coefficients are plain
float64 numbers: no table is copied and nothing waits on the GPU.

Prediction targets. A network may predict epsilon (Ho et al.), the clean
sample x_0 (diffusers: ``"sample"``) or the velocity
v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022, sec. 4;
diffusers: ``"v_prediction"``). :func:`predict_x0` and :func:`predict_eps`
convert any of them, so samplers never change when the target does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .schedules import Schedule
from .tensors import check_timesteps, gather

PREDICTION_TYPES = ("epsilon", "x0", "v")
"""What a diffusion network can be trained to predict at a 0-based step t (diffusers: epsilon, sample, v_prediction)."""

FLOW_PREDICTION = "velocity"
"""What a flow-matching network predicts (:mod:`tinydiff.flow`): the velocity u = eps - x_0 at a continuous time in
[0, 1]. Not one of :data:`PREDICTION_TYPES`: those are converted at a schedule's integer steps, and a flow has no
schedule, so a sampler that takes ``prediction=`` refuses it and the flow samplers take the velocity directly."""


def _sqrt_alpha_bars(schedule: Schedule, t: Tensor | int, like: Tensor) -> tuple[Tensor | float, Tensor | float]:
    """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) from the float64 tables, as [B, 1, ..., 1] like ``like`` (or numbers for an int t)."""
    return gather(schedule.sqrt_alpha_bars, t, like), gather(schedule.sqrt_one_minus_alpha_bars, t, like)


def _check_batch(x: Tensor, name: str) -> None:
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension: shape [B, *data], got a scalar")


def _check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {list(a.shape)} and {list(b.shape)}")


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction!r}; choose one of {', '.join(PREDICTION_TYPES)}")


def q_step(schedule: Schedule, x_prev: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
    """One step of the forward Markov chain (Ho et al. 2020, eq. 2).

    x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps,   i.e.  q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I).

    With t = 0, ``x_prev`` is the clean data. Shapes: x_prev, noise [B, *data]; t [B].
    """
    _check_batch(x_prev, "x_prev")
    _check_same_shape(x_prev, noise, "x_prev", "noise")
    t = check_timesteps(t, x_prev.shape[0], schedule.T, x_prev.device)
    return gather(schedule.alphas, t, x_prev) ** 0.5 * x_prev + gather(schedule.betas, t, x_prev) ** 0.5 * noise


def q_sample(schedule: Schedule, x0: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
    """Sample x_t ~ q(x_t | x_0) in closed form (Ho et al. 2020, eq. 4).

    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

    Shapes: x0, noise [B, *data]; t [B] LongTensor of 0-based indices (or an int).
    Returns [B, *data] with x0's dtype and device.
    """
    _check_batch(x0, "x0")
    _check_same_shape(x0, noise, "x0", "noise")
    t = check_timesteps(t, x0.shape[0], schedule.T, x0.device)
    sqrt_ab, sqrt_1mab = _sqrt_alpha_bars(schedule, t, x0)
    return sqrt_ab * x0 + sqrt_1mab * noise


def q_posterior(schedule: Schedule, x0: Tensor, x_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
    """Mean and variance of the forward posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eqs. 6-7).

    mean     = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) * x_0
             + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * x_t
    variance = beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t

    With 0-based indices, "x_{t-1}" at t = 0 is the clean sample: alpha_bar_{-1} = 1,
    so the mean is x_0 and the variance 0.
    Shapes: x0, x_t [B, *data]; t [B]. Returns mean [B, *data] and variance [B, 1, ..., 1]. The coefficients are the schedule's float64 tables
    (``Schedule.posterior_coef_x0`` etc.), gathered afterwards: 1 - alpha_bar at t = 0 is ~1e-4
    and would lose digits if computed in the data's float32.
    """
    _check_batch(x_t, "x_t")
    _check_same_shape(x0, x_t, "x0", "x_t")
    t = check_timesteps(t, x_t.shape[0], schedule.T, x_t.device)
    coef_x0 = gather(schedule.posterior_coef_x0, t, x_t)
    coef_xt = gather(schedule.posterior_coef_xt, t, x_t)
    variance = gather(schedule.posterior_variances, t, x_t)
    if not isinstance(variance, Tensor):  # one int step: the same number for the whole batch
        variance = torch.full((x_t.shape[0],) + (1,) * (x_t.ndim - 1), variance, dtype=x_t.dtype, device=x_t.device)
    return coef_x0 * x0 + coef_xt * x_t, variance


def training_target(schedule: Schedule, x0: Tensor, noise: Tensor, t: Tensor | int, prediction: str = "epsilon") -> Tensor:
    """What a network trained with ``prediction`` should output for x_t = q_sample(x0, t, noise).

    epsilon -> noise;  x0 -> x0;  v -> sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022, sec. 4).
    Shapes: x0, noise [B, *data]; t [B].
    """
    _check_prediction(prediction)
    _check_same_shape(x0, noise, "x0", "noise")
    if prediction == "epsilon":
        return noise
    if prediction == "x0":
        return x0
    t = check_timesteps(t, x0.shape[0], schedule.T, x0.device)
    sqrt_ab, sqrt_1mab = _sqrt_alpha_bars(schedule, t, x0)
    return sqrt_ab * noise - sqrt_1mab * x0


def predict_x0(schedule: Schedule, x_t: Tensor, t: Tensor | int, output: Tensor, prediction: str = "epsilon") -> Tensor:
    """The clean sample implied by a network output (inverting eq. 4 of Ho et al.).

    epsilon: x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)   (Ho et al. 2020, eq. 15)
    x0:      the output itself
    v:       x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v         (Salimans & Ho 2022, sec. 4)
    Shapes: x_t, output [B, *data]; t [B].
    """
    _check_prediction(prediction)
    _check_same_shape(x_t, output, "x_t", "model output")
    if prediction == "x0":
        return output
    t = check_timesteps(t, x_t.shape[0], schedule.T, x_t.device)
    sqrt_ab, sqrt_1mab = _sqrt_alpha_bars(schedule, t, x_t)
    if prediction == "epsilon":
        return (x_t - sqrt_1mab * output) / sqrt_ab
    return sqrt_ab * x_t - sqrt_1mab * output


def predict_eps(schedule: Schedule, x_t: Tensor, t: Tensor | int, output: Tensor, prediction: str = "epsilon") -> Tensor:
    """The noise implied by a network output.

    epsilon: the output itself
    x0:      eps = (x_t - sqrt(alpha_bar) x0) / sqrt(1 - alpha_bar)
    v:       eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v          (Salimans & Ho 2022, sec. 4)
    Shapes: x_t, output [B, *data]; t [B].
    """
    _check_prediction(prediction)
    _check_same_shape(x_t, output, "x_t", "model output")
    if prediction == "epsilon":
        return output
    t = check_timesteps(t, x_t.shape[0], schedule.T, x_t.device)
    sqrt_ab, sqrt_1mab = _sqrt_alpha_bars(schedule, t, x_t)
    if prediction == "x0":
        return (x_t - sqrt_ab * output) / sqrt_1mab
    return sqrt_1mab * x_t + sqrt_ab * output


def score_from_eps(schedule: Schedule, eps: Tensor, t: Tensor | int) -> Tensor:
    """The score of the noised marginal from the optimal epsilon: grad log q_t(x_t) = -eps / sqrt(1 - alpha_bar_t).

    This is Tweedie's formula / denoising score matching (Vincent 2011) in DDPM notation
    (Song et al. 2021, eq. 7 with the VP perturbation kernel). Shapes: eps [B, *data]; t [B].
    """
    t = check_timesteps(t, eps.shape[0], schedule.T, eps.device)
    return -eps / gather(schedule.sqrt_one_minus_alpha_bars, t, eps)


def eps_from_score(schedule: Schedule, score: Tensor, t: Tensor | int) -> Tensor:
    """Inverse of :func:`score_from_eps`: eps = -sqrt(1 - alpha_bar_t) * score. Shapes: score [B, *data]; t [B]."""
    t = check_timesteps(t, score.shape[0], schedule.T, score.device)
    return -gather(schedule.sqrt_one_minus_alpha_bars, t, score) * score
