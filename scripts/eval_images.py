"""Measure a class-conditional checkpoint of any labelled image set, over a sweep of guidance scales.

    OMP_WAIT_POLICY=PASSIVE python scripts/eval_images.py --data emoji --checkpoint runs/emoji_ddpm/model \\
        --n 1289 --guidance 1 1.5 2 3 4

For each classifier-free guidance scale it draws ``n`` samples (DDIM-50 unless the checkpoint names its sampler;
labels in the training set's class proportions, interleaved: :func:`tinydiff.evaluation.stratified_labels`, or
``--labels balanced``) and reads them in the features of the data's classifier (``--classifier``, trained by
``scripts/train_classifier.py --data ...``) with :func:`tinydiff.evaluation.image_report`, each number beside what
the H held-out real images score (:func:`tinydiff.evaluation.real_floor`):

- class accuracy: the share of samples classified as the class asked for, over the classifier's accuracy on the
  held-out images (the ratio: 1 = as recognisable as real images);
- FD against the training images, at N = H (mean and spread over disjoint blocks of H samples; floor: FD(held-out,
  train)) and at the full n;
- precision and recall (Kynkäänniemi et al. 2019, k = 3) against H random training images, at N = H (floor: the
  held-out images against the same training images), and of all n samples against all training images;
- memorisation (:func:`tinydiff.memorisation.measure_memorisation`) in pixels and in features: the share of
  samples that are near-copies of a training image and Carlini et al.'s share, beside their held-out floors;
  for a model trained with flips (``extra.source.flip``), of a training image or its mirror image.

It recommends, among the scales whose class accuracy reaches ``--target`` (0.9) times the held-out accuracy, the
one with the lowest FD at the held-out set's N (:func:`tinydiff.evaluation.recommend_guidance`). Unless ``--no-write``, the results go into the checkpoint's JSON
(``extra.eval[<sampler> s=<scale>]``, ``extra.recommended_guidance`` and its rule; the weights are untouched) and
the sweep into ``benchmarks/results/<data>_guidance.json``. Finished sample batches are cached under ``runs/`` so an
interrupted evaluation picks up where it stopped.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import math
import time
from pathlib import Path

import torch

from tinydiff.checkpoint import checkpoint_paths, read_config, update_extra
from tinydiff.evaluation import (balanced_labels, image_report, label_tag, real_floor, real_images,
                                 recommend_guidance, sample_digits, stratified_labels)
from tinydiff.pretrained import load_diffusion_model
from tinydiff.registry import SamplerSpec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, default sys.argv); values that cannot work exit, saying which and why."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=sorted(cli.DATA), default="emoji", help="the labelled images (default: emoji)")
    p.add_argument("--checkpoint", help="the class-conditional diffusion model (default data/checkpoints/<data>_ddpm)")
    p.add_argument("--classifier", help="the judge (default data/checkpoints/<data>_classifier)")
    p.add_argument("--n", type=int, help="samples per scale (default: as many as training images)")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0], help="classifier-free scales (1 = none)")
    p.add_argument("--sampler", help="default: the checkpoint's extra.sampler, else ddim:50")
    p.add_argument("--eta", type=float, help="DDIM's eta (overrides the one in --sampler)")
    p.add_argument("--labels", choices=("data", "balanced"), default="data",
                   help="data: the training set's class proportions (default); balanced: image i asks for i %% K")
    p.add_argument("--k", type=int, default=3, help="neighbours of precision and recall (Kynkäänniemi et al.: 3)")
    p.add_argument("--target", type=float, default=0.9,
                   help="class accuracy / held-out accuracy the recommended scale must reach (default 0.9)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="where sample batches are cached (default runs/eval_<checkpoint sha>/...)")
    p.add_argument("--sweep-out", help="the sweep's JSON (default benchmarks/results/<data>_guidance.json)")
    p.add_argument("--no-write", action="store_true", help="print only: write neither the JSONs nor the sweep")
    args = cli.parse_args(p, argv, threads=True)
    args.checkpoint = args.checkpoint or f"data/checkpoints/{args.data}_ddpm"
    args.classifier = args.classifier or cli.DATA[args.data]
    args.sweep_out = args.sweep_out or f"benchmarks/results/{args.data}_guidance.json"
    problems = [(args.n is not None and args.n < 1, f"--n must be a positive number of samples, got {args.n}"),
                (any(not math.isfinite(s) or s < 0 for s in args.guidance),
                 f"--guidance scales must be finite and >= 0 (1 = no guidance), got {args.guidance}"),
                (args.k < 1, f"--k must be a positive number of neighbours, got {args.k}"),
                (not 0 < args.target <= 1, f"--target must lie in (0, 1], got {args.target}"),
                (args.batch_size < 1, f"--batch-size must be positive, got {args.batch_size}")]
    for bad, message in problems:
        if bad:
            raise SystemExit(message)
    for name in ("checkpoint", "classifier"):
        weights, config = checkpoint_paths(getattr(args, name))
        if not (weights.is_file() and config.is_file()):
            raise SystemExit(f"--{name} {getattr(args, name)}: no checkpoint there ({weights.name} and "
                             f"{config.name} needed)" + (f"; train one with scripts/train_classifier.py --data "
                                                         f"{args.data}" if name == "classifier" else ""))
    return args


def load_model(args: argparse.Namespace, n_classes: int, image_shape: tuple[int, ...]):
    """The diffusion model (channels-last on the CPU) and its sampler; exits if it cannot draw the data's classes."""
    model = load_diffusion_model(args.checkpoint, device=args.device)
    classes = model.net.config.get("num_classes")
    if not classes or classes < n_classes:
        raise SystemExit(f"--checkpoint {args.checkpoint} is not conditioned on the {n_classes} classes of "
                         f"{args.data} (num_classes {classes}): eval_images measures class-conditional models")
    if tuple(model.sample_shape) != image_shape or model.codec is not None:
        raise SystemExit(f"--checkpoint {args.checkpoint} draws {list(model.sample_shape)}, not {args.data} images "
                         f"{list(image_shape)}: pass a pixel model trained on {args.data}")
    if str(args.device).startswith("cpu"):  # the same numbers up to rounding, about 1.3x faster convolutions
        model.net = model.net.to(memory_format=torch.channels_last)
    try:
        sampler = SamplerSpec.parse(args.sampler or model.sampler or "ddim:50", model.schedule.T)
        return model, sampler.with_eta(args.eta) if args.eta is not None else sampler
    except ValueError as err:
        raise SystemExit(f"--sampler / --eta: {err}") from err


def rounded(value, digits: int = 4):
    """Floats in nested dicts and lists rounded to ``digits`` decimal places (NaN, inf: None), for the JSON."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def row(scale: float, report: dict, seconds: float) -> dict:
    """One line of the sweep: the numbers a scale is chosen by."""
    m = report["matched"]
    return {"scale": scale, "class_accuracy": report["class_accuracy"], "accuracy_ratio": report["accuracy_ratio"],
            "fd_matched": m["fd"]["mean"], "fd_matched_std": m["fd"]["std"], "fd_full": report["full"]["fd"],
            "precision_matched": m["precision"]["mean"], "recall_matched": m["recall"]["mean"],
            "precision_full": report["full"]["precision"], "recall_full": report["full"]["recall"],
            "memorised_share_pixels": report["memorisation"]["pixels"]["memorised_share"],
            "memorised_share_features": report["memorisation"]["features"]["memorised_share"],
            "diversity": report["diversity"], "sampling_s": seconds}


def describe(r: dict) -> str:
    return (f"s = {r['scale']:g}: class accuracy {r['class_accuracy']:.3f} (ratio {r['accuracy_ratio']:.3f}), "
            f"FD {r['fd_matched']:.3f} +- {r['fd_matched_std']:.3f} (full {r['fd_full']:.3f}), precision "
            f"{r['precision_matched']:.3f}, recall {r['recall_matched']:.3f}, memorised {r['memorised_share_pixels']:.3f}"
            f" (pixels) / {r['memorised_share_features']:.3f} (features)  [{r['sampling_s']:.0f} s]")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    train, train_labels = cli.load_images(args.data, "train")
    heldout, heldout_labels = cli.load_images(args.data, "test")
    n_classes = int(train_labels.max()) + 1
    n = args.n or len(train)
    if n < len(heldout):
        raise SystemExit(f"--n {n}: draw at least as many samples as the {len(heldout)} held-out images, which set "
                         "the sample size every number is compared at")
    model, sampler = load_model(args, n_classes, tuple(train.shape[1:]))
    try:
        judge = cli.load_judge(args.classifier, device=args.device, data=args.data, reference="train")
    except ValueError as err:
        raise SystemExit(f"--classifier: {err}") from err
    if judge.classifier.config.get("num_classes") != n_classes:
        raise SystemExit(f"--classifier {args.classifier} tells {judge.classifier.config.get('num_classes')} classes "
                         f"apart, {args.data} has {n_classes}: pass the classifier trained on {args.data}")
    # a model trained on randomly mirrored images may copy a mirror image: count those as copies too
    mirrored = bool(read_config(args.checkpoint).get("extra", {}).get("source", {}).get("flip", False))
    labels = stratified_labels(train_labels, n) if args.labels == "data" else balanced_labels(n, n_classes)
    real = real_images(judge.classifier, train, heldout, heldout_labels, seed=args.seed)
    floor = real_floor(judge.classifier, real, k=args.k)
    print(f"real held-out images (N = {floor['n']}): accuracy {floor['accuracy']:.3f}, FD vs train {floor['fd']:.3f},"
          f" precision {floor['precision']:.3f}, recall {floor['recall']:.3f}", flush=True)
    sha = read_config(args.checkpoint)["sha256"]
    cache = Path(args.cache_dir or Path("runs") / f"eval_{sha[:12]}") / f"labels_{label_tag(labels)}"
    load_before = cli.load_average()
    reports, rows = {}, []
    for scale in args.guidance:
        start = time.time()
        samples = sample_digits(model, labels, sampler=sampler, guidance=scale, seed=args.seed,
                                batch_size=args.batch_size, cache_dir=cache, progress=False)
        seconds = time.time() - start
        reports[scale] = image_report(judge.classifier, samples, labels, real, k=args.k, floor=floor, mirrored=mirrored)
        rows.append(rounded(row(scale, reports[scale], seconds)))
        print(describe(rows[-1]), flush=True)
    best, rule = recommend_guidance(reports, args.target)
    rule = f"{rule} ({sampler.name}, n = {n}, scales {', '.join(f'{s:g}' for s in args.guidance)})"
    print(f"recommended guidance: {best:g} -- {rule}")
    setup = {"n_samples": n, "sampler": sampler.name, "eta": sampler.eta, "labels": args.labels, "k": args.k,
             "seed": args.seed, "classifier": str(args.classifier),
             "classifier_sha256": read_config(args.classifier)["sha256"]}
    if args.no_write:
        return
    stamp = {"threads": torch.get_num_threads(), **cli.provenance(load_before)}
    evals = read_config(args.checkpoint).get("extra", {}).get("eval", {})
    for scale, report in reports.items():
        evals[f"{sampler.name.lower()} s={scale:g}"] = rounded({**setup, "guidance": scale, **report, **stamp})
    update_extra(args.checkpoint, eval=evals, recommended_guidance=best, recommended_guidance_rule=rule)
    out = Path(args.sweep_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**stamp, "checkpoint": str(args.checkpoint), "checkpoint_sha256": sha, **setup,
                               "floor": rounded(floor), "rows": rows, "recommended_guidance": best,
                               "recommended_guidance_rule": rule}, indent=2) + "\n")
    print(f"stored extra.eval, extra.recommended_guidance in the JSON of {args.checkpoint}; wrote {out}")


if __name__ == "__main__":
    main()
