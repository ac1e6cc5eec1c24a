"""tinydiff.flow against closed forms: the straight path's exact mixture velocity, the conversions, the loss's
minimum on a Gaussian, and the orders of the Euler and Heun samplers on the exact velocity of a Gaussian."""

import math

import pytest
import torch

from tinydiff import flow
from tinydiff.data import GaussianMixture, anisotropic_mixture

pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian(mean=(1.0, -0.5), cov=((0.3, 0.1), (0.1, 0.2))) -> GaussianMixture:
    return GaussianMixture(torch.ones(1), torch.tensor([mean]), torch.tensor([cov]))


def test_exact_velocity_equals_the_converted_exact_epsilon_of_the_vp_path():
    """The straight path at t is DDPM's path at alpha_bar = (1-t)^2 / s^2, scaled by s = sqrt((1-t)^2 + t^2):
    x_t / s = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps. So eps* = -sqrt(1 - alpha_bar) * score of the VP-noised
    mixture at x_t / s, x0* from eps*, and u* = eps* - x0* must equal MixtureVelocity's closed form."""
    mixture = anisotropic_mixture()
    oracle = flow.MixtureVelocity(mixture)
    x = 2.0 * torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0):
        s = math.sqrt((1 - t) ** 2 + t**2)
        ab = (1 - t) ** 2 / s**2
        y = x / s
        eps = -math.sqrt(1 - ab) * mixture.noised(ab).score(y) if ab > 0 else y
        x0 = (y - math.sqrt(1 - ab) * eps) / math.sqrt(ab) if ab > 0 else mixture.mean().expand_as(x)
        torch.testing.assert_close(oracle.at(x, t), eps - x0, atol=1e-9, rtol=1e-9)


def test_the_oracle_is_called_like_a_network_with_per_row_times():
    oracle = flow.MixtureVelocity(anisotropic_mixture())
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.0, 0.2, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    out = oracle(x, flow.network_time(t, 6))
    for i in range(6):
        torch.testing.assert_close(out[i : i + 1], oracle.at(x[i : i + 1], float(t[i])), atol=1e-5, rtol=1e-5)


def test_conversions_round_trip():
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randn(8, 3, generator=g, dtype=torch.float64)
    t = torch.rand(8, generator=g, dtype=torch.float64)
    x_t = flow.path_sample(x0, t, eps)
    u = flow.velocity_target(x0, eps)
    torch.testing.assert_close(flow.x0_from_velocity(x_t, t, u), x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(flow.eps_from_velocity(x_t, t, u), eps, atol=1e-12, rtol=0)
    torch.testing.assert_close(flow.path_sample(x0, 0.0, eps), x0)        # t = 0 is data
    torch.testing.assert_close(flow.path_sample(x0, 1.0, eps), eps)       # t = 1 is noise
    # the velocity is the time derivative of the path (central difference, exact for a line)
    h = 1e-3
    torch.testing.assert_close((flow.path_sample(x0, 0.5 + h, eps) - flow.path_sample(x0, 0.5 - h, eps)) / (2 * h), u,
                               atol=1e-9, rtol=0)


def minimum_loss_1d(var0: float, n: int = 200_001) -> float:
    """Closed-form minimum of the flow-matching loss per element for x_0 ~ N(m, var0) (any m): the expected
    conditional variance of eps - x_0 given x_t = (1 - t) x_0 + t eps, integrated over t ~ U[0, 1] (Simpson)."""
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    cov = t - (1 - t) * var0                       # Cov(eps - x_0, x_t)
    var_xt = (1 - t) ** 2 * var0 + t**2
    f = (1 + var0) - cov**2 / var_xt
    h = 1.0 / (n - 1)
    return float(h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))


def test_loss_of_the_exact_velocity_is_its_closed_form_minimum():
    var0 = 0.25
    data = GaussianMixture(torch.ones(1), torch.tensor([[0.7]]), torch.tensor([[[var0]]]))
    oracle = flow.MixtureVelocity(data)
    g = torch.Generator().manual_seed(3)
    x0 = data.sample(100_000, generator=g).double()
    losses = torch.stack([flow.flow_matching_loss(oracle, x0, generator=g) for _ in range(4)])
    expected = minimum_loss_1d(var0)
    # the Monte Carlo loss fluctuates around the minimum: compare within 4 standard errors of 4 independent runs
    se = float(losses.std() / 2)
    assert abs(float(losses.mean()) - expected) < max(4 * se, 2e-3), (float(losses.mean()), expected, se)
    # a wrong velocity (the data-at-1 convention, u -> -u) costs far more than the minimum
    wrong = flow.flow_matching_loss(lambda x, time: -oracle(x, time), x0, generator=g)
    assert float(wrong) > 2 * expected


def test_euler_is_first_order_and_heun_second_order_on_a_gaussian():
    """For Gaussian data the straight-path ODE maps x_1 to x_0 = mu + Sigma^(1/2) x_1 exactly (the marginals are
    N((1-t) mu, (1-t)^2 Sigma + t^2 I), whose square roots commute, and the flow keeps the whitened coordinate)."""
    data = gaussian()
    oracle = flow.MixtureVelocity(data)
    x_1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(data.covs[0])
    sqrt_cov = evecs @ torch.diag(evals.sqrt()) @ evecs.T
    exact = data.means[0] + x_1 @ sqrt_cov.T
    grid = [8, 16, 32, 64]
    for method, order in (("euler", 1.0), ("heun", 2.0)):
        errors = [float((flow.flow_sample(oracle, x_1.shape, steps=n, method=method, x_T=x_1, progress=False)
                         - exact).norm(dim=1).mean()) for n in grid]
        slope = -(math.log(errors[-1]) - math.log(errors[0])) / (math.log(grid[-1]) - math.log(grid[0]))
        assert abs(slope - order) < 0.25, (method, slope, errors)


def test_the_mixture_is_sampled_and_the_trajectory_records_flow_times():
    mixture = anisotropic_mixture()
    oracle = flow.MixtureVelocity(mixture)
    x, traj = flow.flow_sample(oracle, (500, 2), steps=20, method="heun", generator=torch.Generator().manual_seed(5),
                               progress=False, return_trajectory=True)
    assert traj.timesteps.dtype == torch.float32 and float(traj.timesteps[0]) == 1.0 and traj.xs.shape == (21, 500, 2)
    assert float(mixture.log_prob(x.double()).mean()) > float(mixture.log_prob(mixture.sample(500).double()).mean()) - 0.3


def test_bad_input_gets_clear_errors():
    oracle = flow.MixtureVelocity(gaussian())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        flow.path_sample(torch.zeros(2, 2), 1.5, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        flow.path_sample(torch.zeros(2, 2), torch.tensor([0.5, -0.1]), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="shape"):
        flow.path_sample(torch.zeros(2, 2), torch.tensor([0.5, 0.1, 0.2]), torch.zeros(2, 2))
    for steps in (0, 2.5, True):
        with pytest.raises(ValueError, match="steps must be a positive int"):
            flow.flow_sample(oracle, (4, 2), steps=steps, progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        flow.flow_sample(oracle, (4, 2), steps=4, method="rk4", progress=False)
    with pytest.raises(ValueError, match="velocity shaped like x_t"):
        flow.flow_sample(lambda x, t: x[:, :1], (4, 2), steps=2, progress=False)
