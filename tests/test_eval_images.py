"""The emoji judge and the evaluation that works on any labelled image set: scripts/train_classifier.py's augment and
options, cli.load_judge for emoji, tinydiff.evaluation.image_report on known cases, scripts/eval_images.py's errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tinydiff import cli
from tinydiff.checkpoint import save_checkpoint
from tinydiff.evaluation import disjoint_blocks, image_report, real_images, recommend_guidance, stratified_labels
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


# ---- cli.load_judge for emoji -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emoji_judge_path(tmp_path_factory):
    """A random emoji-shaped classifier checkpoint (3 channels, 8 classes, width 4)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("judge") / "emoji_classifier"
    save_checkpoint(path, Classifier(in_channels=3, num_classes=8, width=4))
    return path


def test_load_judge_builds_an_emoji_judge_and_keeps_the_mnist_call(emoji_judge_path):
    judge = cli.load_judge(emoji_judge_path, data="emoji")
    assert judge.data == "emoji" and judge.reference_features.shape == (1289, 16)  # the training emoji by default
    assert judge.test_features is judge.reference_features
    assert cli.load_judge(emoji_judge_path, data="emoji", reference="test").reference_features.shape == (323, 16)
    images, labels = cli.load_images("emoji", "test")
    assert images.shape == (323, 3, 32, 32) and labels.shape == (323,)
    with pytest.raises(ValueError, match="3-channel images but mnist images have 1"):
        cli.load_judge(emoji_judge_path)  # data defaults to mnist, as every existing caller expects
    with pytest.raises(ValueError, match="unknown data 'cifar'"):
        cli.load_judge(emoji_judge_path, data="cifar")


# ---- tinydiff.evaluation: labels, blocks, image_report on known cases ------------------------------------------


def test_stratified_labels_keep_the_data_proportions_in_every_block():
    assert stratified_labels(torch.tensor([1, 1, 0, 1]), 4).tolist() == [1, 0, 1, 1]  # keys 1/6, 1/2 (class 0 first), 1/2, 5/6
    train = cli.load_images("emoji", "train")[1]
    labels = stratified_labels(train, len(train))
    assert torch.equal(torch.bincount(labels), torch.bincount(train))  # n = N: exactly the data's counts
    share = torch.bincount(train).double() / len(train)
    for block in disjoint_blocks(len(labels), 323):
        assert (torch.bincount(labels[block], minlength=8) - 323 * share).abs().max() < 2
    assert len(stratified_labels(train, 323)) == 323 and disjoint_blocks(1289, 323)[-1] == slice(646, 969)
    with pytest.raises(ValueError, match="n must be a positive"):
        stratified_labels(train, 0)


@pytest.fixture(scope="module")
def toy():
    """A random classifier (3 channels, 4 classes) and random 16 x 16 images: 80 'training', 20 'held-out'."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    classifier = Classifier(in_channels=3, num_classes=4, width=4).eval()
    train, heldout = torch.rand(80, 3, 16, 16, generator=g) * 2 - 1, torch.rand(20, 3, 16, 16, generator=g) * 2 - 1
    heldout_labels = torch.arange(20) % 4
    return classifier, real_images(classifier, train, heldout, heldout_labels, seed=0)


def test_held_out_images_as_samples_score_the_floor(toy):
    classifier, real = toy
    report = image_report(classifier, real.heldout, real.heldout_labels, real)
    floor = report["floor"]
    assert report["class_accuracy"] == floor["accuracy"] and report["accuracy_ratio"] == pytest.approx(1.0)
    matched = report["matched"]  # one block of 20: the held-out images themselves
    assert matched["n"] == 20 and matched["fd"]["values"] == [floor["fd"]] and matched["fd"]["std"] == 0.0
    assert (matched["precision"]["mean"], matched["recall"]["mean"]) == (floor["precision"], floor["recall"])
    for space in ("pixels", "features"):
        m = report["memorisation"][space]
        assert m["memorised_share"] == m["heldout_share"] and m["carlini_share"] == m["heldout_carlini_share"]


def test_copies_of_the_training_images_are_memorised(toy):
    classifier, real = toy
    report = image_report(classifier, real.train, torch.arange(80) % 4, real)
    assert report["matched"]["fd"]["values"].__len__() == 4  # 80 samples: four disjoint blocks of 20
    assert report["full"]["fd"] == pytest.approx(0.0, abs=1e-6)
    assert report["full"]["precision"] == 1.0 and report["full"]["recall"] == 1.0
    for space in ("pixels", "features"):
        assert report["memorisation"][space]["memorised_share"] == 1.0
        assert report["memorisation"][space]["carlini_share"] == 1.0
    with pytest.raises(ValueError, match="need blocks"):
        image_report(classifier, real.train[:10], torch.zeros(10, dtype=torch.long), real)  # fewer than 20


def test_mirror_images_of_training_images_count_as_copies_only_when_the_model_trained_with_flips(toy):
    classifier, real = toy
    mirrors = real.train[:20].flip(-1)
    plain = image_report(classifier, mirrors, torch.arange(20) % 4, real)["memorisation"]
    flipped = image_report(classifier, mirrors, torch.arange(20) % 4, real, mirrored=True)["memorisation"]
    assert not plain["mirrored"] and flipped["mirrored"]
    assert plain["pixels"]["memorised_share"] == 0.0 and flipped["pixels"]["memorised_share"] == 1.0


def test_recommend_guidance_takes_the_lowest_fd_among_the_scales_that_reach_the_target():
    def report(ratio, fd):
        return {"accuracy_ratio": ratio, "matched": {"fd": {"mean": fd}}}

    reports = {1.0: report(0.7, 1.0), 2.0: report(0.93, 2.0), 3.0: report(0.97, 1.5), 4.0: report(0.99, 1.8)}
    assert recommend_guidance(reports, 0.9)[0] == 3.0   # s = 1 has the lowest FD but misses the target
    scale, rule = recommend_guidance(reports, 0.995)
    assert scale == 4.0 and "no scale reached" in rule


# ---- scripts/eval_images.py ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_emoji_model(tmp_path_factory):
    """A tiny random class-conditional UNet drawing 3 x 32 x 32 images of 8 classes (T = 50)."""
    from tinydiff.models import UNet

    torch.manual_seed(0)
    net = UNet(channels=8, mults=(1, 2), num_classes=8, in_channels=3)
    with torch.no_grad():  # a random, non-zero output layer: samples depend on the label and the scale
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("model") / "emoji_tiny"
    save_checkpoint(path, net, net.config, extra={"schedule": {"name": "cosine", "T": 50},
                                                  "train": {"prediction": "v"}, "data_shape": [3, 32, 32]})
    return path


def test_eval_images_measures_a_sweep_and_stores_it(tiny_emoji_model, emoji_judge_path, tmp_path, load_script):
    from tinydiff.checkpoint import read_config

    sha = read_config(tiny_emoji_model)["sha256"]
    sweep = tmp_path / "sweep.json"
    load_script("eval_images").main(["--checkpoint", str(tiny_emoji_model), "--classifier", str(emoji_judge_path),
                                     "--n", "330", "--sampler", "ddim:2", "--guidance", "1", "2", "--batch-size", "165",
                                     "--cache-dir", str(tmp_path / "cache"), "--sweep-out", str(sweep)])
    extra = read_config(tiny_emoji_model)["extra"]
    assert read_config(tiny_emoji_model)["sha256"] == sha  # the weights are untouched
    assert set(extra["eval"]) == {"ddim-2 s=1", "ddim-2 s=2"} and extra["recommended_guidance"] in (1.0, 2.0)
    result = json.loads(sweep.read_text())
    assert [r["scale"] for r in result["rows"]] == [1.0, 2.0] and result["floor"]["n"] == 323
    assert result["labels"] == "data" and len(list((tmp_path / "cache").rglob("*.safetensors"))) == 4


@pytest.mark.parametrize("argv, message", [
    (["--n", "0"], "--n must be a positive"),
    (["--n", "100"], "at least as many samples as the 323 held-out"),
    (["--guidance", "1", "-2"], "--guidance scales must be finite and >= 0"),
    (["--target", "0"], r"--target must lie in \(0, 1\]"),
    (["--sampler", "euler:5"], "unknown sampler"),
    (["--classifier", "nowhere/judge"], "--classifier nowhere/judge: no checkpoint there"),
])
def test_eval_images_bad_arguments(argv, message, tiny_emoji_model, emoji_judge_path, load_script):
    with pytest.raises(SystemExit, match=message):
        load_script("eval_images").main(["--checkpoint", str(tiny_emoji_model), "--classifier", str(emoji_judge_path),
                                         "--no-write", *argv])


def test_eval_images_refuses_a_judge_of_other_images(tiny_emoji_model, load_script):
    from pathlib import Path

    mnist_judge = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "mnist_classifier"
    with pytest.raises(SystemExit, match="1-channel images but emoji images have 3"):
        load_script("eval_images").main(["--checkpoint", str(tiny_emoji_model), "--classifier", str(mnist_judge),
                                         "--no-write"])


def test_eval_images_takes_device(load_script, monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys, "argv", ["eval_images.py", "--device", "tpu"])
    with pytest.raises(SystemExit) as failed:
        load_script("eval_images").main()
    assert failed.value.code == 2 and "argument --device: 'tpu' is not a device" in capsys.readouterr().err
