"""tinydiff.checks: each check passes a right answer, says "not done yet" to a stub, and names the
common mistakes -- written here the way a learner would write them."""

import math

import pytest
import torch

from tinydiff import checks
from tinydiff.data import GaussianMixture
from tinydiff.diffusion import predict_eps, predict_x0, q_posterior, q_sample, score_from_eps
from tinydiff.guidance import guided_epsilon
from tinydiff.langevin import langevin_step
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


# --- notebook 02: the mixture score and one Langevin step --------------------------------------


def mixture_score(x, weights, means, covs, *, resp="posterior", flip=1.0, matrix="precision"):
    """Eq. (2) of notebook 02 the way a learner writes it, with switches for the common mistakes."""
    log_n = torch.distributions.MultivariateNormal(means, covariance_matrix=covs).log_prob(x[:, None, :])  # [B, K]
    r = {
        "posterior": lambda: torch.softmax(weights.log() + log_n, dim=1),
        "weights": lambda: weights.expand(len(x), -1),
        "no weights": lambda: torch.softmax(log_n, dim=1),
        "unnormalised": lambda: weights * log_n.exp(),
        "over the batch": lambda: torch.softmax(weights.log() + log_n, dim=0),
        "ones": lambda: torch.ones_like(log_n),
    }[resp]()
    m = torch.linalg.inv(covs) if matrix == "precision" else covs
    comp = (m @ (flip * (means - x[:, None, :])).unsqueeze(-1)).squeeze(-1)  # [B, K, D]
    return (r.unsqueeze(-1) * comp).sum(1)


def test_mixture_score_right_stub_and_mistakes():
    assert str(checks.check_mixture_score(mixture_score)) == "mixture score: correct"
    assert checks.check_mixture_score(lambda x, w, m, c: GaussianMixture(w, m, c).score(x)).ok
    assert "not done yet" in str(checks.check_mixture_score(stub))
    named = {
        "sign flipped": dict(flip=-1.0),
        "Sigma_k where its inverse belongs": dict(matrix="covariance"),
        "the weights w_k where the responsibilities": dict(resp="weights"),
        "without the weights w_k": dict(resp="no weights"),
        "not divided by p(x)": dict(resp="unnormalised"),
        "normalised over the batch": dict(resp="over the batch"),
        "summed with no weights": dict(resp="ones"),
    }
    for words, mistake in named.items():
        verdict = checks.check_mixture_score(lambda x, w, m, c: mixture_score(x, w, m, c, **mistake))
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


def test_langevin_step_right_stub_and_mistakes():
    right = lambda x, s, eps, z: x + eps / 2 * s + math.sqrt(eps) * z  # eq. (3) by hand
    assert str(checks.check_langevin_step(right)) == "Langevin step: correct"
    assert checks.check_langevin_step(langevin_step).ok
    assert "not done yet" in str(checks.check_langevin_step(stub))
    named = {
        "step_size / 2 in front of the score": lambda x, s, eps, z: x + eps * s + math.sqrt(eps) * z,
        "it needs sqrt(step_size)": lambda x, s, eps, z: x + eps / 2 * s + eps * z,
        "the score subtracted": lambda x, s, eps, z: x - eps / 2 * s + math.sqrt(eps) * z,
        "no noise": lambda x, s, eps, z: x + eps / 2 * s,
        "the convention x + eps s + sqrt(2 eps) z": lambda x, s, eps, z: x + eps * s + math.sqrt(2 * eps) * z,
        "two conventions mixed": lambda x, s, eps, z: x + eps / 2 * s + (2 * eps) ** 0.5 * z,
        "the increment alone": lambda x, s, eps, z: eps / 2 * s + math.sqrt(eps) * z,
    }
    for words, wrong in named.items():
        verdict = checks.check_langevin_step(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


# --- notebook 03: the DSM target and Tweedie's formula -------------------------------------------


def test_dsm_target_right_stub_and_mistakes():
    def right(s, x0, x_t, t):  # eq. (2) of notebook 03, the conditional score
        ab = col(s.alpha_bars, t)
        return -(x_t - ab.sqrt() * x0) / (1 - ab)

    assert str(checks.check_dsm_target(right)) == "DSM target: correct"
    # through the noise: eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab), then -eps / sqrt(1 - ab) (the library's route)
    assert checks.check_dsm_target(lambda s, x0, x_t, t: score_from_eps(s, predict_eps(s, x_t, t, x0, "x0"), t)).ok
    assert "not done yet" in str(checks.check_dsm_target(stub))
    ab = lambda s, t: col(s.alpha_bars, t)
    named = {
        "the sign flipped": lambda s, x0, x_t, t: (x_t - ab(s, t).sqrt() * x0) / (1 - ab(s, t)),
        "the standard deviation: that is -eps": lambda s, x0, x_t, t: -(x_t - ab(s, t).sqrt() * x0) / (1 - ab(s, t)).sqrt(),
        "x_0 where the mean": lambda s, x0, x_t, t: -(x_t - x0) / (1 - ab(s, t)),
        "alpha_bar_t x_0 without the square root": lambda s, x0, x_t, t: -(x_t - ab(s, t) * x0) / (1 - ab(s, t)),
        "divided by sigma_t^2": lambda s, x0, x_t, t: -(x_t - ab(s, t).sqrt() * x0) / col(s.sigmas, t) ** 2,
        "alpha_t (one step)": lambda s, x0, x_t, t: -(x_t - col(s.alphas, t).sqrt() * x0) / (1 - col(s.alphas, t)),
    }
    for words, wrong in named.items():
        verdict = checks.check_dsm_target(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


def test_tweedie_right_stub_and_mistakes():
    ab = lambda s, t: col(s.alpha_bars, t)
    right = lambda s, x_t, t, score: (x_t + (1 - ab(s, t)) * score) / ab(s, t).sqrt()  # eq. (5) of notebook 03
    assert str(checks.check_tweedie(right)) == "Tweedie: correct"
    assert "not done yet" in str(checks.check_tweedie(stub))
    named = {
        "sqrt(1 - alpha_bar_t) in front of the score": lambda s, x_t, t, sc: (x_t + (1 - ab(s, t)).sqrt() * sc) / ab(s, t).sqrt(),
        "the score subtracted": lambda s, x_t, t, sc: (x_t - (1 - ab(s, t)) * sc) / ab(s, t).sqrt(),
        "not divided by sqrt(alpha_bar_t)": lambda s, x_t, t, sc: x_t + (1 - ab(s, t)) * sc,
        "divided by alpha_bar_t instead": lambda s, x_t, t, sc: (x_t + (1 - ab(s, t)) * sc) / ab(s, t),
        "the score used as if it were eps": lambda s, x_t, t, sc: predict_x0(s, x_t, t, sc),
        "notebook 02's x + sigma_t^2 s(x)": lambda s, x_t, t, sc: x_t + col(s.sigmas, t) ** 2 * sc,
    }
    for words, wrong in named.items():
        verdict = checks.check_tweedie(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


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
