"""Langevin and annealed Langevin samplers with exact mixture scores (Welling & Teh 2011; Song & Ermon 2019).

Property tests of the samplers: they must be able to fail. A drift or noise
term off by a factor of 2 samples p^2 or p^(1/2) instead of p, which puts the
energy distance several times above its noise floor; plain Langevin gets the
weights of well-separated modes wrong, annealing gets them right.
"""

import math

import pytest
import torch

from tinydiff import schedules
from tinydiff.data import GaussianMixture, two_gaussians
from tinydiff.langevin import annealed_langevin, eps_model_score, langevin, mixture_score, noise_levels
from tinydiff.metrics import energy_distance, energy_distance_floor, mode_occupancy
from tinydiff.oracle import MixtureEpsilon


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def overlapping_mixture() -> GaussianMixture:
    """Three overlapping Gaussians: plain Langevin mixes between them, so it should sample them exactly."""
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.2]])
    covs = torch.tensor([[[0.5, 0.2], [0.2, 0.4]], [[0.3, 0.0], [0.0, 0.6]], [[0.4, -0.1], [-0.1, 0.3]]])
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), means, covs)


def mean_distance_ratio(x: torch.Tensor, mixture: GaussianMixture, chunks: int, seed: int) -> float:
    """Energy distance of `chunks` equal parts of x to fresh true samples, averaged, over the exact floor.

    For a perfect sampler this averages to 1 with a standard deviation of about 0.3 (8 chunks).
    """
    n = x.shape[0] // chunks
    g = torch.Generator().manual_seed(seed)
    floor = energy_distance_floor(mixture.sample, n, generator=g)
    return sum(energy_distance(part, mixture.sample(n, generator=g)) for part in x.split(n)) / chunks / floor


def run_langevin(score, seed=0, n=4000):
    g = torch.Generator().manual_seed(seed)
    return langevin(score, torch.randn(n, 2, generator=g), step_size=0.05, steps=400, generator=g)


def test_langevin_with_exact_score_matches_the_mixture():
    mix = overlapping_mixture()
    assert mean_distance_ratio(run_langevin(mix.score), mix, chunks=8, seed=1) < 2.0


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_langevin_with_a_wrong_drift_factor_fails_the_same_check(factor):
    """The check above can fail: factor * score is the score of p^factor (a tempered density)."""
    mix = overlapping_mixture()
    assert mean_distance_ratio(run_langevin(lambda x: factor * mix.score(x)), mix, chunks=8, seed=1) > 3.0


def test_annealing_gets_mode_weights_right_where_plain_langevin_does_not():
    """Weights 0.8 / 0.2, modes 8 standard deviations apart (Song & Ermon 2019, sec. 3.2 and fig. 3).

    From a uniform start, plain Langevin leaves each particle in the basin it starts in
    (about 0.53 in the heavy mode); annealing over 20 noise levels recovers 0.8 within 0.05.
    """
    mix = two_gaussians(separation=4.0, weights=(0.8, 0.2), std=0.5)
    g = torch.Generator().manual_seed(0)
    x_init = (2 * torch.rand(2000, 2, generator=g) - 1) * 4
    plain = langevin(mix.score, x_init, step_size=0.02, steps=500, generator=g)
    sigmas = torch.logspace(math.log10(5.0), math.log10(0.1), 20)
    annealed = annealed_langevin(mixture_score(mix), x_init, sigmas, step_size=0.1 * 0.1**2, steps_per_level=50, generator=g)
    heavy_plain, heavy_annealed = float(mode_occupancy(mix, plain)[0]), float(mode_occupancy(mix, annealed)[0])
    assert abs(heavy_annealed - 0.8) < 0.05, heavy_annealed
    assert abs(heavy_plain - 0.8) > 0.15, heavy_plain


def test_langevin_on_a_gaussian_has_the_known_stationary_variance():
    """For N(0, v), x <- (1 - eps/(2v)) x + sqrt(eps) z has stationary variance eps / (1 - (1 - eps/(2v))^2) (an AR(1) process)."""
    v, eps = 0.5, 0.2
    g = torch.Generator().manual_seed(0)
    x = langevin(lambda y: -y / v, torch.zeros(100_000, 1), step_size=eps, steps=60, generator=g)
    a = 1 - eps / (2 * v)
    expected = eps / (1 - a**2)
    assert abs(x.var().item() - expected) < 0.02 * expected
    assert abs(expected - v) > 0.04  # the discretisation bias is visible: we test the sampler, not the limit


def test_trajectory_and_generator():
    mix = overlapping_mixture()
    x0 = torch.zeros(5, 2)
    x, path = langevin(mix.score, x0, step_size=0.1, steps=7, generator=torch.Generator().manual_seed(3), return_trajectory=True)
    assert path.xs.shape == (8, 5, 2) and torch.equal(path.xs[0], x0) and torch.equal(path.xs[-1], x)
    assert path.timesteps.tolist() == list(range(7)) and path.x0_preds is None
    again = langevin(mix.score, x0, step_size=0.1, steps=7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x, again)
    x, path = annealed_langevin(mixture_score(mix), x0, [1.0, 0.5], step_size=0.01, steps_per_level=3,
                                final_denoise=True, return_trajectory=True)
    assert path.xs.shape == (2 * 3 + 2, 5, 2) and torch.equal(path.xs[-1], x)
    assert path.timesteps.tolist() == [1.0] * 3 + [0.5] * 3 + [0.5]  # the noise level of each step, the denoise last
    # x0_preds is Tweedie's estimate at each state; the final denoising step returns it
    torch.testing.assert_close(path.x0_preds[2], path.xs[2] + mixture_score(mix)(path.xs[2], 1.0))
    assert torch.equal(path.x0_preds[-1], x)


def test_annealed_step_sizes_follow_song_and_ermon():
    """alpha_i = eps sigma_i^2 / sigma_L^2: with a zero score and zero start, Var[x] = sum_i steps * alpha_i."""
    sigmas = torch.tensor([4.0, 2.0, 1.0])
    x = annealed_langevin(lambda y, s: torch.zeros_like(y), torch.zeros(200_000, 1), sigmas, step_size=0.01,
                          steps_per_level=2, generator=torch.Generator().manual_seed(0))
    expected = 2 * 0.01 * (16 + 4 + 1)
    assert abs(x.var().item() - expected) < 0.02 * expected


def test_final_denoise_is_tweedie():
    """One Gaussian N(0, s^2): E[x_0 | x] = s^2 / (s^2 + sigma^2) x in closed form."""
    s2, sigma = 0.25, 0.5
    mix = GaussianMixture(torch.ones(1), torch.zeros(1, 2), s2 * torch.eye(2)[None])
    x0 = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    # steps_per_level=1 with a tiny step barely moves x; compare against the denoised version of that same x
    moved = annealed_langevin(mixture_score(mix), x0, [sigma], step_size=1e-12, steps_per_level=1)
    out = annealed_langevin(mixture_score(mix), x0, [sigma], step_size=1e-12, steps_per_level=1, final_denoise=True)
    torch.testing.assert_close(out, s2 / (s2 + sigma**2) * moved, rtol=1e-5, atol=1e-5)


def test_noise_levels_and_eps_model_score_match_the_perturbed_mixture():
    """sigma_t = sqrt((1 - ab) / ab), and -eps*(sqrt(ab) x, t) / sigma_t is the exact score of p blurred by sigma_t."""
    sched = schedules.get("linear", T=1000)
    t = torch.tensor([10, 300, 700])
    sig = noise_levels(sched, t)
    ab = sched.alpha_bars[t.flip(0)]
    torch.testing.assert_close(sig, ((1 - ab) / ab).sqrt())
    mix = two_gaussians()
    score = eps_model_score(MixtureEpsilon(mix, sched), sched)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for s in sig.tolist():
        torch.testing.assert_close(score(x, s), mix.perturbed(s).score(x), rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="not a noise level"):
        score(x, 0.123456)


def test_bad_inputs_raise_clear_errors():
    mix = overlapping_mixture()
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="shaped like its input"):
        langevin(lambda y: y.sum(0), x, step_size=0.1, steps=2)
    with pytest.raises(ValueError, match="shaped like its input"):
        annealed_langevin(lambda y, s: y[:, :1], x, [1.0], step_size=0.1, steps_per_level=2)
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="step_size must be a positive"):
            langevin(mix.score, x, step_size=bad, steps=2)
        with pytest.raises(ValueError, match="step_size must be a positive"):
            annealed_langevin(mixture_score(mix), x, [1.0], step_size=bad, steps_per_level=2)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        langevin(mix.score, x, step_size=0.1, steps=0)
    with pytest.raises(ValueError, match="steps_per_level must be a positive integer"):
        annealed_langevin(mixture_score(mix), x, [1.0], step_size=0.1, steps_per_level=2.5)
    with pytest.raises(ValueError, match="positive and finite"):
        annealed_langevin(mixture_score(mix), x, [1.0, 0.0], step_size=0.1, steps_per_level=2)
    with pytest.raises(ValueError, match="positive and finite"):
        annealed_langevin(mixture_score(mix), x, [1.0, -0.5], step_size=0.1, steps_per_level=2)
    with pytest.raises(ValueError, match="strictly decreasing"):
        annealed_langevin(mixture_score(mix), x, [0.1, 1.0], step_size=0.1, steps_per_level=2)
    with pytest.raises(ValueError, match="batch of points"):
        langevin(mix.score, torch.zeros(2), step_size=0.1, steps=2)


def test_samplers_run_on_meta_tensors():
    """No hard-coded device: a CPU tensor mixed into a meta computation would raise."""
    x = torch.empty(4, 2, device="meta")
    assert langevin(lambda y: -y, x, step_size=0.1, steps=2).device.type == "meta"
    out = annealed_langevin(lambda y, s: -y / (1 + s**2), x, [1.0, 0.1], step_size=0.01, steps_per_level=2, final_denoise=True)
    assert out.device.type == "meta" and out.shape == (4, 2)
