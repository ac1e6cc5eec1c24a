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
recorded for ``scripts/sample.py``). Rerun with ``--stop-at N --max-minutes 0`` (no time limit) to reproduce
a run that the time limit stopped at step N: the learning-rate schedule still spans ``steps``. Every ``--save-every`` steps the full training state goes to
``runs/<name>_state.safetensors``; ``--resume`` continues from it.

On several GPUs (or processes), launch the same command with torchrun; the config's
``batch_size`` stays the *global* batch, split evenly over the processes, so the run is the
single-process run (to float round-off; :mod:`tinydiff.distributed`)::

    torchrun --standalone --nproc_per_node 4 scripts/train_mnist.py --config configs/mnist_ddpm.json --device cuda

Only rank 0 prints, saves the training state and writes the checkpoint.

The same script trains the sound and video models of notebook 17: a config's ``"data"`` section names other data,
and nothing else changes -- the schedule, the loss, the loop and the EMA are the MNIST model's::

    python scripts/train_mnist.py --config configs/spoken_digits.json   # UNet on log-mel images [1, 64, 96]
    python scripts/train_mnist.py --config configs/moving_frames.json   # UNet on single frames of moving digits
    python scripts/train_mnist.py --config configs/moving_digits.json   # VideoUNet on clips [12, 1, 32, 32]

``{"name": "spoken_digits"}``: the 2,000 training clips of ``data/spoken_digits.npz`` as spectrogram images
(:func:`tinydiff.data.audio.spectrogram_images`), labels their digits. ``{"name": "moving_digits", "frames": 12}``:
fresh one-digit clips at every step (:func:`tinydiff.data.moving.clip_stream`, from the 4,000 training digits), the
label the digit; ``"moving_frames"``: single frames of such clips, for the per-frame image model. A model section
named ``"VideoUNet"`` builds :class:`tinydiff.models.VideoUNet`; with ``"init": <image checkpoint>`` (or ``--init``) its
spatial layers start from that image model (:meth:`~tinydiff.models.VideoUNet.from_image_model`); ``--init`` with a
checkpoint of the config's own model continues from its weights (a second stage: new optimiser, new schedule). The checkpoint's JSON
records the data section under ``extra.data`` (what ``scripts/sample.py`` reads to write a WAV or a GIF).

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
from tinydiff.checkpoint import build_model, load_checkpoint, load_state_strict, read_config, save_checkpoint
from tinydiff.data import load_mnist
from tinydiff.data.audio import load_spoken_digits, spectrogram_images
from tinydiff.data.moving import clip_stream
from tinydiff.evaluation import machine
from tinydiff.flow import FlowMatching
from tinydiff.models import VideoUNet
from tinydiff.pretrained import load_latent_codec
from tinydiff.train import train
from tinydiff.train_state import load_training_state, save_training_state


def load_data(spec: dict):
    """The config's ``data`` section -> (x_0 [N, *shape] or a stream ``data(batch_size, generator)``, labels [N] or
    None (a stream returns its own), the shape of one example)."""
    name = spec.get("name", "mnist")
    if name == "mnist":
        images, labels = load_mnist("train", pad_to_32=True)
    elif name == "spoken_digits":
        waveforms, labels = load_spoken_digits("train")
        images = spectrogram_images(waveforms)
    elif name in ("moving_digits", "moving_frames"):
        digits, digit_labels = load_mnist("train", pad_to_32=False)
        frames = spec.get("frames", 12) if name == "moving_digits" else None
        stream = clip_stream(digits, digit_labels, frames=frames)
        return stream, None, tuple(stream(1, generator=torch.Generator())[0].shape[1:])
    else:
        raise SystemExit(f"unknown data {name!r} in the config: mnist, spoken_digits, moving_digits or moving_frames")
    return images, labels, tuple(images.shape[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/mnist_ddpm.json")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--max-minutes", type=float, help="override train.max_minutes (0 = no time limit)")
    p.add_argument("--stop-at", type=int, help="stop after this step; the learning-rate schedule still spans steps")
    p.add_argument("--init", help="start from this checkpoint's weights (override the config's init)")
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
    images, labels, data_shape = load_data(cfg.get("data", {"name": "mnist"}))
    latent = None
    if "latent" in cfg:  # latent diffusion: encode the digits once, then train on the latents exactly as on pixels
        ae_path = Path(cfg["latent"]["autoencoder"])
        codec = load_latent_codec(ae_path, device=device)
        images = codec.encode_dataset(images)
        if model_cfg["in_channels"] != images.shape[1]:
            raise SystemExit(f"model.in_channels is {model_cfg['in_channels']} but the latents have {images.shape[1]} channels")
        latent = {"autoencoder": os.path.relpath(ae_path, output.parent),
                  "autoencoder_sha256": read_config(ae_path)["sha256"], "scale_factor": codec.scale_factor}
        data_shape = tuple(images.shape[1:])
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
        model = build_model(cfg["model"].get("name", "UNet"), model_cfg)
        if args.init or "init" in cfg:
            cfg["init"] = args.init or cfg["init"]
            start_from = load_checkpoint(cfg["init"])
            if isinstance(model, VideoUNet) and not isinstance(start_from, VideoUNet):
                # a video model whose spatial layers start as a trained image model's
                video = VideoUNet.from_image_model(start_from, model.config["temporal_kernel"])
                if video.config != model.config:
                    raise SystemExit(f"--config {args.config}: its model {model.config} is not the image model "
                                     f"{cfg['init']} made spatio-temporal ({video.config})")
                model = video
                log(f"spatial layers from {cfg['init']}; temporal layers start at zero", flush=True)
            else:  # the same model, trained on
                load_state_strict(model, start_from.state_dict(), f"--init checkpoint {cfg['init']}")
                log(f"starting from the weights of {cfg['init']}", flush=True)
        model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    size = f"{len(images)} training {'latents' if latent else 'images'}" if torch.is_tensor(images) else "fresh clips"
    log(f"{n_params:,} parameters; {size} {list(data_shape)}; {machine()}", flush=True)

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
        if args.stop_at is not None and state.step >= args.stop_at:
            log(f"stopped at step {state.step} (--stop-at)", flush=True)
            break
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
                               losses=losses, data_shape=data_shape)
    if latent is not None:
        extra["latent"] = latent
    if "data" in cfg:
        extra["data"] = cfg["data"]
    if "init" in cfg:
        extra["init"] = {"checkpoint": cfg["init"], "sha256": read_config(cfg["init"])["sha256"],
                         "steps": read_config(cfg["init"])["extra"].get("steps")}
    if flow_matching:
        extra["sampler"] = tc.get("sampler", "flow-heun:10")
    path = save_checkpoint(output, state.ema if state.ema is not None else state.model, model_cfg, extra=extra)
    print(f"saved {path} after {state.step} steps, {extra['wall_time_s'] / 60:.1f} min, "
          f"{extra['steps_per_s']} steps/s", flush=True)
    distributed.teardown()


if __name__ == "__main__":
    main()
