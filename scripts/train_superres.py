"""Train the three networks of super-resolution and cascades (Part 13, notebook 15): a low-resolution base model,
an SR3 super-resolution model, and the L2 regression it is compared with.

    OMP_WAIT_POLICY=PASSIVE python scripts/train_superres.py --config configs/superres/mnist_base8.json
    OMP_WAIT_POLICY=PASSIVE python scripts/train_superres.py --config configs/superres/mnist_sr.json
    OMP_WAIT_POLICY=PASSIVE python scripts/train_superres.py --config configs/superres/mnist_sr_noaug.json
    OMP_WAIT_POLICY=PASSIVE python scripts/train_superres.py --config configs/superres/mnist_regression.json

The config's ``superres`` section says what is trained, on which data:

* ``"stage": "base"`` -- a class-conditional DDPM on the training images shrunk by ``factor``
  (:func:`tinydiff.superres.downsample`): the first stage of a cascade (Ho et al. 2022), a
  :class:`~tinydiff.models.UNet` trained with L_simple and label dropout exactly as ``scripts/train.py`` does;
* ``"stage": "sr"`` -- SR3 (Saharia et al. 2021): a :class:`~tinydiff.models.SuperResUNet` trained with
  :class:`tinydiff.superres.SuperResolution` (the objective shrinks each training image by ``factor`` and
  upsamples it again to make the conditioning image), with noise-conditioning augmentation up to level
  ``max_level`` (null: none);
* ``"stage": "regression"`` -- the same UNet trained with an L2 loss to map the upsampled image to the original
  (:class:`tinydiff.superres.Regression`).

``data`` is ``"mnist"`` (the 4,000 training digits padded to 32 x 32) or ``"emoji"`` (the 1,289 training emoji at
64 x 64, mirrored at random). The checkpoint (EMA weights; ``--output``, default ``runs/<config name>/model``)
records the run, the schedule and the ``superres`` section in its JSON; a grid of results on fixed held-out
images goes to the run folder every ``--sample-every`` steps.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tinydiff import schedules, superres
from tinydiff.checkpoint import save_checkpoint
from tinydiff.data import flipped_batches, load_emoji, load_mnist
from tinydiff.evaluation import machine
from tinydiff.guidance import guided_digits
from tinydiff.models import SuperResUNet, UNet
from tinydiff.plot import make_grid
from tinydiff.registry import SamplerSpec
from tinydiff.train import train

STAGES = ("base", "sr", "regression")
GRID = 8  # held-out images in a progress grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a configs/superres/*.json (model, schedule, train, superres, seed)")
    p.add_argument("--output", help="checkpoint path without suffix (default: runs/<config name>/model)")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--sample-every", type=int, default=1000, help="steps between progress grids")
    p.add_argument("--channels-last", action="store_true", help="channels-last weights (faster CPU convolutions)")
    return cli.parse_args(p, argv)


def load(data: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """High-resolution images in [-1, 1] and their labels: digits [N, 1, 32, 32] or emoji [N, 3, 64, 64]."""
    if data == "mnist":
        return load_mnist(split, pad_to_32=True)
    if data == "emoji":
        images = load_emoji("train" if split == "train" else "test", 64)
        return images.images, images.labels
    raise ValueError(f"superres.data must be 'mnist' or 'emoji', got {data!r}")


def build(stage: str, model_cfg: dict, channels: int, classes: int) -> torch.nn.Module:
    """The network of ``stage``: a class-conditional UNet, a SuperResUNet, or a plain UNet."""
    if stage == "base":
        return UNet(**{**model_cfg, "in_channels": channels, "num_classes": classes})
    if stage == "sr":
        return SuperResUNet(**{**model_cfg, "in_channels": channels})
    return UNet(**{**model_cfg, "in_channels": channels, "num_classes": None})


@torch.no_grad()
def progress_grid(stage: str, net, schedule, spec: dict, held_out: torch.Tensor, prediction: str) -> torch.Tensor:
    """What the network makes of fixed inputs, as rows of a grid: base -- one sample per class; sr and regression
    -- the held-out originals, their upsampled low-resolution versions, and the network's answers."""
    factor = spec["factor"]
    was_training = net.training
    net.eval()
    if stage == "base":
        shape = tuple(downsampled_shape(held_out, factor))
        x = guided_digits(net, schedule, torch.arange(net.num_classes), 1.0, seed=0, prediction=prediction,
                          shape=shape, sampler=SamplerSpec.parse("ddim:50", schedule.T))
        rows = [x]
    else:
        low = superres.downsample(held_out, factor)
        if stage == "sr":
            level = 0 if net.noise_levels else None
            out = superres.upscale(net, schedule, low, factor, level=level, prediction=prediction)
        else:
            out = superres.regress(net, low, factor)
        rows = [held_out, superres.upsample(low, factor), out.clamp(-1, 1)]
    net.train(was_training)
    return torch.cat(rows).float().cpu()


def downsampled_shape(images: torch.Tensor, factor: int) -> list[int]:
    return [images.shape[1], images.shape[2] // factor, images.shape[3] // factor]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg, tc, model_cfg = cli.load_config(args.config, steps=args.steps)
    spec = cfg.get("superres")
    if not isinstance(spec, dict) or spec.get("stage") not in STAGES or "factor" not in spec:
        sys.exit(f"--config {args.config} needs a superres section with stage ({', '.join(STAGES)}), factor and data")
    stage, factor = spec["stage"], spec["factor"]
    name = Path(args.config).stem
    output = Path(args.output) if args.output else Path("runs") / name / "model"
    run = output.parent
    run.mkdir(parents=True, exist_ok=True)

    images, labels = load(spec.get("data", "mnist"), "train")
    held_out = load(spec.get("data", "mnist"), "test")[0][:GRID]
    classes = int(labels.max()) + 1
    if stage == "base":
        images = superres.downsample(images, factor)
    generator = cli.seeded(cfg["seed"])
    model = build(stage, model_cfg, images.shape[1], classes).to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    prediction = tc.get("prediction", "epsilon")
    schedule = schedules.get(cfg["schedule"]["name"], T=cfg["schedule"]["T"]) if stage != "regression" else None
    if stage == "sr":
        objective = superres.SuperResolution(schedule, factor, prediction, max_level=spec.get("max_level"))
    elif stage == "regression":
        objective = superres.Regression(factor)
    else:
        objective = None
    tqdm.write(f"{stage}: {n_params:,} parameters; {len(images)} training images {list(images.shape[1:])}"
               f"{f', factor {factor}' if stage != 'base' else f' ({classes} classes)'}; {machine()}")

    flip = spec.get("flip", False)
    data = flipped_batches(images, labels if stage == "base" else None) if flip else images
    use_labels = stage == "base" and not flip
    losses: list[float] = []
    start = time.time()
    state = None
    for state in train(
        model, schedule if stage == "base" else None, data, labels=labels if use_labels else None,
        steps=tc["steps"], batch_size=tc["batch_size"], lr=tc["lr"], weight_decay=tc["weight_decay"],
        warmup_steps=tc["warmup_steps"], lr_schedule=tc.get("lr_schedule", "constant"),
        prediction=prediction if stage == "base" else "epsilon", objective=objective, ema_decay=tc["ema_decay"],
        grad_clip=tc["grad_clip"], p_uncond=tc.get("p_uncond", 0.0) if stage == "base" else 0.0, generator=generator,
    ):
        losses.append(float(state.loss))
        if state.step % args.sample_every == 0 or state.step == tc["steps"]:
            net = state.ema if state.ema is not None else state.model
            grid = progress_grid(stage, net, schedule, spec, held_out, prediction)
            path = run / f"samples_{state.step:06d}.png"
            from matplotlib.image import imsave

            pictures = make_grid(grid, nrow=GRID if stage != "base" else classes)
            imsave(path, pictures, vmin=0.0, vmax=1.0, **({"cmap": "gray"} if pictures.ndim == 2 else {}))
            tqdm.write(f"step {state.step}: loss {cli.mean_of_last(losses, 50):.4f}; wrote {path}")
    elapsed = time.time() - start
    extra = cli.training_facts(cfg, tc, step=state.step, steps_run=state.step, wall_time_s=elapsed, elapsed=elapsed,
                               device=args.device, processes=1, channels_last=args.channels_last, parameters=n_params,
                               losses=losses, data_shape=images.shape[1:])
    extra["superres"] = spec
    if stage == "base":
        extra["classes"] = [str(c) for c in range(classes)]
    net = state.ema if state.ema is not None else state.model
    path = save_checkpoint(output, net, net.config, extra=extra)
    print(f"Done: {state.step} steps in {elapsed / 60:.1f} min ({extra['steps_per_s']} steps/s); checkpoint {path}.",
          flush=True)


if __name__ == "__main__":
    main()
