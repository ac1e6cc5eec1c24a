"""Train the digit classifier behind tinydiff's image metrics (FD and label accuracy).

    OMP_WAIT_POLICY=PASSIVE python scripts/train_classifier.py

Trains :class:`tinydiff.models.Classifier` on the 4,000 shipped training digits
(32 x 32, light augmentation: random rotation +-10 degrees, scale 0.9-1.1 and shift
+-2 pixels), reports its accuracy on the 1,000 test digits and the real-vs-real FD
floor (1,000 training vs 1,000 test digits), and writes
``data/checkpoints/mnist_classifier.safetensors`` + ``.json`` (the numbers go in ``extra``).

    OMP_WAIT_POLICY=PASSIVE python scripts/train_classifier.py --styled --output data/checkpoints/mnist_classifier_styled

trains the same network on the digits *and* two styled variants of each (:func:`tinydiff.data.captions.styled_digits`:
thin / bold strokes, leaning left / right; bold sevens included): the judge of notebook 13, which must recognise
styled digits. Its accuracy is reported on the styled test digits as well.

    OMP_WAIT_POLICY=PASSIVE python scripts/train_classifier.py --hollow --epochs 8 --output data/checkpoints/mnist_classifier_hollow

trains the judge of notebook 16: 20 classes, digit k plain (k) or hollow (10 + k, :func:`tinydiff.data.styles.hollow`),
on the training digits and one styled variant of each, every one both plain and hollow. It reads a generated image's
digit and whether it is in the new concept (:func:`tinydiff.personalise.judge`).

    OMP_WAIT_POLICY=PASSIVE python scripts/train_classifier.py --data emoji

trains the judge of the colour emoji (notebook 14, ``scripts/eval_images.py``): ``Classifier(in_channels=3,
num_classes=8, width=32)`` on the 1,289 training emoji (:func:`tinydiff.data.load_emoji`), augmented with random
horizontal flips, rotation +-10 degrees, scale 0.9-1.1 and shift +-2 pixels, padded with the *white* background
(+1), and label smoothing 0.1; it reports the accuracy on the 323 held-out emoji and the FD floor (323 held-out vs
the 1,289 training emoji) and writes ``data/checkpoints/emoji_classifier.safetensors`` + ``.json``.

    OMP_WAIT_POLICY=PASSIVE python scripts/train_classifier.py --data spoken_digits
    OMP_WAIT_POLICY=PASSIVE python scripts/train_classifier.py --data moving_frames

train the two judges of notebook 17, the same network on other pictures. ``spoken_digits``: the 2,000 training clips
of ``data/spoken_digits.npz`` as spectrogram images [1, 64, 96] (:func:`tinydiff.data.audio.spectrogram_images`),
each shifted in time by up to +-6 frames (24 ms; silence fills in), tested on the 500 held-out clips.
``moving_frames``: 20,000 single frames of moving digits (:func:`tinydiff.data.moving.clip_stream`, seeded) from the
training digits under a faint random haze (:func:`haze`), tested on 2,000 frames from the test digits: it reads the
digit in every frame of a generated clip.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import math
import time

import torch
import torch.nn.functional as F

from tinydiff.checkpoint import save_checkpoint
from tinydiff.data import load_emoji, load_mnist
from tinydiff.data.audio import load_spoken_digits, spectrogram_images
from tinydiff.data.moving import clip_stream
from tinydiff.metrics import classifier_features, frechet_distance, label_accuracy
from tinydiff.models import Classifier


def augment(x: torch.Tensor, generator: torch.Generator, *, background: float = -1.0,
            flip: bool = False) -> torch.Tensor:
    """Random rotation (+-10 deg), scale (0.9-1.1) and shift (+-2 px) of images [B, C, H, W] in [-1, 1], and with
    ``flip`` a horizontal flip of half of them (at random); what moves in from outside the picture is
    ``background`` (-1: MNIST's black, +1: the emoji's white)."""
    B, W = x.shape[0], x.shape[-1]
    angle = (torch.rand(B, generator=generator) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(B, generator=generator)
    shift = (torch.rand(B, 2, generator=generator) * 2 - 1) * (4 / W)  # 2 px in the [-1, 1] coordinates of W px
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    if flip:  # x' = -x: mirror the sampling grid of the chosen images
        theta[:, :, 0] *= torch.where(torch.rand(B, generator=generator) < 0.5, -1.0, 1.0)[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Sample x - background (background 0) so that the zero padding of grid_sample is background.
    return F.grid_sample(x - background, grid, align_corners=False) + background


# What differs between the two judges; each entry is the default of its option (--epochs etc.).
RECIPES = {
    "mnist": dict(epochs=15, batch_size=128, lr=2e-3, width=16, weight_decay=1e-4, label_smoothing=0.0,
                  output="data/checkpoints/mnist_classifier"),
    "emoji": dict(epochs=60, batch_size=64, lr=2e-3, width=32, weight_decay=5e-4, label_smoothing=0.1,
                  output="data/checkpoints/emoji_classifier"),
    "spoken_digits": dict(epochs=15, batch_size=64, lr=2e-3, width=16, weight_decay=1e-4, label_smoothing=0.0,
                          output="data/checkpoints/spoken_digits_classifier"),
    "moving_frames": dict(epochs=6, batch_size=128, lr=2e-3, width=16, weight_decay=1e-4, label_smoothing=0.0,
                          output="data/checkpoints/moving_frames_classifier"),
}


def haze(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images [B, C, H, W] in [-1, 1] under a faint, uneven haze: + b + s * N(0, 1) per pixel, b ~ U(0, 0.06) and
    s ~ U(0, 0.08) per image, clamped to [-1, 1]. A generated frame's background is rarely exactly -1; a judge
    that has only seen exact -1 reads the haze as strokes (measured: sevens called fours)."""
    B = len(x)
    b = 0.06 * torch.rand(B, 1, 1, 1, generator=generator)
    s = 0.08 * torch.rand(B, 1, 1, 1, generator=generator)
    return (x + b + s * torch.randn(x.shape, generator=generator)).clamp(-1, 1)


def time_shift(x: torch.Tensor, generator: torch.Generator, most: int = 6) -> torch.Tensor:
    """Spectrogram images [B, 1, F, M] each shifted along time (the last axis) by a whole number of frames in
    [-most, most], silence (-1) moving in: the same word said a little earlier or later."""
    shifts = torch.randint(-most, most + 1, (len(x),), generator=generator).tolist()
    out = torch.full_like(x, -1.0)
    for i, k in enumerate(shifts):
        if k >= 0:
            out[i, ..., k:] = x[i, ..., :x.shape[-1] - k]
        else:
            out[i, ..., :k] = x[i, ..., -k:]
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, default sys.argv), the options left out filled from ``RECIPES[--data]``; bad
    values exit, saying which."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=sorted(RECIPES), default="mnist", help="the images to classify (default: mnist)")
    p.add_argument("--epochs", type=int, help="mnist 15, emoji 60")
    p.add_argument("--batch-size", type=int, help="mnist 128, emoji 64")
    p.add_argument("--lr", type=float, help="peak of the one-cycle schedule (default 2e-3)")
    p.add_argument("--width", type=int, help="the Classifier's width: features are 4 x width (mnist 16, emoji 32)")
    p.add_argument("--weight-decay", type=float, help="AdamW's (mnist 1e-4, emoji 5e-4)")
    p.add_argument("--label-smoothing", type=float, help="of the cross-entropy (mnist 0, emoji 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="checkpoint path without suffix (default data/checkpoints/<data>_classifier)")
    p.add_argument("--styled", action="store_true", help="add two styled variants of every training digit (mnist)")
    p.add_argument("--hollow", action="store_true",
                   help="20 classes: every digit plain (0-9) and hollow (10-19), styled variants included (mnist)")
    args = cli.parse_args(p, argv)
    if (args.styled or args.hollow) and args.data != "mnist":
        raise SystemExit("--styled and --hollow change the digits: they go with --data mnist only")
    if args.styled and args.hollow:
        raise SystemExit("choose --styled or --hollow (--hollow already includes styled variants)")
    for key, value in RECIPES[args.data].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("epochs", "batch_size", "width"):
        if getattr(args, key) < 1:
            raise SystemExit(f"--{key.replace('_', '-')} must be a positive integer, got {getattr(args, key)}")
    if not 0 <= args.label_smoothing < 1:
        raise SystemExit(f"--label-smoothing must lie in [0, 1), got {args.label_smoothing}")
    return args


def training_data(args: argparse.Namespace):
    """(x_train, y_train, x_test, y_test, styled test set or None) of ``args.data``."""
    if args.data == "spoken_digits":
        (w_train, y_train), (w_test, y_test) = load_spoken_digits("train"), load_spoken_digits("test")
        return spectrogram_images(w_train), y_train, spectrogram_images(w_test), y_test, None
    if args.data == "moving_frames":
        train_frames = clip_stream(*load_mnist("train"), frames=None)(20_000, generator=torch.Generator().manual_seed(1))
        test_frames = clip_stream(*load_mnist("test"), frames=None)(2_000, generator=torch.Generator().manual_seed(2))
        return *train_frames, *test_frames, None
    if args.data == "emoji":
        x_train, y_train, _, _ = load_emoji("train")
        x_test, y_test, _, _ = load_emoji("test")
        return x_train, y_train, x_test, y_test, None
    x_train, y_train = load_mnist("train", pad_to_32=True)
    x_test, y_test = load_mnist("test", pad_to_32=True)
    styled_test = None
    if args.hollow:
        from tinydiff.data import captions as C
        from tinydiff.data.styles import hollow

        def both(images, labels):
            return torch.cat([images, hollow(images)]), torch.cat([labels, labels + 10])

        train_set = C.captioned_digits("train", copies=1, seed=args.seed + 10, hold_out=False)
        x_train, y_train = both(torch.cat([x_train, train_set.images]), torch.cat([y_train, train_set.attributes[:, 0]]))
        x_test, y_test = both(x_test, y_test)
        return x_train, y_train, x_test, y_test, None
    if args.styled:
        from tinydiff.data import captions as C

        train_set = C.captioned_digits("train", copies=2, seed=args.seed + 10, hold_out=False)
        x_train, y_train = torch.cat([x_train, train_set.images]), torch.cat([y_train, train_set.attributes[:, 0]])
        styled_test = C.captioned_digits("test", copies=1, seed=1, hold_out=False)
    return x_train, y_train, x_test, y_test, styled_test


def main() -> None:
    args = parse()
    emoji = args.data == "emoji"

    g = cli.seeded(args.seed)
    x_train, y_train, x_test, y_test, styled_test = training_data(args)
    model = (Classifier(in_channels=3, num_classes=8, width=args.width) if emoji else
             Classifier(num_classes=20 if args.hollow else 10, width=args.width)).to(args.device)
    steps = args.epochs * math.ceil(len(x_train) / args.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=g)
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            # augmented on the CPU by the CPU generator: the same images on every device
            if emoji:
                x = augment(x_train[idx], g, background=1.0, flip=True)
            elif args.data == "spoken_digits":
                x = time_shift(x_train[idx], g)
            elif args.data == "moving_frames":  # moving digits already sit anywhere in the frame
                x = haze(x_train[idx], g)
            else:
                x = augment(x_train[idx], g)
            loss = F.cross_entropy(model(x.to(args.device)), y_train[idx].to(args.device),
                                   label_smoothing=args.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = label_accuracy(model, x_test, y_test)
        print(f"epoch {epoch + 1:2d}  loss {total / len(x_train):.4f}  test accuracy {acc:.4f}  "
              f"{time.time() - start:.0f} s", flush=True)
    wall = time.time() - start

    model.eval()
    test_acc = label_accuracy(model, x_test, y_test)
    train_acc = label_accuracy(model, x_train, y_train)
    if emoji:
        floor = frechet_distance(classifier_features(model, x_test), classifier_features(model, x_train))
        floor_key, floor_text = "fd_floor_test323_vs_train1289", "323 held-out vs 1289 train"
    else:
        n = min(1000, len(x_test))
        floor = frechet_distance(classifier_features(model, x_train[:n]), classifier_features(model, x_test[:n]))
        floor_key, floor_text = f"fd_floor_train{n}_vs_test{n}", f"{n} train vs {n} test"
    extra = {
        **cli.provenance(),
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "wall_time_s": round(wall, 1),
        "test_accuracy": round(test_acc, 4),
        "train_accuracy": round(train_acc, 4),
        floor_key: round(floor, 4),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": "data/mnist.npz: 4,000 train / 1,000 test digits, padded to 32 x 32"
        + (" + 2 styled variants of each training digit (tinydiff.data.captions.styled_digits)" if args.styled else "")
        + (" + 1 styled variant of each, every image also hollow (tinydiff.data.styles.hollow): 20 classes, "
           "hollow k = 10 + k" if args.hollow else ""),
    }
    if emoji:
        extra["data"] = "data/emoji.npz: 1,289 train / 323 test emoji (32 x 32, 8 classes), white background"
        extra["recipe"] = {"lr": args.lr, "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing,
                           "augment": "hflip, rotation +-10 deg, scale 0.9-1.1, shift +-2 px, white padding",
                           "schedule": "one-cycle AdamW"}
    if args.data == "spoken_digits":
        extra["data"] = ("data/spoken_digits.npz: 2,000 train / 500 test clips as spectrogram images [1, 64, 96] "
                         "(tinydiff.data.audio.spectrogram_images), time-shifted by up to +-6 frames")
    if args.data == "moving_frames":
        extra["data"] = ("20,000 frames of one moving digit (tinydiff.data.moving.clip_stream, seed 1) from the 4,000 "
                         "training digits, hazed (b ~ U(0, 0.06), s ~ U(0, 0.08)); test: 2,000 frames (seed 2) from the 1,000 test "
                         "digits")
    if styled_test is not None:
        extra["styled_test_accuracy"] = round(label_accuracy(model, styled_test.images, styled_test.attributes[:, 0]), 4)
        print(f"accuracy on the styled test digits: {extra['styled_test_accuracy']:.4f}")
    path = save_checkpoint(args.output, model, extra=extra)
    print(f"saved {path}: test accuracy {test_acc:.4f}, "
          + (f"train accuracy {train_acc:.4f}, " if emoji else "")
          + f"FD floor ({floor_text}) {floor:.3f}, {wall:.0f} s")


if __name__ == "__main__":
    main()
