"""Sampling benchmark: speed and quality of DDIM against DDPM-1000 on the shipped MNIST model.

Run from the repository root (this is the command the README and notebook 06 refer to):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/sampling.py --n 128

It prints one table row per sampler and writes everything to
``benchmarks/results/sampling.json`` (notebook 06 loads that file). Samplers are
written ``ddim:<steps>[:<spacing>[:<eta>]]`` or ``ddpm:1000``; all of them ask the
class-conditional model for balanced labels (image i is digit i % 10) and clamp the
predicted x0 to [-1, 1] at every step (Ho et al.'s setting), unless told otherwise.
Per sampler it reports:

- wall time per image, and the sampler's *overhead*: total time minus the time
  spent inside the network, as a share of the total (measured at ``--batch``);
- FD: the Fréchet distance between classifier features (``tinydiff.metrics``) of the
  N generated digits and the 1,000 real test digits, beside its floor: the same FD for
  N *real* training digits, over disjoint subsets (mean, min, max). FD is biased upwards
  and noisy at small N: compare samplers at equal N, never with FDs from another N;
- the energy distance of the same sampler run with the exact (oracle) epsilon of a
  2-D Gaussian mixture under the model's noise schedule, beside its noise floor.

Every sampler starts batch b from the same x_T (seed ``--seed + b``), so rows differ
only by the sampler. Timings are wall-clock on whatever else the machine is doing:
the JSON records the load average before and after.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from tinydiff import metrics, schedules
from tinydiff.checkpoint import load_checkpoint, sha256
from tinydiff.data import anisotropic_mixture, load_mnist
from tinydiff.evaluation import machine
from tinydiff.oracle import MixtureEpsilon
from tinydiff.pretrained import load_diffusion_model
from tinydiff.registry import SamplerSpec

ROOT = Path(__file__).resolve().parents[1]
SHOWN = 10  # samples per sampler kept for the notebook's picture
DEFAULT_SAMPLERS = ["ddim:10", "ddim:20", "ddim:50", "ddim:100", "ddim:250", "ddpm:1000"]


class TimedModel:
    """Wraps ``net(x_t, t, y)`` as ``model(x_t, t)`` for labels ``self.y``, and adds up the wall time spent inside it."""

    def __init__(self, net) -> None:
        self.net = net
        self.y: Tensor | None = None  # None: the null class (unconditional)
        self.seconds = 0.0
        self.calls = 0

    def _sync(self, x: Tensor) -> None:
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        self._sync(x_t)
        start = time.perf_counter()
        out = self.net(x_t, t, self.y)
        self._sync(out)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def oracle_energy(spec: SamplerSpec, schedule: schedules.Schedule, n: int, seed: int) -> dict:
    """Energy distance of ``spec`` run with the exact epsilon of a 2-D mixture (mean over 3 references of n points)
    and its noise floor at n (``metrics.energy_distance_floor``)."""
    mixture = anisotropic_mixture()
    oracle = MixtureEpsilon(mixture, schedule)
    g = torch.Generator().manual_seed(seed)
    references = [mixture.sample(n, generator=g) for _ in range(3)]
    floor = metrics.energy_distance_floor(mixture.sample, n, generator=g)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed + 1))
    # 2-D points are not images: never clamp them to [-1, 1]
    x = spec(oracle, schedule, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(seed + 2), progress=False)
    ed = sum(metrics.energy_distance(x, r) for r in references) / 3
    return {"energy_distance_2d": ed, "energy_floor_2d": floor}


def fd_floor(classifier, real_train: Tensor, test_feats: Tensor, n: int, max_subsets: int = 8) -> dict:
    """FD of n real training digits against the test digits, over disjoint subsets: what a perfect sampler scores."""
    values = [metrics.frechet_distance(metrics.classifier_features(classifier, real_train[i : i + n]), test_feats)
              for i in range(0, min(len(real_train) - n + 1, max_subsets * n), n)]
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "subsets": len(values), "values": values}


def generate(spec: SamplerSpec, net, schedule, n: int, batch: int, seed: int, device: torch.device,
             conditional: bool = True, prediction: str = "epsilon", clip_x0: float | None = 1.0) -> tuple[Tensor, dict]:
    """``n`` samples in batches of ``batch`` (batch b starts from x_T of seed ``seed + b``), with timings.

    Conditional: image i asks for digit i % 10 (balanced, like the test set); else the null class.
    """
    timed = TimedModel(net)
    images, total = [], 0.0
    for b, start in enumerate(range(0, n, batch)):
        size = min(batch, n - start)
        timed.y = torch.arange(start, start + size, device=device) % 10 if conditional else None
        x_T = torch.randn(size, 1, 32, 32, generator=torch.Generator().manual_seed(seed + b)).to(device)
        noise = torch.Generator().manual_seed(10_000 + seed + b)
        tic = time.perf_counter()
        images.append(spec(timed, schedule, x_T.shape, x_T=x_T, generator=noise, prediction=prediction,
                           clip_x0=clip_x0, progress=False).cpu())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        total += time.perf_counter() - tic
        print(f"  {spec.name}: {start + size}/{n} images, {total:.0f} s", file=sys.stderr, flush=True)
    timing = {
        "seconds_total": total,
        "seconds_in_model": timed.seconds,
        "model_calls": timed.calls,
        "seconds_per_image": total / n,
        "overhead_share": (total - timed.seconds) / total,
    }
    return torch.cat(images), timing


def print_table(rows: list[dict], n: int, fd_floor: dict) -> None:
    ddpm = next((r for r in rows if r["sampler"].startswith("DDPM")), None)
    print(f"\nN = {n} samples per sampler; FD floor (N real digits vs the test set): {fd_floor['mean']:.3g} "
          f"(min {fd_floor['min']:.3g}, max {fd_floor['max']:.3g} over {fd_floor['subsets']} disjoint subsets)\n")
    print("| sampler | steps | s / image | speed-up vs DDPM | ms / network call | sampler overhead | FD | FD / DDPM FD "
          "| 2-D ED / floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        speedup = f"{ddpm['seconds_per_image'] / r['seconds_per_image']:.3g}x" if ddpm else "-"
        fd_ratio = f"{r['fd'] / ddpm['fd']:.3g}" if ddpm else "-"
        print(f"| {r['sampler']} | {r['steps']} | {r['seconds_per_image']:.3g} | {speedup} | "
              f"{1000 * r['seconds_in_model'] / r['model_calls']:.0f} | {r['overhead_share']:.2%} | {r['fd']:.3g} | "
              f"{fd_ratio} | {r['energy_distance_2d'] / r['energy_floor_2d']:.3g} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="data/checkpoints/mnist_ddpm", help="path without suffix")
    p.add_argument("--classifier", default="data/checkpoints/mnist_classifier", help="path without suffix")
    p.add_argument("--n", type=int, default=128, help="samples per sampler for FD (size it to your budget)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--samplers", nargs="+", default=DEFAULT_SAMPLERS, help="ddim:<steps>[:<spacing>[:<eta>]] or ddpm:1000")
    p.add_argument("--clip-x0", type=float, default=1.0,
                   help="clamp the predicted x0 to [-c, c] at every step, for every sampler (Ho et al.'s setting); 0: off")
    p.add_argument("--unconditional", action="store_true", help="sample with the null class instead of balanced labels")
    p.add_argument("--n-2d", type=int, default=2000, help="points for the 2-D oracle energy distance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/sampling.json")
    p.add_argument("--show", metavar="JSON", help="only print the table of a results file written earlier")
    args = cli.parse_args(p, threads=True)
    if args.show:
        result = json.loads(Path(args.show).read_text())
        print(f"{result['command']}\n{result['machine']}; load average {result['load_average_before']} -> "
              f"{result['load_average_after']}")
        print_table(result["rows"], result["n"], result["fd_floor"])
        return
    device = torch.device(args.device)
    checkpoint = ROOT / args.checkpoint
    diffusion_model = load_diffusion_model(checkpoint, device=device)
    model, schedule = diffusion_model.net, diffusion_model.schedule
    specs = [SamplerSpec.parse(s, schedule.T) for s in args.samplers]
    load_before = cli.load_average()
    print(f"{machine()}; load average {load_before}", file=sys.stderr)

    classifier = load_checkpoint(ROOT / args.classifier)
    test_feats = metrics.classifier_features(classifier, load_mnist("test", pad_to_32=True)[0])
    floor = fd_floor(classifier, load_mnist("train", pad_to_32=True)[0], test_feats, args.n)
    rows, shown = [], {}
    for spec in specs:
        images, timing = generate(spec, model, schedule, args.n, args.batch, args.seed, device, not args.unconditional,
                                  diffusion_model.prediction, args.clip_x0 or None)
        # Samples are images: clamp to the pixel range [-1, 1] before measuring, as saving them would.
        fd = metrics.frechet_distance(metrics.classifier_features(classifier, images.clamp(-1, 1)), test_feats)
        row = {"sampler": spec.name, **asdict(spec), "clip_x0": args.clip_x0 or None, **timing, "fd": fd}
        shown[spec.name] = ((images[:SHOWN].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        row.update(oracle_energy(spec, schedule, args.n_2d, args.seed))
        rows.append(row)
        print(f"  {spec.name}: FD {row['fd']:.3g}, {timing['seconds_per_image']:.3g} s/image, "
              f"overhead {timing['overhead_share']:.2%}", file=sys.stderr, flush=True)

    print_table(rows, args.n, floor)
    result = {
        **cli.provenance(load_before),
        "checkpoint": str(args.checkpoint),
        "checkpoint_sha256": sha256(checkpoint.with_name(checkpoint.name + ".safetensors")),
        "schedule": {"name": schedule.name, "T": schedule.T},
        "prediction": diffusion_model.prediction,
        "n": args.n,
        "conditional": not args.unconditional,
        "clip_x0": args.clip_x0 or None,
        "batch": args.batch,
        "n_2d": args.n_2d,
        "seed": args.seed,
        "classifier": str(args.classifier),
        "fd_floor": floor,
        "rows": rows,
    }
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    # The first images of every sampler (same x_T, same labels), as uint8 pixels, for notebook 06's picture.
    save_file({name: x.contiguous() for name, x in shown.items()}, out.with_suffix(".safetensors"),
              metadata={"about": f"first {SHOWN} samples of each sampler, uint8 = (x + 1) * 127.5, [B, 1, 32, 32]"})
    print(f"\nwrote {args.out} and {out.with_suffix('.safetensors').name}", file=sys.stderr)


if __name__ == "__main__":
    main()
