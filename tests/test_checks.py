"""tinydiff.checks: each check passes a right answer, says "not done yet" to a stub, and names the
common mistakes -- written here the way a learner would write them."""

import inspect
import math

import pytest
import torch

from tinydiff import checks
from tinydiff.data import GaussianMixture
from tinydiff.diffusion import predict_eps, predict_x0, q_posterior, q_sample, score_from_eps, training_target
from tinydiff.guidance import guided_epsilon
from tinydiff.langevin import langevin_step
from tinydiff.latent import latent_scale_factor
from tinydiff.likelihood import divergence
from tinydiff.samplers import ddim_step, slerp


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


EVERY_CHECK = sorted(name for name, f in vars(checks).items()
                     if name.startswith("check_") and inspect.isfunction(f) and f.__module__ == checks.__name__)


@pytest.mark.parametrize("name", EVERY_CHECK)
def test_every_check_rejects_the_stub_and_a_constant(name):
    check = getattr(checks, name)
    assert not check(stub).ok
    verdict = check(lambda *args: torch.zeros(8, 3, dtype=torch.float64))
    assert not verdict.ok and any(word in verdict.message for word in ("values differ", "looks like", "wrong shape"))


# --- notebook 05: the v target and x_0 from v ---------------------------------------------------


def test_v_target_right_stub_and_mistakes():
    a = lambda s, t: col(s.alpha_bars, t).sqrt()
    r = lambda s, t: (1 - col(s.alpha_bars, t)).sqrt()
    right = lambda s, x0, e, t: a(s, t) * e - r(s, t) * x0  # Salimans & Ho 2022, sec. 4
    assert str(checks.check_v_target(right)) == "v target: correct"
    assert checks.check_v_target(lambda s, x0, e, t: training_target(s, x0, e, t, "v")).ok
    assert "not done yet" in str(checks.check_v_target(stub))
    ab = lambda s, t: col(s.alpha_bars, t)
    named = {
        "sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) swapped": lambda s, x0, e, t: r(s, t) * e - a(s, t) * x0,
        "eps and x_0 swapped": lambda s, x0, e, t: a(s, t) * x0 - r(s, t) * e,
        "minus v": lambda s, x0, e, t: r(s, t) * x0 - a(s, t) * e,
        "x_0 added": lambda s, x0, e, t: a(s, t) * e + r(s, t) * x0,
        "without the square roots": lambda s, x0, e, t: ab(s, t) * e - (1 - ab(s, t)) * x0,
        "x_t (eq. 4, q_sample)": lambda s, x0, e, t: q_sample(s, x0, t, e),
        "the epsilon target": lambda s, x0, e, t: training_target(s, x0, e, t, "epsilon"),
    }
    for words, wrong in named.items():
        verdict = checks.check_v_target(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


def test_x0_from_v_right_stub_and_mistakes():
    a = lambda s, t: col(s.alpha_bars, t).sqrt()
    r = lambda s, t: (1 - col(s.alpha_bars, t)).sqrt()
    right = lambda s, x_t, t, v: a(s, t) * x_t - r(s, t) * v
    assert str(checks.check_x0_from_v(right)) == "x0 from v: correct"
    assert checks.check_x0_from_v(lambda s, x_t, t, v: predict_x0(s, x_t, t, v, "v")).ok
    assert "not done yet" in str(checks.check_x0_from_v(stub))
    ab = lambda s, t: col(s.alpha_bars, t)
    named = {
        "sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) swapped": lambda s, x_t, t, v: r(s, t) * x_t - a(s, t) * v,
        "v added": lambda s, x_t, t, v: a(s, t) * x_t + r(s, t) * v,
        "eq. (15), the epsilon formula": lambda s, x_t, t, v: (x_t - r(s, t) * v) / a(s, t),
        "without the square roots": lambda s, x_t, t, v: ab(s, t) * x_t - (1 - ab(s, t)) * v,
        "eps from v": lambda s, x_t, t, v: r(s, t) * x_t + a(s, t) * v,
    }
    for words, wrong in named.items():
        verdict = checks.check_x0_from_v(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


# --- notebook 08: the latent scale factor and slerp --------------------------------------------


def test_latent_scale_factor_right_stub_and_mistakes():
    assert str(checks.check_latent_scale_factor(lambda z: 1 / float(z.std()))) == "latent scale factor: correct"
    assert checks.check_latent_scale_factor(lambda z: 1 / z.std()).ok  # a 0-d tensor is fine too
    assert checks.check_latent_scale_factor(latent_scale_factor).ok
    population = checks.check_latent_scale_factor(lambda z: 1 / z.std(correction=0))
    assert population.ok and "population std" in population.message
    assert "not done yet" in str(checks.check_latent_scale_factor(stub))
    per_channel = lambda z: z.transpose(0, 1).flatten(1).std(1)
    named = {
        "the standard deviation itself": lambda z: float(z.std()),
        "1 / variance": lambda z: 1 / z.var(),
        "1 / mean |z|": lambda z: 1 / z.abs().mean(),
        "1 / the root mean square": lambda z: 1 / z.pow(2).mean().sqrt(),
        "1 / the average of the per-channel standard deviations": lambda z: 1 / per_channel(z).mean(),
        "1 / the std over the batch dimension alone": lambda z: 1 / z.std(dim=0).mean(),
        "one factor per channel": lambda z: 1 / z.std(dim=(0, 2, 3), keepdim=True),
        "the per-channel standard deviations": per_channel,
    }
    for words, wrong in named.items():
        verdict = checks.check_latent_scale_factor(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)
    verdict = checks.check_latent_scale_factor(lambda z: 1 / z.std(dim=(1, 2, 3)))  # one per sample: [N]
    assert not verdict.ok and "wrong shape" in verdict.message and "one number" in verdict.message


def my_slerp(z0, z1, w, *, per_sample=True, divide=True):
    a, b = z0.flatten(1), z1.flatten(1)
    if per_sample:
        theta = torch.arccos((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).reshape(-1, 1, 1, 1)
    else:
        theta = torch.arccos((a * b).sum() / (a.norm() * b.norm()))
    out = torch.sin((1 - w) * theta) * z0 + torch.sin(w * theta) * z1
    return out / torch.sin(theta) if divide else out


def test_slerp_right_stub_and_mistakes():
    assert str(checks.check_slerp(my_slerp)) == "slerp: correct"
    assert checks.check_slerp(slerp).ok
    assert "not done yet" in str(checks.check_slerp(stub))
    named = {
        "the straight line": lambda z0, z1, w: (1 - w) * z0 + w * z1,
        "the weights swapped": lambda z0, z1, w: my_slerp(z0, z1, 1 - w),
        "not divided by sin(theta)": lambda z0, z1, w: my_slerp(z0, z1, w, divide=False),
        "one angle for the whole batch": lambda z0, z1, w: my_slerp(z0, z1, w, per_sample=False),
    }
    for words, wrong in named.items():
        verdict = checks.check_slerp(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


# --- notebook 09: one DPM-Solver++ step and Hutchinson's estimate ---------------------------------


def dpm_step(s, x_t, x0_hat, t, t_next, *, sign=-1.0, flip_ratio=False, a_from_start=False, log_snr=False, roots=True):
    """One first-order DPM-Solver++ step as a learner writes it, with switches for the common mistakes."""
    ab, ab_next = float(s.alpha_bars[t]), float(s.alpha_bars[t_next])
    power = 0.5 if roots else 1.0
    a, sig, a_n, sig_n = ab**power, (1 - ab) ** power, ab_next**power, (1 - ab_next) ** power
    lam = (lambda al, sg: math.log(al / sg) * (2 if log_snr else 1)) if roots else (lambda al, sg: math.log(al / sg))
    h = lam(a_n, sig_n) - lam(a, sig)
    ratio = sig / sig_n if flip_ratio else sig_n / sig
    return ratio * x_t + sign * (a if a_from_start else a_n) * math.expm1(-h) * x0_hat


def test_dpm_solver_step_right_stub_and_mistakes():
    assert str(checks.check_dpm_solver_step(dpm_step)) == "DPM-Solver++ step: correct"
    assert "not done yet" in str(checks.check_dpm_solver_step(stub))

    def ddim(s, x_t, x0_hat, t, t_next):  # the same step through DDIM's eq. (12) with eta = 0
        ab, ab_next = float(s.alpha_bars[t]), float(s.alpha_bars[t_next])
        eps_hat = (x_t - ab**0.5 * x0_hat) / (1 - ab) ** 0.5
        return ab_next**0.5 * x0_hat + (1 - ab_next) ** 0.5 * eps_hat

    assert checks.check_dpm_solver_step(ddim).ok

    def plus_h(s, x_t, x0_hat, t, t_next):  # e^{h} - 1
        ab, ab_next = float(s.alpha_bars[t]), float(s.alpha_bars[t_next])
        h = math.log((ab_next / (1 - ab_next)) ** 0.5) - math.log((ab / (1 - ab)) ** 0.5)
        return ((1 - ab_next) / (1 - ab)) ** 0.5 * x_t - ab_next**0.5 * math.expm1(h) * x0_hat

    named = {
        "e^{h} - 1 where it is e^{-h} - 1": plus_h,
        "the ratio upside down": lambda *a: dpm_step(*a, flip_ratio=True),
        "a_t (the level you start from)": lambda *a: dpm_step(*a, a_from_start=True),
        "a plus sign": lambda *a: dpm_step(*a, sign=1.0),
        "the full log-SNR": lambda *a: dpm_step(*a, log_snr=True),
        "where their square roots a and s belong": lambda *a: dpm_step(*a, roots=False),
    }
    for words, wrong in named.items():
        verdict = checks.check_dpm_solver_step(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


def hutchinson(f, x, z, *, probe=True, second_z=True, reduce="sum"):
    x = x.detach().requires_grad_(True)
    out = f(x)
    (g,) = torch.autograd.grad(out, x, grad_outputs=z) if probe else torch.autograd.grad(out.sum(), x)
    g = g * z if second_z else g
    return g.sum(1) if reduce == "sum" else g.mean(1)


def test_hutchinson_right_stub_and_mistakes():
    assert str(checks.check_hutchinson(hutchinson)) == "Hutchinson: correct"
    assert checks.check_hutchinson(lambda f, x, z: divergence(f, x, probe=z)[1]).ok
    assert "not done yet" in str(checks.check_hutchinson(stub))
    named = {
        "the exact divergence": lambda f, x, z: divergence(f, x)[1],
        "no grad_outputs=z": lambda f, x, z: hutchinson(f, x, z, probe=False),
        "without the second z": lambda f, x, z: hutchinson(f, x, z, second_z=False),
        "no derivative": lambda f, x, z: (f(x) * z).sum(1),
        "the mean over the D dimensions": lambda f, x, z: hutchinson(f, x, z, reduce="mean"),
    }
    for words, wrong in named.items():
        verdict = checks.check_hutchinson(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)



# --- notebook 11: flow matching and progressive distillation -----------------------------------


def test_velocity_from_x0_right_stub_and_mistakes():
    right = lambda x_t, t, x0: (x_t - x0) / t[:, None]
    assert str(checks.check_velocity_from_x0(right)) == "velocity from x0: correct"
    assert "not done yet" in str(checks.check_velocity_from_x0(stub))
    named = {
        "minus the velocity": lambda x_t, t, x0: (x0 - x_t) / t[:, None],
        "the time reversed": lambda x_t, t, x0: (x_t - x0) / (1 - t[:, None]),
        "no division by t": lambda x_t, t, x0: x_t - x0,
        "x_0 itself": lambda x_t, t, x0: x0,
    }
    for words, wrong in named.items():
        verdict = checks.check_velocity_from_x0(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)
    # the shape mistake: t [B] times [B, D] without a column
    assert "wrong shape" in str(checks.check_velocity_from_x0(lambda x_t, t, x0: (x_t - x0)[:, :, None] / t))


def test_student_target_right_stub_and_mistakes():
    def right(z, z_next, ab, ab_next):  # written out from Algorithm 2, line 10
        a, s, a_n, s_n = math.sqrt(ab), math.sqrt(1 - ab), math.sqrt(ab_next), math.sqrt(1 - ab_next)
        return (z_next - s_n / s * z) / (a_n - s_n / s * a)

    assert str(checks.check_student_target(right)) == "student target: correct"
    assert "not done yet" in str(checks.check_student_target(stub))
    r = lambda ab, ab_next: math.sqrt((1 - ab_next) / (1 - ab))
    named = {
        "the sigma ratio upside down": lambda z, zn, ab, abn: (zn - z / r(ab, abn)) / (math.sqrt(abn) - math.sqrt(ab) / r(ab, abn)),
        "z_next itself": lambda z, zn, ab, abn: zn,
        "the denominator left out": lambda z, zn, ab, abn: zn - r(ab, abn) * z,
        "without the square roots": lambda z, zn, ab, abn: (zn - r(ab, abn) ** 2 * z) / (abn - r(ab, abn) ** 2 * ab),
        "z_t and z_next swapped": lambda z, zn, ab, abn: (z - r(ab, abn) * zn) / (math.sqrt(abn) - r(ab, abn) * math.sqrt(ab)),
    }
    for words, wrong in named.items():
        verdict = checks.check_student_target(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


# --- notebook 12: LoRA ------------------------------------------------------------------------------


def test_lora_linear_right_stub_and_mistakes():
    right = lambda x, W, b, A, B, alpha, r: x @ W.T + b + (alpha / r) * (x @ A.T) @ B.T
    assert str(checks.check_lora_linear(right)) == "LoRA linear: correct"
    assert "not done yet" in str(checks.check_lora_linear(stub))
    named = {
        "no alpha / r factor": lambda x, W, b, A, B, alpha, r: x @ W.T + b + x @ A.T @ B.T,
        "alpha instead of alpha / r": lambda x, W, b, A, B, alpha, r: x @ W.T + b + alpha * x @ A.T @ B.T,
        "r / alpha instead": lambda x, W, b, A, B, alpha, r: x @ W.T + b + r / alpha * x @ A.T @ B.T,
        "the base output W x + b alone": lambda x, W, b, A, B, alpha, r: x @ W.T + b,
        "the bias left out": lambda x, W, b, A, B, alpha, r: x @ W.T + alpha / r * x @ A.T @ B.T,
    }
    for words, wrong in named.items():
        verdict = checks.check_lora_linear(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)
    # B A in the wrong order does not even have the right shape: the check says so instead of crashing
    assert "raised" in str(checks.check_lora_linear(lambda x, W, b, A, B, alpha, r: x @ W.T + b + x @ (A @ B)))


def test_lora_conv_delta_right_stub_and_mistakes():
    right = lambda A, B, alpha, r: alpha / r * torch.einsum("or,rikl->oikl", B, A)
    assert str(checks.check_lora_conv_delta(right)) == "LoRA conv delta: correct"
    assert "not done yet" in str(checks.check_lora_conv_delta(stub))
    named = {
        "no alpha / r factor": lambda A, B, alpha, r: torch.einsum("or,rikl->oikl", B, A),
        "alpha instead of alpha / r": lambda A, B, alpha, r: alpha * torch.einsum("or,rikl->oikl", B, A),
        "only the first rank-one term": lambda A, B, alpha, r: alpha / r * B[:, 0, None, None, None] * A[0][None],
    }
    for words, wrong in named.items():
        verdict = checks.check_lora_conv_delta(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


def test_clip_loss_right_stub_and_mistakes():
    ce = torch.nn.functional.cross_entropy

    def right(logits):
        target = torch.arange(len(logits))
        return 0.5 * (ce(logits, target) + ce(logits.T, target))

    assert str(checks.check_clip_loss(right)) == "CLIP loss: correct"
    assert "not done yet" in str(checks.check_clip_loss(stub))
    named = {
        "only the image -> caption direction": lambda logits: ce(logits, torch.arange(len(logits))),
        "only the caption -> image direction": lambda logits: ce(logits.T, torch.arange(len(logits))),
        "the sum of the two directions": lambda logits: 2 * right(logits),
        "no softmax normaliser": lambda logits: -logits.diagonal().mean(),
    }
    for words, wrong in named.items():
        verdict = checks.check_clip_loss(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


def test_masked_attention_right_stub_and_mistakes():
    def right(q, k, v, mask):
        logits = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~mask[:, None, None, :], float("-inf"))
        return logits.softmax(-1) @ v

    assert str(checks.check_masked_attention(right)) == "masked attention: correct"
    assert "not done yet" in str(checks.check_masked_attention(stub))
    named = {
        "no 1 / sqrt(d) scaling": lambda q, k, v, m: right(q * q.shape[-1] ** 0.5, k, v, m),
        "the mask ignored": lambda q, k, v, m: right(q, k, v, torch.ones_like(m)),
        "the mask inverted": lambda q, k, v, m: right(q, k, v, ~m),
        "masked logits set to 0": lambda q, k, v, m: (q @ k.transpose(-1, -2) / 2.0).masked_fill(~m[:, None, None, :], 0.0).softmax(-1) @ v,
    }
    for words, wrong in named.items():
        verdict = checks.check_masked_attention(wrong)
        assert not verdict.ok and "looks like" in verdict.message and words in verdict.message, (words, verdict)


# --- notebook 14: k-NN precision, the copy ratio, the shifted schedule ----------------------------------------


def test_knn_precision_right_and_mistakes():
    def precision(real, generated, k):  # Kynkaenniemi et al. 2019, eqs. 1-2, written out
        radii = torch.cdist(real, real).sort(dim=1).values[:, k]  # column 0 is the point itself
        return (torch.cdist(generated, real) <= radii).any(dim=1).double().mean()

    assert checks.check_knn_precision(precision).ok
    assert "roles swapped" in str(checks.check_knn_precision(lambda r, g, k: precision(g, r, k)))
    assert "its own nearest" in str(checks.check_knn_precision(lambda r, g, k: precision(r, g, k - 1)))
    assert "not done yet" in str(checks.check_knn_precision(stub))


def test_copy_ratio_right_and_mistakes():
    def nearest(a, b):
        return torch.cdist(a, b).min(dim=1).values

    assert checks.check_copy_ratio(lambda s, t, h: nearest(s, t) / nearest(h, t).median()).ok
    assert "MEAN" in str(checks.check_copy_ratio(lambda s, t, h: nearest(s, t) / nearest(h, t).mean()))
    assert "squared" in str(checks.check_copy_ratio(lambda s, t, h: nearest(s, t) ** 2 / nearest(h, t).median() ** 2))


def test_shifted_alpha_bar_right_and_mistakes():
    right = lambda ab, base, size: torch.sigmoid(torch.logit(ab) + 2 * math.log(base / size))
    assert checks.check_shifted_alpha_bar(right).ok
    assert "wrong sign" in str(checks.check_shifted_alpha_bar(lambda ab, b, s: right(ab, s, b)))
    assert "AREA" in str(checks.check_shifted_alpha_bar(lambda ab, b, s: torch.sigmoid(torch.logit(ab) + math.log(b / s))))


def test_downsample_right_and_mistakes():
    def right(x, f):
        B, C, H, W = x.shape
        return x.reshape(B, C, H // f, f, W // f, f).mean((3, 5))

    assert checks.check_downsample(right).ok
    assert "strided" in str(checks.check_downsample(lambda x, f: x[..., ::f, ::f]))
    assert "SUM" in str(checks.check_downsample(lambda x, f: right(x, f) * f * f))
    assert "not squares" in str(checks.check_downsample(
        lambda x, f: x.reshape(*x.shape[:2], x.shape[2] // f, x.shape[3] // f, f, f).mean((4, 5))))
    assert "not done" in str(checks.check_downsample(lambda x, f: (_ for _ in ()).throw(NotImplementedError)))


def test_noise_augmentation_right_and_mistakes():
    def right(c, ab, e):
        a = ab.view(-1, 1, 1, 1)
        return a.sqrt() * c + (1 - a).sqrt() * e

    assert checks.check_noise_augmentation(right).ok
    assert "square roots" in str(checks.check_noise_augmentation(
        lambda c, ab, e: ab.view(-1, 1, 1, 1) * c + (1 - ab.view(-1, 1, 1, 1)) * e))
    assert "not shrunk" in str(checks.check_noise_augmentation(lambda c, ab, e: c + (1 - ab.view(-1, 1, 1, 1)).sqrt() * e))
    assert "swapped" in str(checks.check_noise_augmentation(lambda c, ab, e: right(e, ab, c)))
    assert "wrong shape" in str(checks.check_noise_augmentation(lambda c, ab, e: ab.sqrt() * c.flatten(1).mean(1)))


def test_psnr_right_and_mistakes():
    def mse(x, y):
        return (x - y).pow(2).flatten(1).mean(1)

    assert checks.check_psnr(lambda x, y: 10 * torch.log10(4 / mse(x, y))).ok
    assert "peak 1" in str(checks.check_psnr(lambda x, y: 10 * torch.log10(1 / mse(x, y))))
    assert "natural log" in str(checks.check_psnr(lambda x, y: 10 * torch.log(4 / mse(x, y))))
    assert "20 log10" in str(checks.check_psnr(lambda x, y: 20 * torch.log10(4 / mse(x, y))))
    assert "whole batch" in str(checks.check_psnr(lambda x, y: (10 * torch.log10(4 / mse(x, y).mean())).expand(3)))


def test_prior_preservation_right_and_mistakes():
    right = lambda o, t, op, tp, w: (o - t).pow(2).mean() + w * (op - tp).pow(2).mean()
    assert checks.check_prior_preservation(right).ok
    assert "lambda weighs the prior" in str(checks.check_prior_preservation(
        lambda o, t, op, tp, w: w * (o - t).pow(2).mean() + (op - tp).pow(2).mean()))
    assert "without its weight" in str(checks.check_prior_preservation(
        lambda o, t, op, tp, w: (o - t).pow(2).mean() + (op - tp).pow(2).mean()))
    assert "one mean over both" in str(checks.check_prior_preservation(
        lambda o, t, op, tp, w: (torch.cat([o, op]) - torch.cat([t, tp])).pow(2).mean()))


def test_hyper_kv_right_and_mistakes():
    def right(c, kv, fk, fv):
        C = kv.out_features // 2
        return torch.cat([kv(c + fk(c))[..., :C], kv(c + fv(c))[..., C:]], -1)

    assert checks.check_hyper_kv(right).ok
    assert "residual" in str(checks.check_hyper_kv(lambda c, kv, fk, fv: torch.cat([kv(fk(c))[..., :4], kv(fv(c))[..., 4:]], -1)))
    assert "swapped" in str(checks.check_hyper_kv(lambda c, kv, fk, fv: torch.cat([kv(c + fv(c))[..., :4], kv(c + fk(c))[..., 4:]], -1)))


def test_attention_share_right_and_mistakes():
    def right(w, n):
        g = w.reshape(-1, 2, n, *w.shape[1:])
        return torch.stack([g[:, 0], g[:, 0]], 1).reshape(w.shape)

    def first_only(w, n):
        w = w.clone()
        w[n:2 * n] = w[:n]
        return w

    assert checks.check_attention_share(right).ok
    assert "second group" in str(checks.check_attention_share(first_only))
