"""The emoji judge and the evaluation that works on any labelled image set: scripts/train_classifier.py's augment and
options, cli.load_judge for emoji, tinydiff.evaluation.image_report on known cases, scripts/eval_images.py's errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tinydiff import cli
from tinydiff.checkpoint import save_checkpoint
from tinydiff.models import Classifier

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- scripts/train_classifier.py ------------------------------------------------------------------------------


def _old_augment(x, generator):
    """The digits' augment as it shipped before --data emoji (black padding): the MNIST judge must not change."""
    B = x.shape[0]
    angle = (torch.rand(B, generator=generator) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(B, generator=generator)
    shift = (torch.rand(B, 2, generator=generator) * 2 - 1) * (2 / 16)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False) - 1


def test_the_digit_augment_is_unchanged(load_script):
    augment = load_script("train_classifier").augment
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    new, old = augment(x, torch.Generator().manual_seed(3)), _old_augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(new, old)


def test_the_emoji_augment_pads_with_white_and_flips(load_script):
    augment = load_script("train_classifier").augment
    white = torch.ones(64, 3, 32, 32)
    # a white picture stays white wherever the grid samples outside it: the padding is the background
    assert torch.allclose(augment(white, torch.Generator().manual_seed(0), background=1.0, flip=True), white, atol=1e-6)
    black_padded = augment(white, torch.Generator().manual_seed(0))  # the digits' padding is black (-1)
    assert black_padded.min() < 0
    # a left-right ramp: with flip about half the images come out mirrored (the ramp falls instead of rising)
    ramp = torch.linspace(-1, 1, 32).expand(64, 3, 32, 32).contiguous()
    def rising(out):
        return int((out[:, :, 16, 20] > out[:, :, 16, 12]).all(dim=1).sum())

    assert rising(augment(ramp, torch.Generator().manual_seed(0))) == 64  # +-10 degrees keep every ramp rising
    assert 16 <= rising(augment(ramp, torch.Generator().manual_seed(0), background=1.0, flip=True)) <= 48


@pytest.mark.parametrize("argv, message", [
    (["--data", "emoji", "--styled"], "--styled .* mnist only"),
    (["--data", "emoji", "--epochs", "0"], "--epochs must be a positive integer"),
    (["--label-smoothing", "1"], r"--label-smoothing must lie in \[0, 1\)"),
])
def test_train_classifier_bad_arguments(argv, message, load_script):
    with pytest.raises(SystemExit, match=message):
        load_script("train_classifier").parse(argv)


def test_train_classifier_recipes(load_script):
    parse = load_script("train_classifier").parse
    mnist, emoji = parse([]), parse(["--data", "emoji", "--width", "8"])
    assert (mnist.width, mnist.epochs, mnist.output) == (16, 15, "data/checkpoints/mnist_classifier")
    assert (emoji.width, emoji.output, emoji.label_smoothing) == (8, "data/checkpoints/emoji_classifier", 0.1)
