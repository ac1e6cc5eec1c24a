"""Does the model copy its training images? Nearest training images and two copy criteria.

For each generated sample: its nearest training image (index and Euclidean distance) in the space you pass --
pixels (images [N, C, H, W], flattened) or a classifier's features ([N, F]) -- and two scale-free scores:

* **ratio to held-out** (this course's measure): the distance divided by the *typical* nearest-training distance
  of real images the model never saw, the median over a held-out set. A fresh, realistic image scores about 1; a
  copy scores near 0. Searching generations for their nearest training images is what Carlini et al. 2023 (in
  pixels) and Somepalli et al. 2023 (in image-copy-detection features) do; measuring those distances against the
  held-out images' own is the idea of Meehan et al. 2020's data-copying test, which compares the two
  distributions with a rank test where this measure keeps one scale, the median.
* **Carlini et al.'s relative distance** (Carlini et al. 2023, Sec. 5.1, their CIFAR-10 criterion): the distance
  to the nearest training image over alpha times the mean distance to the n nearest, n = 50, alpha = 0.5; a
  generation counts as extracted below 1.

:func:`measure_memorisation` returns both, with the share of samples each calls a copy and, as each share's
floor, the share of held-out images it calls a copy (a real image that nobody trained on is no copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .metrics import _rows, nearest_neighbours


@dataclass(frozen=True)
class Memorisation:
    """What :func:`measure_memorisation` found, per sample (M samples, H held-out images), on the CPU."""

    index: Tensor  # [M] int64: the nearest training image of each sample
    distance: Tensor  # [M]: its Euclidean distance
    ratio: Tensor  # [M]: distance / typical_distance
    heldout_distance: Tensor  # [H]: each held-out image's distance to its nearest training image
    typical_distance: float  # median of heldout_distance
    threshold: float  # a sample with ratio < threshold counts as a copy
    share: float  # share of samples with ratio < threshold: the memorised share
    heldout_share: float  # share of held-out images with heldout_distance / typical_distance < threshold: the floor
    carlini_distance: Tensor  # [M]: Carlini et al.'s relative distance (extracted below 1)
    carlini_share: float  # share of samples with carlini_distance < 1
    heldout_carlini_share: float  # the same criterion on the held-out images: its floor

    def most_copied(self, count: int) -> Tensor:
        """Indices [count] of the samples with the smallest ratio, most copied first (for the figure)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer (how many samples to show), got {count!r}")
        return self.ratio.argsort(stable=True)[: min(count, len(self.ratio))]


def _relative_distance(d: Tensor, alpha: float) -> Tensor:
    """Carlini et al. 2023, Sec. 5.1: d_1 / (alpha * mean(d_1, ..., d_n)) for ascending distances d [M, n]."""
    mean = d.mean(dim=1)
    return torch.where(d[:, 0] == 0, torch.zeros_like(mean), d[:, 0] / (alpha * mean))


def measure_memorisation(
    samples: Tensor,
    train: Tensor,
    heldout: Tensor,
    *,
    threshold: float = 0.25,
    n_neighbours: int = 50,
    alpha: float = 0.5,
    batch_size: int = 1024,
) -> Memorisation:
    """Nearest training images of ``samples`` and the share of them that are copies, beside the held-out floor.

    samples [M, ...], train [N, ...] (the images the model was trained on) and heldout [H, ...] (real images from
    the same source that it never saw), with one trailing shape: pixels [., C, H, W] or features [., F].
    d(x) = min_j |x - train_j| (Euclidean). Then

        typical = median over held-out images h of d(h)    (the lower middle value when H is even)
        ratio(x) = d(x) / typical                share = (1/M) #{x : ratio(x) < threshold}

    The median, not the mean: held-out sets hold near-duplicates of training images (an emoji and its skin-tone
    variant) and odd images far from everything, and the median ignores both tails; by construction half the
    held-out images have a ratio below 1. The typical distance depends on the training set (it shrinks as the set
    grows), so it is measured against the same training set as the samples.

    ``threshold = 0.25``: a copy is at least four times closer to a training image than a typical unseen real
    image is to its own nearest one. Nearest-neighbour distances of real images spread more in data of low
    intrinsic dimension (digits of one simple class, such as 1s, sit much closer to each other than 8s do), so
    a threshold near 1/2 already calls some unseen real images copies, while a memorised sample sits far below
    any of these values. ``heldout_share`` is the share of held-out images under the same threshold: what the
    criterion calls copies among images that cannot be copies. Report ``share`` beside it; where it is not
    small, the data holds near-duplicates across the split (deduplicate, or lower the threshold).

    The same call computes Carlini et al.'s relative distance (Carlini et al. 2023, Sec. 5.1),

        l(x) = d_1(x) / (alpha * (1/n) sum_{j<=n} d_j(x))      (d_1 <= ... <= d_n: distances to the n nearest
                                                                training images, the nearest included)

    with n = ``n_neighbours`` = 50 and alpha = 0.5 as in the paper, a sample counting as extracted when l < 1
    (``carlini_share``). It needs no held-out set, but its floor (``heldout_carlini_share``) can be far from 0
    where images cluster, as a classifier's features of one class do: report the two together.
    Distances are computed in blocks of ``batch_size`` rows on train's device, in float64 on the CPU (else the
    input's dtype); results are on the CPU.
    """
    shapes = [tuple(x.shape) if isinstance(x, Tensor) else None for x in (samples, train, heldout)]
    if None in shapes or len({shape[1:] for shape in shapes}) != 1:
        got = ", ".join(f"{name} {list(shape) if shape else 'not a tensor'}"
                        for name, shape in zip(("samples", "train", "heldout"), shapes))
        raise ValueError(f"{got}: pass tensors with one trailing shape -- pixels of one size, or one classifier's "
                         "features -- for all three")
    for name, x in (("samples", samples), ("train", train), ("heldout", heldout)):
        _rows(x, name)  # a tensor [N, ...] with N >= 1, finite
    for name, value, why in (("threshold", threshold, "a ratio to the typical held-out distance"),
                             ("alpha", alpha, "Carlini et al. use 0.5")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a number > 0 ({why}), got {value!r}")
    if isinstance(n_neighbours, bool) or not isinstance(n_neighbours, int) or not 1 <= n_neighbours <= len(train):
        raise ValueError(f"n_neighbours must be an integer from 1 to the number of training images ({len(train)}), "
                         f"got {n_neighbours!r}: Carlini et al. use 50 -- lower it for a smaller training set")
    d_s, i_s = nearest_neighbours(samples, train, n_neighbours, batch_size=batch_size)
    d_h, _ = nearest_neighbours(heldout, train, n_neighbours, batch_size=batch_size)
    typical = float(d_h[:, 0].median())
    flat = train.detach().reshape(len(train), -1).float()
    spread = float((flat - flat.mean(0)).norm(dim=1).median())  # a copy's distance rounds to ~1e-8 of this
    if typical <= 1e-6 * spread:
        raise ValueError("at least half the held-out images have an exact copy in the training set, so the typical "
                         "held-out distance is 0: split the data into disjoint training and held-out images")
    ratio = d_s[:, 0] / typical
    carlini, carlini_h = _relative_distance(d_s, alpha), _relative_distance(d_h, alpha)
    return Memorisation(
        index=i_s[:, 0],
        distance=d_s[:, 0],
        ratio=ratio,
        heldout_distance=d_h[:, 0],
        typical_distance=typical,
        threshold=float(threshold),
        share=float((ratio < threshold).double().mean()),
        heldout_share=float((d_h[:, 0] / typical < threshold).double().mean()),
        carlini_distance=carlini,
        carlini_share=float((carlini < 1).double().mean()),
        heldout_carlini_share=float((carlini_h < 1).double().mean()),
    )
