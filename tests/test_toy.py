"""Toy distributions; the Gaussian-mixture oracle against scipy, autograd and sampling."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from tinydiff.data import (
    GaussianMixture,
    anisotropic_mixture,
    checkerboard,
    eight_gaussians,
    sample_toy,
    spiral,
    swiss_roll,
    two_gaussians,
    two_moons,
)

MIXTURES = {"eight": eight_gaussians, "aniso": anisotropic_mixture, "two": two_gaussians}


@pytest.mark.parametrize("fn", [two_moons, swiss_roll, checkerboard, spiral])
def test_point_clouds_are_standardised_and_seeded(fn):
    x = fn(20_000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (20_000, 2) and x.dtype == torch.float32
    assert x.mean(0).abs().max() < 0.35
    assert ((x.std(0) > 0.5) & (x.std(0) < 1.6)).all()
    y = fn(20_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, y)


def test_checkerboard_only_dark_squares():
    x = checkerboard(5000, generator=torch.Generator().manual_seed(1))
    cell = torch.floor((x / math.sqrt(3) + 1) / 2 * 4).long()
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()


@pytest.mark.parametrize("name", MIXTURES)
def test_log_prob_matches_scipy(name):
    gm = MIXTURES[name]()
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(2)) * 2
    expected = np.log(
        sum(
            float(w) * multivariate_normal(mean=m.numpy(), cov=c.numpy()).pdf(x.double().numpy())
            for w, m, c in zip(gm.weights, gm.means, gm.covs)
        )
    )
    assert np.allclose(gm.log_prob(x.double()).numpy(), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", MIXTURES)
def test_density_integrates_to_one(name):
    gm = MIXTURES[name]()
    lim, n = 6.0, 600
    u = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(u, u, indexing="xy")
    grid = torch.stack([xx.ravel(), yy.ravel()], 1)
    cell = (u[1] - u[0]) ** 2
    assert (gm.log_prob(grid).exp().sum() * cell).item() == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("name", MIXTURES)
def test_score_is_gradient_of_log_prob(name):
    gm = MIXTURES[name]()
    x = (torch.randn(300, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2).requires_grad_()
    (grad,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    assert torch.allclose(gm.score(x.detach()), grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("ab", [0.99, 0.5, 0.05])
def test_noised_matches_moments_of_noised_samples(ab):
    gm = anisotropic_mixture()
    g = torch.Generator().manual_seed(4)
    n = 200_000
    x0 = gm.sample(n, generator=g).double()
    x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(n, 2, generator=g, dtype=torch.float64)
    noised = gm.noised(ab)
    assert torch.allclose(x_t.mean(0), noised.mean(), atol=0.01)
    assert torch.allclose(torch.cov(x_t.T), noised.covariance(), atol=0.015)
    # and the noised mixture's density explains the noised samples as well as a fresh draw of its own
    fresh = noised.sample(n, generator=g).double()
    assert noised.log_prob(x_t).mean().item() == pytest.approx(noised.log_prob(fresh).mean().item(), abs=0.01)


def test_sample_frequencies_match_weights():
    gm = anisotropic_mixture()
    _, k = gm.sample_with_labels(50_000, generator=torch.Generator().manual_seed(5))
    freq = torch.bincount(k, minlength=3).double() / 50_000
    assert torch.allclose(freq, gm.weights, atol=0.01)


def test_perturbed_adds_isotropic_variance():
    gm = eight_gaussians(std=0.1)
    p = gm.perturbed(0.5)
    assert torch.allclose(p.covs, gm.covs + 0.25 * torch.eye(2, dtype=torch.float64))
    assert torch.allclose(p.means, gm.means)


def test_sample_toy_names():
    assert sample_toy("eight_gaussians", 10).shape == (10, 2)
    with pytest.raises(ValueError, match="two_moons"):
        sample_toy("mnist", 10)


def test_bad_mixture_inputs():
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"covs must have shape"):
        GaussianMixture(torch.ones(2), torch.zeros(2, 2), torch.eye(2).expand(3, 2, 2))
    with pytest.raises(ValueError, match=r"x must have shape \[N, 2\]"):
        eight_gaussians().score(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"alpha_bar must lie in"):
        eight_gaussians().noised(0.0)
    with pytest.raises(ValueError, match="positive number of samples"):
        two_moons(0)
