"""Does a diffusion model copy its training images more as the data shrinks or the training lengthens?

Run from the repository root on an otherwise idle machine (about 30 minutes on 2 CPU cores):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/memorisation.py

**Emoji.** One recipe (``configs/emoji_memorisation.json``: the shipped emoji model's UNet, optimiser, schedule and
EMA, with a constant learning rate after the warm-up and far fewer steps) trained by ``scripts/train.py`` on 100,
1,000 and all 1,289 training emoji (``--limit``: a seeded random subset; no flips, so a copy is a copy pixel for
pixel). Training longer is read off one run per data size: the EMA weights at ``--steps`` / 4 ("1x") and at
``--steps`` ("4x"), written by ``--snapshot-at`` -- with a constant learning rate, the weights at step s of a
long run are those of a run of s steps (the warm-up is the same, nothing decays), which is how training length is
usually studied and costs 3 runs instead of 6. Each model draws ``--n`` samples (DDIM-50, class-conditional at
guidance scale 1 -- the plain conditional model the recipe trains; guidance above 1 is known to raise copying,
Somepalli et al. 2023 -- with the class labels of its own training subset, in their proportions). Memorisation
(:func:`tinydiff.memorisation.measure_memorisation`): each sample's nearest image in the model's *own* training
set, in pixels, and the share of samples closer to it than ``--threshold`` x the median distance of the 323
held-out test emoji to that set (the held-out share under the same rule: the floor), beside Carlini et al.'s
relative distance (Carlini et al. 2023, Sec. 5.1) and its floor. With ``--emoji-judge`` (a classifier with
``features``, e.g. ``data/checkpoints/emoji_classifier``) the same in its features.

**MNIST.** The shipped ``data/checkpoints/mnist_ddpm`` (trained on the 4,000 digits of ``load_mnist("train")``):
``--mnist-n`` samples with balanced labels, DDIM-50, at guidance 1 and at its recommended scale, measured against
the training digits with the 1,000 test digits held out, in pixels and in the shipped classifier's features.

Trainings go to ``--runs`` (default ``runs/memorisation/``); a finished one (its ``model_<steps>.json``) is reused,
and the samples are cached there per batch. The table is printed; everything (commands, wall times, load averages,
thresholds, each point's numbers and its most-copied samples' indices) goes to ``--out``; the 8 most-copied samples
of each point (uint8) and the indices of their nearest training images to ``--out`` with ``.safetensors``.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from tinydiff.checkpoint import load_checkpoint, read_config
from tinydiff.data import load_emoji, load_mnist
from tinydiff.evaluation import balanced_labels, sample_digits
from tinydiff.memorisation import Memorisation, measure_memorisation
from tinydiff.metrics import classifier_features
from tinydiff.pretrained import load_diffusion_model
from tinydiff.registry import SamplerSpec

ROOT = Path(__file__).resolve().parents[1]
SHOWN = 8  # most-copied samples kept per point


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["100", "1000", "all"], help="training-set sizes ('all' = 1,289)")
    p.add_argument("--steps", type=int, default=1600, help="steps of each run: the '4x' point (its quarter is '1x')")
    p.add_argument("--config", default="configs/emoji_memorisation.json")
    p.add_argument("--limit-seed", type=int, default=0, help="seed of the training subsets")
    p.add_argument("--n", type=int, default=400, help="samples per emoji model")
    p.add_argument("--sampler", default="ddim:50")
    p.add_argument("--threshold", type=float, default=0.25, help="copy: ratio to the held-out median below this")
    p.add_argument("--emoji-judge", help="an emoji classifier checkpoint (with .features) to measure in its features")
    p.add_argument("--shipped-emoji", help="also measure this checkpoint trained on all emoji (e.g. the shipped one)")
    p.add_argument("--mnist-checkpoint", default="data/checkpoints/mnist_ddpm")
    p.add_argument("--mnist-n", type=int, default=500)
    p.add_argument("--parts", nargs="+", default=["mnist", "emoji"], choices=("mnist", "emoji"))
    p.add_argument("--runs", default="runs/memorisation")
    p.add_argument("--out", default="benchmarks/results/memorisation.json")
    args = cli.parse_args(p, argv, threads=True)
    for size in args.sizes:
        if size != "all" and not (size.isdigit() and int(size) >= 64):
            p.error(f"--sizes: each is 'all' or a number of images >= 64 (the batch size), got {size!r}")
    if args.steps < 4 or args.steps % 4:
        p.error(f"--steps must be a positive multiple of 4 (its quarter is the 1x point), got {args.steps}")
    return args


def train_run(args, size: str) -> dict:
    """Train (or reuse) the run of one data size; what it cost and where its snapshots are."""
    name = f"emoji_{size}"
    run = Path(args.runs) / name
    short = args.steps // 4
    command = [sys.executable, "scripts/train.py", "--data", "emoji", "--config", args.config, "--name", name,
               "--runs", args.runs, "--steps", str(args.steps), "--snapshot-at", str(short), str(args.steps),
               "--sample-every", str(args.steps), "--save-every", str(args.steps), "--channels-last",
               "--device", args.device]
    if size != "all":
        command += ["--limit", size, "--limit-seed", str(args.limit_seed)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    final = run / f"model_{args.steps}"
    reused = final.with_suffix(".json").is_file()
    load_before = cli.load_average()
    if not reused:
        print("$ " + shlex.join(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    extra = read_config(final)["extra"]
    return {"command": shlex.join(["python", *command[1:]]), "reused": reused, "wall_time_s": extra["wall_time_s"],
            "steps_per_s": extra["steps_per_s"], "load_average_before": load_before,
            "load_average_after": cli.load_average(), "final_loss_mean_last_200": extra["final_loss_mean_last_200"],
            "snapshots": {"1x": str(run / f"model_{short}"), "4x": str(final)}}


def summary(m: Memorisation, train_index: torch.Tensor) -> dict:
    """The numbers of one measurement, and its most-copied samples with their nearest images' indices in the full
    training set."""
    top = m.most_copied(SHOWN)
    return {"share": round(m.share, 4), "heldout_share": round(m.heldout_share, 4),
            "carlini_share": round(m.carlini_share, 4), "heldout_carlini_share": round(m.heldout_carlini_share, 4),
            "typical_distance": round(m.typical_distance, 4), "median_ratio": round(float(m.ratio.median()), 4),
            "most_copied": {"sample": top.tolist(), "train_index": train_index[m.index[top]].tolist(),
                            "ratio": [round(v, 4) for v in m.ratio[top].tolist()]}}


def measure_point(model, labels, train, heldout, train_index, judge, args, sampler, guidance, cache, shown, key):
    """Sample ``model`` for ``labels`` and measure the samples against ``train`` [N, ...] (full-set indices
    ``train_index`` [N]) with ``heldout`` held out, in pixels and, with ``judge``, in its features."""
    start, load_before = time.time(), cli.load_average()
    cached = cache.is_dir() and any(cache.iterdir())  # then the wall time is mostly of reading them back
    x = sample_digits(model, labels, sampler=sampler, guidance=guidance, seed=0, cache_dir=cache,
                      progress=False).clamp(-1, 1)
    sampling = time.time() - start
    pixels = measure_memorisation(x, train, heldout, threshold=args.threshold)
    point = {"sampler": sampler.name, "guidance": guidance, "n_samples": len(labels), "n_train": len(train),
             "sampling_wall_time_s": round(sampling, 1), "samples_cached": cached, "load_average_before": load_before,
             "load_average_after": cli.load_average(), "pixels": summary(pixels, train_index)}
    if judge is not None:
        f = [classifier_features(judge, v) for v in (x, train, heldout)]
        point["features"] = summary(measure_memorisation(*f, threshold=args.threshold), train_index)
    top = pixels.most_copied(SHOWN)
    shown[f"{key}/samples"] = ((x[top] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    shown[f"{key}/train_index"] = train_index[pixels.index[top]]
    return point


def write(result: dict, shown: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    if shown:
        save_file({k: v.contiguous() for k, v in shown.items()}, str(out.with_suffix(".safetensors")))


def row(name: str, steps, point: dict) -> str:
    cells = [name, str(point["n_train"]), str(steps)]
    for space in ("pixels", "features"):
        s = point.get(space)
        cells += [f"{s['share']:.3f} ({s['heldout_share']:.3f})", f"{s['carlini_share']:.3f} "
                  f"({s['heldout_carlini_share']:.3f})", f"{s['median_ratio']:.2f}"] if s else ["-", "-", "-"]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| model | training images | steps | pixels: copies (held-out) | Carlini (held-out) | median ratio "
          "| features: copies (held-out) | Carlini (held-out) | median ratio |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    out = ROOT / args.out
    load_before = cli.load_average()
    result = {**cli.provenance(load_before), "threshold": args.threshold, "n_neighbours": 50, "alpha": 0.5,
              "seed": 0, "limit_seed": args.limit_seed, "emoji": [], "mnist": []}
    if out.is_file():  # keep the other part's numbers when only one part runs
        old = json.loads(out.read_text())
        result.update({part: old.get(part, []) for part in ("emoji", "mnist") if part not in args.parts})
        result.update({k: old[k] for k in ("emoji_shipped", "recipe") if k in old and "emoji" not in args.parts})
    shown: dict[str, torch.Tensor] = {}
    cache = Path(args.runs) / "samples"

    if "mnist" in args.parts:
        model = load_diffusion_model(args.mnist_checkpoint)
        sampler = SamplerSpec.parse(args.sampler, model.schedule.T)
        train, heldout = load_mnist("train", pad_to_32=True)[0], load_mnist("test", pad_to_32=True)[0]
        judge = cli.load_judge().classifier
        labels = balanced_labels(args.mnist_n, 10)
        for guidance in dict.fromkeys([1.0, model.recommended_guidance or 1.0]):
            point = measure_point(model, labels, train, heldout, torch.arange(len(train)), judge, args, sampler,
                                  guidance, cache / f"mnist_s{guidance:g}", shown, f"mnist_s{guidance:g}")
            point.update(checkpoint=args.mnist_checkpoint, steps=model.extra["steps"],
                         checkpoint_sha256=read_config(args.mnist_checkpoint)["sha256"])
            result["mnist"].append(point)
            write(result, shown, out)
            print(HEADER + "\n" + row(f"mnist_ddpm s={guidance:g}", point["steps"], point), flush=True)

    if "emoji" in args.parts:
        full, heldout = load_emoji("train"), load_emoji("test").images
        judge = load_checkpoint(args.emoji_judge).eval() if args.emoji_judge else None
        sampler = SamplerSpec.parse(args.sampler, 1000)
        result["recipe"] = {"config": args.config, "train": json.loads((ROOT / args.config).read_text())["train"],
                            "steps_1x": args.steps // 4, "steps_4x": args.steps, "flip": False,
                            "emoji_judge": args.emoji_judge, "labels": "the training subset's labels, shuffled "
                            "(seed 0) and repeated: its classes in their proportions"}
        jobs = [(size, None) for size in args.sizes]
        if args.shipped_emoji:
            jobs.append(("all", args.shipped_emoji))
        for size, shipped in jobs:
            training = None if shipped else train_run(args, size)
            paths = {"shipped": shipped} if shipped else training["snapshots"]
            for length, path in paths.items():
                model = load_diffusion_model(path)
                source = model.extra.get("source", {})
                index = torch.tensor(source["indices"]) if "indices" in source else torch.arange(len(full.images))
                train = full.images[index]
                order = torch.randperm(len(index), generator=torch.Generator().manual_seed(0))
                labels = full.labels[index][order].repeat(-(-args.n // len(index)))[: args.n]
                key = f"emoji_{size}_{length}"
                point = measure_point(model, labels, train, heldout, index, judge, args, sampler, 1.0, cache / key,
                                      shown, key)
                point.update(checkpoint=str(path), length=length, steps=model.extra["steps"])
                if shipped:
                    point["checkpoint_sha256"] = read_config(path)["sha256"]
                    result["emoji_shipped"] = point
                else:
                    point["training"] = training
                    result["emoji"] = [p for p in result["emoji"] if p.get("checkpoint") != str(path)] + [point]
                write(result, shown, out)
                print(HEADER + "\n" + row(f"emoji {size} {length}", point["steps"], point), flush=True)

    result.update(cli.provenance(load_before))  # the load average before and after the whole run
    write(result, shown, out)
    print(f"\nthreshold {args.threshold}: copies = share of samples with ratio < threshold (the held-out images' "
          "share under the same rule); Carlini = share with relative distance < 1\n" + HEADER)
    for p in result["mnist"]:
        print(row(f"mnist_ddpm s={p['guidance']:g}", p["steps"], p))
    for p in result["emoji"]:
        print(row(f"emoji {p['n_train']} {p['length']}", p["steps"], p))
    if "emoji_shipped" in result:
        print(row("emoji shipped", result["emoji_shipped"]["steps"], result["emoji_shipped"]))
    print(f"wrote {out} and {out.with_suffix('.safetensors')}")


if __name__ == "__main__":
    main()
