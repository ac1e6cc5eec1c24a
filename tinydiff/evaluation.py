"""Measuring a digit generator: balanced labels, batched (and cached) sampling, one report.

Whoever evaluates digits -- a script, a benchmark, a notebook -- draws them with :func:`sample_digits` and scores
them with :func:`digit_report`, so that numbers are comparable: the same labels (image i is digit i % 10), the same
seeds per batch, the same classifier features.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from .guidance import guided_digits
from .metrics import classifier_features, frechet_distance, label_accuracy, within_class_diversity
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
    """FD against the test features, requested-class accuracy and within-class diversity of samples [N, 1, H, W]."""
    feats = classifier_features(classifier, samples.clamp(-1, 1))
    return {
        "fd": frechet_distance(feats, test_features),
        "label_accuracy": label_accuracy(classifier, samples.clamp(-1, 1), labels),
        "diversity": within_class_diversity(feats, labels),
    }
