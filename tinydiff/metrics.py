"""Sample-quality metrics: measure, do not eyeball.

``energy_distance`` compares two point clouds (2-D toys). Always report it
beside its *noise floor*: the same statistic between two independent draws
of the true distribution of the same size, which is what a perfect sampler
would score. For images: the Frechet distance, label accuracy and diversity
in a classifier's features, and precision and recall (k-NN manifolds) in
the same features, each beside what real images score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .data.toy import GaussianMixture


def _check_points(x: Tensor, name: str) -> None:
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape [N, D] with N >= 2, got {list(x.shape)}")


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Squared energy distance between the empirical laws of x [N, D] and y [M, D] (Székely & Rizzo 2013, eq. 2).

    D^2(X, Y) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|

    estimated with V-statistics (all pairs, including i = j), so the value is
    always >= 0 and is 0 only for identical samples. It is 0 in the population
    iff the two laws are equal. Computed in float64 on the CPU; returns a float.
    """
    _check_points(x, "x")
    _check_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    x = x.detach().to("cpu", torch.float64)
    y = y.detach().to("cpu", torch.float64)
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return float(2 * xy - xx - yy)


def energy_distance_floor(
    sample: Callable[..., Tensor], n: int, *, n_reference: int = 4000, generator: torch.Generator | None = None
) -> float:
    """The noise floor of :func:`energy_distance` at sample size ``n``: what a perfect sampler scores on average.

    For two independent n-point draws of the same law, the V-statistic's expectation is
    exactly  E[D^2] = 2 E|X - X'| / n  (the i = j terms are 0, so each within-sample
    mean is (n - 1)/n of E|X - X'|). E|X - X'| is estimated from two independent
    draws of ``n_reference`` points from ``sample(m, generator=generator) -> [m, D]``
    (e.g. ``GaussianMixture.sample`` or ``tinydiff.data.two_moons``).

    Compare a sampler's n points with n fresh true points: a ratio distance / floor
    near 1 means "indistinguishable at this sample size". A single ratio fluctuates
    (for a perfect sampler its standard deviation is roughly 0.5-0.7), so average
    several or allow a margin (the course asks for a ratio below 2).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be the sample size you compare at, an integer >= 2, got {n!r}")
    x = sample(n_reference, generator=generator).detach().to("cpu", torch.float64)
    y = sample(n_reference, generator=generator).detach().to("cpu", torch.float64)
    _check_points(x, "sample(n_reference)")
    return float(2.0 * torch.cdist(x, y).mean() / n)


def mode_occupancy(mixture: GaussianMixture, x: Tensor) -> Tensor:
    """Fraction of the points x [N, D] assigned to each component of a Gaussian mixture, shape [K] (sums to 1).

    A point belongs to its most probable component, argmax_k p(k | x) (``mixture.responsibilities``).
    Compare with ``mixture.weights``: the diagnostic for samplers that find every mode
    but with the wrong weights (plain Langevin on well-separated modes).
    """
    _check_points(x, "x")
    k = mixture.responsibilities(x.detach().to("cpu", torch.float64)).argmax(dim=1)
    return torch.bincount(k, minlength=mixture.n_components).to(torch.float64) / x.shape[0]


# --- image metrics: what a digit classifier sees in generated images ---------------------------
#
# FD: the Frechet distance between Gaussians fitted to classifier features of two image sets --
# FID (Heusel et al. 2017) with our small MNIST classifier instead of Inception, hence "FD".
# Like energy_distance it is biased upwards at finite sample size: report it beside the
# real-vs-real floor (two sets of real digits of the same size).


def frechet_distance_gaussians(mu_a: Tensor, cov_a: Tensor, mu_b: Tensor, cov_b: Tensor) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu_a, cov_a) and N(mu_b, cov_b).

    d^2 = |mu_a - mu_b|^2 + Tr(cov_a + cov_b - 2 (cov_a cov_b)^{1/2})
    (Dowson & Landau 1982; the FID formula of Heusel et al. 2017, applied to our own features).

    Tr (cov_a cov_b)^{1/2} = sum_i sqrt(lambda_i), lambda_i the eigenvalues of the symmetric PSD
    matrix cov_a^{1/2} cov_b cov_a^{1/2} (similar to cov_a cov_b): no complex sqrtm needed.
    Shapes: mu [F], cov [F, F]. Computed in float64 on the CPU; returns a float.
    """
    mu_a, cov_a, mu_b, cov_b = (v.detach().to("cpu", torch.float64) for v in (mu_a, cov_a, mu_b, cov_b))
    F = mu_a.shape[0]
    if mu_b.shape != (F,) or cov_a.shape != (F, F) or cov_b.shape != (F, F):
        raise ValueError(f"need mu [F] and cov [F, F] for both Gaussians, got {[list(v.shape) for v in (mu_a, cov_a, mu_b, cov_b)]}")
    w, V = torch.linalg.eigh(cov_a)
    sqrt_a = V @ torch.diag(w.clamp(min=0).sqrt()) @ V.T
    middle = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt)


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """FD between two sets of features [N, F] and [M, F]: :func:`frechet_distance_gaussians` of their means and covariances."""
    _check_points(feats_a, "feats_a")
    _check_points(feats_b, "feats_b")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"feature sizes differ: {feats_a.shape[1]} and {feats_b.shape[1]} (use the same classifier for both)")
    a, b = feats_a.detach().to("cpu", torch.float64), feats_b.detach().to("cpu", torch.float64)
    return frechet_distance_gaussians(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))


@torch.no_grad()
def classifier_features(classifier: torch.nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """``classifier.features`` of images [N, C, H, W] in [-1, 1], in batches, eval mode: [N, F] float32 on the CPU."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    feats = [classifier.features(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    classifier.train(was_training)
    return torch.cat(feats)


@torch.no_grad()
def classify(classifier: torch.nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """Predicted labels [N] (argmax of the logits) for images [N, C, H, W], eval mode, on the CPU."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    preds = [classifier(images[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    classifier.train(was_training)
    return torch.cat(preds)


def label_accuracy(classifier: torch.nn.Module, images: Tensor, labels: Tensor) -> float:
    """Fraction of images [N, C, H, W] that ``classifier`` assigns to the requested labels [N].

    For a class-conditional generator: did asking for a 7 give a 7? (On real test digits it
    is the classifier's own accuracy, the ceiling of this number.)
    """
    if labels.shape != images.shape[:1]:
        raise ValueError(f"need one label per image: images {list(images.shape)}, labels {list(labels.shape)}")
    return float((classify(classifier, images) == labels.cpu()).double().mean())


def within_class_diversity(features: Tensor, labels: Tensor) -> float:
    """How different the samples of one class are from each other, averaged over the classes present.

        D = (1 / |C|) sum_c  1 / (n_c (n_c - 1))  sum_{i != j, y_i = y_j = c} |f_i - f_j|

    (mean Euclidean distance between the classifier features f [N, F] of two distinct samples
    of the same class; labels [N]). Guidance trades this away for fidelity: a generator that
    draws the same 7 every time scores 0. Classes with a single sample are skipped.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"need features [N, F] and labels [N], got {list(features.shape)} and {list(labels.shape)}")
    f, y = features.detach().to("cpu", torch.float64), labels.cpu()
    per_class = []
    for c in torch.unique(y).tolist():
        fc = f[y == c]
        n = fc.shape[0]
        if n >= 2:
            per_class.append(float(torch.cdist(fc, fc).sum() / (n * (n - 1))))
    if not per_class:
        raise ValueError("every class has a single sample: diversity needs at least two samples of one class")
    return sum(per_class) / len(per_class)


@torch.no_grad()
def clip_score(clip: torch.nn.Module, images: Tensor, ids: Tensor, batch_size: int = 500) -> Tensor:
    """CLIP score per image: 100 * max(cos(CLIP image embedding, CLIP text embedding), 0), [N].

    The reference-free image-text metric of Hessel et al. 2021, who define it as w * max(cos, 0) with w = 2.5;
    w = 100 is the convention of the metrics libraries (torchmetrics' ``CLIPScore``), the scale text-to-image
    papers report. Images [N, 1, 32, 32] in [-1, 1], prompt ids [N, L]; ``clip`` a
    :class:`tinydiff.models.TinyCLIP`.
    """
    if len(images) != len(ids):
        raise ValueError(f"one prompt per image: got {len(images)} images and {len(ids)} prompts")
    clip = clip.eval()
    device = next(clip.parameters()).device
    cos = torch.cat([clip.similarity(images[i : i + batch_size].to(device), ids[i : i + batch_size].to(device))
                     for i in range(0, len(images), batch_size)])
    return 100 * cos.clamp(min=0)


# --- nearest neighbours, and precision and recall in a feature space ---------------------------
#
# Every distance below is Euclidean, computed in row blocks of ``batch_size`` queries against the whole
# reference set, so a block holds batch_size x N distances (1,024 x 10,000 float64 = 82 MB) and N = 10,000
# never builds an N x N matrix. Both sets are first shifted by the reference set's mean: distances do not
# change, and the rounding of the matrix-product form |x|^2 + |y|^2 - 2 x.y that torch.cdist uses for large
# sets shrinks with the norms, so a copy of a point lies at distance ~0 from it.


def _work_dtype(x: Tensor) -> torch.dtype:
    """float64 on the CPU; elsewhere the input's floating dtype, at least float32 (no float64 is made off the CPU)."""
    if x.device.type == "cpu":
        return torch.float64
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _rows(x: Tensor, name: str, *, at_least: int = 1) -> Tensor:
    """x [N, ...] as rows [N, D] (an image [C, H, W] becomes one row), checked: a tensor, N >= at_least, finite."""
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] < at_least or x[0].numel() == 0:
        got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor [N, D] (or images [N, C, H, W]) with N >= {at_least}, got {got}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf: measure finite samples (a diverged sampler? check its output)")
    return x.detach().reshape(x.shape[0], -1)


def _check_int(value: int, name: str, low: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low} ({why}), got {value!r}")


def _shared_space(queries: Tensor, reference: Tensor, names: tuple[str, str]) -> tuple[Tensor, Tensor]:
    """Both as [N, D] in the working dtype on reference's device, shifted by reference's mean."""
    if queries.shape[1] != reference.shape[1]:
        raise ValueError(f"{names[0]} has {queries.shape[1]} values per point and {names[1]} {reference.shape[1]}: "
                         "measure both in the same space (the same classifier's features, or pixels of the same size)")
    dtype = _work_dtype(reference)
    reference = reference.to(dtype)
    queries = queries.to(reference.device, dtype)
    centre = reference.mean(0)
    return queries - centre, reference - centre


def _knn(queries: Tensor, reference: Tensor, k: int, batch_size: int,
         exclude_self: bool = False) -> tuple[Tensor, Tensor]:
    """The k smallest distances from each row of queries [M, D] to the rows of reference [N, D], ascending, and
    their indices: ([M, k], [M, k]). With ``exclude_self`` (queries is reference) row i skips reference[i]."""
    dists, idxs = [], []
    for start in range(0, len(queries), batch_size):
        d = torch.cdist(queries[start : start + batch_size], reference)
        if exclude_self:
            rows = torch.arange(d.shape[0], device=d.device)
            d[rows, rows + start] = float("inf")
        values, indices = d.topk(k, dim=1, largest=False, sorted=True)
        dists.append(values)
        idxs.append(indices)
    return torch.cat(dists), torch.cat(idxs)


def nearest_neighbours(queries: Tensor, reference: Tensor, k: int = 1, *,
                       batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """The k nearest rows of ``reference`` to each row of ``queries``: (distances [M, k], indices [M, k]).

    queries [M, ...] and reference [N, ...] with the same trailing shape (features [., F], or images
    [., C, H, W], flattened); Euclidean distances, ascending along each row. Computed
    in blocks of ``batch_size`` queries on reference's device, in float64 on the CPU (else the input's dtype);
    returned on the CPU, distances as float64 and indices as int64.
    """
    q, r = _rows(queries, "queries"), _rows(reference, "reference")
    _check_int(k, "k", 1, "the number of neighbours")
    _check_int(batch_size, "batch_size", 1, "queries per block")
    if k > len(r):
        raise ValueError(f"k = {k} neighbours need at least {k} reference points, got {len(r)}: lower k")
    q, r = _shared_space(q, r, ("queries", "reference"))
    d, i = _knn(q, r, k, batch_size)
    return d.to("cpu", torch.float64), i.cpu()


def knn_radii(features: Tensor, k: int = 3, *, batch_size: int = 1024) -> Tensor:
    """Each point's distance to its k-th nearest *other* point of the set: [N] for features [N, F].

    The radius of the hypersphere around each point in the k-NN manifold estimate of Kynkäänniemi et al. 2019
    (Sec. 2, eq. 1: ||phi' - NN_k(phi')||_2). The point itself is not one of its neighbours; a duplicate of it
    is (at distance 0), as in the authors' code. Returned on the CPU in float64.
    """
    return _radii(features, k, batch_size, "features")


def _radii(features: Tensor, k: int, batch_size: int, name: str) -> Tensor:
    x = _rows(features, name, at_least=2)
    _check_int(k, "k", 1, "the k-th nearest neighbour sets each radius")
    _check_int(batch_size, "batch_size", 1, "points per block")
    if k >= len(x):
        raise ValueError(f"k = {k} needs at least k + 1 = {k + 1} points in {name} (a point is not its own "
                         f"neighbour), got {len(x)}: lower k or pass more points")
    x, _ = _shared_space(x, x, (name, name))
    return _knn(x, x, k, batch_size, exclude_self=True)[0][:, -1].to("cpu", torch.float64)


def in_knn_manifold(points: Tensor, reference: Tensor, k: int = 3, *, batch_size: int = 1024) -> Tensor:
    """Which points [M, F] lie in the k-NN manifold of ``reference`` [N, F]: bool [M] on the CPU.

        f(phi, Phi) = 1  iff  ||phi - phi'||_2 <= ||phi' - NN_k(phi')||_2  for at least one phi' in Phi

    (Kynkäänniemi et al. 2019, Sec. 2, eq. 1): phi is inside the union of the balls centred on the reference
    points with radii :func:`knn_radii` (the boundary counts as inside). Same space, blocks and dtypes as
    :func:`nearest_neighbours`.
    """
    return _in_manifold(points, reference, k, batch_size, ("points", "reference"))


def _in_manifold(points: Tensor, reference: Tensor, k: int, batch_size: int, names: tuple[str, str]) -> Tensor:
    p = _rows(points, names[0])
    radii = _radii(reference, k, batch_size, names[1])
    p, r = _shared_space(p, _rows(reference, names[1]), names)
    radii = radii.to(r.device, r.dtype)
    inside = [(torch.cdist(p[s : s + batch_size], r) <= radii).any(dim=1) for s in range(0, len(p), batch_size)]
    return torch.cat(inside).cpu()


class PrecisionRecall(NamedTuple):
    """Improved precision and recall (Kynkäänniemi et al. 2019): two shares in [0, 1]."""

    precision: float  # share of generated samples inside the real manifold: fidelity
    recall: float  # share of real samples inside the generated manifold: coverage


def precision_recall(real: Tensor, generated: Tensor, k: int = 3, *, batch_size: int = 1024) -> PrecisionRecall:
    """Improved precision and recall of generated features [M, F] against real features [N, F] (Kynkäänniemi
    et al. 2019, Sec. 2, eq. 2):

        precision = (1/M) sum_{phi_g}  f(phi_g, Phi_r)      recall = (1/N) sum_{phi_r}  f(phi_r, Phi_g)

    with f the k-NN manifold membership of :func:`in_knn_manifold` (k = 3, the paper's choice). Precision asks
    "is each sample realistic?" (a sampler that draws only some modes well keeps precision 1); recall asks
    "is each real image reachable?" (that sampler's recall is the share of real images in the modes it draws).
    Both depend on k and on the sample sizes: compare models at equal N and M, beside what two independent real
    sets of those sizes score (below 1 even for a perfect sampler: their ceiling). Features of one classifier
    (``classifier_features``) for both sets.
    """
    r, g = _rows(real, "real", at_least=2), _rows(generated, "generated", at_least=2)
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"feature sizes differ: real {r.shape[1]}, generated {g.shape[1]} "
                         "(use the same classifier for both)")
    precision = _in_manifold(g, r, k, batch_size, ("generated", "real")).double().mean()
    recall = _in_manifold(r, g, k, batch_size, ("real", "generated")).double().mean()
    return PrecisionRecall(float(precision), float(recall))


# --- distortion: how far an image lies from the one it should be (super-resolution, notebook 15) ------------


def _check_pair(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"give two batches of images of one shape [B, C, H, W], got "
                         f"{list(getattr(x, 'shape', []))} and {list(getattr(y, 'shape', []))}")


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB, for images in [-1, 1]: [B, C, H, W] x 2 -> [B].

        PSNR = 10 log10(peak^2 / MSE),  peak = 2 (the range of [-1, 1]; the same number as for [0, 1] images, peak 1)

    Higher is closer; identical images give inf. It rewards the average of the plausible answers, not any one
    of them (Blau & Michaeli 2018)."""
    _check_pair(x, y)
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(4.0 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-r.pow(2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: Tensor, y: Tensor, *, window: int = 7, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (Wang et al. 2004, eq. 13), images in [-1, 1]: [B, C, H, W] x 2 -> [B].

        SSIM = mean over pixels of  (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

    with local means, variances and covariance under a Gaussian window (``window`` pixels, ``sigma``; the paper's
    11 x 11 window is shrunk to 7 x 7 for 32 x 32 digits), C1 = (0.01 L)^2, C2 = (0.03 L)^2 and L = 1 on the [0, 1]
    scale the images are mapped to; the mean is over the "valid" pixels (windows inside the image) and the channels.
    1 for identical images; it compares local contrast and structure, so a blur lowers it more than a small
    shift of brightness does."""
    import torch.nn.functional as F

    _check_pair(x, y)
    if min(x.shape[-2:]) < window:
        raise ValueError(f"the images ({list(x.shape[-2:])}) must be at least window = {window} pixels on a side")
    dtype = _work_dtype(x)
    x, y = (x.to(dtype) + 1) / 2, (y.to(dtype) + 1) / 2
    w = _gaussian_window(window, sigma, x.shape[1], dtype, x.device)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, w, groups=x.shape[1])

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.pow(2)
    var_y = blur(y * y) - mu_y.pow(2)
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1).float()
