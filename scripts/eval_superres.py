"""Measure super-resolution and cascades (notebook 15's tables): bicubic vs regression vs SR3 on held-out digits
(8 x 8 -> 32 x 32) or emoji (32 x 32 -> 64 x 64), and on digits the cascade (8 x 8 base + SR3) with and without
noise-conditioning augmentation vs the single 32 x 32 model.

    OMP_WAIT_POLICY=PASSIVE python scripts/eval_superres.py > data/checkpoints/logs/eval_superres.log
    OMP_WAIT_POLICY=PASSIVE python scripts/eval_superres.py --data emoji > data/checkpoints/logs/eval_superres_emoji.log

**Upscaling** (``upscaling`` in the results): the 1,000 test digits are shrunk to 8 x 8
(:func:`tinydiff.superres.downsample`) and brought back to 32 x 32 by each method. Per method: PSNR and SSIM against
the original (distortion: higher is closer), FD of the classifier features against the 4,000 *training* digits
(perception: the originals themselves score the floor, as no method sees a training digit), the fraction whose
classifier label is the original's label, and the consistency error, RMS of downsample(output) - input. SR3 is
run twice: as trained, and with DDNM's projection of each predicted x0 onto the consistent images
(:func:`tinydiff.superres.project`).

Emoji: the 323 held-out emoji at 64 x 64, shrunk to 32 x 32. The judge (the emoji classifier) reads 32 x 32 images,
so it is shown every second pixel of each 64 x 64 image, ``x[..., ::2, ::2]``: a strided view keeps the fine detail
(a 2 x 2 average would hand it back the input itself), so a blurred output looks blurred to it. FD is against the
same view of the 1,289 training emoji.

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
from tinydiff.data import load_emoji
from tinydiff.evaluation import balanced_labels, command_line, machine, sample_digits
from tinydiff.metrics import classifier_features, classify, frechet_distance, psnr, ssim
from tinydiff.pretrained import load_diffusion_model
from tinydiff.registry import SamplerSpec

CHECKPOINTS = "data/checkpoints"
SETS = {"mnist": dict(factor=4, n=1000, output="benchmarks/results/superres.json"),
        "emoji": dict(factor=2, n=323, output="benchmarks/results/superres_emoji.json")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=tuple(SETS), default="mnist", help="digits (8 -> 32) or emoji (32 -> 64)")
    p.add_argument("--n", type=int, help="test images to upscale and digits to generate (default: all, 1000 / 323)")
    p.add_argument("--levels", type=int, nargs="+", default=[0, 100, 200, 300],
                   help="augmentation levels s of the augmented cascade (default 0 100 200 300)")
    p.add_argument("--batch-size", type=int, default=250, help="images per sampling batch")
    p.add_argument("--output", help="results JSON (default: benchmarks/results/superres.json or superres_emoji.json)")
    p.add_argument("--skip-single", action="store_true", help="do not sample the single 32 x 32 model")
    p.add_argument("--checkpoints", default=CHECKPOINTS, help="the folder of the checkpoints (default data/checkpoints)")
    return cli.parse_args(p, argv)


def batched(fn, low: torch.Tensor, batch_size: int) -> torch.Tensor:
    """fn over slices of ``low``, concatenated (bounded memory)."""
    return torch.cat([fn(low[i : i + batch_size], i) for i in range(0, len(low), batch_size)])


def judge_view(images: torch.Tensor, data: str) -> torch.Tensor:
    """What the judge reads: digits as they are; 64 x 64 emoji as every second pixel (see the module docstring)."""
    return images if data == "mnist" else images[..., ::2, ::2]


def upscaling_row(name: str, out: torch.Tensor, originals: torch.Tensor, labels: torch.Tensor, low: torch.Tensor,
                  judge, seconds: float, factor: int, data: str) -> dict:
    out = out.clamp(-1, 1)
    feats = classifier_features(judge.classifier, judge_view(out, data))
    row = {
        "psnr": round(float(psnr(out, originals).mean()), 2) if not torch.equal(out, originals) else None,  # inf
        "mse": round(float((out - originals).pow(2).mean()), 6),
        "ssim": round(float(ssim(out, originals).mean()), 4),
        "fd": round(frechet_distance(feats, judge.reference_features), 4),
        "label_agreement": round(float((classify(judge.classifier, judge_view(out, data)) == labels).float().mean()), 4),
        "consistency_rms": round(float(superres.consistency_error(out, low, factor).mean()), 5),
        "seconds": round(seconds, 1),
    }
    print(f"{name:<34} PSNR {row['psnr'] or float('inf'):6.2f} dB  SSIM {row['ssim']:.4f}  FD {row['fd']:.4f}  "
          f"labels {row['label_agreement']:.3f}  consistency {row['consistency_rms']:.5f}  ({seconds:.0f} s)", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data, factor = args.data, SETS[args.data]["factor"]
    n = args.n or SETS[data]["n"]
    output = args.output or SETS[data]["output"]
    load_before = cli.load_average()
    start = time.time()
    judge = cli.load_judge(device=args.device, data=data, reference="train")
    if data == "mnist":
        originals, labels = cli.load_images("mnist", "test")
    else:
        train64 = load_emoji("train", 64).images
        judge.reference_features = classifier_features(judge.classifier, judge_view(train64, data))
        test64 = load_emoji("test", 64)
        originals, labels = test64.images, test64.labels
    originals, labels = originals[:n], labels[:n]
    low = superres.downsample(originals, factor)
    sr = load_diffusion_model(f"{args.checkpoints}/{data}_sr", device=args.device)
    regression = load_checkpoint(f"{args.checkpoints}/{data}_regression", device=args.device)
    print(f"{machine()}; load {load_before}", flush=True)

    results = {"command": command_line(), "machine": machine(), "load_before": load_before, "n": n, "data": data,
               "factor": factor, "sampler": "DDIM-50, eta 0, trailing, x0 clipped to [-1, 1]", "upscaling": {},
               "generation": {}}
    real = upscaling_row("originals (the floor)", originals, originals, labels, low, judge, 0.0, factor, data)
    results["upscaling"]["originals"] = real

    def timed(name, fn):
        t0 = time.time()
        out = batched(fn, low, args.batch_size)
        results["upscaling"][name] = upscaling_row(name, out, originals, labels, low, judge, time.time() - t0,
                                                   factor, data)

    level = 0 if sr.net.noise_levels else None
    timed("bicubic", lambda x, i: superres.upsample(x, factor))
    with torch.no_grad():
        timed("regression", lambda x, i: superres.regress(regression, x.to(args.device), factor).cpu())
    timed("SR3", lambda x, i: superres.upscale(sr.net, sr.schedule, x, factor, level=level, seed=i,
                                               prediction=sr.prediction).cpu())
    timed("SR3 + projection (DDNM)", lambda x, i: superres.upscale(
        sr.net, sr.schedule, x, factor, level=level, seed=i, prediction=sr.prediction, consistent=True).cpu())
    if data == "emoji":
        finish(results, start, output, data, args.checkpoints)
        return
    sr_noaug = load_diffusion_model(f"{args.checkpoints}/mnist_sr_noaug", device=args.device)
    base = load_diffusion_model(f"{args.checkpoints}/mnist_base8", device=args.device)
    timed("SR3, trained without augmentation", lambda x, i: superres.upscale(
        sr_noaug.net, sr_noaug.schedule, x, factor, seed=i, prediction=sr_noaug.prediction).cpu())

    asked = balanced_labels(n, 10)
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
        single = load_diffusion_model(f"{args.checkpoints}/mnist_ddpm", device=args.device)
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
        high = batched(lambda x, i: superres.upscale(model.net, model.schedule, x, factor, level=level, seed=i,
                                                     prediction=model.prediction).cpu(), lows, args.batch_size)
        report(name, high, time.time() - t0 + base_seconds, level=level)
    finish(results, start, output, data, args.checkpoints)


def finish(results: dict, start: float, output: str, data: str, checkpoints: str) -> None:
    """Add the training times of the models measured and the run's own time and load; write ``output``."""
    names = ("mnist_base8", "mnist_sr", "mnist_sr_noaug", "mnist_ddpm", "mnist_regression") if data == "mnist" \
        else ("emoji_sr", "emoji_regression")
    results["training_s"] = {name: json.loads(Path(f"{checkpoints}/{name}.json").read_text())["extra"]["wall_time_s"]
                             for name in names}
    results["wall_time_s"] = round(time.time() - start, 1)
    results["load_after"] = cli.load_average()
    Path(output).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {output} ({results['wall_time_s']:.0f} s; load {results['load_after']})")


if __name__ == "__main__":
    main()
