"""Langevin dynamics: sampling from a density when all you know is its score.

The score of a density p is s(x) = grad_x log p(x). It does not need p's
normalising constant, and it is all that Langevin dynamics needs to sample
from p (Roberts & Tweedie 1996; Welling & Teh 2011, eq. 3):

    x <- x + (eps / 2) * s(x) + sqrt(eps) * z,      z ~ N(0, I).

As eps -> 0 and the number of steps -> infinity the iterates follow p. With
well-separated modes, plain Langevin never crosses between them, so the mode
*weights* come out wrong. Annealed Langevin (Song & Ermon 2019, Algorithm 1)
fixes this by sampling a sequence of noised densities p_sigma (p blurred by
N(0, sigma^2 I)) from a large sigma_1 down to a small sigma_L, with step size

    alpha_i = eps * sigma_i^2 / sigma_L^2.

Noise levels and DDPM. x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
divided by sqrt(alpha_bar_t) is x_0 + sigma_t eps with
sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) (``Schedule.sigmas``). So every
DDPM step t *is* a Song-Ermon noise level, and an epsilon-model gives the score
of p_sigma as  -eps_theta(sqrt(alpha_bar_t) x, t) / sigma_t  (:func:`eps_model_score`).

Score functions here: ``score_fn(x) -> [B, *data]`` for :func:`langevin` and
``score_fn(x, sigma) -> [B, *data]`` (sigma a Python float) for
:func:`annealed_langevin`. Noise is drawn through ``generator`` on x's device
and dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .data.toy import GaussianMixture
from .samplers import Trajectory, run
from .schedules import Schedule
from .tensors import as_timesteps, randn

ScoreFn = Callable[[Tensor], Tensor]
NoisyScoreFn = Callable[[Tensor, float], Tensor]


def _check_positive(value: float, name: str, hint: str) -> float:
    if isinstance(value, Tensor):
        value = float(value)
    if not (isinstance(value, (int, float)) and value > 0 and value < float("inf")):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}; {hint}")
    return float(value)


def _check_steps(n: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim < 2:
        got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x_init must be a batch of points, shape [B, *data] (e.g. [B, 2]), got {got}")


def _checked_score(score: Tensor, x: Tensor) -> Tensor:
    if not isinstance(score, Tensor) or score.shape != x.shape:
        got = list(score.shape) if isinstance(score, Tensor) else type(score).__name__
        raise ValueError(
            f"the score function must return a tensor shaped like its input x {list(x.shape)}, got {got}; "
            "a score is a gradient with respect to x, one vector per point (did you sum or average over the batch?)"
        )
    return score


def check_sigmas(sigmas: Sequence[float] | Tensor) -> Tensor:
    """Validate noise levels sigma_1 > sigma_2 > ... > sigma_L > 0 and return them as a float64 CPU tensor [L]."""
    s = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    if s.ndim != 1 or s.numel() < 1:
        raise ValueError(f"sigmas must be a non-empty 1-D sequence of noise levels, got shape {list(s.shape)}")
    if not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"every noise level must be positive and finite, got min {float(s.min()):.3g}; "
                         "sigma = 0 means no noise -- the last level should be small but positive")
    if s.numel() > 1 and not (s[1:] < s[:-1]).all():
        raise ValueError("sigmas must be strictly decreasing (anneal from the largest noise level to the smallest); "
                         "if yours increase, pass sigmas.flip(0)")
    return s


def langevin_step(x: Tensor, score: Tensor, step_size: float | Tensor, z: Tensor) -> Tensor:
    """One step of unadjusted Langevin dynamics (Roberts & Tweedie 1996; Welling & Teh 2011, eq. 3):

        x <- x + (step_size / 2) * score + sqrt(step_size) * z,     z ~ N(0, I).

    Shapes: x, score, z [B, *data]; ``step_size`` a float or a tensor that broadcasts
    against x (e.g. [B, 1, ..., 1], one step size per sample) -> [B, *data].
    """
    return x + 0.5 * step_size * score + step_size**0.5 * z


@torch.no_grad()
def langevin(
    score_fn: ScoreFn,
    x_init: Tensor,
    *,
    step_size: float,
    steps: int,
    generator: torch.Generator | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """Unadjusted Langevin dynamics (Roberts & Tweedie 1996; Welling & Teh 2011, eq. 3).

    x <- x + (step_size / 2) * score_fn(x) + sqrt(step_size) * z,   repeated ``steps`` times.

    Shapes: x_init [B, *data]; ``score_fn(x)`` must return [B, *data]. Returns the
    final x [B, *data] (x_init's dtype and device) and, with ``return_trajectory=True``, also a
    :class:`~tinydiff.samplers.Trajectory`: ``xs`` every state [steps + 1, B, *data] on the CPU (x_init
    first), ``timesteps`` the step numbers 0..steps-1, ``x0_preds`` None (nothing here predicts a clean sample).
    """
    _check_x(x_init)
    eps = _check_positive(step_size, "step_size", "it is the eps of x <- x + (eps/2) score + sqrt(eps) z")
    steps = _check_steps(steps, "steps")

    def update(i: int, x: Tensor) -> tuple[Tensor, None]:
        z = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return langevin_step(x, _checked_score(score_fn(x), x), eps, z), None

    return run(update, x_init, list(range(steps)), desc="Langevin", progress=progress,
               return_trajectory=return_trajectory)


@torch.no_grad()
def annealed_langevin(
    score_fn: NoisyScoreFn,
    x_init: Tensor,
    sigmas: Sequence[float] | Tensor,
    *,
    step_size: float,
    steps_per_level: int,
    final_denoise: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = False,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    for sigma_i in sigmas (decreasing):
        alpha_i = step_size * sigma_i^2 / sigma_L^2
        repeat steps_per_level times:  x <- x + (alpha_i / 2) score_fn(x, sigma_i) + sqrt(alpha_i) z

    ``score_fn(x, sigma)`` is the score of the data blurred by N(0, sigma^2 I), with
    sigma a Python float. With ``final_denoise=True`` the samples, which follow the data
    blurred by sigma_L, are denoised once by Tweedie's formula, x <- x + sigma_L^2 score_fn(x, sigma_L)
    (Tweedie's formula, Efron 2011; the final denoising step
    of Jolicoeur-Martineau et al. 2021): the posterior mean E[x_0 | x].
    Shapes: x_init [B, *data]; returns x [B, *data] and, with ``return_trajectory=True``, a
    :class:`~tinydiff.samplers.Trajectory`: ``xs`` every state [S + 1, B, *data] on the CPU with
    S = L * steps_per_level (+1 if denoised), ``timesteps`` [S] the noise level sigma of each step, and
    ``x0_preds`` [S, B, *data] Tweedie's estimate x + sigma^2 score_fn(x, sigma) at each step.
    """
    _check_x(x_init)
    s = check_sigmas(sigmas)
    eps = _check_positive(step_size, "step_size", "it is the eps of alpha_i = eps * sigma_i^2 / sigma_L^2")
    steps_per_level = _check_steps(steps_per_level, "steps_per_level")
    sigma_min = float(s[-1])
    sigma_of_step = [sigma for sigma in s.tolist() for _ in range(steps_per_level)] + ([sigma_min] if final_denoise else [])
    last_langevin_step = len(s) * steps_per_level - 1

    def update(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        sigma = sigma_of_step[i]
        score = _checked_score(score_fn(x, sigma), x)
        x0_hat = x + sigma**2 * score
        if i > last_langevin_step:  # the final denoising step
            return x0_hat, x0_hat
        alpha = eps * sigma**2 / sigma_min**2
        z = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return langevin_step(x, score, alpha, z), x0_hat

    return run(update, x_init, sigma_of_step, desc="annealed Langevin", progress=progress,
               return_trajectory=return_trajectory)


def mixture_score(mixture: GaussianMixture) -> NoisyScoreFn:
    """The exact score of a Gaussian mixture blurred by N(0, sigma^2 I): score_fn(x [B, D], sigma) -> [B, D].

    Uses ``mixture.perturbed(sigma)`` (each covariance grows by sigma^2 I); the
    blurred mixtures are cached per sigma, so annealing over a few levels is cheap.
    """
    cache: dict[float, GaussianMixture] = {}

    def score_fn(x: Tensor, sigma: float) -> Tensor:
        sigma = float(sigma)
        if sigma not in cache:
            cache[sigma] = mixture.perturbed(sigma)
        return cache[sigma].score(x)

    return score_fn


def noise_levels(schedule: Schedule, timesteps: Sequence[int] | Tensor) -> Tensor:
    """The Song-Ermon noise levels of DDPM steps: sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), returned largest first.

    ``timesteps`` are 0-based indices (any order); returns float64 [L], strictly decreasing,
    ready for :func:`annealed_langevin`.
    """
    t = torch.as_tensor(timesteps, dtype=torch.long).flatten()
    t = as_timesteps(t, t.numel(), schedule.T, torch.device("cpu"))
    return check_sigmas(schedule.sigmas[t.unique().flip(0)])


def eps_model_score(model: Callable[[Tensor, Tensor], Tensor], schedule: Schedule, rtol: float = 1e-4) -> NoisyScoreFn:
    """Turn an epsilon-prediction model into a score of the blurred data, score_fn(x [B, *data], sigma) -> [B, *data].

    If sigma = sigma_t (``schedule.sigmas[t]``), then sqrt(alpha_bar_t) x is distributed like x_t,
    and by the chain rule and grad log q_t = -eps / sqrt(1 - alpha_bar_t) (Vincent 2011; Song et al. 2021, eq. 7):

        grad_x log p_sigma(x) = sqrt(alpha_bar_t) grad log q_t(sqrt(alpha_bar_t) x) = -eps_theta(sqrt(alpha_bar_t) x, t) / sigma_t.

    sigma must be one of ``schedule.sigmas`` (up to ``rtol``); use :func:`noise_levels` to pick them.
    """
    sigmas = schedule.sigmas
    log_sigmas = sigmas.log()

    def score_fn(x: Tensor, sigma: float) -> Tensor:
        t = int((log_sigmas - torch.log(torch.tensor(float(sigma), dtype=torch.float64))).abs().argmin())
        if abs(float(sigmas[t]) / float(sigma) - 1.0) > rtol:
            raise ValueError(
                f"sigma={float(sigma):.4g} is not a noise level of this schedule (nearest: sigma_{t} = {float(sigmas[t]):.4g}); "
                "pick the levels with noise_levels(schedule, timesteps)"
            )
        ab = float(schedule.alpha_bars[t])
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps = model(ab**0.5 * x, t_batch)
        return -eps / float(sigmas[t])

    return score_fn
