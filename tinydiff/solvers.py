"""Fast samplers: higher-order solvers of the probability-flow ODE, and the reverse-time SDE.

Every function here has the samplers' one interface -- ``model(x_t, t)`` with 0-based t, a
:class:`~tinydiff.schedules.Schedule`, ``shape`` [B, *data], ``x_T``, ``generator``,
``prediction``, ``clip_x0``, ``progress``, ``return_trajectory`` -- and is written as *only its
update rule*, handed to :func:`tinydiff.samplers.run` (which owns the loop, the progress bar and
the trajectory). :func:`tinydiff.samplers.denoise` is still the one place where a network output
becomes (x0_hat, eps_hat).

Notation, at a visited step t (the papers' alpha_t, sigma_t are our square roots):

    a_t = sqrt(alpha_bar_t),  s_t = sqrt(1 - alpha_bar_t),   x_t = a_t x_0 + s_t eps
    lambda_t = log(a_t / s_t)  (half the log-SNR),   sigma_bar_t = s_t / a_t,   x_bar = x_t / a_t

The probability-flow ODE (Song et al. 2021, eq. 13) of DDPM's variance-preserving process has
the same marginals as the SDE. In DDIM's variables it is simply (Song, Meng & Ermon 2021, eq. 14;
Karras et al. 2022's ODE with their sigma = sigma_bar)

    d x_bar / d sigma_bar = eps(x_t, t),

and DDIM with eta = 0 is its Euler step: x_bar' = x_bar + (sigma_bar' - sigma_bar) eps_hat.
The solvers below are the higher-order steps of the same ODE:

- :func:`heun_sample`        Heun's 2nd-order method in (sigma_bar, x_bar)  (Karras et al. 2022, Algorithm 1)
- :func:`dpm_solver_sample`  DPM-Solver++(2M): 2nd-order multistep on x0_hat in lambda  (Lu et al. 2022b, Algorithm 2)
- :func:`plms_sample`        pseudo linear multistep on eps_hat, DDIM as the transfer  (Liu et al. 2022)

and the stochastic ones, on the reverse-time SDE (Anderson 1982; Song et al. 2021, eq. 6):

- :func:`reverse_sde_sample`          its Euler-Maruyama discretisation
- :func:`predictor_corrector_sample`  the same predictor, then Langevin corrector steps at each level
  (Song et al. 2021, Algorithms 3 and 5)

Spacing. Every solver visits :func:`tinydiff.samplers.ddim_timesteps` (default ``leading``, as DDIM;
``trailing`` for DPM-Solver, see there).
``trailing`` and ``linspace`` start at T-1, and with the cosine schedule the clipped last beta makes
sigma_bar jump from 642 (T-2) to 20,291 (T-1): a first step from there down to sigma_bar ~ 6 (10 steps)
is fine for DDIM and DPM-Solver, whose step solves the ODE's linear part exactly, but ruins Heun and
PLMS, whose slope averages assume eps changes smoothly over the step (notebook 09 measures it).
``trailing`` also stops early: its last model call is at t = T/steps - 1 (sigma_bar ~ 0.09 for 20 cosine
steps), and the final x0_hat from there blurs structure finer than that.

Whatever the solver, the step after the last visited one lands on the clean sample
(alpha_bar = 1, as :func:`tinydiff.samplers.ddim_sample` does): it returns x0_hat of the last
visited step -- a first-order step, as in diffusers' ``lower_order_final``.
Each solver's short name, label and count of network calls live in :mod:`tinydiff.registry` (one entry each).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .langevin import langevin_step
from .samplers import Model, Trajectory, _check_prediction, ddim_step, ddim_timesteps, denoise, run, start
from .schedules import Schedule


def _signal_and_noise(schedule: Schedule, timesteps: list[int]) -> tuple[list[float], list[float]]:
    """a = sqrt(alpha_bar) and s = sqrt(1 - alpha_bar) at each visited step, then at the clean sample (a = 1, s = 0):
    float64 Python numbers, lists of len(timesteps) + 1."""
    ab = schedule.alpha_bars.tolist()
    a = [math.sqrt(ab[t]) for t in timesteps] + [1.0]
    s = [math.sqrt(1.0 - ab[t]) for t in timesteps] + [0.0]
    return a, s


def _check_steps(steps: int, fewest: int, name: str, why: str) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"steps must be an integer number of steps, got {type(steps).__name__}")
    if steps < fewest:
        raise ValueError(f"{name} needs steps >= {fewest}, got {steps}: {why}")


# --------------------------------------------------------------------------- ODE solvers


@torch.no_grad()
def heun_sample(
    model: Model,
    schedule: Schedule,
    shape,
    *,
    steps: int,
    spacing: str = "leading",
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    progress: bool = True,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """Heun's 2nd-order method for the probability-flow ODE (Karras et al. 2022, Algorithm 1, deterministic).

    From visited step t to the next one t' (d x_bar / d sigma_bar = eps, module docstring):

        d   = eps_hat(x_t, t)
        x'  = DDIM step with d                              Euler predictor: x_bar + (sigma_bar' - sigma_bar) d
        d'  = eps_hat(x', t')
        x_t' = DDIM step with (d + d') / 2                  trapezoidal corrector

    The last step, to the clean sample (sigma_bar = 0), stays an Euler step, as in Karras et al.
    So ``steps`` steps cost 2 steps - 1 network calls. Shapes as :func:`tinydiff.samplers.ddim_sample`.
    """
    _check_steps(steps, 1, "heun_sample", "it visits at least one step")
    _check_prediction(prediction)
    timesteps = ddim_timesteps(schedule.T, steps, spacing).tolist()
    x, _ = start(model, shape, x_T, generator)
    a, s = _signal_and_noise(schedule, timesteps)

    def update(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        x0_hat, d = denoise(model, schedule, x, timesteps[i], prediction, clip_x0)
        x_next = ddim_step(x0_hat, d, a[i + 1] ** 2)
        if i + 1 == len(timesteps):
            return x_next, x0_hat
        _, d_next = denoise(model, schedule, x_next, timesteps[i + 1], prediction, clip_x0)
        d_mean = 0.5 * (d + d_next)
        return ddim_step((x - s[i] * d_mean) / a[i], d_mean, a[i + 1] ** 2), x0_hat

    return run(update, x, timesteps, desc=f"Heun-{steps}", progress=progress, return_trajectory=return_trajectory)


@torch.no_grad()
def dpm_solver_sample(
    model: Model,
    schedule: Schedule,
    shape,
    *,
    steps: int,
    spacing: str = "trailing",
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    progress: bool = True,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2): a 2nd-order multistep solver on the data prediction.

    The ODE's exact solution from t to t' is x_t' = (s_t'/s_t) x_t + a_t' int_lambda^lambda' e^{-(lambda'-l)}
    x0(l) dl (Lu et al. 2022b: the linear part solved exactly, only the x0 integral approximated). With h = lambda_t' - lambda_t and the previous step's h_prev,
    r = h_prev / h, it approximates x0 over the step by a line through the last two predictions:

        D     = (1 + 1/(2r)) x0_hat(t) - (1/(2r)) x0_hat(t_prev)          (first step: D = x0_hat(t))
        x_t'  = (s_t'/s_t) x_t - a_t' (e^{-h} - 1) D

    With D = x0_hat this is exactly DDIM (eta = 0). One network call per step; the last step lands on the
    clean sample (h infinite) and returns x0_hat -- first order, like diffusers' ``lower_order_final``.
    Any prediction type works (``denoise`` converts it); Lu et al. recommend this solver for guided sampling.
    D's coefficient is not the exact integral of that line, (h - 1 + e^{-h}) / h_prev, but agrees with it
    to O(h^2), which is all second order needs.
    Default spacing ``trailing``: a grid uniform in t that ends at t = 0 (``leading``, ``linspace``) makes the
    last lambda-steps several times the one before (r ~ 0.2), and the line through the last two x0_hat is then
    a long extrapolation. Measured against the exact end point of the ODE for Gaussian data (cosine schedule,
    20 steps): 0.0038 from ``trailing``, 0.058 from ``leading`` (tests/test_solvers.py).
    Shapes as :func:`tinydiff.samplers.ddim_sample`. Raises ``ValueError`` for steps < 2 (nothing to do in 2M).
    """
    _check_steps(steps, 2, "dpm_solver_sample", "a 2-step multistep method needs a previous step; for one step use ddim_sample")
    _check_prediction(prediction)
    timesteps = ddim_timesteps(schedule.T, steps, spacing).tolist()
    x, _ = start(model, shape, x_T, generator)
    a, s = _signal_and_noise(schedule, timesteps)
    lam = [math.log(a[i] / s[i]) for i in range(len(timesteps))]
    previous: list[Tensor] = []  # x0_hat of the step before

    def update(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        x0_hat, _ = denoise(model, schedule, x, timesteps[i], prediction, clip_x0)
        if i + 1 == len(timesteps):
            return x0_hat, x0_hat
        h = lam[i + 1] - lam[i]
        D = x0_hat
        if previous:
            r = (lam[i] - lam[i - 1]) / h
            D = (1.0 + 0.5 / r) * x0_hat - (0.5 / r) * previous[0]
        previous[:] = [x0_hat]
        return (s[i + 1] / s[i]) * x - a[i + 1] * math.expm1(-h) * D, x0_hat

    return run(update, x, timesteps, desc=f"DPM-Solver++(2M)-{steps}", progress=progress,
               return_trajectory=return_trajectory)


_ADAMS_BASHFORTH = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
"""Adams-Bashforth weights of eps_t, eps_{t+1 step}, ... (newest first), orders 1-4 (as PLMS uses them, Liu et al. 2022)."""


@torch.no_grad()
def plms_sample(
    model: Model,
    schedule: Schedule,
    shape,
    *,
    steps: int,
    spacing: str = "leading",
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    progress: bool = True,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """PLMS, the pseudo linear multistep method of PNDM (Liu et al. 2022), as in Stable Diffusion's first sampler.

    The *transfer* part is the DDIM step with a given eps; the *gradient* part combines the eps_hat
    of the last four steps with the 4-step Adams-Bashforth weights:

        e' = (55 e_t - 59 e_{t+1} + 37 e_{t+2} - 9 e_{t+3}) / 24,        x_t' = DDIM step of x_t with e'

    (e_{t+k}: the eps_hat of k steps ago). The first step has no history: it takes a Heun step
    (one extra network call, e' = (e_t + eps_hat(x', t')) / 2, the "pseudo improved Euler" start of
    the PLMS code); steps 2 and 3 use the 2- and 3-step formulas. The last step returns x0_hat, as every
    solver here does (the PLMS code transfers with e' there too, an extrapolation that makes the whole
    method first order). So ``steps`` steps cost steps + 1 calls.
    Raises ``ValueError`` for steps < 4: the 4-step formula would never be reached (use ddim_sample).
    """
    _check_steps(steps, 4, "plms_sample", "its 4-step formula needs 3 earlier steps; for fewer steps use ddim_sample")
    _check_prediction(prediction)
    timesteps = ddim_timesteps(schedule.T, steps, spacing).tolist()
    x, _ = start(model, shape, x_T, generator)
    a, s = _signal_and_noise(schedule, timesteps)
    history: list[Tensor] = []  # eps_hat of the previous steps, newest first

    def transfer(x: Tensor, e: Tensor, i: int) -> Tensor:  # DDIM's step from visited step i to i + 1 with noise e
        return ddim_step((x - s[i] * e) / a[i], e, a[i + 1] ** 2)

    def update(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        x0_hat, e = denoise(model, schedule, x, timesteps[i], prediction, clip_x0)
        if i + 1 == len(timesteps):  # into the clean sample: x0_hat, as every solver here (not an extrapolated eps)
            return x0_hat, x0_hat
        if history:
            weights = _ADAMS_BASHFORTH[min(len(history) + 1, 4)]
            e_prime = sum(w * e_k for w, e_k in zip(weights, [e] + history))
        else:  # the first step: Heun's trapezoid (the next level is a visited step, since steps >= 4)
            _, e_next = denoise(model, schedule, transfer(x, e, i), timesteps[i + 1], prediction, clip_x0)
            e_prime = 0.5 * (e + e_next)
        history[:] = [e] + history[:2]
        return transfer(x, e_prime, i), x0_hat

    return run(update, x, timesteps, desc=f"PLMS-{steps}", progress=progress, return_trajectory=return_trajectory)


# --------------------------------------------------------------------------- the reverse-time SDE


def _jump_betas(schedule: Schedule, timesteps: list[int]) -> list[float]:
    """beta of each jump t -> t' between visited steps: 1 - alpha_bar_t / alpha_bar_t', the single DDPM step
    that moves alpha_bar as far (beta_t itself when t' = t - 1). len(timesteps) - 1 numbers."""
    ab = schedule.alpha_bars.tolist()
    return [1.0 - ab[t] / ab[t_next] for t, t_next in zip(timesteps[:-1], timesteps[1:])]


def _euler_maruyama(x: Tensor, eps_hat: Tensor, s_t: float, beta: float, z: Tensor) -> Tensor:
    """One Euler-Maruyama step of the reverse VP SDE, dx = [-beta/2 x - beta grad log p_t(x)] dt + sqrt(beta) dw
    run backwards (Song et al. 2021, eqs. 6 and 11), with beta dt -> ``beta`` of the jump and
    grad log p_t = -eps_hat / s_t:  x' = x + (beta/2) x - beta eps_hat / s_t + sqrt(beta) z."""
    return x + 0.5 * beta * x - (beta / s_t) * eps_hat + math.sqrt(beta) * z


@torch.no_grad()
def reverse_sde_sample(
    model: Model,
    schedule: Schedule,
    shape,
    *,
    steps: int,
    spacing: str = "leading",
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    progress: bool = True,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """Euler-Maruyama on the reverse-time SDE (Anderson 1982; Song et al. 2021, eq. 6) of DDPM's VP process.

    DDPM's forward chain is the VP SDE dx = -beta(t)/2 x dt + sqrt(beta(t)) dw, discretised
    (Song et al. 2021, eq. 11). Its time reversal, dx = [-beta/2 x - beta grad log p_t(x)] dt + sqrt(beta) dw_bar,
    has the same marginals; each step from visited step t to t' (:func:`_euler_maruyama`) uses the score
    -eps_hat / s_t and the beta of the jump. After the last visited step the sampler returns x0_hat
    (Tweedie's formula, Efron 2011: the final denoising step of Jolicoeur-Martineau et al. 2021). ``steps`` network calls.
    Shapes as :func:`tinydiff.samplers.ddim_sample`.
    """
    _check_steps(steps, 1, "reverse_sde_sample", "it visits at least one step")
    _check_prediction(prediction)
    timesteps = ddim_timesteps(schedule.T, steps, spacing).tolist()
    x, noise = start(model, shape, x_T, generator)
    _, s = _signal_and_noise(schedule, timesteps)
    betas = _jump_betas(schedule, timesteps)

    def update(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        x0_hat, eps_hat = denoise(model, schedule, x, timesteps[i], prediction, clip_x0)
        if i + 1 == len(timesteps):
            return x0_hat, x0_hat
        return _euler_maruyama(x, eps_hat, s[i], betas[i], noise()), x0_hat

    return run(update, x, timesteps, desc=f"reverse SDE-{steps}", progress=progress, return_trajectory=return_trajectory)


def corrector_step_size(score: Tensor, z: Tensor, snr: float, alpha: float) -> float:
    """The Langevin corrector's step size of Song et al. 2021, Algorithm 5 (VP SDE):

        2 eps = 4 alpha (snr ||z|| / ||score||)^2      (their x <- x + eps score + sqrt(2 eps) z is our
                                                        langevin_step with step size 2 eps)

    ``snr`` sets the ratio of the step's signal (eps ||score||) to its noise (sqrt(2 eps) ||z||);
    ``alpha`` = 1 - beta of the level. As in the authors' code, ||.|| is the per-sample norm over the
    data dimensions averaged over the batch: one step size for the batch (a per-sample ratio would
    explode for a point that sits where the score vanishes). Shapes: score, z [B, *data] -> a float.
    """
    score_norm = float(score.flatten(1).norm(dim=1).mean())
    noise_norm = float(z.flatten(1).norm(dim=1).mean())
    return 4.0 * alpha * (snr * noise_norm / max(score_norm, 1e-12)) ** 2


@torch.no_grad()
def predictor_corrector_sample(
    model: Model,
    schedule: Schedule,
    shape,
    *,
    steps: int,
    snr: float = 0.16,
    corrector_steps: int = 1,
    spacing: str = "leading",
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    progress: bool = True,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Trajectory]:
    """Predictor-corrector sampling (Song et al. 2021, Algorithm 3; corrector: Algorithm 5, VP SDE).

    After each Euler-Maruyama step of the reverse SDE (the predictor, :func:`reverse_sde_sample`)
    has moved x to level t', ``corrector_steps`` Langevin steps (notebook 02's
    :func:`tinydiff.langevin.langevin_step`) at that level pull x towards p_t' itself, with the
    score -eps_hat(x, t') / s_t' and the step size of :func:`corrector_step_size` (``snr``: Song et al.
    use 0.16 for CIFAR-10 with the VE SDE; 0.01-0.2 is the useful range). They correct the error the
    predictor made; at the clean end there is nothing left to correct.
    Network calls: (1 + corrector_steps) per step but the last, which is the predictor's x0_hat alone.
    """
    _check_steps(steps, 1, "predictor_corrector_sample", "it visits at least one step")
    _check_steps(corrector_steps, 0, "predictor_corrector_sample", "corrector_steps counts Langevin steps per level")
    if not (isinstance(snr, (int, float)) and snr > 0 and math.isfinite(snr)):
        raise ValueError(f"snr must be a positive number (the corrector's signal-to-noise ratio, e.g. 0.16), got {snr!r}")
    _check_prediction(prediction)
    timesteps = ddim_timesteps(schedule.T, steps, spacing).tolist()
    x, noise = start(model, shape, x_T, generator)
    _, s = _signal_and_noise(schedule, timesteps)
    betas = _jump_betas(schedule, timesteps)

    def update(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        x0_hat, eps_hat = denoise(model, schedule, x, timesteps[i], prediction, clip_x0)
        if i + 1 == len(timesteps):
            return x0_hat, x0_hat
        x = _euler_maruyama(x, eps_hat, s[i], betas[i], noise())
        for _ in range(corrector_steps):
            _, eps_next = denoise(model, schedule, x, timesteps[i + 1], prediction, clip_x0)
            score = -eps_next / s[i + 1]
            z = noise()
            x = langevin_step(x, score, corrector_step_size(score, z, snr, 1.0 - betas[i]), z)
        return x, x0_hat

    return run(update, x, timesteps, desc=f"PC-{steps}", progress=progress, return_trajectory=return_trajectory)
