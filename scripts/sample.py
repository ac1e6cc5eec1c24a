"""Draw digits (or any images) from a checkpoint, without a notebook.

    python scripts/sample.py --n 20 --out samples                      # two of each digit, the recommended scale
    python scripts/sample.py --digit 7 --n 16 --guidance 3 --sampler ddim:50 --out sevens
    python scripts/sample.py --sampler ddpm --seed 1 --out ddpm        # all 1000 steps (slow on a CPU)
    python scripts/sample.py --checkpoint data/checkpoints/mnist_latent --n 100 --out latent   # the latent model
    python scripts/sample.py --checkpoint data/checkpoints/mnist_latent_distilled --out fast  # 4 steps, distilled
    python scripts/sample.py --adapter runs/adapters/lora4 --adapter-scale 0.5 --digit 7 --out half  # notebook 12
    python scripts/sample.py --checkpoint data/checkpoints/mnist_text --prompt "a bold seven" --guidance 3  # nb 13
    python scripts/sample.py --checkpoint data/checkpoints/mnist_text --personalisation data/checkpoints/personalise/dreambooth_wideprior --prompt "a sks three"  # nb 16
    python scripts/sample.py --checkpoint runs/emoji/model --n 16 --out emoji   # a model scripts/train.py wrote
    python scripts/sample.py --checkpoint data/checkpoints/mnist_base8 --upscaler data/checkpoints/mnist_sr --level 100
    python scripts/sample.py --checkpoint data/checkpoints/mnist_sr --upscale small.png --n 8 --out big  # nb 15
    python scripts/sample.py --checkpoint data/checkpoints/spoken_digits_ddpm --n 10 --out spoken  # nb 17: + spoken.wav
    python scripts/sample.py --checkpoint data/checkpoints/moving_digits_ddpm --n 10 --out moving  # nb 17: + moving.gif

Writes ``<out>.png`` (a grid, one row per 10 images) and ``<out>.npz`` with arrays
``samples`` [N, C, H, W] (float32 in [-1, 1]; the PNG in colour for C = 3) and ``labels`` [N] (for a text model:
``prompts`` [N]; none for an unconditional model, whose images need no --digit).
By default image i is digit i % 10 and the guidance scale is the one the checkpoint's JSON recommends
(``extra.recommended_guidance``, measured by ``benchmarks/guidance.py``; 1 = none).
The same seed gives the same digits.

Sound and video (notebook 17), told apart by the checkpoint's JSON: a spoken-digit model (``extra.data.name`` =
``spoken_digits``) draws log-mel spectrograms [N, 1, 64, 96]; the PNG shows them with low frequencies at the bottom,
the npz adds ``waveforms`` [N, 6080] (float32, by Griffin-Lim from phases seeded by ``--seed``), and ``<out>.wav``
holds every clip in turn, 0.25 s of silence apart (16-bit mono at 8 kHz, each clip peak-normalised to 0.9; the
script prints which digit starts when). A video model (samples [N, T, C, H, W], e.g. ``moving_digits``: T = 12) keeps
its clips in ``samples``; the PNG has one row per clip, its T frames, and ``<out>.gif`` is the animation (all clips
side by side, 10 per row, 8 frames per second, looping).

A checkpoint whose JSON names its sampler
(``extra.sampler``: a distilled student's ``ddim:4:trailing``, a flow-matching model's ``flow-heun:10``)
is sampled with it unless ``--sampler`` says otherwise. A latent diffusion checkpoint (notebook 08) samples
latents and decodes them with the autoencoder its JSON names: the output is images all the same.

Super-resolution (notebook 15): ``--upscaler SR_CHECKPOINT`` makes a cascade -- the images of ``--checkpoint`` (e.g.
the 8 x 8 base model) are upscaled by the SR3 model, at augmentation level ``--level`` if it reads levels.
``--upscale IMAGE`` with an SR3 ``--checkpoint`` upscales one picture file ``--n`` times (different seeds, different
answers): it is read in grayscale or colour as the model wants and, if its size is not the model's input size,
resized to it with a box filter (the training downsample) first.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

from tinydiff import adapt, personalise, superres
from tinydiff.diffusion import FLOW_PREDICTION
from tinydiff.evaluation import balanced_labels, sample_digits
from tinydiff.plot import make_grid
from tinydiff.pretrained import load_diffusion_model
from tinydiff.registry import SamplerSpec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="data/checkpoints/mnist_ddpm", help="path without suffix")
    p.add_argument("--n", type=int, default=20, help="number of images")
    p.add_argument("--digit", type=int, help="ask for this digit only (default: balanced, image i is digit i %% 10)")
    p.add_argument("--prompt", help='for a text-conditioned checkpoint (mnist_text): the prompt, e.g. "a bold seven"')
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = none; default: the checkpoint's)")
    p.add_argument("--sampler", help="ddpm, ddim:<steps>[:<spacing>[:<eta>]], dpm:<steps>, flow-heun:<steps>, ... "
                   "(default: the checkpoint's own, extra.sampler, else ddim:50)")
    p.add_argument("--eta", type=float, help="DDIM's eta (0 = deterministic, 1 = DDPM-like)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--out", default="samples", help="output path without suffix: writes <out>.png and <out>.npz "
                   "(and <out>.wav for a spoken-digit model, <out>.gif for a video model)")
    p.add_argument("--adapter", help="an adapter written by scripts/adapt.py (LoRA or a new label) for --checkpoint")
    p.add_argument("--personalisation", help="a file of scripts/personalise.py (a learned word, DreamBooth, LoRA or a "
                   "hypernetwork) for the text-conditioned --checkpoint; its new word may then appear in --prompt")
    p.add_argument("--adapter-scale", type=float, default=1.0, help="0 = the base model, 1 = adapted (default)")
    p.add_argument("--fast", action="store_true", help="bfloat16 autocast + torch.compile: about 3.5x the images/s "
                   "for thousands of latent samples with --batch-size 512 (benchmarks/speed.py); compiling takes "
                   "20-30 s, and single pixels differ from float32")
    p.add_argument("--upscaler", help="an SR3 checkpoint (data/checkpoints/mnist_sr) that upscales what --checkpoint "
                   "draws: a cascade")
    p.add_argument("--upscale", help="a picture file to upscale with the SR3 --checkpoint, --n times")
    p.add_argument("--level", type=int, help="the augmentation level s of the conditioning image, for an SR3 model that "
                   "reads levels (default 0: clean)")
    return cli.parse_args(p, argv, device="cuda" if torch.cuda.is_available() else "cpu")


def superres_spec(model, path: str) -> tuple[int, int]:
    """(factor, input side) of an SR3 checkpoint, from its JSON; exits with a message if it is not one."""
    spec = model.extra.get("superres", {})
    if spec.get("stage") != "sr":
        sys.exit(f"{path} is not a super-resolution (SR3) checkpoint; those are written by scripts/train_superres.py "
                 "(e.g. data/checkpoints/mnist_sr)")
    return spec["factor"], model.extra["data_shape"][-1] // spec["factor"]


def level_of(model, level: int | None) -> int | None:
    """The augmentation level to sample an SR3 model at: --level (default 0) if it reads levels, else None."""
    if not model.net.noise_levels:
        if level:
            sys.exit("--level: this SR3 model was trained without noise-conditioning augmentation and reads no level")
        return None
    if level is not None and not 0 <= level < model.schedule.T:
        sys.exit(f"--level must lie in 0..{model.schedule.T - 1}, got {level}")
    return level or 0


def read_picture(path: str, channels: int, side: int) -> torch.Tensor:
    """A picture file as an image [1, C, side, side] in [-1, 1] (box-filter resized if it has another size)."""
    from PIL import Image

    try:
        picture = Image.open(path).convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError) as err:
        sys.exit(f"--upscale {path}: cannot read it as a picture ({err})")
    if picture.size != (side, side):
        print(f"--upscale: {path} is {picture.size[0]} x {picture.size[1]}; resized to the model's input size "
              f"{side} x {side} with a box filter", file=sys.stderr)
        picture = picture.resize((side, side), Image.BOX)
    x = torch.from_numpy(np.asarray(picture, dtype=np.float32).copy()) / 127.5 - 1
    return x.view(1, side, side, channels).permute(0, 3, 1, 2)


def output_kind(model) -> str:
    """What the samples of ``model`` are: "sound" (spectrograms of spoken digits, ``extra.data.name`` =
    ``spoken_digits``), "clips" (a video model: sample_shape (T, C, H, W)) or "images"."""
    if (model.extra.get("data") or {}).get("name") == "spoken_digits":
        return "sound"
    return "clips" if len(model.sample_shape) == 4 else "images"


def write_png(grid: np.ndarray, path: Path) -> None:
    """A grid in [0, 1] from :func:`make_grid` as a PNG: [H, W] in gray, [H, W, 3] in colour."""
    from matplotlib.image import imsave

    imsave(path, grid, vmin=0.0, vmax=1.0, **({"cmap": "gray"} if grid.ndim == 2 else {}))


def save(x: torch.Tensor, out: Path, arrays: dict) -> None:
    """``<out>.npz`` (samples [N, C, H, W] and the given arrays) and ``<out>.png`` (a grid, 10 per row)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out.with_name(out.name + ".npz"), samples=x.numpy().astype(np.float32), **arrays)
    write_png(make_grid(x, nrow=min(10, len(x))), out.with_name(out.name + ".png"))
    print(f"wrote {out}.png and {out}.npz", file=sys.stderr)


WAV_GAP_S = 0.25
"""Seconds of silence between two clips in ``<out>.wav``."""
WAV_PEAK = 0.9
"""Each clip's largest |sample| in ``<out>.wav`` (Griffin-Lim may overshoot 1; this keeps every clip unclipped)."""


def waveforms_of(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Spectrogram images [N, 1, 64, 96] -> waveforms [N, 6080] float32 at 8 kHz, by Griffin-Lim from random phases
    drawn by a CPU generator seeded with ``seed``; exits with a message if the images have another shape."""
    from tinydiff.data.audio import waveforms_from_images

    try:
        return waveforms_from_images(x.float(), generator=torch.Generator().manual_seed(seed)).float()
    except ValueError as err:
        sys.exit(f"a spoken-digit checkpoint (extra.data.name = spoken_digits) must draw spectrograms: {err}")


def write_wav(waveforms: np.ndarray, path: Path, sample_rate: int) -> list[float]:
    """Waveforms [N, S] -> one 16-bit mono WAV (:func:`tinydiff.data.audio.wav_bytes`: every clip peak-normalised to
    :data:`WAV_PEAK`, clips :data:`WAV_GAP_S` s of silence apart, N * S + (N - 1) * gap frames in all). Returns each
    clip's start in seconds."""
    from tinydiff.data.audio import wav_bytes

    path.write_bytes(wav_bytes(torch.from_numpy(waveforms), sample_rate, gap=WAV_GAP_S, peak=WAV_PEAK))
    gap = round(WAV_GAP_S * sample_rate)
    return [i * (waveforms.shape[1] + gap) / sample_rate for i in range(len(waveforms))]


def save_sound(x: torch.Tensor, out: Path, arrays: dict, seed: int, names: tuple[str, ...] | None) -> None:
    """Spectrograms x [N, 1, 64, 96]: ``<out>.npz`` (samples, ``waveforms`` [N, 6080] float32 and the given arrays),
    ``<out>.png`` (a grid, 10 per row, low frequencies at the bottom) and ``<out>.wav`` (:func:`write_wav`); prints
    where each clip starts and, for a class-conditional model, which digit it says (``names[label]``)."""
    from tinydiff.data.audio import SAMPLE_RATE

    waveforms = waveforms_of(x, seed).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out.with_name(out.name + ".npz"), samples=x.numpy().astype(np.float32), waveforms=waveforms, **arrays)
    write_png(make_grid(x.flip(-2), nrow=min(10, len(x))), out.with_name(out.name + ".png"))  # row 0 = lowest band
    starts = write_wav(waveforms, out.with_name(out.name + ".wav"), SAMPLE_RATE)
    labels = arrays.get("labels")
    print(f"wrote {out}.png, {out}.npz and {out}.wav ({len(starts)} clips):", file=sys.stderr)
    for i, start in enumerate(starts):
        what = "" if labels is None else f": {names[labels[i]] if names and labels[i] < len(names) else labels[i]}"
        print(f"  {start:6.2f} s  clip {i}{what}", file=sys.stderr)


def clip_frames(x: torch.Tensor) -> list[np.ndarray]:
    """Clips [N, T, C, H, W] in [-1, 1] -> T grids uint8 ([H', W'] for C = 1, [H', W', 3] for C = 3): grid k shows
    every clip's k-th frame, 10 clips per row."""
    grids = [make_grid(x[:, k], nrow=min(10, len(x))) for k in range(x.shape[1])]
    return [np.round(g * 255).astype(np.uint8) for g in grids]


def write_gif(frames: list[np.ndarray], path: Path, duration_ms: int = 125) -> None:
    """Grids uint8 [H, W] or [H, W, 3] -> an animated GIF, ``duration_ms`` per frame (125: 8 frames per second;
    the file stores hundredths of a second, so 120 ms), looping. Pillow merges consecutive identical frames into one
    longer frame."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def save_clips(x: torch.Tensor, out: Path, arrays: dict) -> None:
    """Clips x [N, T, C, H, W]: ``<out>.npz`` (samples [N, T, C, H, W] and the given arrays), ``<out>.png`` (one row
    per clip, its T frames left to right) and ``<out>.gif`` (:func:`clip_frames`, 8 frames per second)."""
    if x.ndim != 5:
        sys.exit(f"a video model's samples must be clips [N, T, C, H, W], got {list(x.shape)}")
    n, frames = x.shape[:2]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out.with_name(out.name + ".npz"), samples=x.numpy().astype(np.float32), **arrays)
    write_png(make_grid(x.reshape(n * frames, *x.shape[2:]), nrow=frames), out.with_name(out.name + ".png"))
    write_gif(clip_frames(x), out.with_name(out.name + ".gif"))
    print(f"wrote {out}.png, {out}.npz and {out}.gif ({n} clips of {frames} frames)", file=sys.stderr)


def upscale_file(args: argparse.Namespace, model) -> None:
    """--upscale: one picture, --n upscalings by the SR3 --checkpoint."""
    factor, side = superres_spec(model, args.checkpoint)
    low = read_picture(args.upscale, model.net.in_channels, side)
    level = level_of(model, args.level)
    steps = int(args.sampler.split(":")[1]) if args.sampler and args.sampler.startswith("ddim:") else 50
    x = superres.upscale(model.net, model.schedule, low.expand(args.n, -1, -1, -1), factor, level=level, steps=steps,
                         seed=args.seed, prediction=model.prediction).cpu().clamp(-1, 1)
    print(f"{args.n} upscalings of {args.upscale} ({side} -> {side * factor} px, DDIM-{steps}, level {level})",
          file=sys.stderr)
    save(x, Path(args.out), {"input": low.numpy()})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.n < 1:
        sys.exit(f"--n must be at least 1, got {args.n}")
    model = load_diffusion_model(args.checkpoint, device=args.device)
    if args.upscale:
        return upscale_file(args, model)
    if "superres" in model.extra and model.extra["superres"].get("stage") == "sr":
        sys.exit(f"{args.checkpoint} is an SR3 model: give it a picture, --upscale small.png, or use it as "
                 "--upscaler of a base model")
    upscaler = load_diffusion_model(args.upscaler, device=args.device) if args.upscaler else None
    if upscaler is not None:
        factor, side = superres_spec(upscaler, args.upscaler)
        level = level_of(upscaler, args.level)
        if model.sample_shape[-1] != side:
            sys.exit(f"--upscaler {args.upscaler} upscales {side} x {side} images, but {args.checkpoint} draws "
                     f"{model.sample_shape[-1]} x {model.sample_shape[-1]} ones")
    elif args.level is not None:
        sys.exit("--level goes with --upscaler or --upscale")
    kind = output_kind(model)
    if upscaler is not None and kind != "images":
        sys.exit(f"--upscaler upscales images; {args.checkpoint} draws {'spectrograms' if kind == 'sound' else kind}")
    # channels-last: the same samples up to float rounding (5e-5), 1.2-1.3x faster convolutions (benchmarks/speed.py)
    model.net = model.net.to(memory_format=torch.channels_last)
    tokenizer = model.tokenizer
    if args.personalisation:
        if tokenizer is None:
            sys.exit(f"--personalisation needs a text-conditioned --checkpoint (data/checkpoints/mnist_text), "
                     f"not {args.checkpoint}")
        try:
            tokenizer = personalise.load_personalisation(args.personalisation, model.net, tokenizer, args.checkpoint)
        except (ValueError, FileNotFoundError) as err:
            sys.exit(f"--personalisation: {err}")
    if tokenizer is not None:  # a text-conditioned model: the prompt replaces --digit
        if args.prompt is None or args.digit is not None or args.adapter:
            sys.exit(f'{args.checkpoint} reads prompts: give --prompt "a bold seven" (not --digit or --adapter)')
        try:
            labels = tokenizer.encode([args.prompt] * args.n)
        except ValueError as err:
            sys.exit(f"--prompt: {err}")
        classes = None
    elif args.prompt is not None:
        sys.exit(f"{args.checkpoint} is not text-conditioned: use --digit (or the text model data/checkpoints/mnist_text)")
    else:
        classes = getattr(model.net, "num_classes", None)
    if tokenizer is None and not classes and (args.digit is not None or args.adapter):
        sys.exit(f"{args.checkpoint} is not class-conditional: it takes neither --digit nor --adapter")
    if args.adapter:
        try:
            adapt.load_adapter(args.adapter, model.net, args.checkpoint, scale=args.adapter_scale)
        except (ValueError, FileNotFoundError) as err:
            sys.exit(f"--adapter: {err}")
    added = getattr(model.net, "extra_labels", 0)  # labels an adapter added, after the null label
    if classes and args.digit is not None and not (0 <= args.digit < classes or classes < args.digit <= classes + added):
        more = f" or an added label {classes + 1}..{classes + added}" if added else ""
        sys.exit(f"--digit must be one of 0..{classes - 1}{more}, got {args.digit}")
    try:
        sampler = SamplerSpec.parse(args.sampler or model.sampler or "ddim:50", model.schedule.T if model.schedule else 1000)
        if args.eta is not None:
            sampler = sampler.with_eta(args.eta)
    except ValueError as err:
        sys.exit(f"--sampler/--eta: {err}")
    if (model.prediction == FLOW_PREDICTION) != sampler.kind.startswith("flow-"):
        sys.exit(f"--sampler {sampler.name} does not fit {args.checkpoint}: a flow-matching model samples with "
                 "flow-euler:<steps> or flow-heun:<steps>, a diffusion model with ddpm, ddim:<steps>, dpm:<steps>, ...")
    scale = args.guidance if args.guidance is not None else (model.recommended_guidance or 1.0)
    if scale < 0:
        sys.exit(f"--guidance must be >= 0 (1 = no guidance), got {scale}")
    if classes:
        labels = torch.full((args.n,), args.digit) if args.digit is not None else balanced_labels(args.n, classes)

    what = (f"images of {args.prompt!r}" if tokenizer else "spoken digits" if kind == "sound" else kind
            if kind == "clips" else "images" if "classes" in model.extra else "digits")
    print(f"{args.n} {what} from {args.checkpoint} with {sampler.name}, guidance scale {scale:g}, seed {args.seed}",
          file=sys.stderr)
    precision = contextlib.nullcontext()
    if args.fast:
        model.net = torch.compile(model.net)
        precision = torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
    with precision:
        if tokenizer is None and not classes:  # unconditional: the sampler alone, seeded per batch as sample_digits is
            x = torch.cat([model.to_images(sampler(
                model.net, model.schedule, (min(args.batch_size, args.n - start), *model.sample_shape),
                generator=torch.Generator().manual_seed(args.seed * 1_000_003 + start), prediction=model.prediction,
                clip_x0=model.clip_x0, progress=False)).cpu() for start in range(0, args.n, args.batch_size)])
        else:
            x = sample_digits(model, labels, sampler=sampler, guidance=scale, seed=args.seed, batch_size=args.batch_size)
    x = x.float().clamp(-1, 1)  # float32 also after --fast (the decoder may end in bfloat16)
    arrays = {}
    if upscaler is not None:  # the cascade's second stage: every image upscaled, seeded per batch
        arrays["low"] = x.numpy()
        x = torch.cat([superres.upscale(upscaler.net, upscaler.schedule, x[i : i + args.batch_size], factor,
                                        level=level, seed=args.seed * 1_000_003 + i, prediction=upscaler.prediction
                                        ).cpu() for i in range(0, len(x), args.batch_size)]).clamp(-1, 1)
        print(f"upscaled by {args.upscaler} ({side} -> {side * factor} px, level {level})", file=sys.stderr)
    if tokenizer is not None:
        arrays["prompts"] = np.array([args.prompt] * args.n)
    elif classes:
        arrays["labels"] = labels.numpy()
    if kind == "sound":
        save_sound(x, Path(args.out), arrays, args.seed, model.classes)
    elif kind == "clips":
        save_clips(x, Path(args.out), arrays)
    else:
        save(x, Path(args.out), arrays)


if __name__ == "__main__":
    main()
