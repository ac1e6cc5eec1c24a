"""DDPM on 2-D data: the forward posterior against Bayes, and ancestral sampling with the exact (oracle) epsilon.

The oracle check is the course's "is my sampler right?" test: with the exact
epsilon of a Gaussian mixture, ancestral sampling must reproduce the mixture
(energy distance within 2x its noise floor). Its power was checked against
mutants: a sign flip of the model output, alpha_bar_t used for alpha_bar_{t-1}
in the posterior, or a posterior mean without noise put the distance 300x to
10^9x above the floor. An off-by-one in the model's t is *invisible* to this
check at T = 1000 (neighbouring steps are too alike), so the order of the
timesteps the sampler visits is tested exactly, with a spy model.
"""

import pytest
import torch

from tinydiff import schedules
from tinydiff.data import anisotropic_mixture
from tinydiff.diffusion import q_posterior
from tinydiff.metrics import energy_distance, energy_distance_floor
from tinydiff.oracle import MixtureEpsilon
from tinydiff.samplers import ddpm_sample


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def bayes_posterior(sched, x0: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x_{t-1} | x_t, x_0) by Gaussian conditioning of the joint law of (x_0, x_{t-1}, x_t), x_0 ~ N(m, s^2), 1-D.

    Built only from the chain x_{t-1} = sqrt(ab_{t-1}) x_0 + ..., x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z
    (Ho et al. eqs. 2 and 4), not from eq. 7: cond. mean = mu_1 + S_12 S_22^-1 (obs - mu_2),
    cond. var = S_11 - S_12 S_22^-1 S_21 (Bishop 2006, eqs. 2.81-2.82).
    """
    m, s2 = 0.7, 1.3  # the Gaussian prior of x_0; the conditional does not depend on it
    ab_prev = 1.0 if t == 0 else float(sched.alpha_bars[t - 1])
    alpha = float(sched.alphas[t])
    var_prev = ab_prev * s2 + 1 - ab_prev                       # Var x_{t-1}
    cov = torch.tensor([
        # x_{t-1}                      x_0                        x_t
        [var_prev,                     ab_prev**0.5 * s2,         alpha**0.5 * var_prev],
        [ab_prev**0.5 * s2,            s2,                        (alpha * ab_prev) ** 0.5 * s2],
        [alpha**0.5 * var_prev,        (alpha * ab_prev) ** 0.5 * s2, alpha * var_prev + 1 - alpha],
    ], dtype=torch.float64)
    mu = torch.tensor([ab_prev**0.5 * m, m, (alpha * ab_prev) ** 0.5 * m], dtype=torch.float64)
    gain = torch.linalg.solve(cov[1:, 1:], cov[1:, :1]).T      # S_12 S_22^-1, shape [1, 2]
    obs = torch.stack([x0[:, 0], x_t[:, 0]], dim=1).double()    # [B, 2]
    mean = mu[0] + (obs - mu[1:]) @ gain.T                      # [B, 1]
    var = cov[0, 0] - (gain @ cov[1:, :1]).squeeze()
    return mean, var


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [0, 1, 500, 999])
def test_posterior_mean_and_variance_match_bayes(name, t):
    sched = schedules.get(name, T=1000)
    g = torch.Generator().manual_seed(t)
    x0 = torch.randn(64, 1, generator=g, dtype=torch.float64)
    x_t = 3 * torch.randn(64, 1, generator=g, dtype=torch.float64)
    mean, var = q_posterior(sched, x0, x_t, torch.full((64,), t))
    expected_mean, expected_var = bayes_posterior(sched, x0, x_t, t)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(var.flatten(), expected_var.expand(64), rtol=1e-6, atol=1e-9)
    if t == 0:  # x_{-1} is x_0 itself
        torch.testing.assert_close(mean, x0, rtol=0, atol=1e-9)


def oracle_distance_ratio(model, sched, mixture, n: int, chunks: int, seed: int) -> float:
    """Energy distance of `chunks` x n DDPM samples to fresh true samples (mean over chunks) / the exact floor."""
    x = ddpm_sample(model, sched, (n * chunks, 2), generator=torch.Generator().manual_seed(seed), progress=False)
    g = torch.Generator().manual_seed(seed + 1)
    floor = energy_distance_floor(mixture.sample, n, generator=g)
    return sum(energy_distance(part, mixture.sample(n, generator=g)) for part in x.split(n)) / chunks / floor


@pytest.fixture(scope="module")
def linear():
    return schedules.get("linear", T=1000)


def test_oracle_ddpm_reproduces_the_mixture(linear):
    """4000 samples in 8 chunks: a perfect sampler averages a ratio of 1 (sd about 0.3); the bar is 2."""
    mix = anisotropic_mixture()
    assert oracle_distance_ratio(MixtureEpsilon(mix, linear), linear, mix, n=500, chunks=8, seed=0) < 2.0


def test_the_oracle_check_fails_for_a_sign_error(linear):
    mix = anisotropic_mixture()
    oracle = MixtureEpsilon(mix, linear)
    assert oracle_distance_ratio(lambda x, t: -oracle(x, t), linear, mix, n=300, chunks=1, seed=0) > 100


def test_sampler_visits_every_step_once_from_T_minus_1_to_0():
    """A spy model records the t it is called with: 0-based, descending, one LongTensor [B] per step."""
    sched = schedules.get("cosine", T=7)
    seen = []

    def spy(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    x_T = torch.randn(3, 2)
    ddpm_sample(spy, sched, (3, 2), x_T=x_T, progress=False)
    assert [int(t[0]) for t in seen] == [6, 5, 4, 3, 2, 1, 0]
    assert all(t.dtype == torch.long and t.shape == (3,) and (t == t[0]).all() for t in seen)


def test_point_mass_data_is_recovered_exactly():
    """Data = one point c: eps* = (x_t - sqrt(ab) c) / sqrt(1 - ab), so x0_hat = c at every step and the
    last step (t = 0, beta_tilde = 0, posterior mean = x0_hat) returns c exactly, from any start."""
    sched = schedules.get("linear", T=50)
    c = torch.tensor([0.3, -1.2])

    def point_oracle(x, t):
        ab = sched.alpha_bars[t].float()[:, None]
        return (x - ab.sqrt() * c) / (1 - ab).sqrt()

    out = ddpm_sample(point_oracle, sched, (5, 2), generator=torch.Generator().manual_seed(0), progress=False)
    torch.testing.assert_close(out, c.expand(5, 2), rtol=0, atol=1e-4)
