"""Measuring a generator of labelled images: labels, batched (and cached) sampling, one report.

Whoever evaluates digits -- a script, a benchmark, a notebook -- draws them with :func:`sample_digits` and scores
them with :func:`digit_report`, so that numbers are comparable: the same labels (image i is digit i % 10), the same
seeds per batch, the same classifier features.

For any labelled image set (the colour emoji of notebook 14; ``scripts/eval_images.py``), :func:`image_report`
reads a class-conditional generator against real images in one classifier's features, every number beside what
real images the model never saw score (:func:`real_floor`) at the same sample size: class accuracy, FD, precision
and recall, memorisation; :func:`recommend_guidance` picks a guidance scale from a sweep of such reports.
"""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass
import shlex
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from .guidance import guided_digits
from .memorisation import Memorisation, measure_memorisation
from .metrics import classifier_features, frechet_distance, label_accuracy, precision_recall, within_class_diversity
from .pretrained import DiffusionModel
from .registry import SamplerSpec


def machine() -> str:
    """One line saying where a measurement ran: CPU model, cores, torch version, threads (for results files)."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}, {torch.get_num_threads()} threads"


def command_line() -> str:
    """The command that is running, as a user would retype it (with OMP_WAIT_POLICY when set), for manifests."""
    env = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} " if "OMP_WAIT_POLICY" in os.environ else ""
    return env + "python " + " ".join(shlex.quote(a) for a in sys.argv)


def balanced_labels(n: int, classes: int = 10) -> Tensor:
    """Labels [n] with image i asking for class i % classes: every class equally often, in a fixed order."""
    if n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    return torch.arange(n) % classes


def sample_digits(
    model: DiffusionModel,
    labels: Tensor,
    *,
    sampler: SamplerSpec,
    guidance: float = 1.0,
    seed: int = 0,
    batch_size: int = 100,
    clip_x0: float | None | str = "model",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Tensor:
    """Images [N, C, H, W] for labels [N], sampled on the network's device, returned on the CPU.

    The sampler draws ``model.sample_shape`` (images, or latents that
    :meth:`~tinydiff.pretrained.DiffusionModel.to_images` then decodes); ``clip_x0="model"``
    clamps x0_hat to [-1, 1] for images and not for latents (``model.clip_x0``).

    Batch b (the labels ``b*batch_size ...``) is :func:`tinydiff.guidance.guided_digits` with the seed
    ``seed * 1_000_003 + b * batch_size`` (all its noise from a CPU generator), so a batch is the same whatever
    else is drawn and on every device, and with ``cache_dir`` each finished batch is saved there and reused by a
    rerun (an interrupted evaluation picks up where it stopped). ``guidance`` is the classifier-free scale (1 = the
    plain conditional model; :func:`tinydiff.guidance.classifier_free`).
    """
    clip = model.clip_x0 if clip_x0 == "model" else clip_x0
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    tag = f"{sampler.name.replace(' ', '_').replace('=', '')}_s{guidance:g}_seed{seed}_b{batch_size}"
    out = []
    for start in tqdm(range(0, len(labels), batch_size), desc=f"{sampler.name}, s={guidance:g}", disable=not progress):
        file = cache / f"{tag}_{start:06d}.safetensors" if cache is not None else None
        if file is not None and file.is_file():
            out.append(load_file(str(file))["x"])
            continue
        x = guided_digits(model.net, model.schedule, labels[start : start + batch_size], guidance,
                          seed=seed * 1_000_003 + start, prediction=model.prediction, clip_x0=clip,
                          shape=model.sample_shape, sampler=sampler)
        x = model.to_images(x).cpu()
        if file is not None:
            save_file({"x": x.contiguous()}, str(file))
        out.append(x)
    return torch.cat(out)


def digit_report(classifier: nn.Module, samples: Tensor, labels: Tensor, test_features: Tensor) -> dict[str, float]:
    """FD against the reference features [M, F] (for digits: the test digits'), requested-class accuracy and
    within-class diversity of samples [N, C, H, W] with labels [N]."""
    feats = classifier_features(classifier, samples.clamp(-1, 1))
    return {
        "fd": frechet_distance(feats, test_features),
        "label_accuracy": label_accuracy(classifier, samples.clamp(-1, 1), labels),
        "diversity": within_class_diversity(feats, labels),
    }


# --- any labelled image set: labels in the data's proportions, reports beside a real-vs-real floor at the same N ---


def stratified_labels(labels: Tensor, n: int) -> Tensor:
    """n labels [n] in the class proportions of ``labels`` [N], interleaved so that every run of consecutive ones
    has them too (to within a label or two per class).

    Class c gets n_c = n * N_c / N labels, rounded by largest remainders (so they sum to n); its j-th label is
    placed at position (j + 1/2) / n_c of the sequence (ties broken by class). With n = N the counts are exactly the
    data's. Sample with them where classes are unbalanced (the emoji's 68 to 290 per class): FD, precision and
    recall against the real images then measure the images, not a different mix of classes.
    """
    if labels.ndim != 1 or len(labels) == 0 or labels.dtype not in (torch.int32, torch.int64) or labels.min() < 0:
        raise ValueError(f"labels must be class indices [N] >= 0 (N >= 1), got {labels.dtype} {list(labels.shape)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of labels, got {n!r}")
    counts = torch.bincount(labels.cpu()).double()
    exact = counts * n / counts.sum()
    share = exact.floor().long()
    remainder = (exact - share).tolist()
    for c in sorted(range(len(remainder)), key=lambda c: -remainder[c])[: n - int(share.sum())]:
        share[c] += 1
    keys = torch.cat([(torch.arange(k, dtype=torch.float64) + 0.5) / k for k in share.tolist() if k])
    classes = torch.cat([torch.full((k,), c) for c, k in enumerate(share.tolist()) if k])
    return classes[torch.argsort(keys, stable=True)]


def label_tag(labels: Tensor) -> str:
    """A short fingerprint of labels [N] (12 hex digits of their SHA-256): names a cache of samples drawn for them."""
    return hashlib.sha256(labels.cpu().to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:12]


def disjoint_blocks(total: int, size: int) -> list[slice]:
    """The ``total // size`` disjoint runs of ``size`` consecutive indices in range(total): [0, size), [size, 2 size)..."""
    if size < 2 or total < size:
        raise ValueError(f"need blocks of at least 2 of at most {total} items, got size {size}: draw more samples "
                         "than the held-out set holds")
    return [slice(start, start + size) for start in range(0, total - size + 1, size)]


def mean_spread(values: list[float]) -> dict:
    """{"mean", "std" (sample standard deviation; 0 for one value), "values"} of a few numbers."""
    v = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(v.mean()), "std": float(v.std()) if len(v) > 1 else 0.0, "values": list(map(float, values))}


@dataclass(frozen=True)
class RealImages:
    """The real images a generator is read against, with one classifier's features [., F] of each.

    ``train`` [N, C, H, W]: what the generator was trained on, the reference of FD, precision and recall;
    ``heldout`` [H, C, H, W] with ``heldout_labels`` [H]: real images it never saw, which score the floor;
    ``subset`` [H]: indices of H training images drawn at random, the reference of precision and recall at
    the held-out set's size.
    """

    train: Tensor
    train_features: Tensor
    heldout: Tensor
    heldout_labels: Tensor
    heldout_features: Tensor
    subset: Tensor


def real_images(classifier: nn.Module, train: Tensor, heldout: Tensor, heldout_labels: Tensor, *,
                seed: int = 0) -> RealImages:
    """:class:`RealImages` of images in [-1, 1]: the classifier's features, and a random subset of the training
    images (seeded) as large as the held-out set."""
    if heldout_labels.shape != heldout.shape[:1] or train.shape[1:] != heldout.shape[1:]:
        raise ValueError(f"need train [N, C, H, W], held-out images [H, C, H, W] of the same size and labels [H], got "
                         f"{list(train.shape)}, {list(heldout.shape)} and {list(heldout_labels.shape)}")
    if len(heldout) > len(train):
        raise ValueError(f"{len(heldout)} held-out images but {len(train)} training images: the floor compares "
                         "the held-out set with as many training images")
    subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: len(heldout)]
    return RealImages(train, classifier_features(classifier, train), heldout, heldout_labels,
                      classifier_features(classifier, heldout), subset)


def memorisation_summary(found: Memorisation) -> dict:
    """The shares of a :class:`~tinydiff.memorisation.Memorisation` (samples', and their held-out floors)."""
    return {"memorised_share": found.share, "heldout_share": found.heldout_share,
            "carlini_share": found.carlini_share, "heldout_carlini_share": found.heldout_carlini_share,
            "typical_distance": found.typical_distance, "threshold": found.threshold}


def _matched(features: Tensor, real: RealImages, k: int) -> dict:
    """FD (against all training features) and precision / recall (against ``real.subset``) of each disjoint block
    of as many samples as there are held-out images: {name: mean_spread}."""
    reference = real.train_features[real.subset]
    blocks = disjoint_blocks(len(features), len(real.heldout))
    pr = [precision_recall(reference, features[b], k) for b in blocks]
    return {"fd": mean_spread([frechet_distance(features[b], real.train_features) for b in blocks]),
            "precision": mean_spread([v.precision for v in pr]), "recall": mean_spread([v.recall for v in pr])}


def real_floor(classifier: nn.Module, real: RealImages, *, k: int = 3) -> dict:
    """What real images the generator never saw score on :func:`image_report`'s numbers: the floor (or ceiling).

    Shapes as in :class:`RealImages` (H held-out images):

    - ``accuracy``: the classifier's accuracy on the held-out images, the ceiling of a sample's class accuracy;
    - ``fd``: FD(held-out features, training features) (Heusel et al. 2017, FID's formula in our features:
      :func:`~tinydiff.metrics.frechet_distance`) -- biased upwards at finite N, so samples are read at N = H;
    - ``precision`` / ``recall``: Kynkäänniemi et al. 2019 (k-NN manifolds, :func:`~tinydiff.metrics.precision_recall`)
      of the held-out images against H random training images (``real.subset``);
    - ``diversity``: within-class diversity of the held-out images (:func:`~tinydiff.metrics.within_class_diversity`).
    """
    pr = precision_recall(real.train_features[real.subset], real.heldout_features, k)
    return {"n": len(real.heldout),
            "accuracy": label_accuracy(classifier, real.heldout, real.heldout_labels),
            "fd": frechet_distance(real.heldout_features, real.train_features),
            "precision": pr.precision, "recall": pr.recall,
            "diversity": within_class_diversity(real.heldout_features, real.heldout_labels)}


def image_report(classifier: nn.Module, samples: Tensor, labels: Tensor, real: RealImages, *, k: int = 3,
                 floor: dict | None = None, mirrored: bool = False) -> dict:
    """A class-conditional generator's samples [M, C, H, W] for labels [M], read against ``real`` in the
    classifier's features, each number beside the real-vs-real ``floor`` (:func:`real_floor`; computed if None).

    - ``class_accuracy``: share of samples classified as the class asked for; ``accuracy_ratio`` = it over the
      classifier's held-out accuracy (1: as recognisable as real images);
    - ``matched``: at N = H (the held-out set's size), over the M // H disjoint blocks of consecutive samples, the
      mean and spread of FD against all training images and of precision and recall (Kynkäänniemi et al. 2019,
      k = 3) against the H training images ``real.subset``: compare with ``floor``;
    - ``full``: FD and precision / recall of all M samples against all N training images (no floor at that N
      unless H = M);
    - ``memorisation``: :func:`~tinydiff.memorisation.measure_memorisation` in pixels and in features: the share
      of samples that are near-copies of a training image, beside the share of held-out images it calls copies;
      With ``mirrored`` (a model trained on randomly flipped images), the training images *and their mirror
      images* are the set a sample may copy, for the samples and the held-out floor alike;
    - ``diversity``: within-class diversity of the samples' features.

    Samples are clamped to [-1, 1]. M must be at least H; draw labels in the data's proportions
    (:func:`stratified_labels`), else FD and recall also measure a different mix of classes.
    """
    if labels.shape != samples.shape[:1] or samples.shape[1:] != real.train.shape[1:]:
        raise ValueError(f"need samples shaped like the real images {list(real.train.shape[1:])} with one label each, "
                         f"got samples {list(samples.shape)} and labels {list(labels.shape)}")
    floor = real_floor(classifier, real, k=k) if floor is None else floor
    x = samples.clamp(-1, 1)
    features = classifier_features(classifier, x)
    accuracy = label_accuracy(classifier, x, labels)
    pr = precision_recall(real.train_features, features, k)
    return {
        "n": len(x),
        "class_accuracy": accuracy,
        "accuracy_ratio": accuracy / floor["accuracy"] if floor["accuracy"] > 0 else float("nan"),
        "matched": {"n": len(real.heldout), **_matched(features, real, k)},
        "full": {"fd": frechet_distance(features, real.train_features), "precision": pr.precision,
                 "recall": pr.recall},
        "memorisation": memorisation_report(classifier, x, features, real, mirrored=mirrored),
        "diversity": within_class_diversity(features, labels),
        "floor": floor,
    }


def memorisation_report(classifier: nn.Module, samples: Tensor, features: Tensor, real: RealImages, *,
                        mirrored: bool = False) -> dict:
    """:func:`memorisation_summary` of samples [M, C, H, W] (and their classifier ``features`` [M, F]) against
    ``real.train``, in pixels and in features, with ``real.heldout`` as the floor; with ``mirrored``, against the
    training images and their left-right mirror images (what a model trained with random flips has seen)."""
    train, train_features = real.train, real.train_features
    if mirrored:
        train = torch.cat([train, train.flip(-1)])
        train_features = torch.cat([train_features, classifier_features(classifier, real.train.flip(-1))])
    return {"mirrored": mirrored,
            "pixels": memorisation_summary(measure_memorisation(samples, train, real.heldout)),
            "features": memorisation_summary(measure_memorisation(features, train_features, real.heldout_features))}


def recommend_guidance(reports: dict[float, dict], target: float = 0.9) -> tuple[float, str]:
    """(scale, rule): among the guidance scales whose ``accuracy_ratio`` (:func:`image_report`) reaches ``target``
    -- samples recognised at least ``target`` times as often as real pictures of their class -- the one whose
    samples are closest to the real images, the lowest FD at the held-out set's N (``matched``); if no scale
    reaches the target, the scale with the highest ratio. Guidance trades diversity for fidelity (Ho & Salimans
    2022): FD, which sees both, falls and then rises with the scale, and the rule takes its bottom among the
    scales that make samples recognisable."""
    if not reports:
        raise ValueError("no reports to choose a guidance scale from: evaluate at least one scale")
    reaching = [s for s, r in reports.items() if r["accuracy_ratio"] >= target]
    if reaching:
        best = min(reaching, key=lambda s: (reports[s]["matched"]["fd"]["mean"], s))
        return best, (f"the lowest FD (at the held-out set's N) among the scales whose class accuracy is >= {target:g} x "
                      "the classifier's held-out accuracy")
    best = max(reports, key=lambda s: reports[s]["accuracy_ratio"])
    return best, f"no scale reached {target:g} x the held-out accuracy: the scale with the highest class accuracy"