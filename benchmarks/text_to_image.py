"""Text-to-image in miniature, measured: what the shipped text model draws for prompts, with each kind of guidance.

Run from the repository root on an otherwise idle machine (notebook 13 reads what it writes):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/text_to_image.py

Prompts: every digit x thickness (thin, unsaid, bold) x slant (left, unsaid, right) as "a {thickness} {digit}
{slant}" (:func:`tinydiff.text_to_image.evaluation_prompts`), ``--per-prompt`` images each, the held-out
"bold seven" prompts included; DDIM-``--steps`` (trailing, eta = 0), the same noise for every setting. Settings:
classifier-free guidance at each of ``--cfg``, and CLIP guidance at each of ``--clip`` on top of each CFG scale
of ``--clip-on``. For each setting:

- digit accuracy (by ``mnist_classifier_styled``, the classifier retrained on styled digits: the project's
  classifier reads only 0.94 of the *real* styled test digits right), thickness and slant accuracy (measured on
  the image, over the prompts that state them), mean CLIP score -- over all prompts and over the *seen*
  combinations only (the held-out "bold seven" prompts left out);
- FD to the styled test digits (features of the same classifier) beside its floor (as many styled *training*
  digits against the same test set);
- the held-out combination alone: digit accuracy and bold accuracy of the "bold seven" prompts, beside the
  bold accuracy of the other bold prompts.

The real styled test digits are measured the same way (the classifier's accuracy on them, and their CLIP score with
prompts that state their true attributes), as the reference each number should be read against. The recommended
guidance scale -- the classifier-free scale with the lowest FD, the images closest to the styled digits as a whole --
is written into the checkpoint's JSON (``extra.recommended_guidance``); ``--recommend-only`` applies that rule to
the stored results again without sampling.

Writes ``benchmarks/results/text_to_image.json`` (command, machine, load averages, checkpoint SHA-256s,
every number) and ``text_to_image.safetensors`` (one image per prompt per setting, uint8, for the figures).
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from tinydiff.checkpoint import load_checkpoint, read_config, update_extra
from tinydiff.data import captions as C
from tinydiff.data import load_mnist
from tinydiff.metrics import classifier_features, frechet_distance
from tinydiff.pretrained import load_diffusion_model
from tinydiff.text_to_image import evaluation_prompts, prompt_digits, prompt_report

ROOT = Path(__file__).resolve().parents[1]


RULE = "the classifier-free scale of benchmarks/text_to_image.py with the lowest FD to the styled test digits"


def recommend(result: dict, checkpoint: str) -> None:
    """Pick the recommended guidance scale by :data:`RULE` from the rows, and record it in ``result`` and in the
    checkpoint's JSON."""
    best = min((r for r in result["rows"] if r["clip_guidance"] == 0), key=lambda r: r["fd"])
    result["recommended_guidance"], result["recommended_guidance_rule"] = best["cfg"], RULE
    update_extra(checkpoint, recommended_guidance=best["cfg"], recommended_guidance_rule=f"{RULE} ({result['n']} images, {result['sampler']})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="data/checkpoints/mnist_text")
    p.add_argument("--clip-checkpoint", default="data/checkpoints/mnist_clip")
    p.add_argument("--per-prompt", type=int, default=12)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--cfg", type=float, nargs="*", default=[1.0, 1.5, 2.0, 3.0, 5.0])
    p.add_argument("--clip", type=float, nargs="*", default=[3.0, 10.0, 30.0])
    p.add_argument("--clip-on", type=float, nargs="*", default=[1.0], help="the CFG scales CLIP guidance is added to")
    p.add_argument("--judge", default="data/checkpoints/mnist_classifier_styled")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "text_to_image.json"))
    p.add_argument("--recommend-only", action="store_true", help="only apply the recommendation rule to --out")
    args = cli.parse_args(p)
    if args.recommend_only:
        result = json.loads(Path(args.out).read_text())
        recommend(result, args.checkpoint)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return

    torch.manual_seed(0)
    model = load_diffusion_model(args.checkpoint, device=args.device)
    clip = load_checkpoint(args.clip_checkpoint, device=args.device)
    classifier = load_checkpoint(args.judge, device=args.device)
    tokenizer = model.tokenizer
    reference = C.reference_ink(*load_mnist("train", pad_to_32=True))
    prompts, stated = evaluation_prompts(args.per_prompt)
    noise = torch.randn(len(prompts), *model.codec.latent_shape, generator=torch.Generator().manual_seed(0))
    test = C.captioned_digits("test", copies=1, seed=1, hold_out=False)
    f_test = classifier_features(classifier, test.images)
    floor_set = C.captioned_digits("train", copies=1, seed=2, hold_out=False)
    floor = frechet_distance(classifier_features(classifier, floor_set.images[: len(prompts)]), f_test)
    held = (stated[:, 0] == C.HELD_OUT[0]) & (stated[:, 1] == C.HELD_OUT[1])
    other_bold = (stated[:, 1] == C.HELD_OUT[1]) & ~held
    seen = ~held
    real_stated = test.attributes.clone()
    real_stated[real_stated[:, 1] == 1, 1] = C.UNSAID  # a regular thickness goes unsaid, as in the prompts
    real_prompts = [C.caption(d, th, sl, template=0) for d, th, sl in real_stated.tolist()]
    real = prompt_report(test.images, real_stated, real_prompts, classifier=classifier, clip=clip, tokenizer=tokenizer,
                         reference=reference)

    load_before = cli.load_average()
    result = {"checkpoint": args.checkpoint, "checkpoint_sha256": read_config(args.checkpoint)["sha256"],
              "clip_checkpoint": args.clip_checkpoint, "clip_sha256": read_config(args.clip_checkpoint)["sha256"],
              "sampler": f"DDIM-{args.steps} trailing", "n": len(prompts), "per_prompt": args.per_prompt,
              "judge": args.judge, "judge_sha256": read_config(args.judge)["sha256"],
              "fd_floor": round(floor, 4), "fd_reference": f"{len(test.images)} styled test digits",
              "real": {k: round(v, 4) for k, v in real.items()}, "rows": []}
    print(json.dumps({"fd_floor": result["fd_floor"], "real": result["real"]}), flush=True)
    settings = [("cfg", s, 0.0) for s in args.cfg] + [("cfg+clip", on, c) for on in args.clip_on for c in args.clip]
    grids = {}
    for kind, cfg, clip_scale in settings:
        start = time.time()
        images = torch.cat([prompt_digits(model.net, model.schedule, model.codec, tokenizer, prompts[i : i + 150],
                                          guidance=cfg, clip=clip, clip_guidance=clip_scale, steps=args.steps,
                                          prediction=model.prediction, noise=noise[i : i + 150])
                            for i in range(0, len(prompts), 150)]).cpu()
        wall = time.time() - start
        report = prompt_report(images, stated, prompts, classifier=classifier, clip=clip, tokenizer=tokenizer,
                               reference=reference)
        held_report = prompt_report(images[held], stated[held], [q for q, h in zip(prompts, held) if h],
                                    classifier=classifier, clip=clip, tokenizer=tokenizer, reference=reference)
        seen_report = prompt_report(images[seen], stated[seen], [q for q, k in zip(prompts, seen) if k],
                                    classifier=classifier, clip=clip, tokenizer=tokenizer, reference=reference)
        bold_report = prompt_report(images[other_bold], stated[other_bold], [q for q, b in zip(prompts, other_bold) if b],
                                    classifier=classifier, clip=clip, tokenizer=tokenizer, reference=reference)
        row = {"setting": kind, "cfg": cfg, "clip_guidance": clip_scale, **{k: round(v, 4) for k, v in report.items()},
               "fd": round(frechet_distance(classifier_features(classifier, images), f_test), 4),
               **{f"seen_{k}": round(v, 4) for k, v in seen_report.items() if k != "n"},
               "held_out_digit_accuracy": round(held_report["digit_accuracy"], 4),
               "held_out_bold_accuracy": round(held_report["thickness_accuracy"], 4),
               "other_bold_accuracy": round(bold_report["thickness_accuracy"], 4),
               "sampling_s": round(wall, 1)}
        result["rows"].append(row)
        grids[f"{kind}_{cfg:g}_{clip_scale:g}"] = ((images[:: args.per_prompt] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        print(json.dumps(row), flush=True)
    result["prompts"] = prompts[:: args.per_prompt]
    recommend(result, args.checkpoint)
    result = {**cli.provenance(load_before), **result}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in grids.items()}, str(Path(args.out).with_suffix(".safetensors")))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
