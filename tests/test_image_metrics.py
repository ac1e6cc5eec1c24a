"""Image metrics: Frechet distance against closed forms, label accuracy, and the shipped classifier."""

import math

import pytest
import scipy.linalg
import torch
from torch import nn

from tinydiff.metrics import (
    classifier_features,
    classify,
    frechet_distance,
    frechet_distance_gaussians,
    label_accuracy,
)


def _random_cov(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


def test_one_dimensional_closed_form():
    """In 1-D, d^2 = (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2."""
    d2 = frechet_distance_gaussians(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[0.25]]))
    assert d2 == pytest.approx(3.0**2 + (2.0 - 0.5) ** 2)


def test_commuting_covariances_closed_form():
    """Diagonal covariances: d^2 = |mu_a - mu_b|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2."""
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([0.5, 4.0, 1.0])
    mu_a, mu_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = float((mu_a - mu_b).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert frechet_distance_gaussians(mu_a, torch.diag(a), mu_b, torch.diag(b)) == pytest.approx(expected)


def test_scaled_full_covariance_closed_form():
    """cov_b = c^2 cov_a (any full cov_a): (cov_a cov_b)^(1/2) = c cov_a, so d^2 = |dmu|^2 + (1 - c)^2 Tr cov_a."""
    cov = _random_cov(5, 0)
    mu = torch.zeros(5, dtype=torch.float64)
    c = 1.7
    assert frechet_distance_gaussians(mu, cov, mu + 1, c**2 * cov) == pytest.approx(5 + (1 - c) ** 2 * float(cov.trace()))


def test_general_case_matches_scipy_sqrtm():
    """Non-commuting covariances against the textbook formula with scipy.linalg.sqrtm of cov_a cov_b."""
    ca, cb = _random_cov(6, 1), _random_cov(6, 2)
    ma, mb = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    covmean = scipy.linalg.sqrtm(ca.numpy() @ cb.numpy()).real
    expected = float((ma - mb).pow(2).sum()) + float(ca.trace() + cb.trace()) - 2 * covmean.trace()
    got = frechet_distance_gaussians(ma, ca, mb, cb)
    assert got == pytest.approx(expected, rel=1e-8)
    assert frechet_distance_gaussians(mb, cb, ma, ca) == pytest.approx(got, rel=1e-8)
    assert frechet_distance_gaussians(ma, ca, ma, ca) == pytest.approx(0.0, abs=1e-8)


def test_sample_estimate_converges_to_the_closed_form():
    torch.manual_seed(0)
    ca, cb = _random_cov(3, 3), _random_cov(3, 4)
    ma, mb = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    n = 200_000
    xa = ma + torch.randn(n, 3, dtype=torch.float64) @ torch.linalg.cholesky(ca).T
    xb = mb + torch.randn(n, 3, dtype=torch.float64) @ torch.linalg.cholesky(cb).T
    exact = frechet_distance_gaussians(ma, ca, mb, cb)
    assert frechet_distance(xa.float(), xb.float()) == pytest.approx(exact, rel=0.03)


def test_bad_feature_shapes():
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        frechet_distance(torch.randn(10), torch.randn(10, 4))


class BrightnessClassifier(nn.Module):
    """Class = how many of 3 thresholds the mean pixel exceeds; features = (mean, std). In training mode it misbehaves."""

    def features(self, x):
        flat = x.flatten(1)
        return torch.stack([flat.mean(1), flat.std(1)], dim=1)

    def forward(self, x):
        if self.training:
            raise AssertionError("metrics must put the classifier in eval mode")
        m = self.features(x)[:, :1]
        return -(m - torch.tensor([[-0.75, -0.25, 0.25, 0.75]])).abs()  # logits peak at the nearest centre

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))


def test_label_accuracy_counts_matches():
    clf = BrightnessClassifier().train()
    levels = torch.tensor([-0.8, -0.3, 0.2, 0.9, 0.7, -0.2])  # nearest centres: 0, 1, 2, 3, 3, 1
    images = levels[:, None, None, None].expand(6, 1, 4, 4).clone()
    assert classify(clf, images).tolist() == [0, 1, 2, 3, 3, 1]
    asked = torch.tensor([0, 1, 2, 3, 0, 0])  # 4 of 6 right
    assert label_accuracy(clf, images, asked) == pytest.approx(4 / 6)
    assert clf.training, "the classifier's mode must be restored"
    with pytest.raises(ValueError, match="one label per image"):
        label_accuracy(clf, images, asked[:3])


def test_features_do_not_depend_on_the_batch_size():
    clf = BrightnessClassifier()
    images = torch.randn(7, 1, 4, 4)
    torch.testing.assert_close(classifier_features(clf, images, batch_size=3), clf.features(images))


def test_shipped_classifier_reproduces_its_manifest():
    """The shipped weights load, and their test accuracy and FD floor are the ones recorded in the manifest."""
    from tinydiff.checkpoint import load_checkpoint, read_config
    from tinydiff.data import data_dir, load_mnist

    path = data_dir() / "checkpoints" / "mnist_classifier"
    extra = read_config(path)["extra"]
    clf = load_checkpoint(path)
    x_test, y_test = load_mnist("test", pad_to_32=True)
    acc = label_accuracy(clf, x_test, y_test)
    assert acc == pytest.approx(extra["test_accuracy"], abs=1e-4)
    assert acc >= 0.95
    # The classifier takes 28 x 28 digits too (padded inside).
    x28, _ = load_mnist("test")
    assert torch.equal(classify(clf, x28[:50]), classify(clf, x_test[:50]))
    x_train, _ = load_mnist("train", pad_to_32=True)
    floor = frechet_distance(classifier_features(clf, x_train[:1000]), classifier_features(clf, x_test))
    assert floor == pytest.approx(extra["fd_floor_train1000_vs_test1000"], rel=1e-3)
    assert math.isfinite(floor) and floor > 0
