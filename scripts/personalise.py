"""Teach notebook 13's text model the hollow style by each personalisation method, and measure every run.

    OMP_WAIT_POLICY=PASSIVE python scripts/personalise.py

trains, one after another, textual inversion, DreamBooth (with and without prior preservation), DreamBooth with the
text encoder, LoRA on the cross-attention and a hypernetwork (:mod:`tinydiff.personalise`), each from the shipped
``data/checkpoints/mnist_text`` on the 32 hollow threes of :func:`tinydiff.personalise.subject_images`. Each run
writes its file to ``--output-dir`` (``runs/personalise/<run>.safetensors`` + ``.json``; the ones notebook 16 loads
are copied to ``data/checkpoints/personalise/``) and its numbers to ``benchmarks/results/personalise.json``:

- fidelity: 100 samples of the training prompt ("a hollow three" / "a sks three"): judged hollow, the digit right,
  FD to 100 held-out hollow threes in the judge's features;
- composition: the concept with the nine other digits, upright or leaning (135 prompts): hollow, digit, slant;
- drift: the 90 base prompts of notebook 13 (every digit x thickness x slant), twice each, from the same noise as
  the base model: digit accuracy (notebook 13's judge), thickness and slant accuracy, the share that turned hollow,
  and FD to the base model's own samples.

DreamBooth runs three ways: with the class prior (200 base-model samples of "a three"), without a prior
(``dreambooth_noprior``), and with a *wide* prior (``dreambooth_wideprior``: 20 samples of each "a zero" ... "a
nine"). LoRA and the hypernetwork train with DreamBooth's objective and class prior. Last, textual inversion's upper
bound: the text states themselves learned (:class:`tinydiff.personalise.LearnedStates`, ``--bound-steps``).

``--runs textual_inversion lora`` runs some (the others' numbers in the results file are kept); ``--steps``,
``--lr`` and ``--tag`` make a variant of each run chosen (``--lr 3e-5 --tag _lr3e-5``).
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import time
from pathlib import Path

import torch

from tinydiff import personalise as P
from tinydiff.checkpoint import load_checkpoint, read_config
from tinydiff.data import captions as C
from tinydiff.data import load_mnist
from tinydiff.evaluation import machine
from tinydiff.metrics import classifier_features, classify, frechet_distance
from tinydiff.pretrained import load_diffusion_model
from tinydiff.text_to_image import evaluation_prompts, prompt_digits
from tinydiff.train import train

# run name -> (method, prior weight lambda, steps, learning rate, prior): the prior is the base model's samples of
# "a three" (DreamBooth's class prior) or, "wide", of "a zero" ... "a nine" (every digit's class prompt)
RUNS = {
    "textual_inversion": ("textual_inversion", 0.0, 2000, 5e-3, "class"),
    "dreambooth": ("dreambooth", 1.0, 400, 1e-4, "class"),
    "dreambooth_noprior": ("dreambooth", 0.0, 400, 1e-4, "class"),
    "dreambooth_wideprior": ("dreambooth", 1.0, 400, 1e-4, "wide"),
    "dreambooth_text": ("dreambooth_text", 1.0, 400, 3e-5, "class"),  # at 1e-4 the three's shape was lost
    "lora": ("lora", 1.0, 400, 1e-3, "class"),
    "hypernetwork": ("hypernetwork", 1.0, 400, 1e-3, "class"),
}
GUIDANCE, STEPS = 3.0, 25  # sampling: classifier-free guidance and DDIM steps, as notebook 13


def sample(model, base, tokenizer, prompts: list[str], seed: int) -> torch.Tensor:
    """Images [N, 1, 32, 32] of ``prompts`` (DDIM-25 at guidance 3, noise from ``seed``), in chunks of 200."""
    out = []
    for i in range(0, len(prompts), 200):
        out.append(prompt_digits(model, base.schedule, base.codec, tokenizer, prompts[i: i + 200], guidance=GUIDANCE,
                                 steps=STEPS, seed=seed + i))
    return torch.cat(out).cpu()


def drift_report(images, base_images, stated, styled_judge, judge, reference) -> dict[str, float]:
    """What the base prompts give after adaptation, against what they gave before (``base_images``, same noise)."""
    digits = classify(styled_judge, images)
    measured = C.attributes(images, stated[:, 0], reference)
    _, hollow = P.judge(judge, images)
    right, subject = digits == stated[:, 0], stated[:, 0] == P.SUBJECT_DIGIT
    out = {"digit_accuracy": float(right.float().mean()), "hollow": float(hollow.float().mean()),
           "class_digit_accuracy": float(right[subject].float().mean()), "class_hollow": float(hollow[subject].float().mean()),
           "other_digit_accuracy": float(right[~subject].float().mean()), "other_hollow": float(hollow[~subject].float().mean())}
    for name, col in (("thickness", 1), ("slant", 2)):
        said = stated[:, col] != C.UNSAID
        out[f"{name}_accuracy"] = float((measured[said, col] == stated[said, col]).float().mean())
    out["fd_to_base"] = frechet_distance(classifier_features(styled_judge, images), classifier_features(styled_judge, base_images))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="data/checkpoints/mnist_text")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--steps", type=int, help="override every chosen run's steps")
    p.add_argument("--lr", type=float, help="override every chosen run's learning rate")
    p.add_argument("--tag", default="", help="appended to the run names (e.g. _lr3e-5)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--prior-images", type=int, default=200, help="the base model's samples of 'a three'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bound-steps", type=int, default=1500,
                   help="steps of textual inversion's upper bound, the text states learned (0: skip it)")
    p.add_argument("--output-dir", default="runs/personalise", help="where each run's file goes (the shipped ones are "
                   "copied to data/checkpoints/personalise/)")
    p.add_argument("--results", default="benchmarks/results/personalise.json")
    args = cli.parse_args(p)

    judge = load_checkpoint("data/checkpoints/mnist_classifier_hollow", device=args.device)
    styled_judge = load_checkpoint("data/checkpoints/mnist_classifier_styled", device=args.device)
    reference = C.reference_ink(*load_mnist("train", pad_to_32=True))
    base = load_diffusion_model(args.base, device=args.device)
    print(machine(), flush=True)

    # what every run is measured against: held-out hollow threes, and the base model on the base prompts
    _, test_y = load_mnist("test", pad_to_32=True)
    held_out = P.subject_images(int((test_y == P.SUBJECT_DIGIT).sum()), split="test")
    base_prompts, base_stated = evaluation_prompts(per_prompt=2)
    base_images = sample(base.net, base, base.tokenizer, base_prompts, seed=1000)
    results = {**cli.provenance(), "base": drift_report(base_images, base_images, base_stated, styled_judge, judge, reference),
               "guidance": GUIDANCE, "ddim_steps": STEPS, "held_out_hollow_threes": len(held_out), "runs": {}}
    d, h = P.judge(judge, held_out)
    results["held_out_judged"] = {"hollow": float(h.float().mean()), "digit_accuracy": float((d == P.SUBJECT_DIGIT).float().mean())}
    print("base:", results["base"], flush=True)

    # DreamBooth's prior: the base model's own samples of the class prompt, made before any fine-tuning
    class_prompt = f"a {C.DIGIT_WORDS[P.SUBJECT_DIGIT]}"
    prior = base.codec.encode(sample(base.net, base, base.tokenizer, [class_prompt] * args.prior_images, seed=2000).to(args.device))
    every = [f"a {C.DIGIT_WORDS[k % 10]}" for k in range(args.prior_images)]
    wide_ids = base.tokenizer.encode(every).to(args.device)
    wide = base.codec.encode(sample(base.net, base, base.tokenizer, every, seed=2500).to(args.device))
    subject = base.codec.encode(P.subject_images().to(args.device))

    results_path = Path(args.results)
    if results_path.is_file():  # the runs not redone now, and the bound, keep their numbers
        before = json.loads(results_path.read_text())
        results["runs"] = before.get("runs", {})
        if "text_states_bound" in before:
            results["text_states_bound"] = before["text_states_bound"]
    for run in args.runs:
        method, weight, steps, lr, kind = RUNS[run]
        steps, lr, run = args.steps or steps, args.lr or lr, run + args.tag
        fresh = load_diffusion_model(args.base, device=args.device)
        cli.seeded(args.seed)  # LoRA's A and the hypernetworks' first layers start from the same numbers in any order of runs
        model, tokenizer = fresh.net, P.prepare(fresh.net, fresh.tokenizer, method)
        word = P.new_word(method)
        ids = tokenizer.encode(P.subject_prompts(word, len(subject))).to(args.device)
        trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
        if weight > 0:
            images, prompts = (prior, tokenizer.encode(class_prompt)[0].to(args.device)) if kind == "class" else (wide, wide_ids)
            objective = P.PriorPreservation(base.schedule, images, prompts, weight, base.prediction)
            kw = dict(objective=objective)
        else:
            kw = dict(prediction=base.prediction)
        start = time.time()
        for state in train(model, base.schedule if weight == 0 else None, subject, labels=ids, steps=steps,
                           batch_size=args.batch_size, lr=lr, generator=cli.seeded(args.seed), progress=False, **kw):
            if state.step % 100 == 0:
                print(f"{run} step {state.step} loss {state.loss:.4f} {time.time() - start:.0f} s", flush=True)
        wall = time.time() - start
        model.eval()
        file = P.save_personalisation(Path(args.output_dir) / run, model, tokenizer, method, args.base,
                                      extra={"command": cli.provenance()["command"], "steps": steps, "lr": lr,
                                             "batch_size": args.batch_size, "prior_weight": weight,
                                             "wall_time_s": round(wall, 1)})
        fidelity_images = sample(model, base, tokenizer, P.subject_prompts(word, 100), seed=3000)
        fidelity = P.concept_report(fidelity_images, torch.tensor([[P.SUBJECT_DIGIT, C.UNSAID]] * 100), judge)
        fidelity["fd_to_held_out"] = frechet_distance(classifier_features(judge, fidelity_images),
                                                      classifier_features(judge, held_out))
        prompts, stated = P.composition_prompts(word)
        composition = P.concept_report(sample(model, base, tokenizer, prompts, seed=4000), stated, judge)
        drift = drift_report(sample(model, base, tokenizer, base_prompts, seed=1000), base_images, base_stated,
                             styled_judge, judge, reference)
        results["runs"][run] = {"method": method, "word": word, "prior_weight": weight, "prior": kind, "steps": steps, "lr": lr,
                                "trainable_parameters": trainable, "file_bytes": file.stat().st_size,
                                "wall_time_s": round(wall, 1), "steps_per_s": round(steps / wall, 2),
                                "fidelity": fidelity, "composition": composition, "drift": drift}
        print(run, json.dumps(results["runs"][run]), flush=True)
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    if args.bound_steps:  # textual inversion's upper bound: every text state free (tinydiff.personalise.LearnedStates)
        fresh = load_diffusion_model(args.base, device=args.device)
        start_ids = fresh.tokenizer.encode(f"a bold {C.DIGIT_WORDS[P.SUBJECT_DIGIT]}")
        bound = P.LearnedStates(fresh.net, start_ids[0].to(args.device))
        start = time.time()
        for state in train(bound, base.schedule, subject, labels=start_ids.expand(len(subject), -1).to(args.device),
                           steps=args.bound_steps, batch_size=args.batch_size, lr=1e-2, prediction=base.prediction,
                           generator=cli.seeded(args.seed), progress=False):
            pass
        images = sample(bound, base, fresh.tokenizer, [f"a bold {C.DIGIT_WORDS[P.SUBJECT_DIGIT]}"] * 100, seed=3000)
        report = P.concept_report(images, torch.tensor([[P.SUBJECT_DIGIT, C.UNSAID]] * 100), judge)
        results["text_states_bound"] = {"parameters": bound.states.numel(), "steps": args.bound_steps, "lr": 1e-2,
                                        "final_loss": round(state.loss, 4), "wall_time_s": round(time.time() - start, 1),
                                        **report}
        print("text states bound:", results["text_states_bound"], flush=True)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {results_path}; base checkpoint SHA-256 {read_config(args.base)['sha256'][:12]}")


if __name__ == "__main__":
    main()
