"""Train a diffusion model on any data set: a shipped one by name, or a folder of your own pictures.

    OMP_WAIT_POLICY=PASSIVE python scripts/train.py --data emoji                        # configs/emoji_ddpm.json
    OMP_WAIT_POLICY=PASSIVE python scripts/train.py --images my_pictures --size 32 --flip --name mine
    OMP_WAIT_POLICY=PASSIVE python scripts/train.py --data mnist --config configs/mnist_ddpm.json
    python scripts/train.py --images my_pictures --name mine --resume runs/mine/state.safetensors

Data: ``--data emoji`` (the shipped 32 x 32 colour emoji, 8 classes; ``--size 64`` for the 64 x 64 set) or
``--data mnist`` (the 4,000 shipped training digits padded to 32 x 32), or ``--images DIR``: every PNG/JPEG
under DIR (:func:`tinydiff.data.load_folder`), centre-cropped and resized to ``--size``, ``--channels`` 3
(RGB) or 1 (grayscale). If every image lies in a sub-folder and there are at least two, the sub-folder names
are the classes (torchvision's ``ImageFolder`` convention) and the model is class-conditional (trained with
label dropout ``p_uncond`` for classifier-free guidance); otherwise, or with ``--unconditional``, it is not.
``--flip`` mirrors each training image left-right with probability 1/2, drawn afresh for every batch.
``--limit N`` trains on N of the images only: a random subset drawn with ``--limit-seed`` (the images of the
subset keep their order), whose indices into the full set go into the checkpoint's JSON -- the small training
sets of a memorisation experiment (``benchmarks/memorisation.py``).

The UNet is the config's ``model`` section with ``in_channels`` and ``num_classes`` set from the data;
schedule, optimiser, EMA and seed come from the config as in ``scripts/train_mnist.py`` (which stays the
script of the shipped MNIST models). Everything goes to the run folder ``runs/<name>/`` (``--name``,
default: the data set's or folder's name):

* ``samples_<step>.png`` every ``--sample-every`` steps: the same seeded samples each time, drawn by the EMA
  net with ``--grid-sampler`` (DDIM-50), one column per class when conditional, in colour for 3 channels;
* ``loss.png``: the training loss per step and its running mean, rewritten with each grid (a resumed run's
  too: the losses travel in the training state's JSON);
* ``state.safetensors`` every ``--save-every`` steps: the full training state, which ``--resume`` continues;
* ``model.safetensors`` + ``model.json`` at the end (or ``--output``): the EMA weights, with the schedule,
  the data's shape and class names and the run's facts in the JSON, which ``scripts/sample.py`` samples;
* ``model_<step>.safetensors`` + ``.json`` at each step of ``--snapshot-at``: the EMA weights then, the same
  checkpoint as a run stopped there would have written -- with a constant learning rate (a config whose
  ``lr_schedule`` is ``"constant"``) one run gives the models of several training lengths.

On several GPUs, launch the same command with torchrun (the config's ``batch_size`` is the global batch,
split over the processes; :mod:`tinydiff.distributed`); only rank 0 prints, draws grids and saves::

    torchrun --standalone --nproc_per_node 4 scripts/train.py --data emoji --device cuda
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import inspect
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tinydiff import distributed, schedules
from tinydiff.checkpoint import read_config, save_checkpoint
from tinydiff.data import ImageSet, flipped_batches, load_emoji, load_folder, load_mnist
from tinydiff.data.folder import check_batch_size, check_size, image_files
from tinydiff.evaluation import balanced_labels, machine
from tinydiff.diffusion import FLOW_PREDICTION
from tinydiff.flow import FlowMatching
from tinydiff.guidance import guided_digits
from tinydiff.models import UNet
from tinydiff.plot import make_grid
from tinydiff.registry import SamplerSpec
from tinydiff.train import train
from tinydiff.train_state import load_training_state, save_training_state

GRID_IMAGES = 16  # about this many samples per grid (rounded up to a whole number per class)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", choices=("emoji", "mnist"), help="a data set shipped in data/ (default: emoji)")
    data.add_argument("--images", help="a folder of PNG/JPEG pictures (class sub-folders make it conditional)")
    p.add_argument("--size", type=int, help="side of the square images (default 32); a multiple of the UNet's "
                   "2^(len(mults) - 1)")
    p.add_argument("--channels", type=int, default=3, choices=(1, 3), help="--images: 3 = RGB, 1 = grayscale")
    p.add_argument("--unconditional", action="store_true", help="ignore class sub-folders / labels")
    p.add_argument("--flip", action="store_true", help="mirror training images left-right at random")
    p.add_argument("--limit", type=int, help="train on a random subset of this many images (default: all)")
    p.add_argument("--limit-seed", type=int, default=0, help="seed of the --limit subset (default 0)")
    p.add_argument("--config", help="model/schedule/train JSON (default: configs/emoji_ddpm.json, or "
                   "configs/mnist_ddpm.json for --data mnist)")
    p.add_argument("--name", help="run folder runs/<name>/ (default: the data set's or the folder's name)")
    p.add_argument("--runs", default="runs", help="where run folders go")
    p.add_argument("--output", help="checkpoint path without suffix (default: runs/<name>/model)")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--max-minutes", type=float, help="override train.max_minutes (0 = no time limit)")
    p.add_argument("--batch-size", type=int, help="override train.batch_size (the global batch)")
    p.add_argument("--resume", help="a runs/<name>/state.safetensors written by this script")
    p.add_argument("--save-every", type=int, default=500, help="steps between training-state saves")
    p.add_argument("--sample-every", type=int, default=500, help="steps between sample grids and loss curves")
    p.add_argument("--snapshot-at", type=int, nargs="+", default=[], metavar="STEP",
                   help="also save the EMA weights at these steps, as <output>_<step>.safetensors/.json")
    p.add_argument("--grid-sampler", default=None, help="sampler of the grids (default ddim:50; flow-heun:10 for "
                   "a flow-matching config)")
    p.add_argument("--channels-last", action="store_true", help="channels-last weights (faster CPU convolutions)")
    return cli.parse_args(p, argv, device="cuda" if torch.cuda.is_available() else "cpu", threads=True)


def load_data(args: argparse.Namespace, multiple: int, batch_size: int) -> tuple[ImageSet, dict]:
    """The training set named by the arguments and a description of it for the checkpoint's JSON."""
    size = args.size or 32
    if args.images:
        root = Path(args.images)
        files = image_files(root)  # raises FileNotFoundError / NotADirectoryError with the path
        labelled = not args.unconditional and bool(files) and all(f.parent != root for f in files) and \
            len({f.relative_to(root).parts[0] for f in files}) >= 2
        data = load_folder(root, size, channels=args.channels, labels=labelled, multiple=multiple,
                           batch_size=batch_size)
        return data, {"images": str(root), "size": size, "channels": args.channels}
    check_size(size, multiple)
    if args.data == "mnist":
        if size != 32:
            raise ValueError(f"--data mnist comes at size 32 only, got --size {size}")
        images, labels = load_mnist("train", pad_to_32=True)
        data = ImageSet(images, labels, tuple(map(str, range(10))), ())
    else:
        if size not in (32, 64):
            raise ValueError(f"--data emoji comes at size 32 or 64, got --size {size}")
        data = load_emoji("train", size)
    check_batch_size(len(data.images), batch_size, f"--data {args.data}")
    return data, {"data": args.data, "size": size}


def subset(data: ImageSet, limit: int, seed: int) -> tuple[ImageSet, list[int]]:
    """``limit`` of the images of ``data``, drawn at random without replacement with ``seed`` (in their order in
    ``data``), and their indices into it."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= len(data.images):
        raise ValueError(f"--limit must be a number of images from 1 to the {len(data.images)} of the data set, "
                         f"got {limit!r}")
    index = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    labels = data.labels[index] if data.labels is not None else None
    names = tuple(data.names[i] for i in index.tolist()) if data.names else data.names
    return ImageSet(data.images[index], labels, data.classes, names), index.tolist()


def draw_grid(net, schedule, prediction: str, shape: tuple[int, ...], labels: torch.Tensor | None, n: int,
              sampler: SamplerSpec, seed: int = 0) -> torch.Tensor:
    """Seeded samples [n, *shape] of ``net`` on the CPU: one per label (conditional, guidance scale 1), or n."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        if labels is not None:
            x = guided_digits(net, schedule, labels, 1.0, seed=seed, prediction=prediction, shape=shape,
                              sampler=sampler)
        else:
            device = next(net.parameters()).device
            x = sampler(net, schedule, (n, *shape), generator=torch.Generator().manual_seed(seed),
                        prediction=prediction, clip_x0=1.0, progress=False).to(device)
    net.train(was_training)
    return x.float().cpu()


def save_image(path: Path, grid: np.ndarray) -> None:
    """A grid from :func:`tinydiff.plot.make_grid` as a PNG: RGB for [H, W, 3], grayscale for [H, W]."""
    from matplotlib.image import imsave

    imsave(path, grid, vmin=0.0, vmax=1.0, **({"cmap": "gray"} if grid.ndim == 2 else {}))


def save_loss_curve(path: Path, losses: list[float], first_step: int) -> None:
    """Each step's loss (faint) and its running mean over 50 steps, on a log scale."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    steps = np.arange(first_step + 1, first_step + len(losses) + 1)
    values = np.asarray(losses)
    k = min(50, len(values))
    mean = np.convolve(values, np.ones(k) / k, mode="valid")
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.plot(steps, values, lw=0.5, alpha=0.3, label="loss per step")
    ax.plot(steps[k - 1:], mean, lw=1.5, label=f"mean of the last {k}")
    ax.set(xlabel="step", ylabel="loss", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.images and not args.data:
        args.data = "emoji"
    for flag in ("save_every", "sample_every"):
        if getattr(args, flag) < 1:
            sys.exit(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    world = distributed.setup(args.device)
    device = f"cuda:{world.local_rank}" if args.device == "cuda" and world.size > 1 else args.device
    log = tqdm.write if world.is_main else (lambda *a, **k: None)
    config = args.config or ("configs/mnist_ddpm.json" if args.data == "mnist" else "configs/emoji_ddpm.json")
    cfg, tc, model_cfg = cli.load_config(config, steps=args.steps, max_minutes=args.max_minutes,
                                         batch_size=args.batch_size)
    if tc["batch_size"] % world.size:
        sys.exit(f"batch_size {tc['batch_size']} does not split evenly over {world.size} processes")
    if "latent" in cfg:
        sys.exit(f"--config {config} trains a latent model; use scripts/train_mnist.py for that")
    name = args.name or (Path(args.images).resolve().name if args.images else args.data)
    run = Path(args.runs) / name
    output = Path(args.output) if args.output else run / "model"
    state_path = run / "state"

    subset_index = None
    multiple = 2 ** (len(model_cfg.get("mults", inspect.signature(UNet).parameters["mults"].default)) - 1)  # UNet.size_multiple
    try:
        data, source = load_data(args, multiple, tc["batch_size"])
        if args.limit is not None:
            data, subset_index = subset(data, args.limit, args.limit_seed)
            check_batch_size(len(data.images), tc["batch_size"], f"--limit {args.limit}")
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        sys.exit(f"{'--images' if args.images else '--data'}: {err}")
    bad = [s for s in args.snapshot_at if not 1 <= s <= tc["steps"]]
    if bad:
        sys.exit(f"--snapshot-at: steps must lie from 1 to the run's {tc['steps']} steps, got {bad}")
    images, labels, classes = data.images, data.labels, data.classes
    if args.unconditional:
        labels, classes = None, ()
    model_cfg = {**model_cfg, "in_channels": images.shape[1], "num_classes": len(classes) if labels is not None else None}

    flow_matching = tc.get("objective") == "flow matching"
    prediction = FLOW_PREDICTION if flow_matching else tc["prediction"]
    schedule = None if flow_matching else schedules.get(cfg["schedule"]["name"], T=cfg["schedule"]["T"])
    try:
        grid_sampler = SamplerSpec.parse(args.grid_sampler or ("flow-heun:10" if flow_matching else "ddim:50"),
                                         schedule.T if schedule else 1000)
    except ValueError as err:
        sys.exit(f"--grid-sampler: {err}")
    generator = cli.seeded(cfg["seed"])
    resume, elapsed_before, earlier_losses = None, 0.0, []
    if args.resume:
        resume = load_training_state(args.resume, device=device)
        model = resume.model
        if any(model.config.get(k) != v for k, v in model_cfg.items()):
            sys.exit(f"--resume {args.resume} holds a UNet {model.config}, but this data and config make "
                     f"{model_cfg}; resume with the same data, --size and --config")
        saved = read_config(args.resume)["extra"]
        elapsed_before, earlier_losses = saved["wall_time_s"], saved.get("losses", [])
    else:
        model = UNet(**model_cfg).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    kind = f"{len(classes)} classes" if labels is not None else "unconditional"
    log(f"{n_params:,} parameters; {len(images)} training images {list(images.shape[1:])}, {kind}"
        f"{', flipped at random' if args.flip else ''}; {machine()}")
    if resume is not None:
        log(f"resuming from step {resume.step} ({elapsed_before:.0f} s already trained)")
    grid_labels = None
    if labels is not None:
        grid_labels = balanced_labels(len(classes) * math.ceil(GRID_IMAGES / len(classes)), len(classes))
    nrow = len(classes) if labels is not None else 8
    if world.is_main:
        run.mkdir(parents=True, exist_ok=True)

    source_data = flipped_batches(images, labels) if args.flip else images
    start = time.time()
    limit = tc["max_minutes"] * 60 if tc["max_minutes"] else float("inf")
    first_step = resume.step if resume else 0
    losses: list[float] = list(earlier_losses)  # the whole run's, so the loss curve starts at step 1 after --resume

    def facts(elapsed: float) -> dict:  # what the training state's JSON keeps for a resumed run
        return {"wall_time_s": elapsed_before + elapsed, "losses": [float(f"{v:.5g}") for v in losses]}

    def checkpoint_facts(state, elapsed: float) -> dict:  # what a checkpoint's JSON records of the run
        extra = cli.training_facts(cfg, tc, step=state.step, steps_run=state.step - first_step,
                                   wall_time_s=elapsed_before + elapsed, elapsed=elapsed, device=device,
                                   processes=world.size, channels_last=args.channels_last, parameters=n_params,
                                   losses=losses, data_shape=images.shape[1:])
        extra["source"] = {**source, "flip": args.flip, "n_images": len(images)}
        if subset_index is not None:
            extra["source"].update(limit=args.limit, limit_seed=args.limit_seed, indices=subset_index)
        extra["classes"] = list(classes)
        if flow_matching:
            extra["sampler"] = tc.get("sampler", "flow-heun:10")
        return extra

    grids: list[Path] = []
    state = resume
    for state in train(
        model, schedule, source_data, labels=None if args.flip else labels, steps=tc["steps"],
        batch_size=tc["batch_size"] // world.size, lr=tc["lr"], weight_decay=tc["weight_decay"],
        warmup_steps=tc["warmup_steps"], lr_schedule=tc.get("lr_schedule", "constant"),
        prediction="epsilon" if flow_matching else tc["prediction"], objective=FlowMatching() if flow_matching else None,
        ema_decay=tc["ema_decay"], grad_clip=tc["grad_clip"], p_uncond=tc["p_uncond"] if labels is not None else 0.0,
        generator=generator, autocast_bf16=device.startswith("cuda"), resume=resume, progress=world.is_main,
    ):
        losses.append(float(state.loss))
        elapsed = time.time() - start
        if world.is_main and state.step in args.snapshot_at:
            snapshot = output.with_name(f"{output.name}_{state.step}")
            save_checkpoint(snapshot, state.ema if state.ema is not None else state.model, model_cfg,
                            extra=checkpoint_facts(state, elapsed))
            log(f"step {state.step}: wrote the snapshot {snapshot}.safetensors")
        if world.is_main and state.step % args.save_every == 0:
            save_training_state(state_path, state, extra=facts(elapsed))
        if world.is_main and (state.step % args.sample_every == 0 or state.step == tc["steps"]):
            net = state.ema if state.ema is not None else state.model
            x = draw_grid(net, schedule, prediction, tuple(images.shape[1:]), grid_labels, GRID_IMAGES, grid_sampler)
            grids.append(run / f"samples_{state.step:06d}.png")
            save_image(grids[-1], make_grid(x, nrow=nrow))
            save_loss_curve(run / "loss.png", losses, state.step - len(losses))
            log(f"step {state.step}: loss {cli.mean_of_last(losses, 50):.4f}; wrote {grids[-1]} and {run / 'loss.png'}")
        if distributed.any_rank(elapsed > limit):  # every rank stops at the same step
            log(f"time budget of {tc['max_minutes']} min reached at step {state.step}")
            break
    elapsed = time.time() - start
    if not world.is_main:
        distributed.teardown()
        return
    if state is None:
        sys.exit(f"nothing to train: the run is already at step {tc['steps']}; raise --steps")
    save_training_state(state_path, state, extra=facts(elapsed))
    save_loss_curve(run / "loss.png", losses, state.step - len(losses))

    extra = checkpoint_facts(state, elapsed)
    path = save_checkpoint(output, state.ema if state.ema is not None else state.model, model_cfg, extra=extra)
    print(f"Done: {state.step} steps in {extra['wall_time_s'] / 60:.1f} min ({extra['steps_per_s']} steps/s). "
          f"Checkpoint {path} (EMA weights; sample it with: python scripts/sample.py --checkpoint {output}); "
          f"training state {state_path}.safetensors (continue with --resume); "
          f"{len(grids)} sample grids {run}/samples_*.png" + (f" (last {grids[-1].name})" if grids else "")
          + f"; loss curve {run / 'loss.png'}.", flush=True)
    distributed.teardown()


if __name__ == "__main__":
    main()
