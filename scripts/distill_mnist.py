"""Progressive distillation of a shipped MNIST model down to a few sampling steps (notebook 11, Salimans & Ho 2022).

    OMP_WAIT_POLICY=PASSIVE python scripts/distill_mnist.py                      # latent model, 128 -> 4 steps

Each round trains a student (a copy of its teacher) with :class:`tinydiff.distill.Distillation` through
:func:`tinydiff.train.train` -- the same training loop as every other model -- so that one DDIM step of the
student does what two of the teacher do; the student then teaches the next round: 128 -> 64 -> 32 -> 16 -> 8 -> 4
steps (``--from-steps``, ``--to-steps``), all on ``trailing`` grids, which nest. A student is as good as its first
teacher's sampler at best, and the guided latent teacher with ``trailing`` DDIM needs many steps to be good (FD
0.290 at 32 steps, 0.247 at 128; measured by ``scripts/eval_mnist.py``), hence the long first grid. The first round's teacher samples
with classifier-free guidance at ``--guidance`` (default: the teacher's recommended scale), so the student
learns the *guided* sampler and needs one network call per step instead of two.

After each round the student is measured as ``scripts/eval_mnist.py`` measures a checkpoint (``--eval-n``
samples, FD beside its floor, requested-class accuracy by the shipped classifier). The final student is
written to ``<output>.safetensors`` + ``<output>.json``; the JSON records the sampler it must be run with
(``extra.sampler``, e.g. ``ddim:4:trailing``, which ``scripts/sample.py`` and ``scripts/eval_mnist.py`` read),
the teacher and its SHA-256, and a table of the rounds (``extra.distillation``).
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import copy
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from tinydiff.checkpoint import read_config, save_checkpoint
from tinydiff.data import load_mnist
from tinydiff.distill import Distillation, halving_grids
from tinydiff.evaluation import balanced_labels, machine, sample_digits
from tinydiff.pretrained import load_diffusion_model
from tinydiff.registry import SamplerSpec
from tinydiff.train import train


def measure(model, steps: int, n: int, judge: cli.Judge, seed: int = 0) -> dict:
    """FD and requested-class accuracy of ``n`` samples with DDIM-``steps`` (trailing), no extra guidance."""
    start = time.time()
    labels = balanced_labels(n)
    samples = sample_digits(model, labels, sampler=SamplerSpec("ddim", steps, "trailing"), guidance=1.0, seed=seed,
                            progress=False)
    report = judge.report(samples, labels)
    return {"fd": round(report["fd"], 4), "label_accuracy": round(report["label_accuracy"], 4),
            "diversity": round(report["diversity"], 4), "n_samples": n, "sampling_s": round(time.time() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="data/checkpoints/mnist_latent")
    p.add_argument("--output", default="data/checkpoints/mnist_latent_distilled")
    p.add_argument("--from-steps", type=int, default=128, help="the first teacher's DDIM steps")
    p.add_argument("--to-steps", type=int, default=4, help="the last student's DDIM steps")
    p.add_argument("--guidance", type=float, help="the guidance scale distilled in round 1 (default: the teacher's)")
    p.add_argument("--steps-per-round", type=int, default=2000)
    p.add_argument("--first-round-steps", type=int, default=2500,
                   help="training steps of round 1, which also learns the guidance")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--eval-n", type=int, default=1000, help="samples to measure each round's student on (0: skip)")
    p.add_argument("--classifier", default="data/checkpoints/mnist_classifier")
    p.add_argument("--seed", type=int, default=0)
    args = cli.parse_args(p, threads=True)

    teacher = load_diffusion_model(args.teacher, device=args.device)
    teacher.net = teacher.net.to(memory_format=torch.channels_last)
    guidance = args.guidance if args.guidance is not None else (teacher.recommended_guidance or 1.0)
    schedule = teacher.schedule
    rounds = []
    n = args.from_steps
    while n > args.to_steps:
        halving_grids(schedule.T, n)  # every grid must nest before any training starts
        n //= 2
    if n != args.to_steps:
        raise SystemExit(f"--to-steps {args.to_steps} is not --from-steps {args.from_steps} halved a whole number of times")

    images, labels = load_mnist("train", pad_to_32=True)
    latents = teacher.codec.encode_dataset(images) if teacher.codec is not None else images
    judge = cli.load_judge(args.classifier, device=args.device)
    floor = judge.report(images[: args.eval_n], labels[: args.eval_n])["fd"] if args.eval_n else None
    print(f"teacher {args.teacher}: {machine()}; distilling guidance s = {guidance:g}; FD floor {floor}", flush=True)

    generator = cli.seeded(args.seed)
    current = teacher.net
    teacher_steps = args.from_steps
    total_start = time.time()
    while teacher_steps > args.to_steps:
        round_guidance = guidance if not rounds else None  # later teachers are already guided students
        objective = Distillation(current, schedule, teacher_steps, spacing="trailing", prediction=teacher.prediction,
                                 guidance=round_guidance, clip_x0=teacher.clip_x0)
        student = copy.deepcopy(current).train()
        start, losses = time.time(), []
        steps = args.first_round_steps if not rounds and args.first_round_steps else args.steps_per_round
        for state in train(student, schedule, latents, labels=labels, steps=steps,
                           batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                           lr_schedule="cosine", generator=generator, progress=False, objective=objective):
            losses.append(state.loss)
            if state.step % 100 == 0:
                print(f"round {teacher_steps}->{objective.student_steps}  step {state.step:5d}  "
                      f"loss {cli.mean_of_last(losses, 100):.4f}  "
                      f"{state.step / (time.time() - start):.2f} steps/s", flush=True)
        wall = time.time() - start
        student.eval()
        row = {"teacher_steps": teacher_steps, "student_steps": objective.student_steps,
               "teacher_guidance": round_guidance or 1.0, "train_steps": steps,
               "wall_time_s": round(wall, 1), "steps_per_s": round(steps / wall, 3),
               "final_loss_mean_last_100": round(cli.mean_of_last(losses, 100), 5), "load_average": cli.load_average()}
        if args.eval_n:
            row.update(measure(dataclasses.replace(teacher, net=student), objective.student_steps, args.eval_n,
                               judge, args.seed))
        rounds.append(row)
        print(json.dumps(row), flush=True)
        current, teacher_steps = student, objective.student_steps

    t_extra = teacher.extra
    extra = {
        **cli.provenance(),
        "seed": args.seed,
        "schedule": t_extra["schedule"],
        "train": {"prediction": teacher.prediction, "objective": "progressive distillation",
                  "steps_per_round": args.steps_per_round, "first_round_steps": args.first_round_steps or args.steps_per_round,
                  "batch_size": args.batch_size, "lr": args.lr,
                  "warmup_steps": args.warmup_steps, "lr_schedule": "cosine"},
        "data_shape": t_extra.get("data_shape"),
        "recommended_guidance": 1.0,
        "recommended_guidance_rule": f"guidance s = {guidance:g} is distilled into the weights: sample with s = 1",
        "sampler": f"ddim:{args.to_steps}:trailing",
        "distillation": {"teacher": os.path.relpath(args.teacher, Path(args.output).parent),
                         "teacher_sha256": read_config(args.teacher)["sha256"], "guidance": guidance,
                         "fd_floor_train": round(floor, 4) if floor is not None else None,
                         "total_wall_time_s": round(time.time() - total_start, 1), "rounds": rounds},
        "weights": "final (no EMA)",
    }
    if "latent" in t_extra:
        extra["latent"] = t_extra["latent"]
    path = save_checkpoint(args.output, current, read_config(args.teacher)["config"], extra=extra)
    print(f"saved {path} ({args.from_steps} -> {args.to_steps} steps in {len(rounds)} rounds, "
          f"{extra['distillation']['total_wall_time_s'] / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
