"""Speed against quality for the fast solvers on the shipped MNIST model: FD and accuracy against network calls.

Run from the repository root on an otherwise idle machine (notebook 09 reads what it writes):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/solvers.py --n 1000

For each sampler (``--samplers``, names as ``scripts/eval_mnist.py`` takes them: ``ddim:20:trailing``,
``dpm:10``, ``heun:10``, ``plms:20``, ``sde:100``...) it draws ``--n`` class-balanced digits with
:func:`tinydiff.evaluation.sample_digits` -- the same labels and per-batch seeds as every other
measurement of the course, batches cached in ``runs/eval_<sha>/`` -- and scores them with
:func:`tinydiff.evaluation.digit_report` (FD against the 1,000 test digits, requested-class accuracy,
within-class diversity). Network calls are counted by :attr:`tinydiff.registry.SamplerSpec.network_calls`
(a guided sampler makes each call on a doubled batch). DDPM-1000 is not rerun (38 minutes): its FD is
read from the checkpoint's ``extra.eval`` when ``scripts/eval_mnist.py --sampler ddpm`` stored it.

Writes ``benchmarks/results/solvers.json``: the command, machine, load averages, checkpoint SHA-256,
the FD floor, and one row per sampler.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import time
from pathlib import Path

import torch

from tinydiff.checkpoint import read_config
from tinydiff.data import load_mnist
from tinydiff.evaluation import balanced_labels, sample_digits
from tinydiff.pretrained import load_diffusion_model
from tinydiff.registry import SamplerSpec

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLERS = ["ddim:10:trailing", "ddim:20:trailing", "ddim:50:trailing", "dpm:5", "dpm:10", "dpm:15", "dpm:20",
                    "heun:5", "heun:10", "heun:25", "plms:10", "plms:20", "plms:49", "sde:100", "sde:200"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "data/checkpoints/mnist_ddpm"))
    p.add_argument("--classifier", default=str(ROOT / "data/checkpoints/mnist_classifier"))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--samplers", nargs="+", default=DEFAULT_SAMPLERS)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/solvers.json"))
    args = cli.parse_args(p)

    model = load_diffusion_model(args.checkpoint, device=args.device)
    model.net = model.net.to(memory_format=torch.channels_last)  # the same numbers, faster convolutions on a CPU
    specs = [SamplerSpec.parse(name, model.schedule.T) for name in args.samplers]  # fail on a bad name before any work
    header = read_config(args.checkpoint)
    sha = header["sha256"]
    labels = balanced_labels(args.n)
    judge = cli.load_judge(args.classifier, device=args.device)
    x_train, y_train = load_mnist("train", pad_to_32=True)
    floor = judge.report(x_train[: args.n], y_train[: args.n])
    load_before = cli.load_average()

    rows = []
    print(f"{'sampler':28s} {'calls':>5s} {'FD':>7s} {'accuracy':>8s} {'diversity':>9s} {'seconds':>8s}", flush=True)
    for spec in specs:
        start = time.time()
        samples = sample_digits(model, labels, sampler=spec, guidance=args.guidance, batch_size=args.batch_size,
                                cache_dir=ROOT / "runs" / f"eval_{sha[:12]}", progress=False)
        seconds = time.time() - start
        report = judge.report(samples, labels)
        row = {"sampler": spec.name, "spec": f"{spec.kind}:{spec.steps}:{spec.spacing}", "calls": spec.network_calls,
               "fd": round(report["fd"], 4), "label_accuracy": round(report["label_accuracy"], 4),
               "diversity": round(report["diversity"], 4), "sampling_s": round(seconds, 1)}
        rows.append(row)
        print(f"{row['sampler']:28s} {row['calls']:5d} {row['fd']:7.3f} {row['label_accuracy']:8.3f} "
              f"{row['diversity']:9.3f} {row['sampling_s']:8.1f}", flush=True)

    ddpm = header.get("extra", {}).get("eval", {}).get(f"ddpm-1000 s={args.guidance:g}")
    result = {
        **cli.provenance(load_before), "checkpoint": str(Path(args.checkpoint).relative_to(ROOT))
        if Path(args.checkpoint).resolve().is_relative_to(ROOT) else args.checkpoint,
        "checkpoint_sha256": sha, "n": args.n, "guidance": args.guidance,
        "fd_floor_train": round(floor["fd"], 4), "diversity_train": round(floor["diversity"], 4),
        "ddpm_1000": ({"calls": 1000, "fd": ddpm["fd"], "label_accuracy": ddpm["label_accuracy"]}
                      if ddpm and ddpm.get("n_samples") == args.n else None),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"FD floor (n real training digits): {floor['fd']:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
