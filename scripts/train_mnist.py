"""Train the class-conditional MNIST DDPM that the course ships in data/checkpoints/ -- in pixels or in latents.

    OMP_WAIT_POLICY=PASSIVE python scripts/train_mnist.py --config configs/mnist_ddpm.json
    OMP_WAIT_POLICY=PASSIVE python scripts/train_mnist.py --config configs/mnist_latent.json

Reads the JSON config (model, schedule, training hyper-parameters, seed), trains
with :func:`tinydiff.train.train` on the 4,000 shipped training digits padded to
32 x 32, and writes the EMA weights to ``<output>.safetensors`` + ``<output>.json``
(the run's facts -- command, seed, steps, wall time, steps/s, machine -- go in the
JSON's ``extra``).

A config with ``"latent": {"autoencoder": <checkpoint>}`` trains a *latent* diffusion
model (notebook 08): the training digits are encoded once by that autoencoder
(:class:`tinydiff.latent.LatentCodec`, scaled to unit variance) and the same
:func:`~tinydiff.train.train` runs on the latents. The JSON then records the autoencoder
(path relative to the output's folder, and its SHA-256) under ``extra.latent``, which
:func:`tinydiff.pretrained.load_diffusion_model` follows to decode samples. Training stops after ``steps`` steps or ``max_minutes``, whichever
comes first. ``"objective": "flow matching"`` in ``train`` trains a velocity model on the straight path instead
(notebook 11; ``prediction`` and ``schedule`` are then unused, and ``"sampler"``, default ``flow-heun:10``, is
recorded for ``scripts/sample.py``). Rerun with ``--steps N --max-minutes 0`` (no time limit) to reproduce
a run step for step. Every ``--save-every`` steps the full training state goes to
``runs/<name>_state.safetensors``; ``--resume`` continues from it.

On several GPUs (or processes), launch the same command with torchrun; the config's
``batch_size`` stays the *global* batch, split evenly over the processes, so the run is the
single-process run (to float round-off; :mod:`tinydiff.distributed`)::

    torchrun --standalone --nproc_per_node 4 scripts/train_mnist.py --config configs/mnist_ddpm.json --device cuda

Only rank 0 prints, saves the training state and writes the checkpoint.

OMP_WAIT_POLICY=PASSIVE keeps idle OpenMP threads from spinning, which matters on a
CPU shared with other work (measured here: 2 spinning threads were 2-3x slower
than 1 thread when the cores were busy; passive threads were not).
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import os
import time
from pathlib import Path

import torch

from tinydiff import distributed, schedules
from tinydiff.checkpoint import read_config, save_checkpoint
from tinydiff.data import load_mnist
from tinydiff.evaluation import machine
from tinydiff.flow import FlowMatching
from tinydiff.models import UNet
from tinydiff.pretrained import load_latent_codec
from tinydiff.train import train
from tinydiff.train_state import load_training_state, save_training_state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/mnist_ddpm.json")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--max-minutes", type=float, help="override train.max_minutes (0 = no time limit)")
    p.add_argument("--output", help="override output (path without suffix)")
    p.add_argument("--resume", help="a runs/*_state.safetensors written by this script")
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--channels-last", action="store_true",
                   help="keep the weights in channels-last memory order: the same math up to float rounding, "
                        "about 1.2x faster convolutions on a CPU (measured on 2 Xeon cores)")
    args = cli.parse_args(p, device="cuda" if torch.cuda.is_available() else "cpu", threads=True)

    world = distributed.setup(args.device)
    device = f"cuda:{world.local_rank}" if args.device == "cuda" and world.size > 1 else args.device
    log = print if world.is_main else (lambda *a, **k: None)
    cfg, tc, model_cfg = cli.load_config(args.config, steps=args.steps, max_minutes=args.max_minutes)
    if tc["batch_size"] % world.size:
        raise SystemExit(f"batch_size {tc['batch_size']} does not split evenly over {world.size} processes")
    output = Path(args.output or cfg["output"])
    state_path = Path("runs") / f"{output.name}_state"

    generator = cli.seeded(cfg["seed"])
    images, labels = load_mnist("train", pad_to_32=True)
    latent = None
    if "latent" in cfg:  # latent diffusion: encode the digits once, then train on the latents exactly as on pixels
        ae_path = Path(cfg["latent"]["autoencoder"])
        codec = load_latent_codec(ae_path, device=device)
        images = codec.encode_dataset(images)
        if model_cfg["in_channels"] != images.shape[1]:
            raise SystemExit(f"model.in_channels is {model_cfg['in_channels']} but the latents have {images.shape[1]} channels")
        latent = {"autoencoder": os.path.relpath(ae_path, output.parent),
                  "autoencoder_sha256": read_config(ae_path)["sha256"], "scale_factor": codec.scale_factor}
        log(f"training on latents {list(images.shape[1:])} of {ae_path} (scale factor {codec.scale_factor:.4f}; "
              f"std after scaling {float(images.std()):.3f})", flush=True)
    # "objective": "flow matching" in the config's train section trains a velocity model on the straight path
    # (tinydiff.flow, notebook 11): no noise schedule, and a flow sampler recorded for scripts/sample.py
    flow_matching = tc.get("objective") == "flow matching"
    schedule = None if flow_matching else schedules.get(cfg["schedule"]["name"], T=cfg["schedule"]["T"])
    resume, elapsed_before = None, 0.0
    if args.resume:
        resume = load_training_state(args.resume, device=device)
        model = resume.model
        elapsed_before = read_config(args.resume)["extra"]["wall_time_s"]
        log(f"resuming from step {resume.step} ({elapsed_before:.0f} s already trained)", flush=True)
    else:
        model = UNet(**model_cfg).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{n_params:,} parameters; {len(images)} training {'latents' if latent else 'images'}; {machine()}", flush=True)

    start = time.time()
    limit = tc["max_minutes"] * 60 if tc["max_minutes"] else float("inf")
    first_step = resume.step if resume else 0
    losses = []
    state = resume
    for state in train(
        model, schedule, images, labels=labels, steps=tc["steps"], batch_size=tc["batch_size"] // world.size,
        lr=tc["lr"],
        weight_decay=tc["weight_decay"], warmup_steps=tc["warmup_steps"], lr_schedule=tc.get("lr_schedule", "constant"),
        prediction="epsilon" if flow_matching else tc["prediction"], objective=FlowMatching() if flow_matching else None,
        ema_decay=tc["ema_decay"], grad_clip=tc["grad_clip"], p_uncond=tc["p_uncond"], generator=generator,
        autocast_bf16=device.startswith("cuda"), resume=resume, progress=False,
    ):
        losses.append(state.loss)
        elapsed = time.time() - start
        if state.step % 50 == 0:
            rate = (state.step - first_step) / elapsed
            log(f"step {state.step:6d}  loss {cli.mean_of_last(losses, 50):.4f}  grad_norm {state.grad_norm:.3f}  "
                  f"{rate:.2f} steps/s  {elapsed / 60:.1f} min", flush=True)
        if state.step % args.save_every == 0 and world.is_main:
            save_training_state(state_path, state, extra={"wall_time_s": elapsed_before + elapsed})
        if distributed.any_rank(elapsed > limit):  # every rank stops at the same step
            log(f"time budget of {tc['max_minutes']} min reached at step {state.step}", flush=True)
            break
    elapsed = time.time() - start
    if not world.is_main:
        distributed.teardown()
        return
    save_training_state(state_path, state, extra={"wall_time_s": elapsed_before + elapsed})

    extra = cli.training_facts(cfg, tc, step=state.step, steps_run=state.step - first_step,
                               wall_time_s=elapsed_before + elapsed, elapsed=elapsed, device=device,
                               processes=world.size, channels_last=args.channels_last, parameters=n_params,
                               losses=losses, data_shape=images.shape[1:])
    if latent is not None:
        extra["latent"] = latent
    if flow_matching:
        extra["sampler"] = tc.get("sampler", "flow-heun:10")
    path = save_checkpoint(output, state.ema if state.ema is not None else state.model, model_cfg, extra=extra)
    print(f"saved {path} after {state.step} steps, {extra['wall_time_s'] / 60:.1f} min, "
          f"{extra['steps_per_s']} steps/s", flush=True)
    distributed.teardown()


if __name__ == "__main__":
    main()
