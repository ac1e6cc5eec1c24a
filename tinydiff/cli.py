"""What the course's scripts and benchmarks share: ``--device``, a JSON config, the classifier that measures digits,
a mean of the recent losses for the log, and the provenance a result records.

Imported before torch, this module sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it: idle OpenMP
threads then sleep instead of spinning, which matters on a CPU shared with other work. A script therefore imports
it first::

    from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

Imported after torch it is too late for OpenMP, and it leaves the environment alone, so that
:func:`~tinydiff.evaluation.command_line` records only a setting that took effect.
"""

from __future__ import annotations

import os
import sys

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402 -- the environment must be set before torch is imported
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from .checkpoint import load_checkpoint  # noqa: E402
from .data import load_emoji, load_mnist  # noqa: E402
from .evaluation import command_line, digit_report, machine  # noqa: E402
from .metrics import classifier_features  # noqa: E402

DEVICES = "cpu, cuda, cuda:N or mps"


def parse_device(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked against the devices torch sees; for argparse's ``type=``.

    Raises ``argparse.ArgumentTypeError`` (argparse prints it and exits) for another name, for CUDA or MPS where
    torch has none, and for ``cuda:N`` beyond the CUDA devices there are.
    """
    name = text.strip().lower()
    match = re.fullmatch(r"(cpu|mps|cuda)(?::(\d+))?", name)
    if match is None or (match[2] is not None and match[1] != "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: choose {DEVICES}")
    kind, index = match[1], match[2]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: torch sees no CUDA device on this machine "
                                             "(torch.cuda.is_available() is False); use --device cpu")
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA device(s), "
                                             f"cuda:0 to cuda:{count - 1}")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: torch sees no Apple MPS device on this machine "
                                         "(torch.backends.mps.is_available() is False); use --device cpu")
    return name


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None, *, device: str | None = "cpu",
               threads: bool = False) -> argparse.Namespace:
    """Add what every script takes -- ``--device`` (:func:`parse_device`; ``device`` when not given, None: no such
    option) and, with ``threads``, ``--threads`` (torch.set_num_threads) -- parse ``argv`` (default: the command
    line) and set the number of threads."""
    if device is not None:
        parser.add_argument("--device", type=parse_device, default=device, help=f"{DEVICES} (default: {device})")
    if threads:
        parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if threads and args.threads:
        torch.set_num_threads(args.threads)
    return args


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, rounded to 0.01 (None where the system keeps none)."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def provenance(load_before: list[float] | None = None) -> dict:
    """What a result file or a checkpoint's ``extra`` records about its run: the command as typed, the machine,
    the load average (``load_average``; with ``load_before``, ``load_average_before`` and ``load_average_after``) and
    the date."""
    load = ({"load_average_before": load_before, "load_average_after": load_average()} if load_before is not None
            else {"load_average": load_average()})
    return {"command": command_line(), "machine": machine(), **load, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def seeded(seed: int) -> torch.Generator:
    """Seed torch's global generator (weight initialisation, dropout) and return a CPU generator with the same seed
    (data order and noise): what a training script does before it builds anything."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def load_config(path: str | os.PathLike, **train_overrides) -> tuple[dict, dict, dict]:
    """A training config (``configs/*.json``) -> (the whole config, its ``train`` section with the overrides that
    are not None applied, the ``model`` section's keyword arguments without its ``name``)."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"--config {path}: no such file (the shipped configs are in configs/)")
    config = json.loads(path.read_text())
    missing = [key for key in ("model", "train", "seed") if key not in config]
    if missing:
        raise SystemExit(f"--config {path} has no {', '.join(missing)}: see configs/ for complete examples")
    train = {**config["train"], **{k: v for k, v in train_overrides.items() if v is not None}}
    return config, train, {k: v for k, v in config["model"].items() if k != "name"}


def mean_of_last(values: Sequence[float], k: int) -> float:
    """The mean of the last ``k`` values (all of them while there are fewer): the loss a log line reports."""
    if not values:
        raise ValueError("no values to average yet")
    tail = values[-k:]
    return sum(tail) / len(tail)


def training_facts(config: dict, train: dict, *, step: int, steps_run: int, wall_time_s: float, elapsed: float,
                   device: str, processes: int, channels_last: bool, parameters: int, losses: Sequence[float],
                   data_shape: Sequence[int]) -> dict:
    """What a training script records in its checkpoint's JSON ``extra``: where and how the run went (provenance,
    seed, steps, wall time and steps/s of this process's ``steps_run`` steps in ``elapsed`` s, device, processes,
    parameters, the mean of the last 200 losses), and the recipe (schedule, the ``train`` section, the data's shape)."""
    return {
        **provenance(),
        "seed": config["seed"],
        "steps": step,
        "batch_size": train["batch_size"],
        "wall_time_s": round(wall_time_s, 1),
        "steps_per_s": round(steps_run / elapsed, 3) if elapsed > 0 else None,
        "device": device,
        "processes": processes,
        "channels_last": channels_last,
        "parameters": parameters,
        "final_loss_mean_last_200": round(mean_of_last(losses, 200), 5) if losses else None,
        "weights": "EMA",
        "schedule": config.get("schedule"),
        "train": train,
        "data_shape": list(data_shape),
    }


DATA = {"mnist": "data/checkpoints/mnist_classifier", "emoji": "data/checkpoints/emoji_classifier"}
"""The labelled image sets a judge can measure, and the shipped classifier of each."""
REFERENCE = {"mnist": "test", "emoji": "train"}
"""The split whose features FD compares against by default: MNIST's 1,000 test digits (the course's FD since notebook
07); for emoji, the 1,289 training images (only 323 are held out, so they serve as the real-vs-real floor)."""


def load_images(data: str = "mnist", split: str = "train") -> tuple[Tensor, Tensor]:
    """Images [N, C, 32, 32] in [-1, 1] and labels [N] of a shipped labelled set, on the CPU: ``"mnist"`` (digits
    padded to 32 x 32: 4,000 train / 1,000 test) or ``"emoji"`` (on white: 1,289 train / 323 test); split
    ``"train"`` or ``"test"``."""
    if data not in DATA:
        raise ValueError(f"unknown data {data!r}: choose {' or '.join(map(repr, DATA))}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}: choose 'train' or 'test'")
    if data == "mnist":
        return load_mnist(split, pad_to_32=True)
    images, labels, _, _ = load_emoji(split)
    return images, labels


@dataclass
class Judge:
    """The classifier that measures generated images, and its features of the real images that FD compares against
    (by default MNIST's 1,000 test digits, or the 1,289 training emoji: :data:`REFERENCE`)."""

    classifier: nn.Module
    reference_features: Tensor
    data: str = "mnist"

    @property
    def test_features(self) -> Tensor:
        """The reference features under their MNIST name (for MNIST they are the test digits')."""
        return self.reference_features

    def report(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        """FD, requested-class accuracy and diversity of images [N, C, 32, 32] (:func:`~tinydiff.evaluation.digit_report`);
        of real images, it is the floor a sampler is read against."""
        return digit_report(self.classifier, images, labels, self.reference_features)


def load_judge(path: str | os.PathLike | None = None, device: str = "cpu", *, data: str = "mnist",
               reference: str | None = None) -> Judge:
    """The classifier at ``path`` (default: the shipped one for ``data``, :data:`DATA`) on ``device``, with its
    features of the ``reference`` split of ``data`` (default :data:`REFERENCE`: MNIST's test digits, emoji's training
    images). ``load_judge()`` and ``load_judge(path, device=...)`` are the MNIST judge, as before."""
    if data not in DATA:
        raise ValueError(f"unknown data {data!r}: choose {' or '.join(map(repr, DATA))}")
    path = DATA[data] if path is None else path
    classifier = load_checkpoint(path, device=device)
    images, _ = load_images(data, REFERENCE[data] if reference is None else reference)
    channels = getattr(classifier, "config", {}).get("in_channels", images.shape[1])
    if channels != images.shape[1]:
        raise ValueError(f"the classifier {path} takes {channels}-channel images but {data} images have "
                         f"{images.shape[1]}: pass the classifier trained on {data} ({DATA[data]})")
    return Judge(classifier, classifier_features(classifier, images), data)
