"""Adapting the MNIST model to thick strokes with each method of notebook 12, measured side by side.

Run from the repository root on an otherwise idle machine (notebook 12 reads what it writes):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/adaptation.py

For each method (``scripts/adapt.py``: full and partial fine-tuning, LoRA of rank 1 / 4 / 16, a new label,
full fine-tuning with replay of the base model's samples of the other digits -- ``replay``), on the same base,
target set, budget of steps and seed, it reports:

- **cost**: trainable parameters (count and % of the model), steps/s, wall time, the size of what must be saved;
- **fidelity to the new style**: the ink of ``--n-style`` samples of the adapted digit (the style measure,
  :func:`tinydiff.data.styles.ink`) beside the target set's and the base model's, and their FD to the held-out
  thick test digits of that class beside its floor (the target set itself against the same held-out set);
- **forgetting**: FD to the test digits of the *other* nine classes and the requested-class accuracy of
  ``--n-forget`` samples of them (the base model's numbers beside them: what "no forgetting" looks like).

Samples: DDIM-25 (``trailing``), classifier-free guidance at the base model's recommended scale, the same seeds
for every method. Writes ``benchmarks/results/adaptation.json`` and the adapters to ``runs/adapters/``.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import copy
import importlib.util
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tinydiff import adapt
from tinydiff.checkpoint import load_checkpoint, read_config
from tinydiff.data import load_mnist
from tinydiff.data.styles import ink
from tinydiff.guidance import guided_digits
from tinydiff.metrics import classifier_features, frechet_distance, label_accuracy
from tinydiff.pretrained import load_diffusion_model

ROOT = Path(__file__).resolve().parents[1]
RUNS = [("full", {}), ("partial", {}), ("lora", {"rank": 1}), ("lora", {"rank": 4}), ("lora", {"rank": 16}),
        ("label", {}), ("replay", {})]


def load_adapt_script():
    spec = importlib.util.spec_from_file_location("adapt_script", ROOT / "scripts" / "adapt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def draw(net, model, labels: torch.Tensor, guidance: float, seed: int, batch: int = 100) -> torch.Tensor:
    """Digits for ``labels`` with DDIM-25 trailing and classifier-free guidance, batch b from the seed
    ``seed + b * batch``."""
    return torch.cat([guided_digits(net, model.schedule, labels[start : start + batch], guidance, steps=25,
                                    spacing="trailing", seed=seed + start, prediction=model.prediction,
                                    clip_x0=model.clip_x0, shape=model.sample_shape).clamp(-1, 1).cpu()
                      for start in range(0, len(labels), batch)])


def adapted_network(method: str, base_net, out: Path, checkpoint: str):
    """The base network with a method's result applied: an adapter file, or the changed tensors of a fine-tuning."""
    net = copy.deepcopy(base_net)
    if method in ("lora", "label"):
        return adapt.load_adapter(out, net, checkpoint).eval()
    state = net.state_dict()
    state.update(load_file(str(out.with_name(out.name + ".safetensors"))))
    net.load_state_dict(state)
    return net.eval()


def measure(net, model, label: int, args, clf, f_style, f_others, others) -> dict:
    guidance = model.recommended_guidance or 1.0
    style = draw(net, model, torch.full((args.n_style,), label), guidance, seed=10_000)
    forget_labels = others[torch.arange(args.n_forget) % len(others)]
    forget = draw(net, model, forget_labels, guidance, seed=20_000)
    return {"ink": round(float(ink(style).mean()), 4),
            "fd_style": round(frechet_distance(classifier_features(clf, style), f_style), 4),
            "fd_others": round(frechet_distance(classifier_features(clf, forget), f_others), 4),
            "accuracy_others": round(label_accuracy(clf, forget, forget_labels), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="data/checkpoints/mnist_ddpm")
    p.add_argument("--classifier", default="data/checkpoints/mnist_classifier")
    p.add_argument("--digit", type=int, default=7)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--n-style", type=int, default=200)
    p.add_argument("--n-forget", type=int, default=450)
    p.add_argument("--out", default="benchmarks/results/adaptation.json")
    p.add_argument("--runs", nargs="*", help="instead of every method: runs named method[:rank][:lr], e.g. lora:4:3e-4 "
                   "full::1e-4 (a learning-rate sweep; write it to another --out)")
    args = cli.parse_args(p)
    script = load_adapt_script()
    model = load_diffusion_model(args.checkpoint, device=args.device)
    base_net = model.net.eval()
    clf = load_checkpoint(args.classifier, device=args.device)
    target = script.target_set(args.digit, 32)
    heldout = script.heldout_style_set(args.digit)
    x_test, y_test = load_mnist("test", pad_to_32=True)
    others = torch.tensor([c for c in range(base_net.num_classes) if c != args.digit])
    keep = (y_test != args.digit)
    f_style, f_others = classifier_features(clf, heldout), classifier_features(clf, x_test[keep])
    load_before = cli.load_average()
    result = {"checkpoint": args.checkpoint,
              "checkpoint_sha256": read_config(args.checkpoint)["sha256"], "digit": args.digit, "steps": args.steps,
              "sampler": "DDIM-25 trailing", "guidance": model.recommended_guidance, "n_style": args.n_style,
              "n_forget": args.n_forget,
              "target": {"ink": round(float(ink(target).mean()), 4), "n": len(target),
                         "fd_style_floor": round(frechet_distance(classifier_features(clf, target), f_style), 4)},
              "heldout_ink": round(float(ink(heldout).mean()), 4), "rows": []}
    start = time.time()
    result["base"] = measure(base_net, model, args.digit, args, clf, f_style, f_others, others)
    result["base"]["sampling_s"] = round(time.time() - start, 1)
    print(json.dumps({"base": result["base"], "target": result["target"]}), flush=True)
    base_bytes = (Path(args.checkpoint + ".safetensors")).stat().st_size
    runs = RUNS
    if args.runs:
        runs = []
        for spec in args.runs:
            method, rank, lr = (spec.split(":") + ["", ""])[:3]
            runs.append((method, {**({"rank": int(rank)} if rank else {}), **({"lr": float(lr)} if lr else {})}))
    for method, options in runs:
        name = method + (f"-r{options['rank']}" if "rank" in options else "") + (f"-lr{options['lr']:g}" if "lr" in options else "")
        out = ROOT / "runs" / "adapters" / name
        argv = ["--checkpoint", args.checkpoint, "--method", method, "--digit", str(args.digit),
                "--steps", str(args.steps), "--out", str(out), "--device", args.device]
        if "rank" in options:
            argv += ["--rank", str(options["rank"])]
        if "lr" in options:
            argv += ["--lr", str(options["lr"])]
        script.main(argv)
        header = json.loads(out.with_name(out.name + ".json").read_text())
        extra = header["extra"]
        net = adapted_network(method, base_net, out, args.checkpoint)
        row = {"method": name, "trainable_parameters": extra["trainable_parameters"],
               "trainable_percent": round(100 * extra["trainable_parameters"] / extra["total_parameters"], 3),
               "steps_per_s": extra["steps_per_s"], "wall_time_s": extra["wall_time_s"], "lr": extra["lr"],
               "file_bytes": out.with_name(out.name + ".safetensors").stat().st_size,
               "file_percent_of_base": round(100 * out.with_name(out.name + ".safetensors").stat().st_size / base_bytes, 3),
               **measure(net, model, extra["label"], args, clf, f_style, f_others, others)}
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
    result = {**cli.provenance(load_before), **result}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
