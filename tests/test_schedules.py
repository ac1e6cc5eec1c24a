"""Schedules against their published definitions (closed forms computed here with plain math)."""

import math

import pytest
import torch

from tinydiff import schedules


def test_linear_matches_ho_et_al():
    s = schedules.get("linear", T=1000)
    assert s.T == 1000
    assert s.betas[0].item() == pytest.approx(1e-4)
    assert s.betas[-1].item() == pytest.approx(0.02)
    # alpha_bar at the last step: prod_t (1 - beta_t) with beta_t = 1e-4 + (0.02 - 1e-4) t / 999.
    expected = 1.0
    for i in range(1000):
        expected *= 1.0 - (1e-4 + (0.02 - 1e-4) * i / 999)
    assert s.alpha_bars[-1].item() == pytest.approx(expected, rel=1e-9)
    assert s.alpha_bars[-1].item() == pytest.approx(4.036e-5, rel=1e-3)  # the value quoted in the literature


@pytest.mark.parametrize("t", [0, 1, 10, 250, 500, 900, 990])
def test_cosine_matches_nichol_dhariwal_eq17(t):
    T, s = 1000, 0.008

    def f(u):
        return math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2

    sched = schedules.get("cosine", T=T)
    # 0-based index t is the paper's step t+1.
    assert sched.alpha_bars[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_cosine_betas_clipped_at_0999():
    sched = schedules.get("cosine", T=1000)
    assert sched.betas.max().item() == pytest.approx(0.999)
    assert sched.betas[-1].item() == pytest.approx(0.999)
    assert (sched.betas[:-1] < 0.999).all()


@pytest.mark.parametrize("t", [0, 100, 499, 800, 990])
def test_sigmoid_matches_chen_2023(t):
    T, start, end, tau = 1000, -3.0, 3.0, 1.0

    def sig(z):
        return 1.0 / (1.0 + math.exp(-z))

    def alpha_bar(u):
        return (sig(end / tau) - sig((u * (end - start) + start) / tau)) / (sig(end / tau) - sig(start / tau))

    sched = schedules.get("sigmoid", T=T)
    assert sched.alpha_bars[t].item() == pytest.approx(alpha_bar((t + 1) / T) / alpha_bar(0.0), rel=1e-8)


def test_scaled_linear_endpoints_and_shape():
    s = schedules.get("scaled_linear", T=1000)
    assert s.betas[0].item() == pytest.approx(0.00085)
    assert s.betas[-1].item() == pytest.approx(0.012)
    # sqrt(beta) is linear: constant first difference.
    d = torch.diff(s.betas.sqrt())
    assert torch.allclose(d, d[0].expand_as(d), rtol=1e-8)


@pytest.mark.parametrize("name", schedules.NAMES)
def test_derived_quantities(name):
    s = schedules.get(name, T=200)
    for q in (s.betas, s.alphas, s.alpha_bars, s.snr, s.log_snr, s.sigmas, s.alpha_bars_prev):
        assert q.shape == (200,)
    assert torch.allclose(s.alphas, 1 - s.betas)
    assert (torch.diff(s.alpha_bars) < 0).all(), "alpha_bar must be strictly decreasing"
    assert (s.alpha_bars > 0).all() and (s.alpha_bars < 1).all()
    assert torch.allclose(s.alpha_bars_prev[1:], s.alpha_bars[:-1]) and s.alpha_bars_prev[0] == 1
    ab = s.alpha_bars
    assert torch.allclose(s.snr, ab / (1 - ab))
    assert torch.allclose(s.log_snr, torch.log(ab / (1 - ab)))
    assert torch.allclose(s.sigmas**2 * ab, 1 - ab)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as e:
        schedules.get("quadratic")
    for name in schedules.NAMES:
        assert name in str(e.value)


@pytest.mark.parametrize("T", [0, -5, 2.5])
def test_bad_T(T):
    with pytest.raises(ValueError, match="T must be a positive integer"):
        schedules.get("linear", T=T)


def test_invalid_betas_rejected():
    with pytest.raises(ValueError, match="between 0 and 1"):
        schedules.Schedule("bad", torch.tensor([0.1, 1.5], dtype=torch.float64))


def test_schedules_compare_by_name_and_betas():
    assert schedules.cosine(100) == schedules.cosine(100)
    assert schedules.cosine(100) != schedules.cosine(50)
    assert schedules.linear(100) != schedules.cosine(100)
    assert schedules.Schedule("mine", schedules.linear(100).betas) != schedules.linear(100)  # same betas, another name
    assert len({schedules.cosine(100), schedules.cosine(100)}) == 1  # hashable, consistently with ==
    assert schedules.cosine(10) != "cosine"


def test_the_shifted_schedule_divides_the_snr_by_the_square_of_the_size_ratio():
    """Hoogeboom et al. 2023, Sec. 3.1: lambda' = lambda + 2 log(base / size), i.e. SNR' = SNR (base / size)^2."""
    cosine = schedules.cosine(1000)
    moved = schedules.shifted(cosine, base=32, size=64)
    assert moved.T == cosine.T and moved.name == "cosine shifted 32->64"
    clipped = int((moved.betas >= 0.999).sum())  # the formula holds up to the first clipped beta (the last step)
    assert clipped <= 1
    ratio = (moved.snr / cosine.snr)[: 1000 - clipped]
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.25), rtol=1e-9, atol=0)
    same = schedules.shifted(cosine, base=32, size=32)
    torch.testing.assert_close(same.alpha_bars, cosine.alpha_bars, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        schedules.shifted(cosine, base=32, size=0)
