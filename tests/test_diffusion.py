"""The forward process against its closed forms (Ho et al. 2020, eqs. 2 and 4)."""

import math

import pytest
import torch

from tinydiff import schedules
from tinydiff.data import two_moons
from tinydiff.diffusion import (
    PREDICTION_TYPES,
    eps_from_score,
    predict_eps,
    predict_x0,
    q_posterior,
    q_sample,
    q_step,
    score_from_eps,
    training_target,
)


@pytest.fixture(scope="module")
def sched():
    return schedules.get("linear", T=1000)


@pytest.mark.parametrize("t", [0, 10, 300, 999])
def test_q_sample_moments(sched, t):
    """E[x_t | x_0] = sqrt(ab) x_0 and Var[x_t | x_0] = 1 - ab, from 200k draws."""
    g = torch.Generator().manual_seed(t)
    n = 200_000
    x0 = torch.tensor([1.5, -0.5]).expand(n, 2)
    x_t = q_sample(sched, x0, torch.full((n,), t), torch.randn(n, 2, generator=g))
    ab = sched.alpha_bars[t].item()
    se = math.sqrt((1 - ab) / n)  # standard error of the mean
    assert torch.allclose(x_t.mean(0), math.sqrt(ab) * torch.tensor([1.5, -0.5]), atol=5 * se + 1e-6)
    assert torch.allclose(x_t.var(0), torch.full((2,), 1 - ab), rtol=0.02, atol=1e-6)


def test_q_sample_broadcasts_over_image_shapes(sched):
    x0 = torch.ones(3, 1, 4, 4)
    t = torch.tensor([0, 500, 999])
    x_t = q_sample(sched, x0, t, torch.zeros_like(x0))
    for i in range(3):
        assert torch.allclose(x_t[i], sched.alpha_bars[t[i]].sqrt().float() * torch.ones(1, 4, 4))


def test_q_sample_keeps_dtype(sched):
    x0 = torch.randn(4, 2, dtype=torch.float64)
    assert q_sample(sched, x0, 3, torch.randn_like(x0)).dtype == torch.float64
    x0 = torch.randn(4, 2, dtype=torch.bfloat16)
    assert q_sample(sched, x0, 3, torch.randn_like(x0)).dtype == torch.bfloat16


@pytest.mark.parametrize("steps", [1, 50, 300])
def test_chain_matches_closed_form(sched, steps):
    """Iterating eq. 2 `steps` times gives the law of eq. 4: mean sqrt(ab) E[x0], covariance ab Cov[x0] + (1 - ab) I."""
    g = torch.Generator().manual_seed(steps)
    n = 40_000
    x0 = two_moons(n, generator=g).double()
    x = x0
    for t in range(steps):
        x = q_step(sched, x, t, torch.randn(x.shape, generator=g, dtype=torch.float64))
    ab = sched.alpha_bars[steps - 1].item()
    mean = math.sqrt(ab) * x0.mean(0)
    cov = ab * torch.cov(x0.T) + (1 - ab) * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(x.mean(0), mean, atol=0.02)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.02)


def test_without_sqrt_one_minus_beta_variance_grows(sched):
    """Without the sqrt(1 - beta) factor the variance is 1 + sum(beta) (unbounded in T): the chain's scaling matters."""
    x0 = torch.zeros(20_000, 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x_scaled, x_plain = x0, x0
    for t in range(sched.T):
        z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x_scaled = q_step(sched, x_scaled, t, z)
        x_plain = x_plain + sched.betas[t].sqrt() * z
    assert x_scaled.var().item() == pytest.approx(1 - sched.alpha_bars[-1].item(), rel=0.03)
    assert x_plain.var().item() == pytest.approx(sched.betas.sum().item(), rel=0.03)


def test_posterior_at_first_step_is_the_data(sched):
    x0 = torch.randn(5, 3)
    x_t = torch.randn(5, 3)
    mean, var = q_posterior(sched, x0, x_t, 0)
    assert torch.allclose(mean, x0, atol=1e-6)
    assert torch.all(var == 0)


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_prediction_conversions_round_trip(sched, prediction):
    """Build x_t from known x0 and eps; the target for each prediction type converts back to both."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(6, 1, 5, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 1, 5, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 200, 500, 900, 999])
    x_t = q_sample(sched, x0, t, eps)
    target = training_target(sched, x0, eps, t, prediction)
    assert torch.allclose(predict_x0(sched, x_t, t, target, prediction), x0, atol=1e-8, rtol=1e-6)
    assert torch.allclose(predict_eps(sched, x_t, t, target, prediction), eps, atol=1e-8, rtol=1e-6)


def test_v_target_definition(sched):
    x0, eps = torch.randn(2, 3), torch.randn(2, 3)
    t = torch.tensor([100, 700])
    ab = sched.alpha_bars[t].float()[:, None]
    assert torch.allclose(training_target(sched, x0, eps, t, "v"), ab.sqrt() * eps - (1 - ab).sqrt() * x0)


def test_score_eps_identity(sched):
    eps = torch.randn(4, 2)
    t = torch.tensor([0, 5, 50, 999])
    score = score_from_eps(sched, eps, t)
    assert torch.allclose(score * (1 - sched.alpha_bars[t]).sqrt().float()[:, None], -eps, rtol=1e-5)
    assert torch.allclose(eps_from_score(sched, score, t), eps, atol=1e-6)


def test_bad_timesteps(sched):
    x0 = torch.randn(4, 2)
    noise = torch.randn(4, 2)
    with pytest.raises(ValueError, match="out of range"):
        q_sample(sched, x0, torch.tensor([0, 1, 2, 1000]), noise)
    with pytest.raises(ValueError, match="out of range"):
        q_sample(sched, x0, -1, noise)
    with pytest.raises(ValueError, match=r"shape \[B\] = \[4\]"):
        q_sample(sched, x0, torch.tensor([1, 2]), noise)
    with pytest.raises(TypeError, match="integer timestep"):
        q_sample(sched, x0, torch.tensor([0.5, 1.0, 2.0, 3.0]), noise)
    with pytest.raises(ValueError, match="same shape"):
        q_sample(sched, x0, 1, torch.randn(4, 3))
    with pytest.raises(ValueError, match="unknown prediction type"):
        predict_x0(sched, x0, 1, noise, "score")
