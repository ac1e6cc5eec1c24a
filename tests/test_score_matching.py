"""Denoising score matching (Vincent 2011) in DDPM form, against Gaussian closed forms.

For x_0 ~ N(m, s^2 I) everything is linear and known. At step t, with ab = alpha_bar_t
and v_t = ab s^2 + 1 - ab (the variance of x_t):

    eps*(x_t)      = sqrt(1 - ab) (x_t - sqrt(ab) m) / v_t          the optimal epsilon (= -sqrt(1 - ab) * score)
    min L_simple   = ab s^2 / v_t                                    per dimension
    E[x_0 | x_t]   = m + s^2 sqrt(ab) (x_t - sqrt(ab) m) / v_t       (Tweedie = Gaussian conditioning)

and for an affine model eps = a x_t + b the expected loss per dimension is
(1 - a sqrt(1 - ab))^2 + a^2 ab s^2 + (a sqrt(ab) m + b)^2.
"""

import math

import pytest
import torch
from torch import nn

from tinydiff import schedules
from tinydiff.data import GaussianMixture
from tinydiff.diffusion import predict_x0, score_from_eps
from tinydiff.losses import diffusion_loss
from tinydiff.train import train

M = torch.tensor([1.0, -0.5])
S2 = 0.25


@pytest.fixture(scope="module")
def sched():
    return schedules.get("cosine", T=10)


def gaussian_data(n: int, generator: torch.Generator) -> torch.Tensor:
    return M + math.sqrt(S2) * torch.randn(n, 2, generator=generator)


def optimal_eps(sched, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    ab = sched.alpha_bars[t].float()[:, None]
    return (1 - ab).sqrt() * (x_t - ab.sqrt() * M) / (ab * S2 + 1 - ab)


def min_loss(sched, t: int) -> float:
    ab = float(sched.alpha_bars[t])
    return ab * S2 / (ab * S2 + 1 - ab)


@pytest.mark.parametrize("t", [0, 4, 9])
def test_closed_form_denoiser_reaches_the_minimum_and_perturbations_cost_what_they_should(sched, t):
    g = torch.Generator().manual_seed(t)
    n = 200_000
    x0 = gaussian_data(n, g)
    noise = torch.randn(n, 2, generator=g)
    tt = torch.full((n,), t)
    best = diffusion_loss(lambda x, s: optimal_eps(sched, x, s), sched, x0, t=tt, noise=noise).item()
    assert abs(best - min_loss(sched, t)) < 0.01 * min_loss(sched, t) + 1e-4
    ab = float(sched.alpha_bars[t])
    second_moment = (1 - ab) / (ab * S2 + 1 - ab)  # E|eps*|^2 per dimension
    for c in (0.8, 1.2):
        scaled = diffusion_loss(lambda x, s: c * optimal_eps(sched, x, s), sched, x0, t=tt, noise=noise).item()
        assert scaled > best
        assert abs(scaled - best - (c - 1) ** 2 * second_moment) < 0.05 * (c - 1) ** 2 * second_moment + 5e-4
    shifted = diffusion_loss(lambda x, s: optimal_eps(sched, x, s) + 0.1, sched, x0, t=tt, noise=noise).item()
    assert abs(shifted - best - 0.01) < 1e-3


@pytest.mark.parametrize("t", [0, 4, 9])
def test_optimal_eps_is_minus_sqrt_one_minus_ab_times_the_true_score(sched, t):
    """The bridge identity eps* = -sqrt(1 - ab) grad log q_t, with q_t from GaussianMixture.noised."""
    data = GaussianMixture(torch.ones(1), M[None].double(), S2 * torch.eye(2, dtype=torch.float64)[None])
    x_t = torch.randn(100, 2, generator=torch.Generator().manual_seed(0)) * 2
    tt = torch.full((100,), t)
    true_score = data.noised(sched.alpha_bars[t]).score(x_t)
    torch.testing.assert_close(score_from_eps(sched, optimal_eps(sched, x_t, tt), tt), true_score, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("t", [0, 4, 9])
def test_tweedie_posterior_mean(sched, t):
    """predict_x0 with the optimal eps is E[x_0 | x_t], which for Gaussian data is plain Gaussian conditioning."""
    x_t = torch.randn(100, 2, generator=torch.Generator().manual_seed(1)) * 2
    tt = torch.full((100,), t)
    ab = float(sched.alpha_bars[t])
    expected = M + S2 * math.sqrt(ab) * (x_t - math.sqrt(ab) * M) / (ab * S2 + 1 - ab)
    torch.testing.assert_close(predict_x0(sched, x_t, tt, optimal_eps(sched, x_t, tt)), expected, rtol=1e-4, atol=1e-4)


class AffineEps(nn.Module):
    """eps_theta(x_t, t) = a_t x_t + b_t: the family the optimum lives in for Gaussian data."""

    def __init__(self, T: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(T))
        self.b = nn.Parameter(torch.zeros(T, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.a[t, None] * x + self.b[t]


def expected_affine_loss(sched, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Closed-form expected L_simple per t (mean over the 2 dimensions) of eps = a_t x_t + b_t."""
    ab = sched.alpha_bars.float()
    var = (1 - a * (1 - ab).sqrt()) ** 2 + a**2 * ab * S2
    bias = (a * ab.sqrt())[:, None] * M + b
    return var + (bias**2).mean(1)


def test_briefly_trained_model_approaches_the_closed_form_optimum(sched):
    """60 steps of tinydiff.train on L_simple bring an affine model from loss 1 to within 2% of the minimum."""
    model = AffineEps(sched.T)
    start = expected_affine_loss(sched, model.a.detach(), model.b.detach()).mean().item()
    for state in train(model, sched, gaussian_data, steps=60, batch_size=2048, lr=0.05, grad_clip=None,
                       generator=torch.Generator().manual_seed(0), progress=False):
        pass
    ab = sched.alpha_bars.float()
    optimum = torch.tensor([min_loss(sched, t) for t in range(sched.T)])
    trained = expected_affine_loss(sched, model.a.detach(), model.b.detach())
    assert start == pytest.approx(1.0)  # a zero model: E|eps|^2 / D = 1
    assert (trained - optimum).mean() < 0.02 * optimum.mean()
    a_star = (1 - ab).sqrt() / (ab * S2 + 1 - ab)
    assert (model.a.detach() - a_star).abs().max() < 0.1
