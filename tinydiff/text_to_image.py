"""Text-to-image in miniature (Part 11, notebook 13): what the tiny CLIP knows, and sampling digits from prompts.

- :func:`zero_shot_digits` / :func:`zero_shot_attribute`: CLIP as a classifier with no classification head --
  the prompt whose embedding is closest to the image's wins (Radford et al. 2021, sec. 3.1.2; template from sec. 3.1.4).
- :func:`prompt_digits`: images from a text-conditioned latent model for a list of prompts, under classifier-free
  guidance (the empty prompt is the null condition) and, optionally, CLIP guidance -- the same
  :mod:`tinydiff.guidance` wrappers and DDIM sampler as for labels.
- :func:`evaluation_prompts` and :func:`prompt_report`: the measured prompt grid (digit, thickness, slant) and
  what is measured on the images it gives -- digit accuracy by the project's classifier, attribute accuracy by the
  attribute functions of :mod:`tinydiff.data.captions`, CLIP score (:func:`tinydiff.metrics.clip_score`:
  100 max(cos, 0), the metrics libraries' scale; Hessel et al. 2021 use 2.5 instead of 100).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .data import captions as C
from .guidance import CLIPGuidance, classifier_free, conditional
from .metrics import classify, clip_score
from .samplers import ddim_sample
from .schedules import Schedule
from .tokenizer import Tokenizer


@torch.no_grad()
def zero_shot_digits(clip: nn.Module, tokenizer: Tokenizer, images: Tensor, template: str = "a photo of the digit {}") -> Tensor:
    """The digit k whose prompt ``template.format(word of k)`` is most similar to each image: LongTensor [N]."""
    device = next(clip.parameters()).device
    text = clip.eval().encode_text(tokenizer.encode([template.format(w) for w in C.DIGIT_WORDS]).to(device))  # [10, E]
    return torch.cat([(clip.encode_image(images[i : i + 500].to(device)) @ text.T).argmax(1).cpu()
                      for i in range(0, len(images), 500)])


@torch.no_grad()
def zero_shot_attribute(clip: nn.Module, tokenizer: Tokenizer, images: Tensor, digits: Tensor, attribute: str) -> Tensor:
    """For each image of known digit, the attribute value whose caption fits best: LongTensor [N].

    ``attribute = "thickness"`` chooses between "a thin {digit}" and "a bold {digit}" (returns 0 or 2);
    ``"slant"`` between "a {digit} leaning left / upright / leaning right" (0, 1, 2)."""
    if attribute == "thickness":
        values, make = (0, 2), lambda d, v: C.caption(d, v, template=0)
    elif attribute == "slant":
        values, make = (0, 1, 2), lambda d, v: C.caption(d, slant=v, template=0)
    else:
        raise ValueError(f"attribute must be 'thickness' or 'slant', got {attribute!r}")
    device = next(clip.parameters()).device
    clip = clip.eval()
    table = torch.stack([clip.encode_text(tokenizer.encode([make(d, v) for v in values]).to(device)) for d in range(10)])  # [10, V, E]
    u = torch.cat([clip.encode_image(images[i : i + 500].to(device)) for i in range(0, len(images), 500)])  # [N, E]
    best = (table[digits.to(device)] @ u[:, :, None]).squeeze(-1).argmax(1)
    return torch.tensor(values)[best.cpu()]


@torch.no_grad()
def prompt_digits(model: nn.Module, schedule: Schedule, codec: nn.Module, tokenizer: Tokenizer, prompts: list[str], *,
                  guidance: float = 1.0, clip: nn.Module | None = None, clip_guidance: float = 0.0, steps: int = 50,
                  seed: int = 0, prediction: str = "v", spacing: str = "trailing", noise: Tensor | None = None) -> Tensor:
    """One image per prompt from a text-conditioned latent model: DDIM (``steps``, eta = 0) on the latents from
    noise drawn by a CPU generator seeded with ``seed`` (or the given ``noise`` [N, *latent]), under classifier-free
    guidance at ``guidance`` (1 = none) and CLIP guidance at ``clip_guidance`` (0 = none), then decoded.
    Returns images [N, 1, 32, 32] in [-1, 1] on the model's device."""
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompts).to(device)
    if noise is None:
        noise = torch.randn(len(prompts), *codec.latent_shape, generator=torch.Generator().manual_seed(seed))
    net = classifier_free(model, ids, guidance) if guidance != 1.0 else conditional(model, ids)
    if clip_guidance:
        if clip is None:
            raise ValueError("clip_guidance needs the CLIP model: pass clip=")
        net = CLIPGuidance(net, schedule, clip, ids, clip_guidance, prediction=prediction,
                           decode=codec.decode_differentiable)
    z = ddim_sample(net, schedule, noise.shape, steps=steps, spacing=spacing, x_T=noise.to(device),
                    prediction=prediction, progress=False)
    return codec.decode(z).clamp(-1, 1)


def evaluation_prompts(per_prompt: int = 1) -> tuple[list[str], Tensor]:
    """The measured prompts: every digit x thickness (thin, unsaid, bold) x slant (left, unsaid, right), as
    "a {thickness} {digit} {slant}", each ``per_prompt`` times. Returns (prompts, stated attributes [N, 3])."""
    prompts, stated = [], []
    for d in range(10):
        for th in (0, C.UNSAID, 2):
            for sl in (0, C.UNSAID, 2):
                prompts += [C.caption(d, th, sl, template=0)] * per_prompt
                stated += [[d, th, sl]] * per_prompt
    return prompts, torch.tensor(stated)


@torch.no_grad()
def prompt_report(images: Tensor, stated: Tensor, prompts: list[str], *, classifier: nn.Module, clip: nn.Module,
                  tokenizer: Tokenizer, reference: Tensor) -> dict[str, float]:
    """What the images of prompts show: digit accuracy (the classifier), thickness and slant accuracy (measured
    on the images, over the prompts that state them), and the mean CLIP score. The thickness is measured
    against the *requested* digit's reference ink."""
    digits = classify(classifier, images).cpu()
    measured = C.attributes(images.cpu(), stated[:, 0], reference)
    report = {"n": len(images), "digit_accuracy": float((digits == stated[:, 0]).float().mean())}
    for name, col in (("thickness", 1), ("slant", 2)):
        said = stated[:, col] != C.UNSAID
        report[f"{name}_accuracy"] = float((measured[said, col] == stated[said, col]).float().mean()) if said.any() else float("nan")
    report["clip_score"] = float(clip_score(clip, images, tokenizer.encode(prompts)).mean())
    return report
