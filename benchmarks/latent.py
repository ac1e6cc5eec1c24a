"""Latent vs pixel diffusion: what the autoencoder buys, measured on the two shipped MNIST models.

Run from the repository root on an otherwise idle machine (notebook 08 reads what it writes):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/latent.py

For the pixel model (``data/checkpoints/mnist_ddpm``) and the latent model
(``data/checkpoints/mnist_latent`` + its autoencoder) it reports:

- parameters of the diffusion network, and of the autoencoder's decoder (which sampling
  also runs) and encoder (which training ran once, to encode the data);
- the numbers per sample the diffusion model works on (1 x 32 x 32 = 1,024 vs 4 x 8 x 8 = 256);
- training speed: steps/s of :func:`tinydiff.train.train` at batch 64 on a copy of the
  shipped network (the data pre-encoded for the latent model, as its training script does),
  timed after a few warm-up steps;
- sampling speed: seconds to draw 64 digits with DDIM-50 at the model's recommended
  guidance scale, decoding included (best of ``--repeats``);
- FD (beside its floor) and requested-class accuracy on 1,000 samples at that scale, read
  from each checkpoint's ``extra.eval`` (written by ``scripts/eval_mnist.py``).

Writes ``benchmarks/results/latent.json`` (command, machine, load averages, SHA-256s, numbers).
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

from tinydiff.checkpoint import read_config
from tinydiff.data import load_mnist
from tinydiff.evaluation import balanced_labels, sample_digits
from tinydiff.pretrained import DiffusionModel, load_diffusion_model
from tinydiff.registry import SamplerSpec
from tinydiff.train import train

ROOT = Path(__file__).resolve().parents[1]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def training_speed(model: DiffusionModel, data: torch.Tensor, labels: torch.Tensor, warmup: int, steps: int) -> float:
    """Steps/s of tinydiff.train (batch 64, the shipped recipe's optimiser settings) on a copy of the network."""
    net = copy.deepcopy(model.net).train().requires_grad_(True)
    loop = train(net, model.schedule, data, labels=labels, steps=warmup + steps, batch_size=64, lr=1e-4,
                 prediction=model.prediction, ema_decay=0.999, p_uncond=0.1,
                 generator=torch.Generator().manual_seed(0), progress=False)
    start = None
    for state in loop:
        if state.step == warmup:
            start = time.perf_counter()
    return steps / (time.perf_counter() - start)


def sampling_seconds(model: DiffusionModel, scale: float, repeats: int) -> float:
    """Best wall time of ``repeats`` draws of 64 digits with DDIM-50 at guidance ``scale``, decode included."""
    labels = balanced_labels(64)
    spec = SamplerSpec.parse("ddim:50", model.schedule.T)
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        x = sample_digits(model, labels, sampler=spec, guidance=scale, seed=r, batch_size=64, progress=False)
        times.append(time.perf_counter() - start)
        assert x.shape == (64, 1, 32, 32)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pixel", default=str(ROOT / "data/checkpoints/mnist_ddpm"))
    p.add_argument("--latent", default=str(ROOT / "data/checkpoints/mnist_latent"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/latent.json"))
    args = cli.parse_args(p, threads=True)

    images, labels = load_mnist("train", pad_to_32=True)
    load_before = cli.load_average()
    rows = {}
    for name, path, warmup, steps in (("pixel", args.pixel, 5, 40), ("latent", args.latent, 20, 300)):
        model = load_diffusion_model(path, device=args.device)
        model.net = model.net.to(memory_format=torch.channels_last)
        data = model.codec.encode_dataset(images) if model.codec is not None else images
        scale = model.recommended_guidance or 1.0
        key = f"ddim-50 eta=0 s={scale:g}"
        evaluation = model.extra.get("eval", {}).get(key)
        if evaluation is None:
            raise SystemExit(f"{path} has no extra.eval[{key!r}]: run scripts/eval_mnist.py --checkpoint {path} "
                             f"--n 1000 --sampler ddim:50 --guidance {scale:g} first")
        row = {
            "checkpoint": os.path.relpath(path, ROOT),
            "sha256": read_config(path)["sha256"],
            "diffusion_parameters": count(model.net),
            "decoder_parameters": count(model.codec.autoencoder.decoder) if model.codec is not None else 0,
            "encoder_parameters": count(model.codec.autoencoder.encoder) if model.codec is not None else 0,
            "sample_shape": list(model.sample_shape),
            "numbers_per_sample": int(torch.tensor(model.sample_shape).prod()),
            "train_steps_per_s_batch64": round(training_speed(model, data, labels, warmup, steps), 2),
            "guidance": scale,
            "sample_64_ddim50_s": round(sampling_seconds(model, scale, args.repeats), 2),
            "fd": evaluation["fd"],
            "fd_floor": evaluation["fd_floor_train"],
            "label_accuracy": evaluation["label_accuracy"],
            "eval_n": evaluation["n_samples"],
        }
        rows[name] = row
        print(name, json.dumps(row), flush=True)

    pixel, latent = rows["pixel"], rows["latent"]
    result = {
        **cli.provenance(load_before),
        "rows": rows,
        "training_speedup": round(latent["train_steps_per_s_batch64"] / pixel["train_steps_per_s_batch64"], 2),
        "sampling_speedup": round(pixel["sample_64_ddim50_s"] / latent["sample_64_ddim50_s"], 2),
        "fd_ratio_latent_over_pixel": round(latent["fd"] / pixel["fd"], 3),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"training {result['training_speedup']}x, sampling {result['sampling_speedup']}x faster; "
          f"FD ratio {result['fd_ratio_latent_over_pixel']}; wrote {out}")


if __name__ == "__main__":
    main()
