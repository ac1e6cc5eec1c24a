"""tinydiff.checks: each check passes a right answer, says "not done yet" to a stub, and names the
common mistakes -- written here the way a learner would write them."""

import math

import pytest
import torch

from tinydiff import checks
from tinydiff.diffusion import q_posterior, q_sample
from tinydiff.guidance import guided_epsilon
from tinydiff.samplers import ddim_step


def col(values, t):
    return values.to(torch.float64)[t][:, None]


def stub(*args):
    raise NotImplementedError


# --- q_step and q_sample ---------------------------------------------------------------------


def test_q_step_right_stub_and_mistakes():
    own = lambda s, x, t, e: (1 - col(s.betas, t)).sqrt() * x + col(s.betas, t).sqrt() * e  # eq. 2 by hand
    assert str(checks.check_q_step(own)) == "q_step: correct"
    assert "not done yet" in str(checks.check_q_step(stub))
    assert "coefficient 1" in str(checks.check_q_step(lambda s, x, t, e: x + col(s.betas, t).sqrt() * e))
    assert "without the square roots" in str(checks.check_q_step(lambda s, x, t, e: (1 - col(s.betas, t)) * x + col(s.betas, t) * e))
    closed = lambda s, x, t, e: col(s.alpha_bars, t).sqrt() * x + (1 - col(s.alpha_bars, t)).sqrt() * e
    assert "closed form" in str(checks.check_q_step(closed))


# --- q_sample -------------------------------------------------------------------------------


def test_q_sample_right_stub_and_mistakes():
    assert checks.check_q_sample(lambda s, x0, t, e: q_sample(s, x0, t, e)).ok
    own = lambda s, x0, t, e: col(s.alpha_bars, t).sqrt() * x0 + (1 - col(s.alpha_bars, t)).sqrt() * e
    assert str(checks.check_q_sample(own)) == "q_sample: correct"
    assert "not done yet" in str(checks.check_q_sample(stub))
    no_sqrt = lambda s, x0, t, e: col(s.alpha_bars, t) * x0 + (1 - col(s.alpha_bars, t)) * e
    assert "without the square roots" in str(checks.check_q_sample(no_sqrt))
    alpha = lambda s, x0, t, e: col(s.alphas, t).sqrt() * x0 + (1 - col(s.alphas, t)).sqrt() * e
    assert "alpha_t (one step)" in str(checks.check_q_sample(alpha))

    def one_based(s, x0, t, e):  # the paper's t = 1..T read as an index: alpha_bar[t - 1]
        ab = torch.cat([torch.ones(1, dtype=torch.float64), s.alpha_bars])[t][:, None]
        return ab.sqrt() * x0 + (1 - ab).sqrt() * e

    assert "t off by one: alpha_bar at t-1" in str(checks.check_q_sample(one_based))


def test_q_sample_shape_and_error_messages():
    flat = lambda s, x0, t, e: s.alpha_bars.to(torch.float64)[t].sqrt() * x0.T  # [B] times [D, B]
    verdict = checks.check_q_sample(flat)
    assert not verdict.ok and "wrong shape" in verdict.message
    broadcast = lambda s, x0, t, e: s.alpha_bars.to(torch.float64)[t].sqrt() * x0[:, :, None]  # [B, D, B]
    assert "reshape it to [B, 1]" in checks.check_q_sample(broadcast).message
    assert "raised ZeroDivisionError" in checks.check_q_sample(lambda s, x0, t, e: 1 / 0).message
    assert "wrong type" in checks.check_q_sample(lambda s, x0, t, e: 3.0).message
    verdict = checks.check_q_sample(lambda s, x0, t, e: x0 + 0.01)
    assert not verdict.ok and "values differ" in verdict.message


# --- the posterior mean and one DDPM step -------------------------------------------------------


def test_posterior_mean():
    assert checks.check_posterior_mean(lambda s, x0, xt, t: q_posterior(s, x0, xt, t)[0]).ok
    assert "not done yet" in str(checks.check_posterior_mean(stub))

    def swapped(s, x0, xt, t):
        ab, ab_prev, a, b = col(s.alpha_bars, t), col(s.alpha_bars_prev, t), col(s.alphas, t), col(s.betas, t)
        return a.sqrt() * (1 - ab_prev) / (1 - ab) * x0 + ab_prev.sqrt() * b / (1 - ab) * xt

    assert "swapped" in str(checks.check_posterior_mean(swapped))

    def alpha_bar_t(s, x0, xt, t):
        ab, a, b = col(s.alpha_bars, t), col(s.alphas, t), col(s.betas, t)
        return ab.sqrt() * b / (1 - ab) * x0 + a.sqrt() * (1 - ab) / (1 - ab) * xt

    assert "alpha_bar_t where eq. 7 has alpha_bar_{t-1}" in str(checks.check_posterior_mean(alpha_bar_t))


def ddpm_step(s, x_t, t, eps, z, *, variance="tilde", noise_at_zero=False):
    ab, a, b = col(s.alpha_bars, t), col(s.alphas, t), col(s.betas, t)
    mean = (x_t - b / (1 - ab).sqrt() * eps) / a.sqrt()
    sigma = col(s.posterior_variances, t).sqrt() if variance == "tilde" else b.sqrt()
    if not noise_at_zero:
        sigma = torch.where((t == 0)[:, None], 0.0, sigma)
    return mean + sigma * z


def test_ddpm_step_accepts_both_variances_and_names_mistakes():
    assert checks.check_ddpm_step(ddpm_step).message == "correct"
    beta = checks.check_ddpm_step(lambda *a: ddpm_step(*a, variance="beta"))
    assert beta.ok and "beta_t" in beta.message
    assert "last step" in str(checks.check_ddpm_step(lambda *a: ddpm_step(*a, variance="beta", noise_at_zero=True)))
    assert "no noise at all" in str(checks.check_ddpm_step(lambda s, x_t, t, eps, z: ddpm_step(s, x_t, t, eps, 0 * z)))
    assert "not done yet" in str(checks.check_ddpm_step(stub))


def test_the_ddpm_check_agrees_with_the_library_sampler_step():
    """The check's own eq. 11 equals what ddpm_sample does (posterior mean of x0_hat, eq. 7): the
    reference is the library's, not a second opinion."""
    from tinydiff.diffusion import predict_x0

    def library(s, x_t, t, eps, z):
        mean, var = q_posterior(s, predict_x0(s, x_t, t, eps), x_t, t)
        return mean + var.sqrt() * z

    assert checks.check_ddpm_step(library).ok


# --- DDIM, CFG, replacement -------------------------------------------------------------------


def test_ddim_step():
    assert checks.check_ddim_step(lambda x0, e, ab, s, z: ddim_step(x0, e, ab, s, z)).ok
    forgot_sigma = lambda x0, e, ab, s, z: math.sqrt(ab) * x0 + math.sqrt(1 - ab) * e + s * z
    assert "subtracts sigma^2" in str(checks.check_ddim_step(forgot_sigma))
    no_noise = lambda x0, e, ab, s, z: math.sqrt(ab) * x0 + math.sqrt(1 - ab - s**2) * e
    assert "noise term left out" in str(checks.check_ddim_step(no_noise))
    assert "not done yet" in str(checks.check_ddim_step(stub))


def test_ddim_sigma():
    right = lambda ab, abp, eta: eta * ((1 - abp) / (1 - ab)).sqrt() * (1 - ab / abp).sqrt()
    assert checks.check_ddim_sigma(right).ok
    assert "eta left out" in str(checks.check_ddim_sigma(lambda ab, abp, eta: right(ab, abp, 1.0)))
    assert "sigma^2 instead" in str(checks.check_ddim_sigma(lambda ab, abp, eta: right(ab, abp, eta) ** 2))
    assert "not done yet" in str(checks.check_ddim_sigma(stub))


def test_classifier_guidance():
    right = lambda s, eps, t, g, scale: eps - scale * (1 - col(s.alpha_bars, t)).sqrt() * g
    assert checks.check_classifier_guidance(right).ok
    wrong_sign = lambda s, eps, t, g, scale: eps + scale * (1 - col(s.alpha_bars, t)).sqrt() * g
    assert "against grad log p" in str(checks.check_classifier_guidance(wrong_sign))
    assert "left out" in str(checks.check_classifier_guidance(lambda s, eps, t, g, scale: eps - scale * g))


def test_cfg():
    assert checks.check_cfg(lambda c, u, s: u + s * (c - u)).ok
    assert checks.check_cfg(guided_epsilon).ok
    ho_salimans = lambda c, u, s: (1 + s) * c - s * u  # w read as s
    assert "Ho & Salimans" in str(checks.check_cfg(ho_salimans))
    assert "swapped" in str(checks.check_cfg(lambda c, u, s: c + s * (u - c)))
    assert "not done yet" in str(checks.check_cfg(stub))


def test_replacement():
    right = lambda xu, xk, m, ab, z: m * (math.sqrt(ab) * xk + math.sqrt(1 - ab) * z) + (1 - m) * xu
    assert checks.check_replacement(right).ok
    clean = lambda xu, xk, m, ab, z: m * xk + (1 - m) * xu
    assert "clean known part" in str(checks.check_replacement(clean))
    inverted = lambda xu, xk, m, ab, z: (1 - m) * (math.sqrt(ab) * xk + math.sqrt(1 - ab) * z) + m * xu
    assert "wrong way round" in str(checks.check_replacement(inverted))


def test_renoise():
    right = lambda x, a, b, z: math.sqrt(b / a) * x + math.sqrt(1 - b / a) * z
    assert checks.check_renoise(right).ok
    assert "treated as clean" in str(checks.check_renoise(lambda x, a, b, z: math.sqrt(b) * x + math.sqrt(1 - b) * z))


@pytest.mark.parametrize("name", sorted(checks.CHECKS))
def test_every_check_rejects_the_stub_and_a_constant(name):
    check = checks.CHECKS[name]
    assert not check(stub).ok
    verdict = check(lambda *args: torch.zeros(8, 3, dtype=torch.float64))
    assert not verdict.ok and any(word in verdict.message for word in ("values differ", "looks like", "wrong shape"))
