"""Bits per dimension of MNIST test digits under the pixel model, from the probability-flow ODE.

Run from the repository root on an otherwise idle machine (notebook 09 reads what it writes):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bits_per_dim.py

For ``--n`` test digits (10 per class, in order) it computes log p(x) in nats with
:func:`tinydiff.likelihood.ode_log_likelihood` (Heun's method over ``--steps`` levels, Hutchinson's
estimator with one Rademacher probe per digit) and converts it with
:func:`tinydiff.likelihood.bits_per_dim`, for the unconditional model (the null label: p(x)) and
for the class-conditional one (the digit's own label: p(x | y)).

What the number means here, stated once:

- **Uniform dequantisation** (Theis et al. 2016): each pixel, an 8-bit level on a grid 2/255 apart
  in [-1, 1], gets uniform noise across its bin, so ``-log p(x + u)`` plus the bin volume is an upper
  bound on the discrete data's negative log-likelihood -- the reported bits/dim are an upper bound.
- **Dimensions:** the model sees 32 x 32 = 1,024 pixels, 240 of them the constant padding around
  the 28 x 28 digit. Bits/dim are reported per modelled pixel (1,024), the honest figure for this
  model; they are not comparable with the literature's MNIST numbers (784 pixels, other models,
  and usually binarised or logit-transformed data).
- The estimator's spread: Hutchinson's probe makes each digit's value noisy (unbiased); the
  script reports the mean and its standard error over the digits.

Writes ``benchmarks/results/bits_per_dim.json`` (command, machine, load averages, SHA-256, numbers).
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import os
import time
from pathlib import Path

import torch

from tinydiff.checkpoint import read_config
from tinydiff.data import load_mnist
from tinydiff.guidance import conditional
from tinydiff.likelihood import bits_per_dim, ode_log_likelihood
from tinydiff.pretrained import load_diffusion_model

BIN = 2 / 255  # 8-bit levels mapped to [-1, 1]


def first_per_class(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the first k digits of each class, ordered 0, 1, ..., 9, 0, 1, ..."""
    return torch.stack([torch.nonzero(labels == d)[:k, 0] for d in range(10)], 1).flatten()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="data/checkpoints/mnist_ddpm")
    p.add_argument("--n", type=int, default=100, help="test digits (a multiple of 10)")
    p.add_argument("--steps", type=int, default=100, help="ODE levels (of T)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/bits_per_dim.json")
    args = cli.parse_args(p, device=None)  # the CPU: the likelihood is computed in float64
    if args.n % 10:
        raise SystemExit("--n must be a multiple of 10 (the same number of digits per class)")

    mnist = load_diffusion_model(args.checkpoint)
    net, schedule = mnist.net.eval(), mnist.schedule
    images, labels = load_mnist("test", pad_to_32=True, dtype=torch.float64)
    idx = first_per_class(labels, args.n // 10)
    x, y = images[idx], labels[idx]
    net = net.double()
    g = torch.Generator().manual_seed(args.seed)
    x_deq = x + BIN * (torch.rand(x.shape, generator=g, dtype=torch.float64) - 0.5)  # uniform across each bin
    dims = x[0].numel()
    loads = [os.getloadavg()[0]]
    results = {}
    for name, labels_used in (("unconditional p(x)", torch.full_like(y, net.null_class)), ("conditional p(x | y)", y)):
        start = time.perf_counter()
        ll = ode_log_likelihood(conditional(net, labels_used), schedule, x_deq, steps=args.steps, prediction=mnist.prediction,
                                generator=torch.Generator().manual_seed(args.seed + 1), progress=True)
        bpd = bits_per_dim(ll, dims, BIN)
        results[name] = {"bits_per_dim_mean": round(float(bpd.mean()), 4),
                         "bits_per_dim_standard_error": round(float(bpd.std() / len(bpd) ** 0.5), 4),
                         "log_likelihood_nats_mean": round(float(ll.mean()), 2),
                         "seconds": round(time.perf_counter() - start, 1)}
        loads.append(os.getloadavg()[0])
        print(f"{name:22s} {results[name]['bits_per_dim_mean']:.3f} +- {results[name]['bits_per_dim_standard_error']:.3f} "
              f"bits/dim ({dims} dims, {args.n} digits, {args.steps} levels, {results[name]['seconds']:.0f} s)", flush=True)
    report = {**cli.provenance(), "load_average_1min": loads,
              "checkpoint": args.checkpoint, "checkpoint_sha256": read_config(args.checkpoint)["sha256"],
              "n": args.n, "steps": args.steps, "dims": dims, "bin_width": BIN, "seed": args.seed,
              "dequantisation": "uniform across each 8-bit bin (Theis et al. 2016): an upper bound on bits/dim",
              "results": results}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
