"""Train the tiny CLIP of notebook 13 on digits with true captions, and ship it.

    OMP_WAIT_POLICY=PASSIVE python scripts/train_clip.py

Data: :func:`tinydiff.data.captions.captioned_digits` -- every shipped training digit in ``--copies`` styled
variants, one true caption each, bold sevens held out. Model: :class:`tinydiff.models.TinyCLIP`, trained by
:func:`tinydiff.train.train_clip` with every true caption in the batch counted as a positive. Measured on the
test digits (styled the same way, bold sevens included): zero-shot digit accuracy from "a photo of the digit k",
thickness accuracy (thin vs bold) and slant accuracy (left / upright / right), and those on the held-out bold
sevens. Writes ``data/checkpoints/mnist_clip.safetensors`` + ``.json`` (the numbers and the vocabulary in ``extra``).
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import time

import torch

from tinydiff.checkpoint import save_checkpoint
from tinydiff.data import captions as C
from tinydiff.evaluation import machine
from tinydiff.models import TinyCLIP
from tinydiff.text_to_image import zero_shot_attribute, zero_shot_digits
from tinydiff.train import train_clip


@torch.no_grad()
def measure(clip: TinyCLIP, tokenizer, data: C.CaptionedDigits) -> dict[str, float]:
    """Zero-shot digit, thickness and slant accuracy on a captioned set, overall and on the held-out combination."""
    x, a = data.images, data.attributes
    digit = zero_shot_digits(clip, tokenizer, x)
    thick = zero_shot_attribute(clip, tokenizer, x, a[:, 0], "thickness").cpu()
    lean = zero_shot_attribute(clip, tokenizer, x, a[:, 0], "slant").cpu()
    marked = a[:, 1] != 1  # thin or bold: the images a thickness word is true of
    held = (a[:, 0] == C.HELD_OUT[0]) & (a[:, 1] == C.HELD_OUT[1])
    return {
        "zero_shot_digit_accuracy": round(float((digit == a[:, 0]).float().mean()), 4),
        "thickness_accuracy_thin_vs_bold": round(float((thick[marked] == a[marked, 1]).float().mean()), 4),
        "slant_accuracy": round(float((lean == a[:, 2]).float().mean()), 4),
        "held_out_n": int(held.sum()),
        "held_out_digit_accuracy": round(float((digit[held] == a[held, 0]).float().mean()), 4),
        "held_out_bold_accuracy": round(float((thick[held] == a[held, 1]).float().mean()), 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--copies", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="data/checkpoints/mnist_clip")
    args = cli.parse_args(p)

    generator = cli.seeded(args.seed)
    tokenizer = C.tokenizer()
    train_set = C.captioned_digits("train", copies=args.copies, seed=args.seed)
    test_set = C.captioned_digits("test", copies=1, seed=args.seed + 1, hold_out=False)
    ids = tokenizer.encode(train_set.captions)
    clip = TinyCLIP(vocab_size=len(tokenizer), max_length=tokenizer.max_length).to(args.device)
    print(f"{sum(p.numel() for p in clip.parameters()):,} parameters; {len(ids):,} captioned training digits; "
          f"{machine()}", flush=True)
    start = time.time()
    curve = []
    for state in train_clip(clip, train_set.images, ids, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            truth=(train_set.attributes, train_set.stated),
                            generator=generator, progress=False):
        if state.step % 250 == 0 or state.step == args.steps:
            curve.append([state.step, round(state.loss, 4), round(state.accuracy, 4), round(time.time() - start, 1)])
            print(f"step {state.step:5d}  loss {state.loss:.4f}  in-batch accuracy {state.accuracy:.3f}  "
                  f"scale {state.logit_scale:.1f}  {time.time() - start:.0f} s", flush=True)
    wall = time.time() - start
    clip.eval()
    metrics = measure(clip, tokenizer, test_set)
    print(metrics, flush=True)
    extra = {
        **cli.provenance(), "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size,
        "lr": args.lr, "copies": args.copies, "wall_time_s": round(wall, 1),
        "steps_per_s": round(args.steps / wall, 2),
        "parameters": sum(p.numel() for p in clip.parameters()),
        "parameters_text_encoder": sum(p.numel() for p in clip.text.parameters()),
        "training_pairs": len(ids), "held_out": "bold sevens (no training image)",
        "tokenizer": tokenizer.config, "test": metrics, "curve": curve,
        "data": "data/mnist.npz: 4,000 train / 1,000 test digits, styled and captioned by tinydiff.data.captions",
    }
    path = save_checkpoint(args.output, clip, extra=extra)
    print(f"saved {path} ({wall:.0f} s)")


if __name__ == "__main__":
    main()
