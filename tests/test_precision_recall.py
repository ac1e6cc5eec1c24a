"""Improved precision and recall (Kynkäänniemi et al. 2019) against cases with known answers."""

import math
import os

import pytest
import torch

from tinydiff import metrics
from tinydiff.metrics import in_knn_manifold, knn_radii, nearest_neighbours, precision_recall


def _blobs(centres: list[float], n: int, seed: int, dim: int = 2) -> torch.Tensor:
    """n standard-normal points around each centre (c, 0, ..., 0), mode after mode."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.zeros(len(centres), dim, dtype=torch.float64)
    shift[:, 0] = torch.tensor(centres, dtype=torch.float64)
    return (shift[:, None, :] + torch.randn(len(centres), n, dim, generator=g, dtype=torch.float64)).reshape(-1, dim)


def _brute_force(real: torch.Tensor, generated: torch.Tensor, k: int) -> tuple[float, float]:
    """The definition, written out with full distance matrices and sorting (eqs. 1-2)."""
    def inside(points, reference):
        d_ref = torch.cdist(reference, reference, compute_mode="donot_use_mm_for_euclid_dist")
        radii = d_ref.sort(dim=1).values[:, k]  # column 0 is the point itself (distance 0)
        d = torch.cdist(points, reference, compute_mode="donot_use_mm_for_euclid_dist")
        return (d <= radii).any(dim=1).double().mean().item()
    return inside(generated, real), inside(real, generated)


def test_knn_radii_by_hand_in_1d():
    """Points 0, 1, 3, 7 on a line: neighbour distances of 0 are 1, 3, 7; of 1: 1, 2, 6; of 3: 2, 3, 4; of 7: 4, 6, 7."""
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(x, k=2).tolist() == [3.0, 2.0, 3.0, 6.0]
    assert knn_radii(x, k=3).tolist() == [7.0, 6.0, 4.0, 7.0]


def test_knn_radii_by_hand_in_2d_and_a_duplicate_is_a_neighbour():
    """The corners of a 1 x 2 rectangle: each corner's neighbours lie at 1, 2 and sqrt(5)."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 2.0]])
    for k, r in ((1, 1.0), (2, 2.0), (3, math.sqrt(5))):
        assert knn_radii(x, k=k) == pytest.approx(torch.full((4,), r, dtype=torch.float64))
    with_copy = torch.cat([x, x[:1]])  # a second (0, 0): its first neighbour is the first, at distance 0
    assert knn_radii(with_copy, k=1)[[0, 4]].tolist() == [0.0, 0.0]


def test_manifold_membership_by_hand_in_1d():
    """Real {0, 1, 10, 12}, k = 1: radii 1, 1, 2, 2, so the manifold is [-1, 2] and [8, 14], boundaries included."""
    real = torch.tensor([[0.0], [1.0], [10.0], [12.0]])
    points = torch.tensor([[-1.0], [0.5], [2.0], [2.25], [5.0], [7.75], [8.0], [14.0], [14.5]])
    assert in_knn_manifold(points, real, k=1).tolist() == [True, True, True, False, False, False, True, True, False]
    p, r = precision_recall(real, points, k=1)
    assert p == 5 / 9
    # recall: the nine points' 1-NN radii are 1.5, 1.5, 0.25, 0.25, 2.75, 0.25, 0.25, 0.5, 0.5. Real 0 and 1 lie
    # 0.5 from 0.5 (radius 1.5): inside. Real 10 and 12 are 2 from their nearest points 8 and 14 (radii 0.25 and
    # 0.5), and the widest ball, 5's, reaches only 7.75: outside.
    assert r == 2 / 4


def test_manifold_membership_by_hand_in_2d():
    """Real: the unit square's corners, k = 1 (radii 1). The centre is inside (0.71), (2, 0) on a boundary,
    (2.5, 0.5) outside (1.58 from the nearest corner), (0.5, -1.2) outside (1.30)."""
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    points = torch.tensor([[0.5, 0.5], [2.0, 0.0], [2.5, 0.5], [0.5, -1.2]])
    assert in_knn_manifold(points, real, k=1).tolist() == [True, True, False, False]


def test_identical_sets_score_one():
    x = _blobs([0.0, 5.0], 150, seed=0, dim=3)
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x.clone(), k=10) == (1.0, 1.0)


def test_far_apart_sets_score_zero():
    real, generated = _blobs([0.0], 200, seed=1), _blobs([100.0], 200, seed=2)
    assert precision_recall(real, generated) == (0.0, 0.0)


def test_a_copy_of_half_the_modes_has_precision_one_and_recall_one_half():
    """Generated = the real points of 2 of 4 modes (80 per mode, 50 apart): every generated point is a real one, so
    precision = 1; a real point of a copied mode is a generated one (inside), one of a dropped mode is >= 40 from
    every generated point while the generated radii stay < 10: recall = 160 / 320 exactly."""
    real = _blobs([0.0, 50.0, 100.0, 150.0], 80, seed=3)
    generated = real[:160]
    assert knn_radii(generated).max() < 10
    assert precision_recall(real, generated) == (1.0, 0.5)


def test_fresh_samples_from_half_the_modes():
    """Generated: new draws from 2 of the 4 real modes. Each mode's real and generated points come from one law,
    so a share q of them lands in the other set's manifold, and q -> 1 as the sets grow (the k-NN balls of n
    points cover the mode's bulk). Then precision = q and recall = (1/2) q: with 400 points a mode in 2-D,
    q is above 0.9; a dropped mode's real points are all outside, so recall <= 1/2 exactly."""
    real = _blobs([0.0, 50.0, 100.0, 150.0], 400, seed=4)
    generated = _blobs([0.0, 50.0], 400, seed=5)
    p, r = precision_recall(real, generated)
    assert p > 0.9
    assert 0.45 < r <= 0.5
    only_kept = real[:800]  # the real points of the two kept modes: their recall is q
    assert precision_recall(only_kept, generated).recall == pytest.approx(2 * r)


def test_swapping_the_sets_swaps_precision_and_recall_and_matches_the_definition():
    real, generated = _blobs([0.0, 3.0], 60, seed=7, dim=4), _blobs([1.0], 90, seed=8, dim=4)
    p, r = precision_recall(real, generated, k=3)
    assert tuple(precision_recall(generated, real, k=3)) == (r, p)
    assert (p, r) == pytest.approx(_brute_force(real, generated, k=3))
    assert 0 < p < 1 and 0 < r < 1


def test_the_batch_size_does_not_change_anything():
    real, generated = _blobs([0.0, 2.0], 70, seed=9, dim=5), _blobs([1.0], 50, seed=10, dim=5)
    assert precision_recall(real, generated, batch_size=7) == precision_recall(real, generated, batch_size=4096)
    # the matrix products behind the distances round differently for different block shapes: equal to ~1e-15
    assert torch.allclose(knn_radii(real, batch_size=3), knn_radii(real), rtol=1e-12, atol=0)
    d1, i1 = nearest_neighbours(generated, real, k=4, batch_size=5)
    d2, i2 = nearest_neighbours(generated, real, k=4)
    assert torch.equal(i1, i2) and torch.allclose(d1, d2)


def test_float64_on_the_cpu_and_float32_inputs_give_the_same_answer():
    real, generated = _blobs([0.0, 2.0], 70, seed=11), _blobs([1.0], 50, seed=12)
    assert knn_radii(real.float()).dtype == torch.float64
    assert precision_recall(real.float(), generated.float()) == precision_recall(real, generated)


@pytest.mark.parametrize(
    ("real", "generated", "kwargs", "message"),
    [
        (torch.zeros(10, 3), torch.zeros(10, 4), {}, "feature sizes differ"),
        (torch.zeros(10), torch.zeros(10, 4), {}, r"real must be a tensor \[N, D\]"),
        (torch.zeros(1, 3), torch.zeros(10, 3), {}, "N >= 2"),
        (torch.zeros(10, 3), torch.zeros(3, 3), {}, r"k = 3 needs at least k \+ 1 = 4 points in generated"),
        (torch.zeros(10, 3), torch.zeros(10, 3), {"k": 10}, r"k = 10 needs at least k \+ 1 = 11 points in real"),
        (torch.zeros(10, 3), torch.zeros(10, 3), {"k": 0}, "k must be an integer >= 1"),
        (torch.zeros(10, 3), torch.zeros(10, 3), {"batch_size": 0}, "batch_size must be an integer >= 1"),
        (torch.zeros(10, 3), torch.full((10, 3), float("nan")), {}, "generated contains NaN or inf"),
    ],
)
def test_bad_input_gets_a_clear_error(real, generated, kwargs, message):
    with pytest.raises(ValueError, match=message):
        precision_recall(real, generated, **kwargs)


def test_nearest_neighbours_errors():
    with pytest.raises(ValueError, match="k = 5 neighbours need at least 5 reference points"):
        nearest_neighbours(torch.zeros(3, 2), torch.zeros(4, 2), k=5)
    with pytest.raises(ValueError, match="same space"):
        nearest_neighbours(torch.zeros(3, 2), torch.zeros(4, 3))


def test_on_the_test_device_as_on_the_cpu(monkeypatch):
    """TINYDIFF_TEST_DEVICE=cuda (or mps): the same answers from float32 features on the device. On the CPU, the
    device's float32 arithmetic is forced instead."""
    device = torch.device(os.environ.get("TINYDIFF_TEST_DEVICE", "cpu"))
    real, generated = _blobs([0.0, 3.0], 100, seed=13, dim=6).float(), _blobs([1.0], 80, seed=14, dim=6).float()
    on_cpu = precision_recall(real, generated)
    if device.type == "cpu":
        monkeypatch.setattr(metrics, "_work_dtype", lambda x: torch.float32)
    assert precision_recall(real.to(device), generated.to(device)) == pytest.approx(on_cpu, abs=0.02)
    d, i = nearest_neighbours(generated.to(device), real.to(device), k=2)
    assert d.device.type == "cpu" and torch.allclose(d, nearest_neighbours(generated, real, k=2)[0], rtol=1e-4)
