"""Memorisation measures against cases with known answers: hand-computed distances, and copied subsets of known size."""

import os

import pytest
import torch

from tinydiff.memorisation import measure_memorisation
from tinydiff import metrics
from tinydiff.metrics import nearest_neighbours


def _images(n: int, seed: int, shape: tuple[int, ...] = (3, 32, 32)) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def test_hand_computed_on_a_line():
    """train {0, 10, 20}; held-out {3, 14, 26} are 3, 4, 6 from it, so typical = 4. Samples {0, 11, 18, 30}: nearest
    0, 10, 20, 20 at 0, 1, 2, 10, ratios 0, 0.25, 0.5, 2.5: one under the default 0.25 (0.25 itself is not
    under), two under 0.5; of the held-out ratios 0.75, 1, 1.5 none.
    Carlini et al. with n = 2, alpha = 0.5: d1 / (0.5 (d1 + d2) / 2) = 0/5, 1/2.5, 2/2.5, 10/7.5 for the samples
    (three under 1) and 3/2.5, 4/2.5, 6/5.5 for the held-out images (none)."""
    train = torch.tensor([[0.0], [10.0], [20.0]])
    m = measure_memorisation(torch.tensor([[0.0], [11.0], [18.0], [30.0]]), train, torch.tensor([[3.0], [14.0], [26.0]]),
                             n_neighbours=2)
    assert m.index.tolist() == [0, 1, 2, 2]
    assert m.distance.tolist() == [0.0, 1.0, 2.0, 10.0]
    assert m.heldout_distance.tolist() == [3.0, 4.0, 6.0]
    assert m.typical_distance == 4.0
    assert m.ratio.tolist() == [0.0, 0.25, 0.5, 2.5]
    assert (m.threshold, m.share, m.heldout_share) == (0.25, 0.25, 0.0)
    assert m.carlini_distance.tolist() == pytest.approx([0.0, 0.4, 0.8, 4 / 3])
    assert (m.carlini_share, m.heldout_carlini_share) == (0.75, 0.0)
    assert m.most_copied(2).tolist() == [0, 1]
    heldout = torch.tensor([[3.0], [14.0], [26.0]])
    half = measure_memorisation(torch.tensor([[0.0], [11.0], [18.0], [30.0]]), train, heldout, threshold=0.5,
                                n_neighbours=2)
    assert (half.share, half.heldout_share) == (0.5, 0.0)
    assert measure_memorisation(torch.tensor([[11.0]]), train, heldout, threshold=0.2, n_neighbours=2).share == 0.0


def test_a_copied_subset_of_known_size_is_found_exactly():
    """120 samples at 3 x 32 x 32: 90 new images, 20 exact copies and 10 copies with faint noise (std 0.01, ~0.55
    away; a new image is ~70 from its nearest training image). The memorised share is exactly 30/120, each copy's
    nearest training image is its source, and no held-out image is called a copy."""
    train, heldout = _images(300, seed=0), _images(200, seed=1)
    samples = _images(120, seed=2)
    g = torch.Generator().manual_seed(3)
    where = torch.randperm(120, generator=g)[:30]
    source = torch.randperm(300, generator=g)[:30]
    samples[where] = train[source]
    samples[where[20:]] += 0.01 * torch.randn(10, 3, 32, 32, generator=g)
    m = measure_memorisation(samples, train, heldout)
    assert m.share == 30 / 120 and m.carlini_share == 30 / 120
    assert m.heldout_share == 0.0 and m.heldout_carlini_share == 0.0
    assert torch.equal(m.index[where], source)
    assert m.ratio[where[:20]].max() < 1e-6  # exact copies: distance 0 up to the rounding of |x|^2 + |y|^2 - 2 x.y
    assert m.ratio[where[20:]].max() < 0.02
    fresh = torch.ones(120, dtype=torch.bool)
    fresh[where] = False
    assert 0.9 < m.ratio[fresh].min() and m.ratio[fresh].max() < 1.1  # a new image is about as far as a held-out one
    assert set(m.most_copied(30).tolist()) == set(where.tolist())
    assert m.index.dtype == torch.int64 and m.distance.dtype == torch.float64 and m.distance.device.type == "cpu"


def test_the_typical_distance_is_the_median_held_out_distance():
    train, heldout = _images(50, seed=4, shape=(16,)), _images(31, seed=5, shape=(16,))
    m = measure_memorisation(_images(10, seed=6, shape=(16,)), train, heldout, n_neighbours=5)
    assert (m.heldout_distance / m.typical_distance).median() == 1.0
    assert m.typical_distance == pytest.approx(torch.cdist(heldout, train).min(dim=1).values.median().item())


def test_features_and_images_and_batch_sizes_agree():
    train, heldout, samples = _images(64, seed=7, shape=(3, 8, 8)), _images(20, seed=8, shape=(3, 8, 8)), _images(
        40, seed=9, shape=(3, 8, 8))
    a = measure_memorisation(samples, train, heldout, n_neighbours=10)
    b = measure_memorisation(samples.flatten(1), train.flatten(1), heldout.flatten(1), n_neighbours=10, batch_size=7)
    assert torch.equal(a.index, b.index) and torch.allclose(a.ratio, b.ratio, rtol=1e-12)
    assert (a.share, a.carlini_share) == (b.share, b.carlini_share)


def test_nearest_neighbours_match_sorting_the_full_distance_matrix():
    q, r = _images(33, seed=10, shape=(7,)), _images(90, seed=11, shape=(7,))
    d, i = nearest_neighbours(q, r, k=4, batch_size=8)
    full = torch.cdist(q.double(), r.double(), compute_mode="donot_use_mm_for_euclid_dist").sort(dim=1)
    assert torch.equal(i, full.indices[:, :4])
    assert torch.allclose(d, full.values[:, :4], rtol=1e-10)


@pytest.mark.parametrize(
    ("samples", "train", "heldout", "kwargs", "message"),
    [
        (torch.zeros(5, 3, 8, 8), torch.zeros(60, 1, 8, 8), torch.zeros(5, 3, 8, 8), {}, "one trailing shape"),
        (torch.zeros(5, 10), torch.zeros(60, 12), torch.zeros(5, 10), {}, r"train \[60, 12\]"),
        (torch.zeros(5, 4), torch.zeros(30, 4), torch.zeros(5, 4), {}, r"from 1 to the number of training images \(30\)"),
        (torch.zeros(5, 4), torch.randn(60, 4), torch.zeros(5, 4), {"threshold": 0}, "threshold must be a number > 0"),
        (torch.zeros(5, 4), torch.randn(60, 4), torch.zeros(5, 4), {"alpha": -1.0}, "alpha must be a number > 0"),
        (torch.full((5, 4), float("nan")), torch.randn(60, 4), torch.zeros(5, 4), {}, "samples contains NaN"),
        (torch.zeros(5, 4), torch.randn(60, 4), torch.zeros(5, 4), {"batch_size": 0}, "batch_size must be"),
    ],
)
def test_bad_input_gets_a_clear_error(samples, train, heldout, kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_memorisation(samples, train, heldout, **kwargs)


def test_held_out_images_copied_from_the_training_set_are_refused():
    train = _images(60, seed=12, shape=(12,))
    with pytest.raises(ValueError, match="disjoint training and held-out images"):
        measure_memorisation(train[:5] + 1, train, train[:9], n_neighbours=10)
    m = measure_memorisation(train[:5] + 1, train, torch.cat([train[:4], _images(5, seed=13, shape=(12,))]),
                             n_neighbours=10)
    assert m.heldout_share == 4 / 9  # four of nine held-out images are copies: the floor shows a leaky split


def test_most_copied_wants_a_positive_count():
    m = measure_memorisation(_images(4, seed=14, shape=(5,)), _images(20, seed=15, shape=(5,)),
                             _images(6, seed=16, shape=(5,)), n_neighbours=3)
    assert len(m.most_copied(100)) == 4
    with pytest.raises(ValueError, match="count must be a positive integer"):
        m.most_copied(0)


def test_on_the_test_device_as_on_the_cpu(monkeypatch):
    """TINYDIFF_TEST_DEVICE=cuda (or mps): the same nearest images and shares from float32 images on the device.
    On the CPU, the device's float32 arithmetic is forced instead."""
    device = torch.device(os.environ.get("TINYDIFF_TEST_DEVICE", "cpu"))
    train, heldout, samples = (_images(n, seed=s, shape=(3, 8, 8)) for n, s in ((100, 17), (30, 18), (40, 19)))
    samples[:4] = train[:4]
    a = measure_memorisation(samples, train, heldout)
    if device.type == "cpu":
        monkeypatch.setattr(metrics, "_work_dtype", lambda x: torch.float32)
    b = measure_memorisation(samples.to(device), train.to(device), heldout.to(device))
    # float32 rounds an exact copy's |x|^2 + |y|^2 - 2 x.y to ~1e-5 of |x|^2: a ratio of ~1e-4 instead of ~1e-9
    assert torch.equal(a.index, b.index) and torch.allclose(a.ratio, b.ratio, rtol=1e-4, atol=1e-3)
    assert (b.share, b.carlini_share) == (a.share, a.carlini_share) == (0.1, 0.1)
