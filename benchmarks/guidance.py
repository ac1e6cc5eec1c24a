"""Guidance benchmark: the fidelity-diversity trade-off of classifier-free guidance on the shipped MNIST model.

Run from the repository root (notebook 07 reads what it writes):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/guidance.py --n 500

For each guidance scale s (default 1, 1.5, 2, 3, 5, 8; 1 = no guidance) it draws n
digits with DDIM-50 (eta = 0, x0 clipped to [-1, 1]; image i asks for digit i % 10,
the same noise for every s) and reports, with the shipped classifier
(:func:`tinydiff.evaluation.digit_report`):

- requested-class accuracy (fidelity to the label);
- FD against the 1,000 test digits, beside the floor: FD of n real training digits;
- within-class diversity: the mean feature distance between two samples of one digit,
  beside the same number for the n real digits.

It writes ``benchmarks/results/guidance.json`` (command, machine, load, checkpoint
SHA-256, every number) and ``benchmarks/results/guidance.safetensors`` (the first 100
samples of each scale as uint8: ten of each digit).
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from tinydiff.checkpoint import read_config
from tinydiff.data import load_mnist
from tinydiff.evaluation import balanced_labels, sample_digits
from tinydiff.pretrained import load_diffusion_model
from tinydiff.registry import SamplerSpec

ROOT = Path(__file__).resolve().parents[1]
SHOWN = 100


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "data/checkpoints/mnist_ddpm"))
    p.add_argument("--classifier", default=str(ROOT / "data/checkpoints/mnist_classifier"))
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 5.0, 8.0])
    p.add_argument("--sampler", default="ddim:50")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/guidance.json"))
    args = cli.parse_args(p, threads=True)

    model = load_diffusion_model(args.checkpoint, device=args.device)
    model.net = model.net.to(memory_format=torch.channels_last)
    sampler = SamplerSpec.parse(args.sampler, model.schedule.T)
    judge = cli.load_judge(args.classifier, device=args.device)
    x_train, y_train = load_mnist("train", pad_to_32=True)
    real = judge.report(x_train[: args.n], y_train[: args.n])
    print(f"real digits (n = {args.n}): FD {real['fd']:.3g}, accuracy {real['label_accuracy']:.3f}, "
          f"diversity {real['diversity']:.3g}", flush=True)
    labels = balanced_labels(args.n)
    load_before = cli.load_average()
    rows, shown = [], {}
    for scale in args.scales:
        start = time.time()
        x = sample_digits(model, labels, sampler=sampler, guidance=scale, seed=args.seed, batch_size=args.batch_size,
                          progress=False)
        seconds = time.time() - start
        report = judge.report(x, labels)
        rows.append({"scale": scale, **{k: round(v, 4) for k, v in report.items()}, "seconds": round(seconds, 1)})
        shown[f"s={scale:g}"] = ((x[:SHOWN].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        print(f"s = {scale:g}: accuracy {report['label_accuracy']:.3f}, FD {report['fd']:.3g}, "
              f"diversity {report['diversity']:.3g}  ({seconds:.0f} s)", flush=True)

    result = {
        **cli.provenance(load_before),
        "checkpoint": os.path.relpath(args.checkpoint, ROOT),
        "checkpoint_sha256": read_config(args.checkpoint)["sha256"],
        "sampler": sampler.name,
        "n": args.n,
        "seed": args.seed,
        "real": {k: round(v, 4) for k, v in real.items()},
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in shown.items()}, str(out.with_suffix(".safetensors")))
    print(f"wrote {out} and {out.with_suffix('.safetensors')}")


if __name__ == "__main__":
    main()
