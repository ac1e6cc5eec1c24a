"""Samplers: turn a noise-prediction model into samples (DDPM and DDIM), and back (DDIM inversion).

The model convention, shared by every sampler here:

    model(x_t, t) -> output      x_t [B, *data], t LongTensor [B] of 0-based indices (see tinydiff.schedules)

where ``output`` is the network's prediction of epsilon (default), x_0 or v
(``prediction=``). :func:`denoise` turns any of these into the pair
(x0_hat, eps_hat) -- the one place that conversion happens -- so the samplers
below never change when the prediction target does. A class-conditional
network ``net(x_t, t, y)`` is passed as ``tinydiff.guidance.conditional(net, y)``
(or, guided, ``classifier_free(net, y, scale)``): an ``nn.Module``, so the samplers see
which device it is on (a ``lambda`` has no parameters to tell them).

Read in this order:

1. :func:`denoise`                 model output -> (x0_hat, eps_hat)
2. :func:`ddpm_sample`             Ho et al. 2020, all T steps, stochastic
3. :func:`ddim_timesteps`          which steps a short sampler visits (diffusers' spacings)
4. :func:`ddim_sigma`, :func:`ddim_step`   Song, Meng & Ermon 2021, eqs. 16 and 12
5. :func:`ddim_sample`, :func:`ddim_invert`   the loops over those steps, down and up
6. :func:`slerp`                   interpolating between two starting noises

(A sampler named by a string, ``ddpm`` or ``ddim:50``, as the scripts take it: :mod:`tinydiff.registry`.)

Noise is drawn through ``generator`` (a ``torch.Generator``): the same seed
gives the same samples, on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .diffusion import PREDICTION_TYPES, predict_eps, predict_x0, q_posterior
from .schedules import Schedule
from .tensors import check_timesteps, device_and_dtype, randn

Model = Callable[[Tensor, Tensor], Tensor]
VARIANCES = ("beta_tilde", "beta")
SPACINGS = ("leading", "trailing", "linspace")
"""Timestep spacings of a shortened sampler, named as in diffusers' ``timestep_spacing``."""


@dataclass
class Trajectory:
    """The path a sampler took, kept on the CPU.

    ``timesteps`` [S] the 0-based steps visited, in order (a flow's times, a Langevin run's step numbers or noise
    levels); ``xs`` [S+1, B, *data] the states x_T, ..., x_0 (``xs[i]`` is the input at ``timesteps[i]``,
    ``xs[-1]`` the final sample); ``x0_preds`` [S, B, *data] the model's predicted clean sample at each
    visited step, or None where a sampler predicts none (plain Langevin dynamics).
    """

    timesteps: Tensor
    xs: Tensor
    x0_preds: Tensor | None


def denoise(
    model: Model,
    schedule: Schedule,
    x_t: Tensor,
    t: Tensor | int,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the model once and return (x0_hat, eps_hat), both [B, *data].

    ``t`` is a LongTensor [B] or, as every sampler passes it, one int step for the whole
    batch: the model then gets ``t`` as a [B] tensor, and the conversions below use the
    schedule's coefficients as plain numbers.

    The conversions are :func:`tinydiff.diffusion.predict_x0` / ``predict_eps``.
    With ``clip_x0 = c``, x0_hat is clamped to [-c, c] (images live in [-1, 1]) and
    eps_hat recomputed from the clamped x0_hat so the two stay consistent
    (as in Ho et al.'s code and diffusers' ``clip_sample``). Either way
    x_t = sqrt(alpha_bar_t) x0_hat + sqrt(1 - alpha_bar_t) eps_hat holds.
    """
    t = check_timesteps(t, x_t.shape[0], schedule.T, x_t.device)
    t_batch = t if isinstance(t, Tensor) else torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
    output = model(x_t, t_batch)
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


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction!r}; choose one of {', '.join(PREDICTION_TYPES)}")


# --------------------------------------------------------------------------- the loop every sampler shares

Update = Callable[[int, Tensor], tuple[Tensor, Tensor | None]]
"""A sampler's update rule: ``update(i, x)`` takes the state at the i-th visited step and
returns (next state, the x0_hat it predicted on the way, or None if it predicts none)."""


def start(model: Model, shape, x_T: Tensor | None, generator: torch.Generator | None) -> tuple[Tensor, Callable[[], Tensor]]:
    """What every sampler does first: check ``shape`` [B, *data], pick the device and dtype
    (``x_T``'s, else the model's parameters', else CPU float32), and draw x_T ~ N(0, I) unless given.

    Returns (x_T, noise), where ``noise()`` draws a fresh N(0, I) tensor like x_T through ``generator``.
    """
    shape = _check_shape(shape, x_T)
    device, dtype = device_and_dtype(model, x_T)

    def noise() -> Tensor:
        return randn(shape, generator=generator, device=device, dtype=dtype)

    return (x_T if x_T is not None else noise()), noise


def run(update: Update, x: Tensor, timesteps: list[int] | list[float], *, desc: str, progress: bool = True,
        return_trajectory: bool = False) -> Tensor | tuple[Tensor, Trajectory]:
    """The loop every sampler shares: ``x = update(i, x)`` once per visited step, in order.

    It owns what is the same for all samplers -- the progress bar and, with
    ``return_trajectory=True``, a :class:`Trajectory` of the states and of the x0_hat
    predicted at each step -- so that a sampler is only its update rule. The states stay on
    x's device during the run and are copied to the CPU once, at the end (a copy per step
    would make a GPU wait for every step).
    ``timesteps`` [S] the 0-based steps visited (or, for the flow samplers of :mod:`tinydiff.flow`, the
    continuous times), recorded as ``Trajectory.timesteps``.
    """
    xs, x0_preds = [x], []
    for i in tqdm(range(len(timesteps)), desc=desc, disable=not progress, leave=False):
        x, x0_hat = update(i, x)
        if return_trajectory:
            xs.append(x)
            x0_preds.append(x0_hat)
    if not return_trajectory:
        return x
    predicted = None if any(p is None for p in x0_preds) else torch.stack(x0_preds).cpu()
    return x, Trajectory(torch.tensor(timesteps), torch.stack(xs).cpu(), predicted)  # ints: a LongTensor


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
    _check_prediction(prediction)
    x, noise = start(model, shape, x_T, generator)
    variances = schedule.posterior_variances if variance == "beta_tilde" else schedule.betas
    timesteps = list(range(schedule.T - 1, -1, -1))

    def update(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        t = timesteps[i]
        x0_hat, _ = denoise(model, schedule, x, t, prediction, clip_x0)
        mean, _ = q_posterior(schedule, x0_hat, x, t)
        if t == 0:
            return mean, x0_hat
        return mean + float(variances[t]) ** 0.5 * noise(), x0_hat

    return run(update, x, timesteps, desc="DDPM", progress=progress, return_trajectory=return_trajectory)


# --------------------------------------------------------------------------- DDIM


def ddim_timesteps(T: int, steps: int, spacing: str = "leading") -> Tensor:
    """The 0-based timesteps a ``steps``-step sampler visits, in sampling order (descending), LongTensor [steps].

    The three spacings of Lin et al. 2024 (Table 2), under the names diffusers' ``timestep_spacing``
    uses (README, "tinydiff and diffusers"). With T = 1000 and 10 steps:

        leading   k * (T // steps),            k = steps-1 .. 0   ->  900, 800, ..., 100, 0
        trailing  round(T - k * T / steps) - 1, k = 0 .. steps-1   ->  999, 899, ..., 199, 99
        linspace  round(k * (T - 1) / (steps - 1)), k = steps-1 .. 0 -> 999, 888, ..., 111, 0

    ``leading`` is the DDIM paper's "linear" subsequence (Song, Meng & Ermon 2021, appendix D.2);
    it never visits T-1, so the sampler starts from a slightly less noisy step than
    x_T ~ N(0, I) assumes. ``trailing`` starts at T-1 but its last model call is at
    T/steps - 1, not 0. Rounding is half to even (numpy's). Exactly ``steps`` values.

    Whatever the spacing, the step after the last one is the clean sample (alpha_bar = 1):
    see :func:`ddim_sample`.
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive integer number of training steps, got {T!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"steps must be an integer number of sampling steps, got {type(steps).__name__}")
    if not 1 <= steps <= T:
        raise ValueError(f"steps={steps} is out of range: a sampler can visit between 1 and T = {T} steps")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)} (diffusers' timestep_spacing)")
    k = np.arange(steps)
    if spacing == "leading":
        t = (k * (T // steps))[::-1]
    elif spacing == "trailing":
        t = np.round(T - k * (T / steps)) - 1
    else:
        t = np.linspace(0, T - 1, steps).round()[::-1]
    return torch.from_numpy(t.astype(np.int64).copy())


def ddim_sigma(alpha_bar_t: Tensor | float, alpha_bar_prev: Tensor | float, eta: float) -> Tensor | float:
    """The DDIM noise level sigma_t(eta) (Song, Meng & Ermon 2021, eq. 16).

    sigma_t(eta) = eta * sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) * sqrt(1 - alpha_bar_t / alpha_bar_prev)

    where "prev" is the step the sampler jumps to (the next one in its subsequence).
    With eta = 1 and prev = t-1 this is sqrt(beta_tilde_t), DDPM's posterior standard
    deviation (Ho et al. 2020, eq. 7); eta = 0 makes the sampler deterministic. At the
    last step alpha_bar_prev = 1 and sigma = 0. Works on floats and on tensors (elementwise).
    """
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)) ** 0.5


def ddim_step(x0_hat: Tensor, eps_hat: Tensor, alpha_bar_prev: float, sigma: float = 0.0, noise: Tensor | None = None) -> Tensor:
    """One DDIM update (Song, Meng & Ermon 2021, eq. 12), from (x0_hat, eps_hat) predicted at step t:

    x_prev = sqrt(alpha_bar_prev) x0_hat                         "predicted x_0"
           + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat          "direction pointing to x_t"
           + sigma z                                             "random noise", z ~ N(0, I)

    ``noise`` is z (needed when sigma > 0). With sigma = 0 the same formula, read with
    alpha_bar_prev > alpha_bar_t, also runs the ODE *up* (see :func:`ddim_invert`).
    Shapes: x0_hat, eps_hat, noise [B, *data] -> [B, *data].
    """
    direction = 1.0 - alpha_bar_prev - sigma**2
    if direction < -1e-12:
        raise ValueError(
            f"sigma^2 = {sigma**2:.4g} exceeds 1 - alpha_bar_prev = {1 - alpha_bar_prev:.4g}: eta is too large for this "
            "step; use eta <= 1 (eta = 1 is DDPM's variance)"
        )
    x = math.sqrt(alpha_bar_prev) * x0_hat + math.sqrt(max(direction, 0.0)) * eps_hat
    if sigma > 0:
        if noise is None:
            raise ValueError("sigma > 0 needs noise: pass noise=z with z ~ N(0, I) shaped like x0_hat")
        x = x + sigma * noise
    return x


def _check_eta(eta: float) -> float:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0 (0 = deterministic DDIM, 1 = DDPM's variance), got {eta!r}")
    return float(eta)


@torch.no_grad()
def ddim_sample(
    model: Model,
    schedule: Schedule,
    shape,
    *,
    steps: int,
    eta: float = 0.0,
    spacing: str = "leading",
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    progress: bool = True,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """DDIM sampling (Song, Meng & Ermon 2021, eq. 12) over ``steps`` of the T training steps.

    The same trained model as DDPM: DDIM's non-Markovian forward processes share
    DDPM's marginals q(x_t | x_0), which is all the training objective sees (Song, Meng &
    Ermon 2021, sec. 4.1). For the visited steps tau_1 > ... > tau_S (:func:`ddim_timesteps`):

        x0_hat, eps_hat = denoise(model, x_tau_i, tau_i)
        x_tau_{i+1} = ddim_step(x0_hat, eps_hat, alpha_bar_{tau_{i+1}}, sigma_{tau_i}(eta), z)

    After the last visited step the sampler jumps to the clean sample: alpha_bar_prev = 1,
    so the final update returns x0_hat itself (and sigma = 0: no noise is added). Stopping
    at alpha_bar_0 < 1 instead leaves a trace of noise in the output.

    ``eta = 0`` (default): deterministic -- the same x_T gives bit-identical samples.
    ``eta = 1`` with ``steps = T``: DDPM's ancestral sampler with variance beta_tilde.
    Noise is drawn only when eta > 0, at every step but the last.

    Shapes: ``shape`` = [B, *data]; returns x_0 [B, *data] on the device and dtype of
    ``x_T`` (else of the model's parameters, else CPU float32), and with
    ``return_trajectory=True`` also a :class:`Trajectory`.
    Raises ``ValueError`` for steps outside 1..T, an unknown spacing or eta < 0.
    """
    timesteps = ddim_timesteps(schedule.T, steps, spacing).tolist()
    eta = _check_eta(eta)
    _check_prediction(prediction)
    x, noise = start(model, shape, x_T, generator)
    update = ddim_update(model, schedule, timesteps, eta, noise, prediction, clip_x0)
    return run(update, x, timesteps, desc=f"DDIM-{steps}", progress=progress, return_trajectory=return_trajectory)


def ddim_update(model: Model, schedule: Schedule, timesteps: list[int], eta: float, noise: Callable[[], Tensor],
                prediction: str = "epsilon", clip_x0: float | None = None) -> Update:
    """DDIM's update rule over the visited ``timesteps`` (descending 0-based steps), for :func:`run`.

    ``update(i, x)`` takes x at ``timesteps[i]`` to the next visited step -- or, after the last
    one, to the clean sample (alpha_bar = 1) -- by :func:`ddim_step` with sigma(eta) of eq. 16,
    drawing ``noise()`` only when sigma > 0. :func:`ddim_sample` is this rule run once down the
    grid; :mod:`tinydiff.editing` runs it from a partly noised input (SDEdit) and between
    resampling jumps (RePaint).
    """
    alpha_bars = schedule.alpha_bars.tolist()  # float64 Python numbers: exact, and on no device
    levels = [alpha_bars[t] for t in timesteps] + [1.0]  # alpha_bar at each visited step, then the clean sample

    def update(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        x0_hat, eps_hat = denoise(model, schedule, x, timesteps[i], prediction, clip_x0)
        sigma = ddim_sigma(levels[i], levels[i + 1], eta)
        return ddim_step(x0_hat, eps_hat, levels[i + 1], sigma, noise() if sigma > 0 else None), x0_hat

    return update


@torch.no_grad()
def ddim_invert(
    model: Model,
    schedule: Schedule,
    x0: Tensor,
    *,
    steps: int,
    spacing: str = "leading",
    prediction: str = "epsilon",
    progress: bool = True,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """DDIM inversion: run the deterministic sampler (eta = 0) backwards, from data x_0 up to a latent x_T.

    Eq. 12 with eta = 0 is an Euler step of the probability-flow ODE (Song, Meng & Ermon 2021,
    sec. 4.3, eq. 14), so it can be run in either direction. Going up from level r to the
    next visited step s (the visited steps of :func:`ddim_sample`, in increasing order;
    the start x_0 has alpha_bar_r = 1):

        eps_hat = epsilon predicted by the model at (x_r, r)
        x0_r    = (x_r - sqrt(1 - alpha_bar_r) eps_hat) / sqrt(alpha_bar_r)
        x_s     = sqrt(alpha_bar_s) x0_r + sqrt(1 - alpha_bar_s) eps_hat        (= ddim_step, going up)

    The clean start has no timestep of its own, so the first call is at (x_0, s).
    This is the explicit Euler step (Dhariwal & Nichol 2021, appendix F); evaluating the
    model at (x_r, s) instead is equally first order. Either way, sampling back down evaluates eps at x_s, not x_r, so the round
    trip ``ddim_sample(x_T=ddim_invert(x0))`` returns x0 only up to an error that
    shrinks with the step size. Use the same ``steps`` and ``spacing`` both ways, and
    prefer spacings that stop short of T-1 (``leading``): where alpha_bar_s is tiny
    (cosine: 2e-9 at T-1) the way back divides by sqrt(alpha_bar_s) and amplifies the error.

    Shapes: x0 [B, *data] -> x_T [B, *data] (x0's device and dtype); with
    ``return_trajectory=True`` also a :class:`Trajectory` going up (``xs[0]`` = x0,
    ``xs[-1]`` = x_T; ``x0_preds`` holds each x0_r).
    """
    timesteps = ddim_timesteps(schedule.T, steps, spacing).flip(0).tolist()
    _check_prediction(prediction)
    if not isinstance(x0, Tensor) or x0.ndim < 1:
        raise ValueError("x0 must be a tensor of shape [B, *data]")
    alpha_bars = schedule.alpha_bars.tolist()

    def update(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        step = timesteps[i]
        if i == 0:  # the clean start has no timestep of its own: eps from (x_0, s), and x_0 is x itself
            _, eps_hat = denoise(model, schedule, x, step, prediction)
            x0_r = x
        else:
            x0_r, eps_hat = denoise(model, schedule, x, timesteps[i - 1], prediction)
        return ddim_step(x0_r, eps_hat, alpha_bars[step]), x0_r

    return run(update, x0, timesteps, desc=f"DDIM inversion-{steps}", progress=progress,
               return_trajectory=return_trajectory)


def slerp(z0: Tensor, z1: Tensor, w: float | Tensor) -> Tensor:
    """Spherical interpolation between two noises, per sample (Shoemake 1985; as used in Song, Meng & Ermon 2021, sec. 5.3).

    z_w = sin((1 - w) theta) / sin(theta) * z0 + sin(w theta) / sin(theta) * z1,
    theta = angle between z0 and z1 (each sample flattened to a vector).

    Why not a straight line: a Gaussian x_T in d dimensions lies close to the sphere
    of radius sqrt(d), and the midpoint of a straight line between two such points
    has norm about sqrt(d / 2) -- a noise the model never saw. Slerp stays at the
    right norm. Falls back to the straight line when z0 and z1 are (nearly) parallel.

    Shapes: z0, z1 [B, *data]; w a float or a tensor [B] in [0, 1] -> [B, *data].
    """
    if z0.shape != z1.shape or z0.ndim < 1:
        raise ValueError(f"z0 and z1 must have the same shape [B, *data], got {list(z0.shape)} and {list(z1.shape)}")
    w = torch.as_tensor(w, dtype=z0.dtype, device=z0.device)
    if w.ndim > 1 or (w.ndim == 1 and w.shape[0] != z0.shape[0]):
        raise ValueError(f"w must be a float or a tensor of shape [B] = [{z0.shape[0]}], got shape {list(w.shape)}")
    w = w.reshape(-1, *([1] * (z0.ndim - 1)))
    a, b = z0.flatten(1), z1.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1.0, 1.0)).reshape(-1, *([1] * (z0.ndim - 1)))
    sin = torch.sin(theta)
    parallel = sin.abs() < 1e-6
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    c0 = torch.where(parallel, 1.0 - w, torch.sin((1.0 - w) * theta) / safe_sin)
    c1 = torch.where(parallel, w, torch.sin(w * theta) / safe_sin)
    return c0 * z0 + c1 * z1
