"""Checks for the notebooks' "implement it" exercises: your function against the library's, on random inputs.

Each ``check_*`` calls the learner's function on a few random inputs (float64, a batch of
different timesteps, fixed seed), compares the result with ``tinydiff``'s own implementation
and returns a :class:`Verdict` that prints as one line:

    correct                       the same numbers, to float64 round-off
    not done yet                  the function still raises NotImplementedError (the stub)
    wrong shape / wrong type      what came back, and what was expected
    looks like <a known mistake>  the output equals a common wrong formula (named)
    values differ                 the largest error and where

Every check is tested against the mistakes it names (tests/test_checks.py), so a "correct"
here means something. The library functions are the reference: read them with ``??`` after
you have tried.

Read in this order: :class:`Verdict`, :func:`compare` (the one place the comparison happens),
then one ``check_*`` per exercise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from . import schedules
from .data.toy import GaussianMixture
from .diffusion import eps_from_score, predict_eps, predict_x0, q_posterior, q_sample, q_step, score_from_eps, training_target
from .distill import student_target
from .editing import renoise
from .flow import velocity_from_x0
from .guidance import classifier_guided_epsilon, guided_epsilon
from .langevin import langevin_step
from .latent import latent_scale_factor
from .likelihood import divergence
from .samplers import ddim_sigma, ddim_step, slerp
from .schedules import Schedule

ATOL = 1e-8
"""How close "correct" is: float64 inputs of size ~1, so anything further is a different formula."""


@dataclass
class Verdict:
    """The result of a check: ``ok`` and a one-line ``message`` (what a learner reads)."""

    name: str
    ok: bool
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"

    def __repr__(self) -> str:  # a notebook shows the verdict, not a dataclass
        return str(self)

    def __bool__(self) -> bool:
        return self.ok


def compare(name: str, learner: Callable[[], object], expected: Tensor, mistakes: dict[str, Tensor] | None = None,
            also_correct: dict[str, Tensor] | None = None, atol: float = ATOL) -> Verdict:
    """Run ``learner()`` once and grade its result against ``expected`` [any shape].

    ``also_correct`` names other right answers (e.g. another valid variance); ``mistakes`` maps a description of a common error to the output that error produces on the
    same inputs; an answer that matches one of them is named ("looks like ..."). A learner's
    ``NotImplementedError`` is "not done yet"; any other exception is reported with its message.
    """
    try:
        out = learner()
    except NotImplementedError:
        return Verdict(name, False, "not done yet (the function still raises NotImplementedError)")
    except Exception as err:  # the learner's code failed: say how, do not crash the notebook
        return Verdict(name, False, f"raised {type(err).__name__}: {err}")
    if not isinstance(out, Tensor):
        return Verdict(name, False, f"wrong type: returned {type(out).__name__}, expected a tensor of shape {list(expected.shape)}")
    if out.shape != expected.shape:
        hint = ""
        if out.numel() > expected.numel():
            hint = " -- a coefficient of shape [B] multiplied into [B, D] broadcasts wrongly: reshape it to [B, 1]"
        return Verdict(name, False, f"wrong shape: {list(out.shape)}, expected {list(expected.shape)}{hint}")
    out = out.detach().to(expected)
    if not torch.isfinite(out).all():
        return Verdict(name, False, "the output has NaN or inf entries (a division by zero, or a sqrt of a negative number?)")
    if torch.allclose(out, expected, atol=atol, rtol=0):
        return Verdict(name, True, "correct")
    for variant, right in (also_correct or {}).items():
        if torch.allclose(out, right.to(expected), atol=atol, rtol=0):
            return Verdict(name, True, f"correct ({variant})")
    for mistake, wrong in (mistakes or {}).items():
        if torch.allclose(out, wrong.to(expected), atol=atol, rtol=0):
            return Verdict(name, False, f"not yet: looks like {mistake}")
    err = (out - expected).abs()
    worst = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
    return Verdict(name, False, f"values differ: largest error {float(err.max()):.3g} at index {list(worst)} "
                                f"(yours {float(out[worst]):.4f}, expected {float(expected[worst]):.4f})")


def _inputs(batch: int = 8, dim: int = 3, seed: int = 0) -> tuple[Schedule, Tensor, Tensor, Tensor]:
    """The linear schedule (alpha_t and alpha_bar_t differ enough to tell apart), x [B, D], eps [B, D],
    and t [B]: one timestep per row, including t = 0 and t = T-1 (where index mistakes show)."""
    g = torch.Generator().manual_seed(seed)
    schedule = schedules.get("linear", T=1000)
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    eps = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    t = torch.randint(1, schedule.T - 1, (batch,), generator=g)
    t[0], t[-1] = 0, schedule.T - 1
    return schedule, x, eps, t


def _col(values: Tensor, t: Tensor) -> Tensor:
    """values[t] as a float64 column [B, 1], the shape that broadcasts over [B, D]."""
    return values.to(torch.float64)[t][:, None]


# --- notebook 01: the forward process ------------------------------------------------------


def check_q_step(fn: Callable[[Schedule, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(schedule, x_prev, t, noise)`` -> x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps (Ho et al. 2020, eq. 2).

    Shapes: x_prev, noise [B, D], t LongTensor [B] (0-based) -> [B, D]."""
    schedule, x_prev, eps, t = _inputs(seed=8)
    b, ab = _col(schedule.betas, t), _col(schedule.alpha_bars, t)
    b_next = _col(schedule.betas, (t + 1).clamp(max=schedule.T - 1))
    mistakes = {
        "beta_t without the square roots": (1 - b) * x_prev + b * eps,
        "the coefficient 1 in front of x_{t-1} (without sqrt(1 - beta_t) the variance grows without bound)":
            x_prev + b.sqrt() * eps,
        "alpha_bar_t (the closed form's coefficients) in a single step": ab.sqrt() * x_prev + (1 - ab).sqrt() * eps,
        "t off by one: beta at t+1 (0-based t indexes the tables directly)": (1 - b_next).sqrt() * x_prev + b_next.sqrt() * eps,
    }
    return compare("q_step", lambda: fn(schedule, x_prev.clone(), t.clone(), eps.clone()), q_step(schedule, x_prev, t, eps),
                   mistakes)


def check_q_sample(fn: Callable[[Schedule, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(schedule, x0, t, noise)`` -> x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4).

    Shapes: x0, noise [B, D], t LongTensor [B] (0-based) -> [B, D]."""
    schedule, x0, eps, t = _inputs()
    ab, a = _col(schedule.alpha_bars, t), _col(schedule.alphas, t)
    ab_next = _col(schedule.alpha_bars, (t + 1).clamp(max=schedule.T - 1))
    ab_prev = _col(torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bars]), t)  # alpha_bar_{t-1}
    mistakes = {
        "alpha_bar without the square roots": ab * x0 + (1 - ab) * eps,
        "alpha_t (one step) instead of alpha_bar_t (the product)": a.sqrt() * x0 + (1 - a).sqrt() * eps,
        "the two coefficients swapped": (1 - ab).sqrt() * x0 + ab.sqrt() * eps,
        "t off by one: alpha_bar at t+1 (0-based t indexes the tables directly)": ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps,
        "t off by one: alpha_bar at t-1 (0-based t indexes the tables directly)": ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps,
        "the noise subtracted instead of added": ab.sqrt() * x0 - (1 - ab).sqrt() * eps,
    }
    return compare("q_sample", lambda: fn(schedule, x0.clone(), t.clone(), eps.clone()), q_sample(schedule, x0, t, eps), mistakes)


# --- notebook 02: the score of a mixture and one Langevin step ---------------------------------


def _mixture_inputs(seed: int = 12) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x [8, 2] and a 3-component mixture with unequal weights [3], means [3, 2] and full covariances
    [3, 2, 2] that overlap, so that the responsibilities p(k | x) are neither 0 nor 1 (where weight mistakes show)."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    means = torch.randn(3, 2, generator=g, dtype=torch.float64)
    root = 0.5 * torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    covs = root @ root.transpose(-1, -2) + 0.2 * torch.eye(2, dtype=torch.float64)
    x = 1.5 * torch.randn(8, 2, generator=g, dtype=torch.float64)
    return x, weights, means, covs


def check_mixture_score(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(x, weights, means, covs)`` -> the score of p(x) = sum_k w_k N(x; mu_k, Sigma_k) (notebook 02's eq. 2):

    s(x) = sum_k p(k | x) Sigma_k^{-1} (mu_k - x),   p(k | x) = w_k N(x; mu_k, Sigma_k) / p(x),

    graded against ``GaussianMixture.score``. Shapes: x [B, D], weights [K] (summing to 1), means [K, D],
    covs [K, D, D] -> [B, D]."""
    x, weights, means, covs = _mixture_inputs()
    mixture = GaussianMixture(weights, means, covs)
    log_n = torch.stack([mixture.component(k).log_prob(x) for k in range(len(weights))], dim=1)  # log N(x; mu_k, Sigma_k) [B, K]
    resp = mixture.responsibilities(x)  # [B, K]
    diff = means[None] - x[:, None, :]  # mu_k - x, [B, K, D]
    prec = torch.linalg.inv(covs)

    def mix(r: Tensor, m: Tensor = prec, d: Tensor = diff) -> Tensor:  # sum_k r_k M_k d_k
        return (r.unsqueeze(-1) * (m[None] @ d.unsqueeze(-1)).squeeze(-1)).sum(1)

    mistakes = {
        "the sign flipped: Sigma_k^{-1} (x - mu_k) points away from the modes (the score points uphill, at the means)":
            mix(resp, d=-diff),
        "Sigma_k where its inverse belongs (the precision Sigma_k^{-1})": mix(resp, m=covs),
        "the weights w_k where the responsibilities p(k | x) belong (they depend on x)": mix(weights.expand(len(x), -1)),
        "p(k | x) without the weights w_k (the likelihoods N(x; mu_k, Sigma_k) normalised, the prior forgotten)":
            mix(torch.softmax(log_n, dim=1)),
        "w_k N(x; mu_k, Sigma_k) not divided by p(x) (the responsibilities must sum to 1 over k)":
            mix(weights * log_n.exp()),
        "the responsibilities normalised over the batch (softmax over dim 0): p(k | x) sums to 1 over the components k":
            mix(torch.softmax(weights.log() + log_n, dim=0)),
        "the components' scores summed with no weights at all": mix(torch.ones_like(resp)),
    }
    return compare("mixture score", lambda: fn(x.clone(), weights.clone(), means.clone(), covs.clone()), mixture.score(x),
                   mistakes)


def check_langevin_step(fn: Callable[[Tensor, Tensor, float, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(x, score, step_size, z)`` -> one step of unadjusted Langevin dynamics (Welling & Teh 2011, eq. 3;
    notebook 02's eq. 3): x + (eps / 2) score + sqrt(eps) z with eps = step_size, graded against
    ``langevin.langevin_step``. Shapes: x, score, z [B, D]; step_size a float -> [B, D]."""
    _, x, score, _ = _inputs(seed=13)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    eps = 0.3
    mistakes = {
        "step_size where eq. (3) has step_size / 2 in front of the score": x + eps * score + math.sqrt(eps) * z,
        "the noise scaled by step_size: it needs sqrt(step_size) (the noise of one step has variance eps)":
            x + eps / 2 * score + eps * z,
        "the score subtracted: that walks downhill, away from the modes": x - eps / 2 * score + math.sqrt(eps) * z,
        "no noise: that is gradient ascent on log p, and every particle ends on a mode": x + eps / 2 * score,
        "the convention x + eps s + sqrt(2 eps) z (the SDE dx = grad log p dt + sqrt(2) dW): that is eq. (3) with "
        "step 2 eps; here eps is the step of x + (eps/2) s + sqrt(eps) z": x + eps * score + math.sqrt(2 * eps) * z,
        "sqrt(2 eps) noise with the (eps/2) drift: two conventions mixed (eq. 3 has sqrt(eps))":
            x + eps / 2 * score + math.sqrt(2 * eps) * z,
        "the increment alone, without x": eps / 2 * score + math.sqrt(eps) * z,
    }
    return compare("Langevin step", lambda: fn(x.clone(), score.clone(), eps, z.clone()), langevin_step(x, score, eps, z),
                   mistakes)


# --- notebook 03: the denoising score-matching target and Tweedie's formula ---------------------


def check_dsm_target(fn: Callable[[Schedule, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(schedule, x0, x_t, t)`` -> the regression target of denoising score matching (Vincent 2011) in
    DDPM notation (notebook 03's eq. 2): the score of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),

    -(x_t - sqrt(alpha_bar_t) x_0) / (1 - alpha_bar_t) = -eps / sqrt(1 - alpha_bar_t),

    graded against ``diffusion.score_from_eps`` of the eps that made x_t. Shapes: x0, x_t [B, D], t [B] (0-based) -> [B, D]."""
    schedule, x0, eps, t = _inputs(seed=15)
    x_t = q_sample(schedule, x0, t, eps)
    ab, a = _col(schedule.alpha_bars, t), _col(schedule.alphas, t)
    residual = x_t - ab.sqrt() * x0
    mistakes = {
        "the sign flipped: the target points from x_t back towards sqrt(alpha_bar_t) x_0, so it has a minus sign":
            residual / (1 - ab),
        "divided by sqrt(1 - alpha_bar_t), the standard deviation: that is -eps; the score divides by the variance 1 - alpha_bar_t":
            -residual / (1 - ab).sqrt(),
        "x_0 where the mean of q(x_t | x_0) is sqrt(alpha_bar_t) x_0": -(x_t - x0) / (1 - ab),
        "alpha_bar_t x_0 without the square root (the mean of q(x_t | x_0) is sqrt(alpha_bar_t) x_0)": -(x_t - ab * x0) / (1 - ab),
        "divided by sigma_t^2 = (1 - alpha_bar_t) / alpha_bar_t, the noise level of x_t / sqrt(alpha_bar_t) (notebook 02): "
        "x_t itself has variance 1 - alpha_bar_t given x_0": -residual * ab / (1 - ab),
        "alpha_t (one step) instead of alpha_bar_t (the product)": -(x_t - a.sqrt() * x0) / (1 - a),
    }
    return compare("DSM target", lambda: fn(schedule, x0.clone(), x_t.clone(), t.clone()), score_from_eps(schedule, eps, t),
                   mistakes)


def check_tweedie(fn: Callable[[Schedule, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(schedule, x_t, t, score)`` -> Tweedie's formula (Efron 2011; notebook 03's eq. 5), score form:

    E[x_0 | x_t] = (x_t + (1 - alpha_bar_t) grad log q_t(x_t)) / sqrt(alpha_bar_t),

    graded against ``diffusion.predict_x0`` (eq. 5's eps form) of ``diffusion.eps_from_score(score)`` (eq. 4).
    Shapes: x_t, score [B, D], t [B] (0-based) -> [B, D]."""
    schedule, x_t, score, t = _inputs(seed=16)
    ab = _col(schedule.alpha_bars, t)
    mistakes = {
        "sqrt(1 - alpha_bar_t) in front of the score: the score form needs the variance 1 - alpha_bar_t "
        "(sqrt(1 - alpha_bar_t) goes with eps)": (x_t + (1 - ab).sqrt() * score) / ab.sqrt(),
        "the score subtracted: it points towards the data, so Tweedie adds it": (x_t - (1 - ab) * score) / ab.sqrt(),
        "not divided by sqrt(alpha_bar_t): that is E[sqrt(alpha_bar_t) x_0 | x_t], the scaled signal": x_t + (1 - ab) * score,
        "divided by alpha_bar_t instead of its square root": (x_t + (1 - ab) * score) / ab,
        "the score used as if it were eps (the eps form of eq. 5 needs eps = -sqrt(1 - alpha_bar_t) score, eq. 4)":
            (x_t - (1 - ab).sqrt() * score) / ab.sqrt(),
        "notebook 02's x + sigma_t^2 s(x) applied to x_t and its score: that form is for x = x_t / sqrt(alpha_bar_t) "
        "and the score of p_sigma": x_t + (1 - ab) / ab * score,
    }
    return compare("Tweedie", lambda: fn(schedule, x_t.clone(), t.clone(), score.clone()),
                   predict_x0(schedule, x_t, t, eps_from_score(schedule, score, t)), mistakes)


# --- notebook 04: the posterior and one DDPM step -------------------------------------------


def check_posterior_mean(fn: Callable[[Schedule, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(schedule, x0, x_t, t)`` -> the mean of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 7).

    mean = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t,
    with alpha_bar_{-1} = 1 at t = 0. Shapes: x0, x_t [B, D], t [B] -> [B, D]."""
    schedule, x0, x_t, t = _inputs(seed=1)
    expected, _ = q_posterior(schedule, x0, x_t, t)
    ab, a, b = _col(schedule.alpha_bars, t), _col(schedule.alphas, t), _col(schedule.betas, t)
    ab_prev = _col(schedule.alpha_bars_prev, t)
    c0, ct = ab_prev.sqrt() * b / (1 - ab), a.sqrt() * (1 - ab_prev) / (1 - ab)
    c0_bar, ct_bar = ab.sqrt() * b / (1 - ab), a.sqrt() * (1 - ab) / (1 - ab)
    mistakes = {
        "the coefficients of x0 and x_t swapped": ct * x0 + c0 * x_t,
        "alpha_bar_t where eq. 7 has alpha_bar_{t-1}": c0_bar * x0 + ct_bar * x_t,
        "alpha_t without its square root": ab_prev.sqrt() * b / (1 - ab) * x0 + a * (1 - ab_prev) / (1 - ab) * x_t,
    }
    return compare("posterior mean", lambda: fn(schedule, x0.clone(), x_t.clone(), t.clone()), expected, mistakes)


def check_ddpm_step(fn: Callable[[Schedule, Tensor, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(schedule, x_t, t, eps_hat, z)`` -> x_{t-1} of DDPM's sampler (Ho et al. 2020, Algorithm 2):

    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t) + sigma_t z,   no noise at t = 0,

    with sigma_t^2 = beta_tilde_t (eq. 7) or beta_t: both are accepted (Ho et al., sec. 3.2).
    Shapes: x_t, eps_hat, z [B, D], t [B] -> [B, D]."""
    schedule, x_t, eps, t = _inputs(seed=2)
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ab, a, b = _col(schedule.alpha_bars, t), _col(schedule.alphas, t), _col(schedule.betas, t)
    mean = (x_t - b / (1 - ab).sqrt() * eps) / a.sqrt()
    last = (t == 0)[:, None]
    tilde = mean + torch.where(last, 0.0, _col(schedule.posterior_variances, t).sqrt()) * z
    plain = mean + torch.where(last, 0.0, b.sqrt()) * z
    mistakes = {
        # (with beta_tilde the noise at t = 0 vanishes by itself: beta_tilde_0 = 0; with beta_t it does not)
        "noise added at the last step too (t = 0 must return the mean alone)": mean + b.sqrt() * z,
        "the variance where the standard deviation belongs (sigma_t is the square root of beta_tilde_t)":
            mean + torch.where(last, 0.0, _col(schedule.posterior_variances, t)) * z,
        "no noise at all (that is the mean of x_{t-1}, not a sample)": mean,
        "sqrt(1 - alpha_bar_t) without dividing beta_t by it": (x_t - b * (1 - ab).sqrt() * eps) / a.sqrt()
                                                              + torch.where(last, 0.0, _col(schedule.posterior_variances, t).sqrt()) * z,
    }
    return compare("DDPM step", lambda: fn(schedule, x_t.clone(), t.clone(), eps.clone(), z.clone()), tilde, mistakes,
                   also_correct={"with sigma_t^2 = beta_t, Ho et al.'s other choice": plain})


# --- notebook 05: the v target and x_0 from a v prediction -----------------------------------


def check_v_target(fn: Callable[[Schedule, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(schedule, x0, eps, t)`` -> the velocity target v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0
    (Salimans & Ho 2022, sec. 4; notebook 05, section 5), graded against ``diffusion.training_target(..., "v")``.

    Shapes: x0, eps [B, D], t LongTensor [B] (0-based) -> [B, D]."""
    schedule, x0, eps, t = _inputs(seed=17)
    ab = _col(schedule.alpha_bars, t)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    mistakes = {
        "sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) swapped (v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0)":
            s * eps - a * x0,
        "eps and x_0 swapped: sqrt(alpha_bar_t) goes with eps in v": a * x0 - s * eps,
        "minus v: the sign convention is v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0": s * x0 - a * eps,
        "x_0 added: v subtracts sqrt(1 - alpha_bar_t) x_0": a * eps + s * x0,
        "alpha_bar_t without the square roots": ab * eps - (1 - ab) * x0,
        "x_t (eq. 4, q_sample): v is not the noised sample": a * x0 + s * eps,
        "the epsilon target (training_target(..., 'epsilon')): v mixes eps and x_0": eps,
    }
    return compare("v target", lambda: fn(schedule, x0.clone(), eps.clone(), t.clone()),
                   training_target(schedule, x0, eps, t, "v"), mistakes)


def check_x0_from_v(fn: Callable[[Schedule, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(schedule, x_t, t, v)`` -> x0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v, the clean sample
    implied by a v prediction (Salimans & Ho 2022, sec. 4; notebook 05, section 5), graded against
    ``diffusion.predict_x0(..., prediction="v")``. Shapes: x_t, v [B, D], t LongTensor [B] (0-based) -> [B, D]."""
    schedule, x_t, v, t = _inputs(seed=18)
    ab = _col(schedule.alpha_bars, t)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    mistakes = {
        "sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) swapped (x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v)":
            s * x_t - a * v,
        "v added: x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v": a * x_t + s * v,
        "eq. (15), the epsilon formula (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), with v in place of eps":
            predict_x0(schedule, x_t, t, v, "epsilon"),
        "alpha_bar_t without the square roots": ab * x_t - (1 - ab) * v,
        "eps from v (sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v): that is the noise, not x_0":
            predict_eps(schedule, x_t, t, v, "v"),
    }
    return compare("x0 from v", lambda: fn(schedule, x_t.clone(), t.clone(), v.clone()),
                   predict_x0(schedule, x_t, t, v, "v"), mistakes)


# --- notebook 06: one DDIM step --------------------------------------------------------------


def check_ddim_step(fn: Callable[[Tensor, Tensor, float, float, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(x0_hat, eps_hat, alpha_bar_prev, sigma, z)`` -> DDIM's eq. 12 (Song, Meng & Ermon 2021):

    x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat + sigma z.
    Shapes: x0_hat, eps_hat, z [B, D]; alpha_bar_prev, sigma floats -> [B, D]."""
    _, x0, eps, _ = _inputs(seed=3)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ab_prev, sigma = 0.62, 0.3
    expected = ddim_step(x0, eps, ab_prev, sigma, z)
    mistakes = {
        "sqrt(1 - alpha_bar_prev) for the direction (eq. 12 subtracts sigma^2 under the root)":
            math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps + sigma * z,
        "alpha_bar_prev without its square root": ab_prev * x0 + math.sqrt(1 - ab_prev - sigma**2) * eps + sigma * z,
        "the noise term left out": math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev - sigma**2) * eps,
        "sigma^2 where sigma belongs in the noise term": math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev - sigma**2) * eps + sigma**2 * z,
    }
    return compare("DDIM step", lambda: fn(x0.clone(), eps.clone(), ab_prev, sigma, z.clone()), expected, mistakes)


def check_ddim_sigma(fn: Callable[[Tensor, Tensor, float], Tensor]) -> Verdict:
    """Grade ``fn(alpha_bar_t, alpha_bar_prev, eta)`` -> DDIM's sigma_t(eta) (Song, Meng & Ermon 2021, eq. 16):

    eta * sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) * sqrt(1 - alpha_bar_t / alpha_bar_prev).
    Shapes: alpha_bar_t, alpha_bar_prev [B] (alpha_bar_prev > alpha_bar_t: the step goes down), eta a float -> [B]."""
    schedule, _, _, t = _inputs(seed=9)
    t = t.clamp(min=20)
    ab, ab_prev, eta = schedule.alpha_bars.to(torch.float64)[t], schedule.alpha_bars.to(torch.float64)[t - 20], 0.7
    mistakes = {
        "eta left out (eta scales sigma: 0 = deterministic, 1 = DDPM)": ddim_sigma(ab, ab_prev, 1.0),
        "the variance sigma^2 instead of sigma": ddim_sigma(ab, ab_prev, eta) ** 2,
        "the first ratio upside down ((1 - alpha_bar_t) / (1 - alpha_bar_prev))":
            eta * ((1 - ab) / (1 - ab_prev)).sqrt() * (1 - ab / ab_prev).sqrt(),
        "alpha_bar_prev / alpha_bar_t in the second root (it must be below 1)": eta * ((1 - ab_prev) / (1 - ab)).sqrt()
            * (1 - ab_prev / ab).abs().sqrt(),
    }
    return compare("DDIM sigma", lambda: fn(ab.clone(), ab_prev.clone(), eta), ddim_sigma(ab, ab_prev, eta), mistakes)


def check_classifier_guidance(fn: Callable[[Schedule, Tensor, Tensor, Tensor, float], Tensor]) -> Verdict:
    """Grade ``fn(schedule, eps, t, grad_log_p_y, scale)`` -> eps - s sqrt(1 - alpha_bar_t) grad log p(y | x_t)
    (Dhariwal & Nichol 2021, Algorithm 2; notebook 07's eq. 3). Shapes: eps, grad [B, D], t [B] -> [B, D]."""
    schedule, eps, grad, t = _inputs(seed=10)
    s = 2.0
    root = _col(schedule.sqrt_one_minus_alpha_bars, t)
    mistakes = {
        "the gradient added: guidance must move eps against grad log p(y | x_t) (eps is minus the scaled score)":
            eps + s * root * grad,
        "the sqrt(1 - alpha_bar_t) left out (a score correction becomes an eps correction through it)": eps - s * grad,
        "1 - alpha_bar_t without the square root": eps - s * root**2 * grad,
    }
    return compare("classifier guidance", lambda: fn(schedule, eps.clone(), t.clone(), grad.clone(), s),
                   classifier_guided_epsilon(schedule, eps, t, grad, s), mistakes)


# --- notebook 07: the classifier-free guidance combination ----------------------------------


def check_cfg(fn: Callable[[Tensor, Tensor, float], Tensor]) -> Verdict:
    """Grade ``fn(eps_cond, eps_uncond, scale)`` -> eps_uncond + s (eps_cond - eps_uncond) (Ho & Salimans 2022, eq. 6, w = s - 1).

    Shapes: [B, D] twice and a float -> [B, D]."""
    _, cond, uncond, _ = _inputs(seed=4)
    s = 2.5
    mistakes = {
        "Ho & Salimans' (1 + w) eps_c - w eps_u with w = s: that is scale s + 1 in our convention":
            (1 + s) * cond - s * uncond,
        "the conditional and unconditional outputs swapped": cond + s * (uncond - cond),
        "the guidance term without the unconditional output added back": s * (cond - uncond),
    }
    return compare("classifier-free guidance", lambda: fn(cond.clone(), uncond.clone(), s), guided_epsilon(cond, uncond, s), mistakes)


# --- notebook 08: the latent scale factor and spherical interpolation ----------------------------


def check_latent_scale_factor(fn: Callable[[Tensor], float | Tensor]) -> Verdict:
    """Grade ``fn(latents)`` -> the scale factor c = 1 / std(z) of notebook 08's eq. (4) (Rombach et al. 2022,
    sec. 4.3.2 and app. D.1): one number, the standard deviation over *every* element of the batch,
    graded against ``latent.latent_scale_factor``.

    Shapes: latents [N, C, H, W] -> a float (or a 0-d tensor). The latents here have the spread of Stable Diffusion's
    (std about 5.5) and channels of different means and scales, so per-channel and uncentred statistics differ.
    The library computes in float32: "correct" here means to 1e-6."""
    g = torch.Generator().manual_seed(19)
    scales = torch.tensor([4.0, 5.5, 6.5, 5.0], dtype=torch.float64)[None, :, None, None]
    offsets = torch.tensor([0.5, -1.0, 0.3, 0.8], dtype=torch.float64)[None, :, None, None]
    z = scales * torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64) + offsets
    std = z.std()
    per_channel = z.transpose(0, 1).flatten(1).std(1)  # [C]
    mistakes = {
        "the standard deviation itself: the factor is its reciprocal (it multiplies the latents)": std,
        "1 / variance: the factor multiplies z, so it divides by the standard deviation": 1 / std**2,
        "1 / mean |z|, not 1 / std": 1 / z.abs().mean(),
        "1 / the root mean square (the mean not subtracted; LDM's std centres the latents)": 1 / z.pow(2).mean().sqrt(),
        "1 / the average of the per-channel standard deviations (eq. 4 takes one std over every element)":
            1 / per_channel.mean(),
        "1 / the std over the batch dimension alone, averaged over positions (eq. 4 takes one std over every element)":
            1 / z.std(0).mean(),
    }
    returned = []

    def learner() -> object:
        out = fn(z.clone())
        returned.append(out)
        if isinstance(out, (float, int)) and not isinstance(out, bool):
            return torch.tensor(float(out), dtype=torch.float64)
        return out

    verdict = compare("latent scale factor", learner, torch.tensor(latent_scale_factor(z), dtype=torch.float64), mistakes,
                      also_correct={"with the population std, correction=0: on real latents the two agree to 1/(2N)":
                                    1 / z.std(correction=0)}, atol=1e-6)
    out = returned[-1] if returned else None
    if "wrong shape" in verdict.message and isinstance(out, Tensor) and out.numel() == len(per_channel):
        flat = out.detach().flatten().to(torch.float64)
        for wrong, words in ((1 / per_channel, "one factor per channel (1 / std of each channel)"),
                             (per_channel, "the per-channel standard deviations")):
            if torch.allclose(flat, wrong, atol=1e-6, rtol=0):
                return Verdict(verdict.name, False, f"not yet: looks like {words}; eq. (4) is one number, "
                                                    "1 / std over every element of the latents")
    if "wrong shape" in verdict.message:
        return Verdict(verdict.name, False, verdict.message.split(" -- ")[0] + " (one number for all the latents: a float)")
    return verdict


def check_slerp(fn: Callable[[Tensor, Tensor, float], Tensor]) -> Verdict:
    """Grade ``fn(z0, z1, w)`` -> spherical interpolation (Shoemake 1985; Song, Meng & Ermon 2021, sec. 5.3),
    per sample:

    z_w = sin((1 - w) theta) / sin(theta) z0 + sin(w theta) / sin(theta) z1,   cos(theta) = <z0, z1> / (|z0| |z1|),

    with theta the angle between the two samples, each flattened to a vector; graded against ``samplers.slerp``.
    Shapes: z0, z1 [B, C, H, W]; w a float in [0, 1] -> [B, C, H, W]."""
    g = torch.Generator().manual_seed(20)
    z0 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    z1 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    w = 0.3
    a, b = z0.flatten(1), z1.flatten(1)
    theta = torch.arccos((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)))[:, None, None, None]  # [B, 1, 1, 1]
    theta_batch = torch.arccos((a * b).sum() / (a.norm() * b.norm()))  # one angle for the whole batch
    mistakes = {
        "the straight line (1 - w) z0 + w z1: its midpoint has a norm the model never saw": (1 - w) * z0 + w * z1,
        "the weights swapped: sin((1 - w) theta) belongs to z0 (w = 0 must return z0)": slerp(z0, z1, 1 - w),
        "not divided by sin(theta)": torch.sin((1 - w) * theta) * z0 + torch.sin(w * theta) * z1,
        "one angle for the whole batch: theta is the angle between the two samples of each pair":
            (torch.sin((1 - w) * theta_batch) * z0 + torch.sin(w * theta_batch) * z1) / torch.sin(theta_batch),
    }
    return compare("slerp", lambda: fn(z0.clone(), z1.clone(), w), slerp(z0, z1, w), mistakes)


# --- notebook 09: one first-order DPM-Solver++ step and Hutchinson's divergence estimate -------------


def check_dpm_solver_step(fn: Callable[[Schedule, Tensor, Tensor, int, int], Tensor]) -> Verdict:
    """Grade ``fn(schedule, x_t, x0_hat, t, t_next)`` -> one first-order DPM-Solver++ step from step t down to
    t_next (Lu et al. 2022b: Algorithm 2's first step, D = x0_hat; notebook 09, section 3):

    x_t' = (s_t' / s_t) x_t - a_t' (e^{-h} - 1) x0_hat,   h = lambda_t' - lambda_t,   lambda = log(a / s),

    with a = sqrt(alpha_bar) and s = sqrt(1 - alpha_bar) (the papers' alpha_t, sigma_t). It is exactly DDIM's
    eta = 0 step (Song, Meng & Ermon 2021, eq. 12), and is graded against ``samplers.ddim_step`` with
    eps_hat = ``diffusion.predict_eps(..., x0_hat, "x0")``. Shapes: x_t, x0_hat [B, D]; t > t_next ints -> [B, D]."""
    schedule, x_t, x0_hat, _ = _inputs(seed=21)
    t, t_next = 700, 500
    ab, ab_next = schedule.alpha_bars.to(torch.float64)[[t, t_next]].tolist()
    a, s, a_n, s_n = math.sqrt(ab), math.sqrt(1 - ab), math.sqrt(ab_next), math.sqrt(1 - ab_next)
    h = math.log(a_n / s_n) - math.log(a / s)
    h_bar = math.log(ab_next / (1 - ab_next)) - math.log(ab / (1 - ab))  # with alpha_bar where its root belongs
    mistakes = {
        "e^{h} - 1 where it is e^{-h} - 1 (or h with the wrong sign: h = lambda_t' - lambda_t > 0 going down)":
            (s_n / s) * x_t - a_n * math.expm1(h) * x0_hat,
        "the ratio upside down: s_t' / s_t multiplies x_t": (s / s_n) * x_t - a_n * math.expm1(-h) * x0_hat,
        "a_t (the level you start from) where a_t' belongs": (s_n / s) * x_t - a * math.expm1(-h) * x0_hat,
        "a plus sign before a_t' (e^{-h} - 1) x0_hat (e^{-h} - 1 is negative: the step adds signal)":
            (s_n / s) * x_t + a_n * math.expm1(-h) * x0_hat,
        "lambda = log(alpha_bar / (1 - alpha_bar)), the full log-SNR: the notebook's lambda is half of it, log(a / s)":
            (s_n / s) * x_t - a_n * math.expm1(-h_bar) * x0_hat,
        "alpha_bar and 1 - alpha_bar where their square roots a and s belong":
            ((1 - ab_next) / (1 - ab)) * x_t - ab_next * math.expm1(-h_bar) * x0_hat,
    }
    eps_hat = predict_eps(schedule, x_t, t, x0_hat, "x0")
    return compare("DPM-Solver++ step", lambda: fn(schedule, x_t.clone(), x0_hat.clone(), t, t_next),
                   ddim_step(x0_hat, eps_hat, ab_next), mistakes)


def check_hutchinson(fn: Callable[[Callable[[Tensor], Tensor], Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(f, x, z)`` -> Hutchinson's estimate of the divergence of f at x with the probe z (Hutchinson 1989;
    notebook 09, section 5), per sample:

    z^T (d f / d x) z,   one vector-Jacobian product in all,

    graded against ``likelihood.divergence(f, x, probe=z)``. Shapes: f maps [B, D] -> [B, D] sample by sample
    (a nonlinear field here); x [B, D]; z [B, D] with entries +-1 -> [B]."""
    _, x, _, _ = _inputs(seed=22)
    g = torch.Generator().manual_seed(23)
    A = torch.randn(3, 3, generator=g, dtype=torch.float64)
    z = torch.randint(0, 2, x.shape, generator=g).to(torch.float64) * 2 - 1  # Rademacher probes

    def f(v: Tensor) -> Tensor:
        return torch.sin(v @ A) + 0.5 * v**2 * v.roll(1, dims=1)

    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        out = f(xg)
        (jz,) = torch.autograd.grad(out, xg, grad_outputs=z, retain_graph=True)  # z^T J, per sample
        (j1,) = torch.autograd.grad(out.sum(), xg)  # 1^T J
    mistakes = {
        "the exact divergence (the trace, one backward pass per dimension): Hutchinson's estimate is z^T J z, one pass":
            divergence(f, x)[1],
        "the gradient of f summed (no grad_outputs=z) dotted with z: that is 1^T J z": (j1 * z).sum(1),
        "z^T J summed without the second z": jz.sum(1),
        "z^T f(x): the output dotted with z, no derivative": (f(x) * z).sum(1),
        "the mean over the D dimensions where the trace is a sum": (jz * z).mean(1),
    }
    return compare("Hutchinson", lambda: fn(f, x.clone(), z.clone()), divergence(f, x, probe=z)[1], mistakes)


# --- notebook 10: the replacement step of inpainting ------------------------------------------


def check_replacement(fn: Callable[[Tensor, Tensor, Tensor, float, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(x_unknown, x_known, mask, alpha_bar, z)`` -> RePaint's eq. 8 (Lugmayr et al. 2022):

    mask * (sqrt(alpha_bar) x_known + sqrt(1 - alpha_bar) z) + (1 - mask) * x_unknown.
    Shapes: x_unknown, x_known, z [B, D], mask [B, D] of 0/1 (1 = known), alpha_bar a float -> [B, D]."""
    _, x_unknown, x_known, _ = _inputs(seed=5)
    g = torch.Generator().manual_seed(7)
    z = torch.randn(x_known.shape, generator=g, dtype=torch.float64)
    mask = (torch.rand(x_known.shape, generator=g) < 0.5).to(torch.float64)
    ab = 0.37
    noised = math.sqrt(ab) * x_known + math.sqrt(1 - ab) * z
    mistakes = {
        "the mask read the wrong way round (1 = known)": (1 - mask) * noised + mask * x_unknown,
        "the clean known part pasted in (it must be noised to the same level as x_unknown)": mask * x_known + (1 - mask) * x_unknown,
        "the known part noised without the square roots": mask * (ab * x_known + (1 - ab) * z) + (1 - mask) * x_unknown,
    }
    return compare("replacement step", lambda: fn(x_unknown.clone(), x_known.clone(), mask.clone(), ab, z.clone()),
                   mask * noised + (1 - mask) * x_unknown, mistakes)


def check_renoise(fn: Callable[[Tensor, float, float, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(x, alpha_bar_from, alpha_bar_to, z)`` -> RePaint's jump back up the forward process:
    sqrt(ab_to / ab_from) x + sqrt(1 - ab_to / ab_from) z, a sample of q(x_to | x_from) (Ho et al. 2020, eq. 2
    composed over the steps between). Shapes: x, z [B, D]; two floats (ab_to < ab_from) -> [B, D]."""
    _, x, z, _ = _inputs(seed=11)
    ab_from, ab_to = 0.8, 0.3
    r = ab_to / ab_from
    mistakes = {
        "the ratio upside down (alpha_bar_from / alpha_bar_to is above 1)": math.sqrt(1 / r) * x + math.sqrt(abs(1 - 1 / r)) * z,
        "x treated as clean data (q_sample from x): x is already noised to alpha_bar_from":
            math.sqrt(ab_to) * x + math.sqrt(1 - ab_to) * z,
        "no square roots": r * x + (1 - r) * z,
    }
    return compare("renoise", lambda: fn(x.clone(), ab_from, ab_to, z.clone()), renoise(x, ab_from, ab_to, z), mistakes)


# --- notebook 11: flow matching and progressive distillation -----------------------------------


def check_velocity_from_x0(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(x_t, t, x0_hat)`` -> u = (x_t - x0_hat) / t, the straight path's velocity through x_t from
    x0_hat (t = 0 data, t = 1 noise; notebook 11, section 1), against ``flow.velocity_from_x0``.
    Shapes: x_t, x0_hat [B, D]; t [B] flow times in (0, 1) -> [B, D]."""
    _, x_t, x0, _ = _inputs(seed=21)
    t = torch.linspace(0.1, 0.95, x_t.shape[0], dtype=torch.float64)  # not 1: the reversed-time mistake divides by 1 - t
    tc = t[:, None]
    mistakes = {
        "minus the velocity: with t = 0 data and t = 1 noise, u = eps - x_0 points from data to noise":
            (x0 - x_t) / tc,
        "the time reversed (1 - t for t): that is the noise-at-0 convention of facebookresearch/flow_matching":
            (x_t - x0) / (1 - tc),
        "no division by t: x_t - x_0 = t u is the distance travelled, not the velocity": x_t - x0,
        "x_0 itself: a clean-sample prediction is not a velocity": x0,
    }
    return compare("velocity from x0", lambda: fn(x_t.clone(), t.clone(), x0.clone()), velocity_from_x0(x_t, t, x0),
                   mistakes)


def check_student_target(fn: Callable[[Tensor, Tensor, float, float], Tensor]) -> Verdict:
    """Grade ``fn(z_t, z_next, alpha_bar_t, alpha_bar_next)`` -> the clean sample x~ whose one DDIM step from z_t
    lands on z_next (Salimans & Ho 2022, Algorithm 2, line 10; notebook 11, section 4), against
    ``distill.student_target``. Shapes: z_t, z_next [B, D]; two floats (alpha_bar_next > alpha_bar_t) -> [B, D]."""
    _, z_t, z_next, _ = _inputs(seed=22)
    ab_t, ab_next = 0.2, 0.7
    a_t, s_t, a_n, s_n = math.sqrt(ab_t), math.sqrt(1 - ab_t), math.sqrt(ab_next), math.sqrt(1 - ab_next)
    mistakes = {
        "the sigma ratio upside down (sigma_t / sigma_next; it is sigma_next / sigma_t)":
            (z_next - s_t / s_n * z_t) / (a_n - s_t / s_n * a_t),
        "z_next itself: the target is a clean sample, and z_next is still noisy (it is right only at the last step)":
            z_next,
        "the denominator left out": z_next - s_n / s_t * z_t,
        "alpha_bar and 1 - alpha_bar without the square roots":
            (z_next - (1 - ab_next) / (1 - ab_t) * z_t) / (ab_next - (1 - ab_next) / (1 - ab_t) * ab_t),
        "z_t and z_next swapped": (z_t - s_n / s_t * z_next) / (a_n - s_n / s_t * a_t),
    }
    return compare("student target", lambda: fn(z_t.clone(), z_next.clone(), ab_t, ab_next),
                   student_target(z_t, z_next, ab_t, ab_next), mistakes)


# --- notebook 12: LoRA --------------------------------------------------------------------------


def check_lora_linear(fn: Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, float, int], Tensor]) -> Verdict:
    """Grade ``fn(x, W, b, A, B, alpha, rank)`` -> W x + b + (alpha / r) B A x, a LoRA layer's output (Hu et al. 2021,
    eq. 3 with the alpha / r scaling of sec. 4.1), against ``adapt.LoRALinear``.
    Shapes: x [N, in], W [out, in], b [out], A [r, in], B [out, r] -> [N, out]."""
    from .adapt import LoRALinear

    g = torch.Generator().manual_seed(23)
    n, d_in, d_out, rank, alpha = 5, 6, 4, 2, 8.0
    x, W, b = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((n, d_in), (d_out, d_in), (d_out,)))
    A, B = torch.randn(rank, d_in, generator=g, dtype=torch.float64), torch.randn(d_out, rank, generator=g, dtype=torch.float64)
    layer = LoRALinear(torch.nn.Linear(d_in, d_out, dtype=torch.float64), rank, alpha)
    with torch.no_grad():
        layer.base.weight.copy_(W), layer.base.bias.copy_(b), layer.down.weight.copy_(A), layer.up.weight.copy_(B)
        expected = layer(x)
    base = x @ W.T + b
    mistakes = {
        "no alpha / r factor (alpha = r makes it 1, but here alpha = 8, r = 2)": base + x @ A.T @ B.T,
        "alpha instead of alpha / r": base + alpha * x @ A.T @ B.T,
        "r / alpha instead of alpha / r": base + rank / alpha * x @ A.T @ B.T,
        "the base output W x + b alone: the low-rank branch is missing": base,
        "the bias left out": x @ W.T + alpha / rank * x @ A.T @ B.T,
    }
    return compare("LoRA linear", lambda: fn(x.clone(), W.clone(), b.clone(), A.clone(), B.clone(), alpha, rank),
                   expected, mistakes)


def check_lora_conv_delta(fn: Callable[[Tensor, Tensor, float, int], Tensor]) -> Verdict:
    """Grade ``fn(A, B, alpha, rank)`` -> the kernel that merging adds to a convolution,
    (alpha / r) sum_r B[o, r] A[r, i, kh, kw], against ``adapt.LoRAConv2d.delta_weight``.
    Shapes: A [r, in, kh, kw] (the down-projection's kernel), B [out, r] (the 1 x 1 up-projection) -> [out, in, kh, kw]."""
    from .adapt import LoRAConv2d

    g = torch.Generator().manual_seed(24)
    d_in, d_out, rank, alpha = 3, 5, 2, 6.0
    A, B = torch.randn(rank, d_in, 3, 3, generator=g, dtype=torch.float64), torch.randn(d_out, rank, generator=g, dtype=torch.float64)
    layer = LoRAConv2d(torch.nn.Conv2d(d_in, d_out, 3, padding=1, dtype=torch.float64), rank, alpha)
    with torch.no_grad():
        layer.down.weight.copy_(A), layer.up.weight.copy_(B[:, :, None, None])
        expected = layer.delta_weight()
    plain = torch.einsum("or,rikl->oikl", B, A)
    mistakes = {
        "no alpha / r factor": plain,
        "alpha instead of alpha / r": alpha * plain,
        "only the first rank-one term: the sum runs over all r": alpha / rank * torch.einsum("o,ikl->oikl", B[:, 0], A[0]),
    }
    return compare("LoRA conv delta", lambda: fn(A.clone(), B.clone(), alpha, rank), expected, mistakes)


def check_clip_loss(fn: Callable[[Tensor], Tensor]) -> Verdict:
    """Grade ``fn(logits)`` -> CLIP's symmetric contrastive loss (Radford et al. 2021, Fig. 3), a 0-d tensor,
    against ``losses.clip_loss``. Shapes: logits [N, N] (image i, caption j) -> []."""
    from .losses import clip_loss

    g = torch.Generator().manual_seed(25)
    logits = 3 * torch.randn(6, 6, generator=g, dtype=torch.float64)
    target = torch.arange(6)
    ce = torch.nn.functional.cross_entropy
    mistakes = {
        "only the image -> caption direction (rows): CLIP averages it with caption -> image (columns)": ce(logits, target),
        "only the caption -> image direction (columns)": ce(logits.T, target),
        "the sum of the two directions, not their mean": ce(logits, target) + ce(logits.T, target),
        "the negative mean of the diagonal logits: no softmax normaliser": -logits.diagonal().mean(),
    }
    return compare("CLIP loss", lambda: fn(logits.clone()), clip_loss(logits), mistakes)


def check_masked_attention(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(q, k, v, key_mask)`` -> softmax(q k^T / sqrt(d), padded keys removed) v (Vaswani et al. 2017,
    eq. 1), against ``models.attention.masked_attention``. Shapes: q [B, h, Nq, d], k and v [B, h, Nk, d],
    key_mask BoolTensor [B, Nk] (True at real tokens) -> [B, h, Nq, d]."""
    from .models.attention import masked_attention

    g = torch.Generator().manual_seed(26)
    q, k, v = (torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([[True, True, False], [True, False, False]])
    expected, _ = masked_attention(q, k, v, mask)
    logits = q @ k.transpose(-1, -2)
    mistakes = {
        "no 1 / sqrt(d) scaling": masked_attention(q * 2.0, k, v, mask)[0],  # sqrt(d) = 2 here
        "the mask ignored: padded tokens get attention too": masked_attention(q, k, v, None)[0],
        "the mask inverted (True taken as padding)": masked_attention(q, k, v, ~mask)[0],
        "masked logits set to 0 instead of -inf (padded keys still get weight)":
            torch.softmax(logits.masked_fill(~mask[:, None, None, :], 0.0) / 2.0, -1) @ v,
        "softmax over the queries instead of the keys": torch.softmax((logits / 2.0).masked_fill(~mask[:, None, None, :], float("-inf")), -2).nan_to_num() @ v,
    }
    return compare("masked attention", lambda: fn(q.clone(), k.clone(), v.clone(), mask.clone()), expected, mistakes)



# --- notebook 14: precision and recall, the copy ratio, the shifted schedule ------------------------------------


def _feature_sets(seed: int) -> tuple[Tensor, Tensor]:
    """Real points [40, 2] ~ N(0, I) and generated points [30, 2] ~ N(0.8, 1.3^2 I): partly overlapping sets."""
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(40, 2, generator=g, dtype=torch.float64)
    return real, 1.3 * torch.randn(30, 2, generator=g, dtype=torch.float64) + 0.8


def check_knn_precision(fn: Callable[[Tensor, Tensor, int], Tensor]) -> Verdict:
    """Grade ``fn(real, generated, k)`` -> improved precision, the share of generated points inside the k-NN
    manifold of the real ones (Kynkäänniemi et al. 2019, Sec. 2, eqs. 1-2), a 0-d tensor, against
    ``metrics.precision_recall``. Shapes: real [N, F], generated [M, F], an int k -> []."""
    from .metrics import precision_recall

    real, generated = _feature_sets(36)  # precision 0.83, recall 0.80; k = 1, 2 give 0.50, 0.70
    k = 3
    result = precision_recall(real, generated, k)

    def share_inside(points: Tensor, reference: Tensor, kth: int) -> Tensor:
        radii = torch.cdist(reference, reference).sort(dim=1).values[:, kth]
        return (torch.cdist(points, reference) <= radii).any(dim=1).double().mean()

    mistakes = {
        "recall: the share of REAL points inside the generated manifold (the roles swapped)":
            torch.tensor(result.recall, dtype=torch.float64),
        "radii to the (k-1)-th other point: each point counted as its own nearest neighbour": share_inside(generated, real, k - 1),
        "radii to the nearest other point (k = 1), not the k-th": share_inside(generated, real, 1),
    }
    return compare("k-NN precision", lambda: fn(real.clone(), generated.clone(), k),
                   torch.tensor(result.precision, dtype=torch.float64), mistakes)


def check_copy_ratio(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(samples, train, heldout)`` -> each sample's distance to its nearest training image over the median
    nearest-training distance of the held-out images (``memorisation.measure_memorisation``'s ratio), against that
    function. Shapes: samples [M, D], train [N, D], heldout [H, D] -> [M]."""
    from .memorisation import measure_memorisation

    g = torch.Generator().manual_seed(28)
    train = torch.randn(30, 5, generator=g, dtype=torch.float64)
    heldout = torch.randn(11, 5, generator=g, dtype=torch.float64)
    samples = torch.cat([train[:4] + 0.01 * torch.randn(4, 5, generator=g, dtype=torch.float64),
                         torch.randn(6, 5, generator=g, dtype=torch.float64)])
    found = measure_memorisation(samples, train, heldout, n_neighbours=5)
    d_s = torch.cdist(samples, train).min(dim=1).values
    d_h = torch.cdist(heldout, train).min(dim=1).values
    mistakes = {
        "divided by the MEAN held-out distance, not the median": d_s / d_h.mean(),
        "squared distances": d_s**2 / d_h.median() ** 2,
        "the held-out images' distances to each other, not to the training set":
            d_s / torch.cdist(heldout, heldout).fill_diagonal_(float("inf")).min(dim=1).values.median(),
        "the samples' own median as the scale, not the held-out images'": d_s / d_s.median(),
    }
    return compare("copy ratio", lambda: fn(samples.clone(), train.clone(), heldout.clone()), found.ratio, mistakes)


def check_shifted_alpha_bar(fn: Callable[[Tensor, int, int], Tensor]) -> Verdict:
    """Grade ``fn(alpha_bars, base, size)`` -> alpha_bar' = sigmoid(log SNR + 2 log(base / size)), the shifted
    schedule (Hoogeboom et al. 2023, Sec. 3.1), against ``schedules.shifted``. Shapes: [T] and two ints -> [T]."""
    cosine = schedules.cosine(50)
    ab, log_snr = cosine.alpha_bars[:-1], cosine.log_snr[:-1]  # the last beta is clipped in the library's version
    expected = schedules.shifted(cosine, 32, 64).alpha_bars[:-1]
    mistakes = {
        "the shift with the wrong sign: a larger image made LESS noisy": torch.sigmoid(log_snr + 2 * math.log(2)),
        "log(base / size), not 2 log(base / size): the SNR scales with the AREA, (size / base)^2":
            torch.sigmoid(log_snr - math.log(2)),
        "alpha_bar itself divided by 4, not the SNR": ab / 4,
    }
    return compare("shifted schedule", lambda: fn(ab.clone(), 32, 64), expected, mistakes)


def _images(seed: int, shape: tuple[int, ...] = (3, 2, 8, 8)) -> Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def check_downsample(fn: Callable[[Tensor, int], Tensor]) -> Verdict:
    """Grade ``fn(x, factor)`` -> the anti-aliased downsample, the mean of every factor x factor block, against
    :func:`tinydiff.superres.downsample`. Shapes: [B, C, H, W] and an int -> [B, C, H / factor, W / factor]."""
    from .superres import downsample

    x = _images(29)
    B, C, H, W = x.shape
    mistakes = {
        "a strided subsample x[..., ::f, ::f]: one pixel of each block, so fine detail aliases": x[..., ::4, ::4],
        "the block SUM, not its mean (16 times too bright for f = 4)": downsample(x, 4) * 16,
        "reshape to [B, C, H/f, W/f, f, f] without moving the axes: the 'blocks' are not squares of the image":
            x.reshape(B, C, H // 4, W // 4, 4, 4).mean((4, 5)),
    }
    return compare("anti-aliased downsample", lambda: fn(x.clone(), 4), downsample(x, 4), mistakes)


def check_noise_augmentation(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(cond, alpha_bar_s, noise)`` -> sqrt(alpha_bar_s) cond + sqrt(1 - alpha_bar_s) noise, the
    conditioning image at augmentation level s (Ho et al. 2022, sec. 4.1), against :func:`tinydiff.superres.augment`.
    Shapes: cond, noise [B, C, H, W]; alpha_bar_s [B] (one level per image) -> [B, C, H, W]."""
    from .superres import augment

    cond, noise = _images(30), _images(31)
    level = torch.tensor([0, 120, 499])
    s = schedules.cosine(1000)
    ab = s.alpha_bars[level]
    a = ab.view(-1, 1, 1, 1)
    mistakes = {
        "alpha_bar and 1 - alpha_bar without square roots: the noise's variance is not 1 - alpha_bar":
            a * cond + (1 - a) * noise,
        "noise added but the image not shrunk: sqrt(alpha_bar) cond keeps the total variance at 1": cond + (1 - a).sqrt() * noise,
        "the roles swapped: sqrt(1 - alpha_bar) cond + sqrt(alpha_bar) noise": (1 - a).sqrt() * cond + a.sqrt() * noise,
    }
    return compare("noise-conditioning augmentation", lambda: fn(cond.clone(), ab.clone(), noise.clone()),
                   augment(s, cond, level, noise), mistakes)


def check_psnr(fn: Callable[[Tensor, Tensor], Tensor]) -> Verdict:
    """Grade ``fn(x, y)`` -> PSNR per image in dB for images in [-1, 1], 10 log10(2^2 / MSE), against
    :func:`tinydiff.metrics.psnr`. Shapes: [B, C, H, W] x 2 -> [B]."""
    from .metrics import psnr

    x, y = _images(32), _images(33)
    y = x + 0.1 * (y - x)
    mse = (x - y).pow(2).flatten(1).mean(1)
    mistakes = {
        "peak 1: on [-1, 1] the range is 2, so the peak signal is 2^2 = 4": 10 * torch.log10(1 / mse),
        "the natural log: decibels are 10 log10": 10 * torch.log(4 / mse),
        "20 log10 of the MSE: 20 log10 goes with the RMS error, 10 log10 with the MSE": 20 * torch.log10(4 / mse),
        "the MSE of the whole batch, not one per image": (10 * torch.log10(4 / mse.mean())).expand(3),
    }
    return compare("PSNR", lambda: fn(x.clone(), y.clone()), psnr(x, y).double(), mistakes, atol=1e-5)


def check_prior_preservation(fn: Callable[[Tensor, Tensor, Tensor, Tensor, float], Tensor]) -> Verdict:
    """Grade ``fn(out, target, out_prior, target_prior, weight)`` -> DreamBooth's loss (Ruiz et al. 2023, eq. 2):
    the mean squared error on the subject's batch plus ``weight`` times the mean squared error on the prior batch, as
    :class:`tinydiff.personalise.PriorPreservation` computes it. Shapes: [B, C, H, W] x 4 and a float -> 0-d."""
    out, target, out_prior, target_prior = _images(40), _images(41), _images(42), _images(43)
    weight = 0.7
    subject, prior = (out - target).pow(2).mean(), (out_prior - target_prior).pow(2).mean()
    mistakes = {
        "the weight on the subject's term: lambda weighs the prior": weight * subject + prior,
        "the prior term without its weight lambda": subject + prior,
        "one mean over both halves: that is (subject + prior) / 2, whatever lambda is":
            (torch.cat([out, out_prior]) - torch.cat([target, target_prior])).pow(2).mean(),
        "sums, not means: the loss would grow with the batch and the image size":
            (out - target).pow(2).sum() + weight * (out_prior - target_prior).pow(2).sum(),
    }
    return compare("prior-preservation loss", lambda: fn(out.clone(), target.clone(), out_prior.clone(),
                                                          target_prior.clone(), weight),
                   subject + weight * prior, mistakes)


def check_hyper_kv(fn: Callable[..., Tensor]) -> Verdict:
    """Grade ``fn(c, kv, f_key, f_value)`` -> keys and values [B, L, 2 C] of a cross-attention whose text states pass
    a hypernetwork first (NovelAI 2022): K = W_K (c + f_K(c)), V = W_V (c + f_V(c)), with ``kv`` the nn.Linear(D, 2 C)
    holding [W_K; W_V], against :class:`tinydiff.personalise.HyperKV`. Shapes: c [B, L, D] -> [B, L, 2 C]."""
    from .personalise import HyperKV

    g = torch.Generator().manual_seed(44)
    c = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    kv = torch.nn.Linear(6, 8).double()
    hyper = HyperKV(kv, mult=2)
    with torch.no_grad():
        for p in hyper.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    f_key, f_value = hyper.key, hyper.value
    with torch.no_grad():
        expected = hyper(c)
        mistakes = {
            "the hypernetwork replaces the text states: K = W_K f_K(c) leaves out the residual c + f_K(c)":
                torch.cat([kv(f_key(c))[..., :4], kv(f_value(c))[..., 4:]], -1),
            "the keys' network used for the values too": torch.cat([kv(c + f_key(c))[..., :4], kv(c + f_key(c))[..., 4:]], -1),
            "keys and values swapped: kv's first half is W_K": torch.cat([kv(c + f_value(c))[..., :4], kv(c + f_key(c))[..., 4:]], -1),
        }
    return compare("hypernetwork keys and values", lambda: fn(c.clone(), kv, f_key, f_value), expected, mistakes)


def check_attention_share(fn: Callable[[Tensor, int], Tensor]) -> Verdict:
    """Grade ``fn(weights, n)`` -> prompt-to-prompt's shared maps (Hertz et al. 2022, sec. 3.2): in a batch of groups
    [n source rows, n edited rows] (two groups under classifier-free guidance), every edited row takes its source
    row's weights, as :meth:`tinydiff.prompt_editing.AttentionInjection.share`. Shapes: [B, heads, HW, L] -> same."""
    from .prompt_editing import AttentionInjection

    g = torch.Generator().manual_seed(45)
    w = torch.rand(8, 2, 3, 4, generator=g, dtype=torch.float64).softmax(-1)
    inject = AttentionInjection.__new__(AttentionInjection)
    inject.n = 2
    expected = AttentionInjection.share(inject, w)
    only_first = w.clone()
    only_first[2:4] = w[0:2]
    backwards = w.clone()
    backwards[0:2], backwards[4:6] = w[2:4], w[6:8]
    mistakes = {
        "only the first group changed: under guidance the batch holds a second group, the empty prompt's": only_first,
        "the wrong way round: the source rows took the edited rows' maps": backwards,
    }
    return compare("prompt-to-prompt's shared maps", lambda: fn(w.clone(), 2), expected, mistakes)


def check_hz_to_mel(fn: Callable[[Tensor], Tensor]) -> Verdict:
    """Grade ``fn(f)`` -> the mel scale m = 2595 log10(1 + f / 700) (O'Shaughnessy 1987), as
    :func:`tinydiff.data.audio.hz_to_mel`. Shapes: [N] -> [N]."""
    from .data.audio import hz_to_mel

    f = torch.tensor([0.0, 100.0, 700.0, 1000.0, 4000.0], dtype=torch.float64)
    mistakes = {"log10(f / 700) without the 1 +: 0 Hz must be 0 mel, not minus infinity": 2595 * torch.log10(f / 700),
                "the natural logarithm with 2595: with ln the factor is 1127": 2595 * torch.log1p(f / 700)}
    return compare("the mel scale", lambda: fn(f.clone()), hz_to_mel(f), mistakes)


def check_griffin_lim_step(fn: Callable[[Tensor, Tensor, int], Tensor]) -> Verdict:
    """Grade ``fn(magnitude, X, length)`` -> one Griffin-Lim update (Griffin & Lim 1984): the target magnitude with
    the phase of STFT(ISTFT(X)), using :func:`tinydiff.data.audio.stft` / ``istft`` (n_fft 256). Shapes: magnitude
    [B, 129, M] real, X [B, 129, M] complex -> [B, 129, M] complex."""
    from .data.audio import istft, stft

    g = torch.Generator().manual_seed(46)
    length = 1024
    X = stft(torch.randn(2, length, generator=g, dtype=torch.float64))
    magnitude = stft(torch.randn(2, length, generator=g, dtype=torch.float64)).abs()
    rebuilt = stft(istft(X, length))
    expected = magnitude * torch.exp(1j * rebuilt.angle())
    mistakes = {"kept X's own phase: the update takes the phase of STFT(ISTFT(X)), which is consistent": magnitude * torch.exp(1j * X.angle()),
                "returned STFT(ISTFT(X)) itself: the magnitude must be set back to the target": rebuilt}
    return compare("a Griffin-Lim step", lambda: fn(magnitude.clone(), X.clone(), length), expected, mistakes)


def check_time_fold(fn: Callable[[Tensor, int], Tensor]) -> Verdict:
    """Grade ``fn(h, frames)`` -> the features of every frame [B * T, C, H, W] as one time sequence per clip and
    pixel, [B * H * W, C, T], as :func:`tinydiff.models.time_fold` (what :class:`~tinydiff.models.TemporalConv`
    convolves)."""
    from .models import time_fold

    g = torch.Generator().manual_seed(47)
    h = torch.randn(2 * 5, 3, 4, 6, generator=g, dtype=torch.float64)  # B = 2 clips of T = 5 frames
    mistakes = {"a reshape without a permute: it cuts the memory into pieces of T numbers that are not one "
                "pixel's frames": h.reshape(-1, 3, 5),
                "time and channels swapped: Conv1d reads [batch, channels, length]": time_fold(h, 5).transpose(1, 2)}
    return compare("folding frames into time sequences", lambda: fn(h.clone(), 5), time_fold(h, 5), mistakes)
