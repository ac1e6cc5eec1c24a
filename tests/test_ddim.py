"""DDIM (Song et al. 2021): timestep spacings, eq. 16 and eq. 12 against closed forms, oracle quality, inversion, slerp."""

import math

import pytest
import torch

from tinydiff import schedules
from tinydiff.data.toy import GaussianMixture, anisotropic_mixture, eight_gaussians
from tinydiff.diffusion import q_posterior, training_target
from tinydiff.metrics import energy_distance, energy_distance_floor
from tinydiff.oracle import MixtureEpsilon
from tinydiff.samplers import (
    SPACINGS,
    ddim_invert,
    ddim_sample,
    ddim_sigma,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    denoise,
    slerp,
)

# --------------------------------------------------------------------------- timestep spacings


def test_spacings_match_lin_et_al_table_2():
    """T = 1000, 10 steps: the values printed in Lin et al. 2024, Table 2 (diffusers' set_timesteps, offset 0)."""
    assert ddim_timesteps(1000, 10, "leading").tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert ddim_timesteps(1000, 10, "trailing").tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert ddim_timesteps(1000, 10, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]


def test_spacings_for_50_steps_closed_form():
    T, n = 1000, 50
    assert ddim_timesteps(T, n, "leading").tolist() == [20 * k for k in range(n - 1, -1, -1)]
    assert ddim_timesteps(T, n, "trailing").tolist() == [1000 - 20 * k - 1 for k in range(n)]
    # 999 / 49 is not an integer: round-half-even of k * 999 / 49, computed exactly in integers.
    expected = []
    for k in range(n - 1, -1, -1):
        q, r = divmod(k * 999, 49)
        expected.append(q + (1 if 2 * r > 49 or (2 * r == 49 and q % 2) else 0))
    assert ddim_timesteps(T, n, "linspace").tolist() == expected


@pytest.mark.parametrize("spacing", SPACINGS)
def test_every_step_count_gives_distinct_descending_valid_steps(spacing):
    T = 1000
    for steps in range(1, T + 1):
        t = ddim_timesteps(T, steps, spacing)
        assert t.dtype == torch.long and t.shape == (steps,), (steps, t.shape)
        assert int(t.min()) >= 0 and int(t.max()) <= T - 1, steps
        if steps > 1:
            assert (t[:-1] > t[1:]).all(), steps


@pytest.mark.parametrize("spacing", SPACINGS)
def test_all_T_steps_visit_every_step(spacing):
    assert ddim_timesteps(100, 100, spacing).tolist() == list(range(99, -1, -1))


def test_trailing_has_exactly_steps_values_where_float_arange_adds_one():
    """np.arange(1000, 0, -1000/61) has 62 elements (the last is -5.7e-13, i.e. step -1); we keep 61."""
    t = ddim_timesteps(1000, 61, "trailing")
    assert t.shape == (61,) and int(t[0]) == 999 and int(t[-1]) == 15


# --------------------------------------------------------------------------- eq. 16 and eq. 12


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_eta_one_over_all_steps_is_ddpm_posterior_variance_at_every_t(name):
    """sigma_t(1)^2 with prev = t-1 equals beta_tilde_t (Ho et al. eq. 7), for every t = 0..T-1."""
    s = schedules.get(name, T=1000)
    t = torch.arange(s.T)
    sigma = ddim_sigma(s.alpha_bars, s.alpha_bars_prev, 1.0)
    x = torch.zeros(s.T, 1, dtype=torch.float64)
    _, var = q_posterior(s, x, x, t)
    torch.testing.assert_close(sigma**2, var.squeeze(1), rtol=1e-10, atol=1e-15)
    beta_tilde = (1 - s.alpha_bars_prev) / (1 - s.alpha_bars) * s.betas  # the closed form itself
    torch.testing.assert_close(sigma**2, beta_tilde, rtol=1e-10, atol=1e-15)
    assert float(sigma[0]) == 0.0  # the step to the clean sample adds no noise


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_eta_one_mean_is_ddpm_posterior_mean_at_every_t(name):
    """With eta = 1 and prev = t-1, eq. 12 without its noise term is the posterior mean of q(x_{t-1} | x_t, x_0)."""
    s = schedules.get(name, T=1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    x_t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    ab, ab_prev = s.alpha_bars.tolist(), s.alpha_bars_prev.tolist()
    for t in range(s.T):
        eps = (x_t - math.sqrt(ab[t]) * x0) / math.sqrt(1 - ab[t])  # the eps consistent with (x_t, x0)
        sigma = ddim_sigma(ab[t], ab_prev[t], 1.0)
        got = ddim_step(x0, eps, ab_prev[t], sigma, noise=torch.zeros_like(x0))
        mean, _ = q_posterior(s, x0, x_t, t)
        torch.testing.assert_close(got, mean, rtol=1e-9, atol=1e-9, msg=f"t={t}")


def test_eta_zero_sigma_and_last_step_returns_x0_hat():
    assert ddim_sigma(0.3, 0.7, 0.0) == 0.0
    assert ddim_sigma(0.3, 1.0, 1.0) == 0.0
    x0_hat, eps_hat = torch.randn(5, 2), torch.randn(5, 2)
    assert torch.equal(ddim_step(x0_hat, eps_hat, 1.0), x0_hat)


def test_eta_one_all_steps_reproduces_ddpm_sampler():
    """Same generator, same noise draws: DDIM(eta=1, steps=T) and DDPM(beta_tilde) give the same samples."""
    s = schedules.get("cosine", T=100)
    oracle = MixtureEpsilon(eight_gaussians(), s)
    kw = dict(progress=False)
    x_T = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    a = ddim_sample(oracle, s, x_T.shape, steps=100, eta=1.0, x_T=x_T, generator=torch.Generator().manual_seed(4), **kw)
    b = ddpm_sample(oracle, s, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(4), **kw)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_deterministic_ddim_on_a_gaussian_closed_form(spacing, steps):
    """Data N(mu, s^2 I). Then x_t ~ N(m_t, v_t^2 I) with m_t = sqrt(ab_t) mu, v_t^2 = ab_t s^2 + 1 - ab_t, and by
    Bayes x0_hat = mu + sqrt(ab_t) s^2 z / v_t^2, eps_hat = sqrt(1 - ab_t) z / v_t^2 for z = x_t - m_t. So one DDIM
    step from t to r maps z to z * (sqrt(ab_r ab_t) s^2 + sqrt((1 - ab_r)(1 - ab_t))) / v_t^2, and the last step
    returns x0_hat. Multiply it out over the visited steps: catches an off-by-one anywhere in the loop."""
    T, sd = 200, 0.5
    s = schedules.get("linear", T=T)
    mu = torch.tensor([1.5, -0.5], dtype=torch.float64)
    cov = sd**2 * torch.eye(2, dtype=torch.float64)[None]
    oracle = MixtureEpsilon(GaussianMixture(torch.ones(1), mu[None], cov), s)
    x_T = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = ddim_sample(oracle, s, x_T.shape, steps=steps, spacing=spacing, x_T=x_T, progress=False)

    ab = [float(a) for a in s.alpha_bars]
    taus = ddim_timesteps(T, steps, spacing).tolist()
    v2 = lambda t: ab[t] * sd**2 + 1 - ab[t]  # noqa: E731
    z = x_T - math.sqrt(ab[taus[0]]) * mu
    for t, r in zip(taus[:-1], taus[1:]):
        z = z * (math.sqrt(ab[r] * ab[t]) * sd**2 + math.sqrt((1 - ab[r]) * (1 - ab[t]))) / v2(t)
    last = taus[-1]
    expected = mu + math.sqrt(ab[last]) * sd**2 * z / v2(last)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


def test_ddim_is_exact_for_a_single_point():
    """Data = one point mu: x0_hat = mu at every step, and eq. 12 with eta = 0 is the exact ODE solution,
    x_r = sqrt(ab_r) mu + sqrt((1 - ab_r) / (1 - ab_t)) (x_t - sqrt(ab_t) mu); the sampler returns mu for any steps."""
    s = schedules.get("cosine", T=1000)
    mu = torch.tensor([[0.7, -1.1]], dtype=torch.float64)
    point = lambda x, t: (x - s.alpha_bars[t][:, None].sqrt() * mu) / (1 - s.alpha_bars[t][:, None]).sqrt()  # noqa: E731
    x_T = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for steps in (1, 3, 50):
        torch.testing.assert_close(ddim_sample(point, s, x_T.shape, steps=steps, x_T=x_T, progress=False), mu.expand(8, 2))


# --------------------------------------------------------------------------- sampling with the oracle


def test_oracle_ddim_50_within_twice_the_noise_floor():
    mix, s = anisotropic_mixture(), schedules.get("linear", T=1000)
    n = 2000
    g = torch.Generator().manual_seed(0)
    references = [mix.sample(n, generator=g) for _ in range(3)]
    floor = energy_distance_floor(mix.sample, n, generator=g)  # expected distance of two exact n-point draws
    x = ddim_sample(MixtureEpsilon(mix, s), s, (n, 2), steps=50, generator=torch.Generator().manual_seed(1), progress=False)
    ed = sum(energy_distance(x, ref) for ref in references) / 3
    assert ed < 2 * floor, f"DDIM-50 energy distance {ed:.2e} vs noise floor {floor:.2e}"


def test_wrong_timesteps_fail_the_oracle_check():
    """The quality test can fail: feeding the model t+20 (an index bug) lands far above the floor."""
    mix, s = anisotropic_mixture(), schedules.get("linear", T=1000)
    oracle = MixtureEpsilon(mix, s)
    g = torch.Generator().manual_seed(0)
    reference = mix.sample(3000, generator=g)
    floor = energy_distance(mix.sample(2000, generator=g), reference)
    shifted = lambda x, t: oracle(x, (t + 20).clamp(max=s.T - 1))  # noqa: E731
    x = ddim_sample(shifted, s, (2000, 2), steps=50, generator=torch.Generator().manual_seed(1), progress=False)
    assert energy_distance(x, reference) > 2 * floor


def test_eta_zero_is_bit_identical_and_eta_positive_follows_the_generator():
    s = schedules.get("cosine", T=1000)
    oracle = MixtureEpsilon(eight_gaussians(), s)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    a = ddim_sample(oracle, s, x_T.shape, steps=20, x_T=x_T.clone(), progress=False)
    b = ddim_sample(oracle, s, x_T.shape, steps=20, x_T=x_T.clone(), generator=torch.Generator().manual_seed(9), progress=False)
    assert torch.equal(a, b)
    c1 = ddim_sample(oracle, s, x_T.shape, steps=20, eta=0.5, x_T=x_T, generator=torch.Generator().manual_seed(1), progress=False)
    c2 = ddim_sample(oracle, s, x_T.shape, steps=20, eta=0.5, x_T=x_T, generator=torch.Generator().manual_seed(1), progress=False)
    c3 = ddim_sample(oracle, s, x_T.shape, steps=20, eta=0.5, x_T=x_T, generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.equal(c1, c2) and not torch.equal(c1, c3)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_prediction_targets_give_the_same_samples(prediction):
    """A model that outputs x0 or v (the exact conversion of the oracle's eps) samples the same points."""
    s = schedules.get("cosine", T=1000)
    oracle = MixtureEpsilon(eight_gaussians(), s)

    def converted(x_t, t):
        eps = oracle(x_t, t)
        ab = s.alpha_bars.to(x_t.dtype)[t][:, None]
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        return training_target(s, x0, eps, t, prediction)

    x_T = torch.randn(128, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = ddim_sample(oracle, s, x_T.shape, steps=20, x_T=x_T, progress=False)
    b = ddim_sample(converted, s, x_T.shape, steps=20, x_T=x_T, prediction=prediction, progress=False)
    torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def test_clip_x0_bounds_the_output():
    s = schedules.get("linear", T=1000)
    big = lambda x, t: -10 * torch.ones_like(x)  # noqa: E731  (eps = -10 -> x0_hat far outside [-1, 1])
    out = ddim_sample(big, s, (8, 1, 4, 4), steps=10, clip_x0=1.0, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.abs().max() <= 1.0 + 1e-6


def test_trajectory_shapes_and_order():
    s = schedules.get("cosine", T=1000)
    oracle = MixtureEpsilon(eight_gaussians(), s)
    x, traj = ddim_sample(oracle, s, (10, 2), steps=20, spacing="trailing", progress=False, return_trajectory=True,
                          generator=torch.Generator().manual_seed(0))
    assert torch.equal(traj.timesteps, ddim_timesteps(1000, 20, "trailing"))
    assert traj.xs.shape == (21, 10, 2) and traj.x0_preds.shape == (20, 10, 2)
    assert torch.equal(traj.xs[-1], x) and torch.equal(traj.x0_preds[-1], x)  # the last step returns x0_hat


def test_runs_on_meta_tensors():
    """No hard-coded device: the whole loop runs on the meta device (shapes only)."""
    s = schedules.get("linear", T=1000)
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731
    x_T = torch.empty(3, 1, 8, 8, device="meta")
    out = ddim_sample(model, s, x_T.shape, steps=5, eta=0.3, x_T=x_T, progress=False)
    assert out.device.type == "meta" and out.shape == x_T.shape
    assert ddim_invert(model, s, x_T, steps=5, progress=False).device.type == "meta"


# --------------------------------------------------------------------------- inversion


def test_inversion_round_trip_with_the_oracle():
    """x0 -> ddim_invert -> ddim_sample -> x0. Stated tolerance: RMS error < 0.02 at 100 steps
    (the data have standard deviation ~1.4), and the error shrinks as the steps grow (first order)."""
    mix, s = eight_gaussians(), schedules.get("cosine", T=1000)
    oracle = MixtureEpsilon(mix, s)
    x0 = mix.sample(200, generator=torch.Generator().manual_seed(0)).double()
    errors = {}
    for steps in (25, 50, 100, 200):
        x_T = ddim_invert(oracle, s, x0, steps=steps, progress=False)
        back = ddim_sample(oracle, s, x0.shape, steps=steps, x_T=x_T, progress=False)
        errors[steps] = float((back - x0).pow(2).sum(1).mean().sqrt())
    assert errors[100] < 0.02, errors
    assert errors[25] > errors[50] > errors[100] > errors[200], errors
    assert errors[200] < 0.7 * errors[100], errors


def test_inverted_latents_look_like_gaussian_noise():
    mix, s = eight_gaussians(), schedules.get("cosine", T=1000)
    x0 = mix.sample(2000, generator=torch.Generator().manual_seed(0))
    x_T = ddim_invert(MixtureEpsilon(mix, s), s, x0, steps=50, progress=False)
    assert abs(float(x_T.mean())) < 0.1 and abs(float(x_T.std()) - 1.0) < 0.15


# --------------------------------------------------------------------------- slerp


def test_slerp_closed_form_for_orthogonal_vectors():
    a = torch.tensor([[3.0, 0.0]])
    b = torch.tensor([[0.0, 3.0]])
    for w in (0.0, 0.25, 0.5, 1.0):
        expected = torch.tensor([[3 * math.cos(w * math.pi / 2), 3 * math.sin(w * math.pi / 2)]])
        torch.testing.assert_close(slerp(a, b, w), expected)


def test_slerp_endpoints_norm_and_batch_weights():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(4, 1, 28, 28, generator=g), torch.randn(4, 1, 28, 28, generator=g)
    torch.testing.assert_close(slerp(z0, z1, 0.0), z0)
    torch.testing.assert_close(slerp(z0, z1, 1.0), z1)
    w = torch.tensor([0.0, 0.3, 0.6, 1.0])
    mid = slerp(z0, z1, w)
    assert mid.shape == z0.shape
    norms = mid.flatten(1).norm(dim=1)
    assert (norms > 0.95 * 28).all() and (norms < 1.05 * 28).all()  # near the sphere of radius sqrt(784) = 28
    linear_mid = 0.5 * (z0 + z1)
    assert (linear_mid.flatten(1).norm(dim=1) < 0.8 * 28).all()  # what slerp avoids


def test_slerp_parallel_falls_back_to_the_line():
    z = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(slerp(z, 2 * z, 0.5), 1.5 * z)


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def setup():
    s = schedules.get("linear", T=100)
    return (lambda x, t: torch.zeros_like(x)), s


@pytest.mark.parametrize("steps", [0, -3, 101])
def test_steps_out_of_range(setup, steps):
    model, s = setup
    with pytest.raises(ValueError, match="steps=.*between 1 and T = 100"):
        ddim_sample(model, s, (2, 2), steps=steps, progress=False)
    with pytest.raises(ValueError, match="between 1 and T"):
        ddim_invert(model, s, torch.zeros(2, 2), steps=steps, progress=False)


def test_steps_not_an_integer(setup):
    model, s = setup
    with pytest.raises(TypeError, match="integer"):
        ddim_sample(model, s, (2, 2), steps=10.0, progress=False)


def test_unknown_spacing(setup):
    model, s = setup
    with pytest.raises(ValueError, match="unknown spacing 'uniform'.*leading, trailing, linspace"):
        ddim_sample(model, s, (2, 2), steps=5, spacing="uniform", progress=False)


@pytest.mark.parametrize("eta", [-0.1, float("nan"), float("inf")])
def test_bad_eta(setup, eta):
    model, s = setup
    with pytest.raises(ValueError, match="eta must be a finite number >= 0"):
        ddim_sample(model, s, (2, 2), steps=5, eta=eta, progress=False)


def test_eta_too_large_for_a_step():
    with pytest.raises(ValueError, match="eta is too large"):
        ddim_step(torch.zeros(1, 1), torch.zeros(1, 1), 0.5, sigma=0.9, noise=torch.zeros(1, 1))


def test_other_bad_inputs(setup):
    model, s = setup
    with pytest.raises(ValueError, match="x_T has shape"):
        ddim_sample(model, s, (2, 2), steps=5, x_T=torch.zeros(3, 2), progress=False)
    with pytest.raises(ValueError, match="unknown prediction type"):
        ddim_sample(model, s, (2, 2), steps=5, prediction="sample", progress=False)
    with pytest.raises(ValueError, match="must return a tensor shaped like x_t"):
        ddim_sample(lambda x, t: x[:, :1], s, (2, 2), steps=5, progress=False)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'steps'"):
        ddim_sample(model, s, (2, 2), progress=False)  # the caller always chooses the number of steps
    with pytest.raises(ValueError, match="needs noise"):
        ddim_step(torch.zeros(1, 1), torch.zeros(1, 1), 0.5, sigma=0.1)
    with pytest.raises(ValueError, match="same shape"):
        slerp(torch.zeros(2, 3), torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match="w must be a float or a tensor of shape"):
        slerp(torch.ones(2, 3), torch.ones(2, 3), torch.ones(3))


def test_denoise_is_the_shared_conversion():
    """denoise returns (x0, eps) for a model that outputs the exact target of each prediction type."""
    s = schedules.get("cosine", T=1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    ab = s.alpha_bars[t][:, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    for prediction in ("epsilon", "x0", "v"):
        target = training_target(s, x0, eps, t, prediction)
        x0_hat, eps_hat = denoise(lambda x, tt: target, s, x_t, t, prediction)
        torch.testing.assert_close(x0_hat, x0, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(eps_hat, eps, rtol=1e-6, atol=1e-6)
