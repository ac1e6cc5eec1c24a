"""Adapt the shipped MNIST model to a new style from a handful of examples, one method at a time (notebook 12).

    OMP_WAIT_POLICY=PASSIVE python scripts/adapt.py --method lora --rank 4 --out runs/adapters/lora4
    OMP_WAIT_POLICY=PASSIVE python scripts/adapt.py --method full --out runs/adapters/full

The style: thick strokes (:func:`tinydiff.data.styles.thicken`, dilation by one pixel), on one digit
(``--digit``, default 7): ``--n-train`` thickened training digits of that class are the whole target set (a
few-shot setting, as DreamBooth's). Every method starts from the same base checkpoint and trains ``--steps`` steps of
:func:`tinydiff.train.train` -- the course's one training loop, unchanged -- with the same seed and batch:

- ``full``: every parameter;
- ``partial``: the attention block and the last (highest-resolution) up-blocks with the output layers;
- ``lora``: LoRA (Hu et al. 2021; :mod:`tinydiff.adapt`) of rank ``--rank`` on the attention projections and the
  convolutions of the middle and up paths, the base frozen;
- ``label``: one new label learned with the whole network frozen (the idea of textual inversion, Gal et al.
  2022); the target images carry the new label instead of their digit's;
- ``replay``: full fine-tuning with *replay* of the
  base model's own samples of the *other* classes (``--n-prior``, drawn once before training), against forgetting.
  The data is a pool of the target set repeated ``n_prior // n_train`` times and the replayed samples (with the
  defaults 160 + 180 images), from which :func:`tinydiff.train.train` draws each batch with replacement: the
  loss has the form of DreamBooth's prior-preservation loss (Ruiz et al. 2023, eq. 2) with lambda = 180 / 160 in
  expectation, but DreamBooth binds a subject to a new identifier and replays samples of the subject's *own*
  class, to keep the class word's meaning; here the digits keep their labels and the replay protects the rest
  (generative replay, Shin et al. 2017). DreamBooth itself is notebook 16 (:mod:`tinydiff.personalise`).

Writes the adapted weights' difference as an adapter file (``<out>.safetensors`` + ``<out>.json``; for ``full``,
``partial`` and ``replay`` the changed tensors themselves), with what the method cost in its JSON's ``extra``
(trainable parameters, steps/s, wall time); ``benchmarks/adaptation.py`` runs every method and measures what
each one did.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from tinydiff import adapt
from tinydiff.checkpoint import read_config
from tinydiff.data import load_mnist
from tinydiff.data.styles import thicken
from tinydiff.guidance import guided_digits
from tinydiff.pretrained import load_diffusion_model
from tinydiff.train import train


def target_set(digit: int, n: int) -> torch.Tensor:
    """The first ``n`` training digits of class ``digit``, thickened: the few examples of the new style."""
    images, labels = load_mnist("train", pad_to_32=True)
    return thicken(images[labels == digit][:n])


def heldout_style_set(digit: int, n: int = 400) -> torch.Tensor:
    """Test digits of class ``digit``, thickened the same way: what the adapted model is measured against."""
    images, labels = load_mnist("test", pad_to_32=True)
    return thicken(images[labels == digit][:n])


def prior_samples(model, digit: int, n: int, guidance: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The base model's own samples of the classes other than ``digit`` (``replay`` replays them): DDIM-25
    (trailing) from the noise of ``seed``, images [n, 1, 32, 32] on the CPU and their labels [n]."""
    others = torch.tensor([c for c in range(model.net.num_classes) if c != digit])
    labels = others[torch.arange(n) % len(others)]
    x = guided_digits(model.net.eval(), model.schedule, labels, guidance, steps=25, spacing="trailing", seed=seed,
                      prediction=model.prediction, clip_x0=model.clip_x0, shape=model.sample_shape)
    return x.clamp(-1, 1).cpu(), labels


def save_result(out: Path, method: str, net, base_net, base_checkpoint: str, extra: dict) -> Path:
    """The adapter: LoRA factors / the new label (tinydiff.adapt), or the tensors a fine-tuning changed."""
    if method in ("lora", "label"):
        return adapt.save_adapter(out, net, base_checkpoint, extra=extra)
    base = base_net.state_dict()
    changed = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items() if not torch.equal(v, base[k])}
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = out.with_name(out.name + ".safetensors")
    save_file(changed, str(weights))
    header = {"format": "tinydiff-finetune", "version": 1, "base_sha256": read_config(base_checkpoint)["sha256"],
              "changed_tensors": len(changed), "extra": extra}
    out.with_name(out.name + ".json").write_text(json.dumps(header, indent=2) + "\n")
    return weights


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="data/checkpoints/mnist_ddpm")
    p.add_argument("--method", choices=adapt.METHODS, required=True)
    p.add_argument("--rank", type=int, default=4, help="LoRA rank")
    p.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank, so alpha / r = 1)")
    p.add_argument("--digit", type=int, default=7)
    p.add_argument("--n-train", type=int, default=32)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, help="default: 5e-5 for full / partial / replay, 1e-3 for lora, 1e-2 for label")
    p.add_argument("--n-prior", type=int, default=180, help="replay: base samples of the other classes, replayed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="path without suffix for the adapter files")
    args = cli.parse_args(p, argv)

    model = load_diffusion_model(args.checkpoint, device=args.device)
    if model.codec is not None or model.schedule is None:
        raise SystemExit(f"{args.checkpoint} is a latent or flow-matching model; scripts/adapt.py adapts a pixel "
                         "diffusion model such as data/checkpoints/mnist_ddpm")
    base_net = model.net.eval()
    net = copy.deepcopy(base_net)
    if not 0 <= args.digit < net.num_classes:
        raise SystemExit(f"--digit must be one of 0..{net.num_classes - 1}, got {args.digit}")
    lr = args.lr or {"lora": 1e-3, "label": 1e-2}.get(args.method, 5e-5)
    images = target_set(args.digit, args.n_train)
    generator = cli.seeded(args.seed)
    label = adapt.prepare(net, args.method, args.rank, args.alpha)
    labels = torch.full((len(images),), label if label is not None else args.digit)
    data, data_labels = images, labels
    if args.method == "replay":  # replay: a pool of the target set (repeated) and the base model's samples
        prior, prior_labels = prior_samples(model, args.digit, args.n_prior, model.recommended_guidance or 1.0,
                                            args.seed + 1)
        repeat = max(1, len(prior) // len(images))
        data = torch.cat([images.repeat(repeat, 1, 1, 1), prior])
        data_labels = torch.cat([labels.repeat(repeat), prior_labels])
    trainable = adapt.trainable_parameters(net)
    total = sum(p.numel() for p in base_net.parameters())
    start, losses = time.time(), []
    for state in train(net.train(), model.schedule, data, labels=data_labels, steps=args.steps,
                       batch_size=args.batch_size, lr=lr, prediction=model.prediction, weight_decay=0.0,
                       generator=generator, progress=False):
        losses.append(state.loss)
    wall = time.time() - start
    extra = {**cli.provenance(), "method": args.method, "rank": args.rank if args.method == "lora" else None,
             "alpha": (args.alpha or args.rank) if args.method == "lora" else None, "digit": args.digit,
             "label": int(labels[0]), "n_train": len(images), "steps": args.steps, "batch_size": args.batch_size,
             "lr": lr, "seed": args.seed, "trainable_parameters": trainable, "total_parameters": total,
             "wall_time_s": round(wall, 1), "steps_per_s": round(args.steps / wall, 3),
             "final_loss_mean_last_50": round(cli.mean_of_last(losses, 50), 5)}
    weights = save_result(Path(args.out), args.method, net.eval(), base_net, args.checkpoint, extra)
    print(json.dumps({**extra, "file_bytes": weights.stat().st_size}, indent=2))


if __name__ == "__main__":
    main()
