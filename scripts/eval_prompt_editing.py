"""Measure editing by prompt on real test digits: SDEdit against inversion and prompt-to-prompt, at equal strength.

    OMP_WAIT_POLICY=PASSIVE python scripts/eval_prompt_editing.py

Takes the thin and the bold digits among the styled test digits (:func:`tinydiff.data.captions.captioned_digits`,
``seed=1``), captions each as what it is ("a thin four"), and edits the caption to the other thickness ("a bold four");
each of :data:`tinydiff.prompt_editing.EDITORS` then redraws the digit from level t0 = strength x 999 at each
guidance scale with DDIM-25 (prompt-to-prompt injecting the source's maps for the first half of the steps). Every
result is keyed ``editor@strength@guidance``. Measured on the result: the thickness asked for (the caption attributes' own measure, against the
digit's reference ink: ``attribute_as_asked`` the thickness class reached, ``attribute_moved`` a class or more towards
it, and the median ratio of ink after to ink before for each direction), the class kept (notebook 13's styled judge), the slant class kept, and the pixel RMS distance
to the source. Writes ``benchmarks/results/prompt_editing.json``.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import time
from pathlib import Path

import torch

from tinydiff import prompt_editing as E
from tinydiff.checkpoint import load_checkpoint
from tinydiff.data import captions as C
from tinydiff.data import load_mnist, styles
from tinydiff.metrics import classify
from tinydiff.pretrained import load_diffusion_model


def edit_set(n: int):
    """(images [N, 1, 32, 32], digits [N], source thickness [N], target thickness [N]): the first n thin or bold
    styled test digits, each to be given the other thickness."""
    test = C.captioned_digits("test", copies=1, seed=1, hold_out=False)
    keep = (test.attributes[:, 1] != 1).nonzero().flatten()[:n]
    a = test.attributes[keep]
    return test.images[keep], a[:, 0], a[:, 1], 2 - a[:, 1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--strengths", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.9])
    p.add_argument("--guidance", type=float, nargs="+", default=[3.0, 6.0], help="classifier-free guidance of the edit")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--inject", type=float, default=0.5)
    p.add_argument("--output", default="benchmarks/results/prompt_editing.json")
    args = cli.parse_args(p)
    load_before = cli.load_average()

    base = load_diffusion_model("data/checkpoints/mnist_text", device=args.device)
    judge = load_checkpoint("data/checkpoints/mnist_classifier_styled", device=args.device)
    reference = C.reference_ink(*load_mnist("train", pad_to_32=True))
    images, digits, source, target = edit_set(args.n)
    tok = base.tokenizer
    source_ids = tok.encode([C.caption(int(d), int(s)) for d, s in zip(digits, source)]).to(args.device)
    target_ids = tok.encode([C.caption(int(d), int(s)) for d, s in zip(digits, target)]).to(args.device)
    z0 = base.codec.encode(images.to(args.device))
    slant_before = C.slant_of(images)
    results = {"n": len(images), "thin_to_bold": int((source == 0).sum()), "bold_to_thin": int((source == 2).sum()),
               "guidance": args.guidance, "ddim_steps": args.steps, "inject": args.inject, "editors": {}}
    for editor, guidance, strength in ((e, g, s) for e in E.EDITORS for g in args.guidance for s in args.strengths):
        start = time.time()
        out = []
        for i in range(0, len(z0), 100):
            sl = slice(i, i + 100)
            z = E.edit(base.net, base.schedule, z0[sl], source_ids[sl], target_ids[sl], editor=editor,
                       strength=strength, guidance=guidance, steps=args.steps, inject=args.inject,
                       prediction=base.prediction, generator=torch.Generator(args.device).manual_seed(i))
            out.append(base.codec.decode(z).clamp(-1, 1).cpu())
        edited = torch.cat(out)
        measured = C.attributes(edited, digits, reference)
        moved = (target - source).sign() * (measured[:, 1] - source) > 0  # one class or more towards the target
        ink_ratio = styles.ink(edited) / styles.ink(images)
        row = {"attribute_as_asked": float((measured[:, 1] == target).float().mean()),
               "attribute_moved": float(moved.float().mean()),
               "ink_ratio_thin_to_bold": float(ink_ratio[source == 0].median()),
               "ink_ratio_bold_to_thin": float(ink_ratio[source == 2].median()),
               "class_kept": float((classify(judge, edited) == digits).float().mean()),
               "slant_kept": float((C.slant_of(edited) == slant_before).float().mean()),
               "rms_to_source": float((edited - images).pow(2).flatten(1).mean(1).sqrt().mean()),
               "seconds": round(time.time() - start, 1)}
        results["editors"][f"{editor}@{strength}@{guidance}"] = row
        print(editor, strength, guidance, row, flush=True)
    results.update(cli.provenance(load_before))
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", args.output)


if __name__ == "__main__":
    main()
