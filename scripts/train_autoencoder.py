"""Train the autoencoder of the latent diffusion model (notebook 08) and measure what it keeps.

    OMP_WAIT_POLICY=PASSIVE python scripts/train_autoencoder.py --config configs/mnist_autoencoder.json

Trains :class:`tinydiff.models.Autoencoder` with :func:`tinydiff.train.train_autoencoder`
(L1 reconstruction + a small KL penalty) on the 4,000 shipped training digits padded to
32 x 32, then measures, on the 1,000 test digits:

- the reconstruction error (mean absolute and mean squared error per pixel, in [-1, 1] units);
- the shipped classifier's accuracy on the reconstructions beside its accuracy on the originals;
- FD(reconstructed training digits, test digits) beside the floor FD(training digits, test digits);
- the latents' standard deviation and the scale factor 1 / std that latent diffusion multiplies by
  (over the posterior means of all training digits), and the mean posterior std.

Writes ``<output>.safetensors`` + ``<output>.json``; the numbers, the command and the
machine go in the JSON's ``extra`` (``extra.scale_factor`` is what
:func:`tinydiff.pretrained.load_latent_codec` reads).
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import time
from pathlib import Path

import torch

from tinydiff.checkpoint import save_checkpoint
from tinydiff.data import load_mnist
from tinydiff.evaluation import machine
from tinydiff.latent import latent_scale_factor
from tinydiff.metrics import label_accuracy
from tinydiff.models import Autoencoder
from tinydiff.train import train_autoencoder


@torch.no_grad()
def reconstruct(model: Autoencoder, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """D(mean(q(z | x))) for images [N, 1, 32, 32] (on any device), clamped to [-1, 1], on the CPU."""
    device = next(model.parameters()).device
    return torch.cat([model.decode(model.encode(x[i : i + batch_size].to(device))[0]).cpu()
                      for i in range(0, len(x), batch_size)]).clamp(-1, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/mnist_autoencoder.json")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--output", help="override output (path without suffix)")
    p.add_argument("--classifier", default="data/checkpoints/mnist_classifier")
    args = cli.parse_args(p)

    cfg, tc, model_cfg = cli.load_config(args.config, steps=args.steps)
    generator = cli.seeded(cfg["seed"])
    x_train, y_train = load_mnist("train", pad_to_32=True)
    x_test, y_test = load_mnist("test", pad_to_32=True)
    model = Autoencoder(**model_cfg).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params:,} parameters; latent {model.latent_shape}; {machine()}", flush=True)

    start = time.time()
    l1s: list[float] = []
    kls: list[float] = []
    curve: list[list[float]] = []  # [step, mean L1 per pixel, mean KL per image] over each 100 steps
    for state in train_autoencoder(model, x_train, steps=tc["steps"], batch_size=tc["batch_size"], lr=tc["lr"],
                                   warmup_steps=tc["warmup_steps"], lr_schedule=tc["lr_schedule"],
                                   kl_weight=tc["kl_weight"], grad_clip=tc["grad_clip"], generator=generator,
                                   progress=False):
        l1s.append(state.reconstruction)
        kls.append(state.kl)
        if state.step % 100 == 0:
            l1, kl = cli.mean_of_last(l1s, 100), cli.mean_of_last(kls, 100)
            curve.append([state.step, round(l1, 5), round(kl, 2)])
            print(f"step {state.step:5d}  L1/pixel {l1:.4f}  KL/image {kl:.1f}  "
                  f"{state.step / (time.time() - start):.2f} steps/s", flush=True)
    wall = time.time() - start
    model.eval()

    with torch.no_grad():
        means, logvars = zip(*(model.encode(x_train[i : i + 500].to(args.device)) for i in range(0, len(x_train), 500)))
    means, logvars = torch.cat(means).cpu(), torch.cat(logvars).cpu()
    factor = latent_scale_factor(means)
    rec_test = reconstruct(model, x_test)
    judge = cli.load_judge(args.classifier, device=args.device)
    clf = judge.classifier
    fd_rec = judge.report(reconstruct(model, x_train[:1000]), y_train[:1000])["fd"]
    fd_floor = judge.report(x_train[:1000], y_train[:1000])["fd"]
    extra = {
        **cli.provenance(),
        "seed": cfg["seed"],
        "steps": tc["steps"],
        "batch_size": tc["batch_size"],
        "train": tc,
        "wall_time_s": round(wall, 1),
        "steps_per_s": round(tc["steps"] / wall, 3),
        "parameters": n_params,
        "latent_shape": list(model.latent_shape),
        "scale_factor": round(factor, 6),
        "latent_std": round(1.0 / factor, 5),
        "latent_mean": round(float(means.mean()), 5),
        "posterior_std_mean": round(float(torch.exp(0.5 * logvars).mean()), 5),
        "test_l1_per_pixel": round(float((rec_test - x_test).abs().mean()), 5),
        "test_mse_per_pixel": round(float((rec_test - x_test).pow(2).mean()), 5),
        "classifier_accuracy_test": round(label_accuracy(clf, x_test, y_test), 4),
        "classifier_accuracy_test_reconstructions": round(label_accuracy(clf, rec_test, y_test), 4),
        "fd_reconstructions_train1000_vs_test": round(fd_rec, 4),
        "fd_floor_train1000_vs_test": round(fd_floor, 4),
        "data": "data/mnist.npz: 4,000 train / 1,000 test digits, padded to 32 x 32",
        "curve": curve,
    }
    path = save_checkpoint(Path(args.output or cfg["output"]), model, model_cfg, extra=extra)
    print(json.dumps({k: v for k, v in extra.items() if k not in ("train", "command", "curve")}, indent=1))
    print(f"saved {path} after {tc['steps']} steps, {wall / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
