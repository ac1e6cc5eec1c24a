"""Train the text-conditioned latent UNet of notebook 13 and ship it.

    OMP_WAIT_POLICY=PASSIVE python scripts/train_text_unet.py

Starts from the shipped class-conditional latent model (Part 6) as its *unconditional* self
(:func:`tinydiff.models.text_unet.text_unet_from`: label embedding removed, zero-initialised cross-attention
blocks added), reads prompts with the shipped tiny CLIP's frozen text encoder (``scripts/train_clip.py``), and
trains with the unchanged :func:`tinydiff.train.train` on the latents of the captioned digits of
:func:`tinydiff.data.captions.captioned_digits` (bold sevens held out), replacing 10 % of the prompts by the
empty prompt for classifier-free guidance. Writes ``data/checkpoints/mnist_text.safetensors`` + ``.json``: the
schedule, prediction, autoencoder, tokenizer and the SHA-256 of the CLIP and of the starting model in ``extra``.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import os
import time
from pathlib import Path

from tinydiff.checkpoint import load_checkpoint, read_config, save_checkpoint
from tinydiff.data import captions as C
from tinydiff.evaluation import machine
from tinydiff.models.text_unet import text_unet_from
from tinydiff.pretrained import load_diffusion_model
from tinydiff.train import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="data/checkpoints/mnist_latent", help="the class-conditional latent model to start from")
    p.add_argument("--clip", default="data/checkpoints/mnist_clip")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--p-uncond", type=float, default=0.1)
    p.add_argument("--copies", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="data/checkpoints/mnist_text")
    args = cli.parse_args(p)

    generator = cli.seeded(args.seed)
    base = load_diffusion_model(args.base, device=args.device)
    clip = load_checkpoint(args.clip, device=args.device)
    tokenizer = C.tokenizer()
    if read_config(args.clip)["extra"].get("tokenizer") != tokenizer.config:
        raise SystemExit(f"{args.clip} was trained with another vocabulary; retrain it with scripts/train_clip.py")
    model = text_unet_from(base.net, clip.text)
    data = C.captioned_digits("train", copies=args.copies, seed=args.seed)
    latents = base.codec.encode_dataset(data.images)
    ids = tokenizer.encode(data.captions)
    trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
    print(f"{trainable:,} trainable parameters (+ {sum(q.numel() for q in model.text_encoder.parameters()):,} frozen in "
          f"the text encoder); {len(ids):,} captioned latents {list(latents.shape[1:])}; {machine()}", flush=True)
    tc = dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=200, weight_decay=0.0,
              ema_decay=0.999, grad_clip=1.0, p_uncond=args.p_uncond, prediction=base.prediction, lr_schedule="cosine")
    start, losses, state = time.time(), [], None
    for state in train(model, base.schedule, latents, labels=ids, generator=generator, progress=False, **tc):
        losses.append(state.loss)
        if state.step % 100 == 0:
            print(f"step {state.step:5d}  loss {cli.mean_of_last(losses, 100):.4f}  {time.time() - start:.0f} s", flush=True)
    wall = time.time() - start
    output = Path(args.output)
    base_header, clip_header = read_config(args.base), read_config(args.clip)
    extra = {
        **cli.provenance(), "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size,
        "wall_time_s": round(wall, 1), "steps_per_s": round(args.steps / wall, 3),
        "parameters": sum(q.numel() for q in model.parameters()), "parameters_trainable": trainable,
        "final_loss_mean_last_200": round(cli.mean_of_last(losses, 200), 5), "weights": "EMA",
        "schedule": base.extra["schedule"], "train": tc, "data_shape": list(latents.shape[1:]),
        "latent": {**base.extra["latent"], "autoencoder": os.path.relpath(Path(args.base).parent / base.extra["latent"]["autoencoder"], output.parent)},
        "tokenizer": tokenizer.config, "clip": {"checkpoint": os.path.relpath(args.clip, output.parent), "sha256": clip_header["sha256"]},
        "init": {"checkpoint": os.path.relpath(args.base, output.parent), "sha256": base_header["sha256"]},
        "training_pairs": len(ids), "held_out": "bold sevens (no training image)",
    }
    path = save_checkpoint(output, state.ema, extra=extra)
    print(f"saved {path} after {args.steps} steps, {wall / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
