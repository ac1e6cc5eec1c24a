"""Guidance (tinydiff.guidance) against its closed forms, on exact 2-D mixtures and a small UNet."""

import pytest
import torch
from torch import nn

from tinydiff import schedules
from tinydiff.data import GaussianMixture
from tinydiff.guidance import (
    classifier_free,
    classifier_guided_epsilon,
    conditional,
    guided_digits,
    guided_epsilon,
    ho_salimans_w,
)
from tinydiff.models import UNet
from tinydiff.oracle import MixtureClassEpsilon, sample_tilted, tilted_log_prob
from tinydiff.samplers import ddim_sample, ddpm_sample

pytestmark = pytest.mark.usefixtures("one_thread")


def overlapping_pair() -> GaussianMixture:
    """Two unit Gaussians 1.5 apart: a conditional sample of one lands on the other's side about 23% of the time."""
    return GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-0.75, 0.0], [0.75, 0.0]]), torch.eye(2).repeat(2, 1, 1) * 0.5)


def test_guidance_formula_endpoints_and_the_two_conventions():
    g = torch.Generator().manual_seed(0)
    c, u = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    torch.testing.assert_close(guided_epsilon(c, u, 1.0), c)  # u + (c - u): c up to one rounding
    assert torch.equal(guided_epsilon(c, u, 0.0), u)
    for s in (0.0, 1.0, 1.5, 3.0, 7.5):
        w = ho_salimans_w(s)
        torch.testing.assert_close(guided_epsilon(c, u, s), (1 + w) * c - w * u)  # Ho & Salimans 2022, eq. 6
    assert ho_salimans_w(1.0) == 0.0 and ho_salimans_w(3.0) == 2.0


def test_one_batched_forward_equals_two_separate_calls():
    torch.manual_seed(0)
    net = UNet(channels=8, mults=(1, 2), num_classes=3).eval()
    with torch.no_grad():  # the zero-initialised output layer would make every output 0
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, t, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 5, 9, 3]), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        cond, uncond = net(x, t, y), net(x, t, torch.full_like(y, net.null_class))
        assert (cond - uncond).abs().max() > 1e-3  # the label matters, so the test can fail
        for s in (0.0, 1.0, 2.5):
            torch.testing.assert_close(classifier_free(net, y, s)(x, t), uncond + s * (cond - uncond), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(conditional(net, y)(x, t), cond)
        assert torch.equal(classifier_free(net, y, 1.0)(x, t), cond)  # s = 1 is the conditional model, exactly


def test_exact_classifier_guidance_equals_classifier_free_guidance():
    """With the exact classifier grad log p(y | x_t) = score(x | y) - score(x), Dhariwal & Nichol's eps equals eq. 6."""
    mixture, schedule = overlapping_pair(), schedules.cosine(100)
    oracle = MixtureClassEpsilon(mixture, schedule)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 2, generator=g, dtype=torch.float64)
    t = torch.randint(0, 100, (50,), generator=g)
    y = torch.randint(0, 2, (50,), generator=g)
    eps_uncond = oracle(x, t, torch.full_like(y, oracle.null_class))
    for s in (0.5, 2.0, 4.0):
        cg = classifier_guided_epsilon(schedule, eps_uncond, t, oracle.class_log_prob_grad(x, t, y), s)
        torch.testing.assert_close(cg, classifier_free(oracle, y, s)(x, t), rtol=1e-9, atol=1e-9)


def test_guidance_pulls_samples_into_the_requested_component():
    """Share of guided samples of class k that the clean mixture assigns to k rises with s (fails with the wrong sign)."""
    mixture, schedule = overlapping_pair(), schedules.cosine(100)
    oracle = MixtureClassEpsilon(mixture, schedule)
    n = 2000
    y = torch.arange(n) % 2
    rates = []
    for s in (0.0, 1.0, 3.0):
        x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        x = ddim_sample(classifier_free(oracle, y, s), schedule, (n, 2), steps=50, x_T=x_T, progress=False)
        rates.append(float((mixture.responsibilities(x).argmax(1) == y).double().mean()))
    # s = 0: unconditional, about half; s = 1: the exact conditional, Phi(0.75 / sqrt(0.5)) = 0.856 for this pair
    assert abs(rates[0] - 0.5) < 0.05
    assert abs(rates[1] - 0.856) < 0.03
    assert rates[2] > rates[1] + 0.08


def test_a_conditional_model_samples_on_its_own_device_without_x_T():
    """The bug a lambda hid: a sampler cannot see a lambda's device, so noise was made on the CPU."""
    net = UNet(channels=8, mults=(1, 2), num_classes=3).to("meta")
    y = torch.tensor([0, 1, 2, 0], device="meta")
    for model in (conditional(net, y), classifier_free(net, y, 2.0)):
        assert ddim_sample(model, schedules.cosine(20), (4, 1, 16, 16), steps=3, progress=False).device.type == "meta"
        assert ddpm_sample(model, schedules.cosine(5), (4, 1, 16, 16), progress=False).device.type == "meta"


class Unconditional(nn.Module):
    def forward(self, x, t):
        return x


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda net: classifier_free(net, torch.tensor([0, 3]), 2.0), r"labels must lie in 0\.\.2"),
        (lambda net: classifier_free(net, torch.tensor([0, -1]), 2.0), r"labels must lie in 0\.\.2"),
        (lambda net: classifier_free(net, torch.tensor([0.0, 1.0]), 2.0), "LongTensor"),
        (lambda net: classifier_free(net, torch.tensor([0, 1]), -1.0), "finite number >= 0"),
        (lambda net: classifier_free(net, torch.tensor([0, 1]), float("nan")), "finite number >= 0"),
        (lambda net: classifier_free(Unconditional(), torch.tensor([0, 1]), 2.0), "no `null_class`"),
        (lambda net: conditional(Unconditional(), torch.tensor([0, 1])), "no `null_class`"),
    ],
)
def test_bad_guidance_arguments_say_what_is_wrong(make, message):
    net = UNet(channels=8, mults=(1, 2), num_classes=3)
    with pytest.raises(ValueError, match=message):
        make(net)


def _small_net() -> UNet:
    torch.manual_seed(0)
    net = UNet(channels=8, mults=(1, 2), num_classes=3).eval()
    with torch.no_grad():  # a non-zero output layer: the samples depend on the label and the noise
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_guided_digits_is_ddim_from_the_noise_of_its_seed():
    """The contract its callers' recorded results rest on: x_T is the first draw of a CPU generator seeded with
    ``seed``; one label or labels [B] give the same digits; ``sampler`` replaces DDIM with any sampler of that
    signature; clip_x0 and shape reach it."""
    net, schedule = _small_net(), schedules.cosine(20)
    x_T = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    want = ddim_sample(classifier_free(net, torch.full((3,), 2), 1.5), schedule, x_T.shape, steps=4, spacing="trailing",
                       x_T=x_T, clip_x0=1.0, progress=False)
    one = guided_digits(net, schedule, 2, 1.5, n=3, steps=4, seed=5, spacing="trailing", shape=(1, 16, 16))
    assert torch.equal(one, want)
    assert torch.equal(guided_digits(net, schedule, torch.tensor([2, 2, 2]), 1.5, steps=4, seed=5, spacing="trailing",
                                     shape=(1, 16, 16)), want)
    assert guided_digits(net, schedule, 1, 1.5, shape=(1, 16, 16), steps=2).shape == (8, 1, 16, 16)  # n defaults to 8

    def four_step_ddim(model, schedule, shape, **kwargs):
        return ddim_sample(model, schedule, shape, steps=4, spacing="trailing", **kwargs)

    assert torch.equal(guided_digits(net, schedule, 2, 1.5, n=3, seed=5, shape=(1, 16, 16), sampler=four_step_ddim), want)
    unclipped = guided_digits(net, schedule, 2, 1.5, n=3, steps=4, seed=5, spacing="trailing", shape=(1, 16, 16),
                              clip_x0=None)
    assert torch.equal(unclipped, ddim_sample(classifier_free(net, torch.full((3,), 2), 1.5), schedule, x_T.shape,
                                              steps=4, spacing="trailing", x_T=x_T, progress=False))
    with pytest.raises(ValueError, match="one label per image"):
        guided_digits(net, schedule, torch.tensor([0, 1]), 1.5, n=3, shape=(1, 16, 16))


def test_label_batch_must_match_the_samples():
    net = UNet(channels=8, mults=(1, 2), num_classes=3)
    with pytest.raises(ValueError, match="3 labels were given"):
        classifier_free(net, torch.tensor([0, 1, 2]), 2.0)(torch.randn(2, 1, 16, 16), torch.tensor([1, 2]))


def test_the_tilted_density_is_the_conditional_at_s_1_and_the_mixture_at_s_0():
    """tilted_log_prob in closed form: s = 1 is log p(x | y), s = 0 is log p(x), exactly; and its three forms
    p(x) p(y | x)^s, p(x | y) p(y | x)^(s-1), p(x | y)^s p(x)^(1-s) differ by a constant in x."""
    mixture = overlapping_pair()
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(tilted_log_prob(mixture, 1, 1.0, x), mixture.component(1).log_prob(x))
    torch.testing.assert_close(tilted_log_prob(mixture, 1, 0.0, x), mixture.log_prob(x), rtol=0, atol=1e-12)
    log_r = mixture.responsibilities(x)[:, 1].log()
    for s in (0.5, 3.0):
        for other in (mixture.log_prob(x) + s * log_r, mixture.component(1).log_prob(x) + (s - 1) * log_r):
            gap = tilted_log_prob(mixture, 1, s, x) - other
            assert (gap - gap.mean()).abs().max() < 1e-10
    with pytest.raises(ValueError, match="component index"):
        tilted_log_prob(mixture, 2, 1.0, x)
    with pytest.raises(ValueError, match=">= 0"):
        sample_tilted(mixture, 0, -1.0, 10)


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, 3.0, 8.0])
def test_sample_tilted_has_the_moments_of_the_tilted_density(scale):
    """Rejection samples of p_s against the mean and variance of exp(tilted_log_prob) on a fine grid."""
    mixture = overlapping_pair()
    axis = torch.linspace(-6, 6, 481, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([xx.flatten(), yy.flatten()], 1)
    w = torch.softmax(tilted_log_prob(mixture, 1, scale, grid), 0)[:, None]
    mean = (w * grid).sum(0)
    var = (w * (grid - mean) ** 2).sum(0)
    n = 20_000
    x = sample_tilted(mixture, 1, scale, n, generator=torch.Generator().manual_seed(0)).double()
    assert x.shape == (n, 2)
    assert ((x.mean(0) - mean).abs() < 4 * (var / n).sqrt()).all(), (x.mean(0), mean)
    assert ((x.var(0) / var - 1).abs() < 0.05).all(), (x.var(0), var)
