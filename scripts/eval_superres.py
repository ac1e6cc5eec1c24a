"""Measure super-resolution and cascades on digits (notebook 15's tables): bicubic vs regression vs SR3 on held-out
digits, and the cascade (8 x 8 base + SR3) with and without noise-conditioning augmentation vs the single 32 x 32 model.

    OMP_WAIT_POLICY=PASSIVE python scripts/eval_superres.py > data/checkpoints/logs/eval_superres.log

**Upscaling** (``upscaling`` in the results): the 1,000 test digits are shrunk to 8 x 8
(:func:`tinydiff.superres.downsample`) and brought back to 32 x 32 by each method. Per method: PSNR and SSIM against
the original (distortion: higher is closer), FD of the classifier features against the 4,000 *training* digits
(perception: the originals themselves score the floor, as no method sees a training digit), the fraction whose
classifier label is the original's label, and the consistency error, RMS of downsample(output) - input.

**Cascades** (``generation``): 1,000 digits, 100 per class, from the single 32 x 32 model and from the cascades, every
stage DDIM-50 (eta = 0, ``trailing``, x0 clipped), FD against the same training features and the accuracy of the
requested class. The augmented cascade is run at several augmentation levels s.

The results go to ``benchmarks/results/superres.json`` (``--output``) with the machine, the load and the times.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import time
from pathlib import Path

import torch

from tinydiff import superres
from tinydiff.checkpoint import load_checkpoint
from tinydiff.evaluation import balanced_labels, command_line, machine, sample_digits
from tinydiff.metrics import classifier_features, classify, frechet_distance, psnr, ssim
from tinydiff.pretrained import load_diffusion_model
from tinydiff.registry import SamplerSpec

FACTOR = 4
CHECKPOINTS = "data/checkpoints"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="test digits to upscale and digits to generate (default 1000)")
    p.add_argument("--levels", type=int, nargs="+", default=[0, 100, 200, 300],
                   help="augmentation levels s of the augmented cascade (default 0 100 200 300)")
    p.add_argument("--batch-size", type=int, default=250, help="images per sampling batch")
    p.add_argument("--output", default="benchmarks/results/superres.json")
    p.add_argument("--skip-single", action="store_true", help="do not sample the single 32 x 32 model")
    return cli.parse_args(p, argv)


def batched(fn, low: torch.Tensor, batch_size: int) -> torch.Tensor:
    """fn over slices of ``low``, concatenated (bounded memory)."""
    return torch.cat([fn(low[i : i + batch_size], i) for i in range(0, len(low), batch_size)])


def upscaling_row(name: str, out: torch.Tensor, originals: torch.Tensor, labels: torch.Tensor, low: torch.Tensor,
                  judge, seconds: float) -> dict:
    out = out.clamp(-1, 1)
    feats = classifier_features(judge.classifier, out)
    row = {
        "psnr": round(float(psnr(out, originals).mean()), 2),
        "ssim": round(float(ssim(out, originals).mean()), 4),
        "fd": round(frechet_distance(feats, judge.reference_features), 4),
        "label_agreement": round(float((classify(judge.classifier, out) == labels).float().mean()), 4),
        "consistency_rms": round(float(superres.consistency_error(out, low, FACTOR).mean()), 5),
        "seconds": round(seconds, 1),
    }
    print(f"{name:<34} PSNR {row['psnr']:6.2f} dB  SSIM {row['ssim']:.4f}  FD {row['fd']:.4f}  "
          f"labels {row['label_agreement']:.3f}  consistency {row['consistency_rms']:.5f}  ({seconds:.0f} s)", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_before = cli.load_average()
    start = time.time()
    judge = cli.load_judge(device=args.device, data="mnist", reference="train")
    originals, labels = cli.load_images("mnist", "test")
    originals, labels = originals[: args.n], labels[: args.n]
    low = superres.downsample(originals, FACTOR)
    sr = load_diffusion_model(f"{CHECKPOINTS}/mnist_sr", device=args.device)
    sr_noaug = load_diffusion_model(f"{CHECKPOINTS}/mnist_sr_noaug", device=args.device)
    regression = load_checkpoint(f"{CHECKPOINTS}/mnist_regression", device=args.device)
    base = load_diffusion_model(f"{CHECKPOINTS}/mnist_base8", device=args.device)
    print(f"{machine()}; load {load_before}", flush=True)

    results = {"command": command_line(), "machine": machine(), "load_before": load_before, "n": args.n,
               "factor": FACTOR, "sampler": "DDIM-50, eta 0, trailing, x0 clipped to [-1, 1]", "upscaling": {},
               "generation": {}}
    real = upscaling_row("originals (the floor)", originals, originals, labels, low, judge, 0.0)
    results["upscaling"]["originals"] = real

    def timed(name, fn):
        t0 = time.time()
        out = batched(fn, low, args.batch_size)
        results["upscaling"][name] = upscaling_row(name, out, originals, labels, low, judge, time.time() - t0)

    timed("bicubic", lambda x, i: superres.upsample(x, FACTOR))
    with torch.no_grad():
        timed("regression", lambda x, i: superres.regress(regression, x.to(args.device), FACTOR).cpu())
    timed("SR3 (augmented model, s = 0)", lambda x, i: superres.upscale(
        sr.net, sr.schedule, x, FACTOR, level=0, seed=i, prediction=sr.prediction).cpu())
    timed("SR3 (no augmentation)", lambda x, i: superres.upscale(
        sr_noaug.net, sr_noaug.schedule, x, FACTOR, seed=i, prediction=sr_noaug.prediction).cpu())

    asked = balanced_labels(args.n, 10)
    spec = SamplerSpec.parse("ddim:50:trailing", 1000)

    def report(name: str, images: torch.Tensor, seconds: float, **more) -> None:
        images = images.clamp(-1, 1)
        row = {"fd": round(frechet_distance(classifier_features(judge.classifier, images), judge.reference_features), 4),
               "accuracy": round(float((classify(judge.classifier, images) == asked).float().mean()), 4),
               "seconds": round(seconds, 1), **more}
        results["generation"][name] = row
        print(f"{name:<34} FD {row['fd']:.4f}  accuracy {row['accuracy']:.3f}  ({seconds:.0f} s)", flush=True)

    if not args.skip_single:
        t0 = time.time()
        single = load_diffusion_model(f"{CHECKPOINTS}/mnist_ddpm", device=args.device)
        images = sample_digits(single, asked, sampler=spec, seed=0, batch_size=args.batch_size, progress=False)
        report("single 32 x 32 model", images, time.time() - t0,
               training_s=single.extra["wall_time_s"], training_steps=single.extra["steps"])
    t0 = time.time()
    lows = sample_digits(base, asked, sampler=spec, seed=0, batch_size=args.batch_size, progress=False)
    base_seconds = time.time() - t0
    results["generation"]["base 8 x 8 samples"] = {"seconds": round(base_seconds, 1)}
    for name, model, level in [("cascade, no augmentation", sr_noaug, None),
                               *[(f"cascade, augmented, s = {s}", sr, s) for s in args.levels]]:
        t0 = time.time()
        high = batched(lambda x, i: superres.upscale(model.net, model.schedule, x, FACTOR, level=level, seed=i,
                                                     prediction=model.prediction).cpu(), lows, args.batch_size)
        report(name, high, time.time() - t0 + base_seconds, level=level)
    results["training_s"] = {name: load_diffusion_model(f"{CHECKPOINTS}/{name}").extra["wall_time_s"]
                             for name in ("mnist_base8", "mnist_sr", "mnist_sr_noaug", "mnist_ddpm")}
    results["training_s"]["mnist_regression"] = json.loads(
        Path(f"{CHECKPOINTS}/mnist_regression.json").read_text())["extra"]["wall_time_s"]
    results["wall_time_s"] = round(time.time() - start, 1)
    results["load_after"] = cli.load_average()
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.output} ({results['wall_time_s']:.0f} s; load {results['load_after']})")


if __name__ == "__main__":
    main()
