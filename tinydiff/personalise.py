"""Personalising a text-to-image model (Part 14, notebook 16): four ways to teach notebook 13's text model a concept
it never saw, from a few images, and the files each one leaves.

The concept: *hollow* digits (:func:`tinydiff.data.styles.hollow`), taught from :data:`SUBJECT_IMAGES` hollow
threes. What is trained, and what the prompt says:

=====================  ===================================================  =================  ====================
method                 trained (the rest frozen)                            prompt             paper
=====================  ===================================================  =================  ====================
``textual_inversion``  one new word's embedding row (64 numbers)            "a hollow three"   Gal et al. 2022
``dreambooth``         the whole UNet; prior preservation                   "a sks three"      Ruiz et al. 2023
``dreambooth_text``    the UNet and the text encoder; prior preservation    "a sks three"      Ruiz et al. 2023
``lora``               rank-r factors of every cross-attention projection   "a sks three"      Hu et al. 2021
``hypernetwork``       two small MLPs per cross-attention, on the text      "a sks three"      NovelAI 2022
=====================  ===================================================  =================  ====================

- ``sks`` is DreamBooth's *rare identifier* (sec. 3.2: a token with a weak prior). The tiny vocabulary has no
  rare words, so it is a new word with a random, frozen embedding row: the model has never read it. It is trained
  only where the text encoder is (``dreambooth_text``).
- LoRA and the hypernetwork train with DreamBooth's objective, prior preservation included, so that the table
  compares *what* is trained, not how.
- The hypernetwork is the one the Stable Diffusion community calls by that name (NovelAI 2022; AUTOMATIC1111's
  web UI): two residual MLPs that transform the text states before each cross-attention's key and value projections
  (:class:`HyperKV`). It is not a hypernetwork in the sense of Ha et al. 2017, a network that outputs another's
  weights (HyperDreamBooth, Ruiz et al. 2024, is one). We chose it because it trains on the same few images as
  the other three, and because it is what "hypernetwork" means in the tools a learner will meet.

Read in this order: the concept data (:func:`subject_images`, :func:`judge`), :class:`PriorPreservation`,
:class:`HyperKV` / :func:`add_hypernetwork`, :class:`LearnedStates` (textual inversion's upper bound: the text states
themselves learned), :func:`prepare`, the files (:func:`save_personalisation`, :func:`load_personalisation`), then
what is measured (:func:`subject_prompts`, :func:`composition_prompts`, :func:`concept_report`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from . import adapt
from .checkpoint import read_config
from .data import captions as C
from .data import load_mnist
from .data.styles import hollow
from .losses import Objective, diffusion_loss, sample_timesteps
from .schedules import Schedule
from .tensors import randn
from .tokenizer import Tokenizer

SUBJECT_DIGIT = 3
SUBJECT_IMAGES = 32
"""The subject: the first 32 threes of the shipped training digits, made hollow (DreamBooth uses 3-5 photos; Gal
et al. 3-5 images; a digit's style needs a few more to be told apart from one digit's shape)."""

METHODS = ("textual_inversion", "dreambooth", "dreambooth_text", "lora", "hypernetwork")
WORDS = {"textual_inversion": "hollow"}
"""The new word of each method: textual inversion learns "hollow"; the others bind the identifier "sks"."""
IDENTIFIER = "sks"


def new_word(method: str) -> str:
    """The word a method adds to the vocabulary: ``"hollow"`` for textual inversion, ``"sks"`` for the rest."""
    _check_method(method)
    return WORDS.get(method, IDENTIFIER)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown personalisation method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def subject_images(n: int = SUBJECT_IMAGES, digit: int = SUBJECT_DIGIT, split: str = "train") -> Tensor:
    """The first ``n`` digits ``digit`` of the shipped ``split``, hollow: the subject's images [n, 1, 32, 32]."""
    images, labels = load_mnist(split, pad_to_32=True)
    chosen = images[labels == digit][:n]
    if len(chosen) < n:
        raise ValueError(f"the {split} split has only {len(chosen)} digits {digit}; ask for at most that many")
    return hollow(chosen)


@torch.no_grad()
def judge(classifier: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """Read images with the 20-class judge (``scripts/train_classifier.py --hollow``: class k a plain digit k,
    class 10 + k a hollow one). Returns (the digit, p(plain k) + p(hollow k) largest: LongTensor [N]; whether the
    image is hollow, p(hollow) > 1/2: BoolTensor [N]), both on the CPU."""
    probs = torch.cat([classifier(images[i: i + 500].to(next(classifier.parameters()).device)).softmax(1).cpu()
                       for i in range(0, len(images), 500)])
    if probs.shape[1] != 20:
        raise ValueError(f"the judge must have 20 classes (plain 0-9, hollow 10-19), this one has {probs.shape[1]}: "
                         "load data/checkpoints/mnist_classifier_hollow")
    plain, hollow_ = probs[:, :10], probs[:, 10:]
    return (plain + hollow_).argmax(1), hollow_.sum(1) > 0.5


# --- DreamBooth's objective ----------------------------------------------------------------------


class PriorPreservation(Objective):
    """DreamBooth's class-specific prior-preservation loss (Ruiz et al. 2023, eq. 2), in the denoising form of the
    one training loop:

        L = E || out(x_t, t, c_id) - target(x, eps, t) ||^2  +  lambda E || out(x'_t', t', c_pr) - target(x', eps', t') ||^2

    The first term is L_simple on the subject x under its prompt c_id ("a sks three"); the second on the prior
    images x' -- the *base model's own samples* of the class prompt c_pr ("a three"), made before fine-tuning --
    under that class prompt. Each step pairs every subject image with one prior image drawn at random, with its own
    t' and eps' (the paper's implementation concatenates the two halves into one batch, as here: one forward pass).

    Args:
        schedule, prediction: as for L_simple (:class:`tinydiff.losses.Denoising`).
        prior: the prior images (latents, for a latent model) [M, *data], on the model's device.
        prior_ids: their prompt ids [M, L] (or [L], one prompt for all).
        weight: lambda (the paper: 1).

    The loss reports ``subject`` and ``prior``, each term before weighting.
    """

    def __init__(self, schedule: Schedule, prior: Tensor, prior_ids: Tensor, weight: float = 1.0,
                 prediction: str = "epsilon") -> None:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"PriorPreservation needs a noise schedule (tinydiff.schedules), got {type(schedule).__name__}")
        if prior.ndim < 2 or len(prior) < 1:
            raise ValueError(f"prior must be the base model's samples [M, *data], got {list(prior.shape)}")
        if prior_ids.dtype != torch.long or prior_ids.ndim not in (1, 2):
            raise ValueError(f"prior_ids must be prompt ids [M, L] or [L] (LongTensor), got {prior_ids.dtype} "
                             f"{list(prior_ids.shape)}")
        prior_ids = prior_ids.expand(len(prior), -1) if prior_ids.ndim == 1 else prior_ids
        if len(prior_ids) != len(prior):
            raise ValueError(f"{len(prior)} prior images but {len(prior_ids)} prompts: give one prompt per image or one for all")
        if weight < 0:
            raise ValueError(f"the prior weight lambda must be >= 0 (Ruiz et al. use 1), got {weight}")
        self.schedule, self.prediction, self.weight = schedule, prediction, float(weight)
        self.prior, self.prior_ids = prior, prior_ids

    def draw(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        B = x0.shape[0]
        t = sample_timesteps(2 * B, self.schedule.T, generator=generator, device=x0.device)
        noise = randn((2 * B, *x0.shape[1:]), generator=generator, device=x0.device, dtype=x0.dtype)
        pick = torch.randint(0, len(self.prior), (B,), generator=generator, device=generator.device)
        # each a [B, ...] tensor, so that a rank's slice of the batch takes its own prior images too
        return t[:B], t[B:], noise[:B], noise[B:], pick.to(x0.device)

    def loss(self, model, x0: Tensor, draws: tuple[Tensor, ...], y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        t, t_prior, noise, noise_prior, pick = draws
        if self.prior.device != x0.device:
            raise ValueError(f"the prior images are on {self.prior.device} but the batch on {x0.device}: give "
                             "PriorPreservation its prior (and prior_ids) on the model's device")
        x = torch.cat([x0, self.prior[pick].to(x0.dtype)])  # one batch, one forward pass: subject, then prior
        per_example = diffusion_loss(model, self.schedule, x, t=torch.cat([t, t_prior]), noise=torch.cat([noise, noise_prior]),
                                     prediction=self.prediction, reduction="none", y=torch.cat([y, self.prior_ids[pick]]))
        subject, prior = per_example[: len(x0)].mean(), per_example[len(x0):].mean()
        return subject + self.weight * prior, {"subject": subject.detach(), "prior": prior.detach()}


# --- the hypernetwork of Stable Diffusion's community -----------------------------------------------


class HyperKV(nn.Module):
    """A cross-attention's key-value projection with a hypernetwork in front (NovelAI 2022):

        K = W_K (c + f_K(c)),   V = W_V (c + f_V(c)),   f(c) = W_2 act(W_1 c + b_1) + b_2,

    f: Linear(D, m D) -> ReLU -> Linear(m D, D), one for the keys and one for the values, on the text states
    c [B, L, D] (D = the text width). W_2 and b_2 start at zero, so f = 0 and the block computes exactly what the
    frozen ``kv`` did. Returns [B, L, 2 C]: keys then values, as ``kv`` (``nn.Linear(D, 2 C)``) does."""

    def __init__(self, kv: nn.Linear, mult: int = 2) -> None:
        super().__init__()
        if not isinstance(kv, nn.Linear) or kv.out_features % 2:
            raise ValueError("HyperKV wraps a cross-attention's kv projection, an nn.Linear(D, 2 C)")
        D, like = kv.in_features, dict(device=kv.weight.device, dtype=kv.weight.dtype)
        self.base = kv.requires_grad_(False)
        self.key = nn.Sequential(nn.Linear(D, mult * D, **like), nn.ReLU(), nn.Linear(mult * D, D, **like))
        self.value = nn.Sequential(nn.Linear(D, mult * D, **like), nn.ReLU(), nn.Linear(mult * D, D, **like))
        for f in (self.key, self.value):
            nn.init.zeros_(f[2].weight)
            nn.init.zeros_(f[2].bias)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    def forward(self, c: Tensor) -> Tensor:
        C = self.base.out_features // 2  # the whole projection on each input, then its half: with f = 0, bit for bit kv(c)
        return torch.cat([self.base(c + self.key(c))[..., :C], self.base(c + self.value(c))[..., C:]], -1)


HYPERNETWORK_PATTERNS = ("*.kv.key.*", "*.kv.value.*")
"""The parameter names of the hypernetworks (for :func:`tinydiff.adapt.freeze`)."""

CROSS_ATTENTION_LORA_TARGETS = ("unet.*_text*.q", "unet.*_text*.kv", "unet.*_text*.proj")
"""LoRA where Stable Diffusion's personalisation LoRAs put it: the cross-attention's query, key-value and output
projections (``to_q``, ``to_k``, ``to_v``, ``to_out`` in diffusers)."""


def add_hypernetwork(model: nn.Module, mult: int = 2) -> list[str]:
    """Put a :class:`HyperKV` in front of every cross-attention block's ``kv`` of a TextUNet, in place; returns the
    wrapped blocks' names. The model's outputs are unchanged until the hypernetworks are trained."""
    names = []
    for name, block in model.named_modules():
        if hasattr(block, "kv") and isinstance(block.kv, nn.Linear) and name.startswith("unet."):
            block.kv = HyperKV(block.kv, mult)
            names.append(name)
    if not names:
        raise ValueError("add_hypernetwork needs a text-conditioned UNet with cross-attention blocks (a TextUNet)")
    return names


# --- how far any conditioning can go: the text states themselves, learned ----------------------------


class LearnedStates(nn.Module):
    """An upper bound for textual inversion: the UNet reads *learned* text states [L, D] -- all of them free, not
    only one word's input row -- for every prompt but the empty one, which still goes through the frozen text
    encoder (the null condition of classifier-free guidance). What the frozen UNet cannot draw from these, no word
    and no number of words can make it draw. ``net`` is a frozen TextUNet; ``ids`` [L] the prompt whose states
    start the search (its padding mask is kept). ``model(z_t, t, y)`` like the TextUNet."""

    def __init__(self, net: nn.Module, ids: Tensor) -> None:
        super().__init__()
        self.net = net.requires_grad_(False)
        with torch.no_grad():
            states, mask = net.text_encoder(ids[None])
        self.states = nn.Parameter(states[0].clone())
        self.register_buffer("mask", mask[0], persistent=False)
        self.null_class = net.null_class

    def check_condition(self, y: Tensor) -> Tensor:
        return self.net.check_condition(y)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        null = (y == self.null_class.to(y.device)).all(1)
        with torch.no_grad():
            states, mask = self.net.text_encoder(y)
        B = len(y)
        states = torch.where(null[:, None, None], states, self.states.expand(B, -1, -1))
        mask = torch.where(null[:, None], mask, self.mask.expand(B, -1))
        return self.net.unet(x, t, context=states, context_mask=mask)


# --- one entry point per method ---------------------------------------------------------------------


def _identifier_row(model: nn.Module, seed: int = 0) -> Tensor:
    """A random embedding row with the word table's per-coordinate mean and spread: a word the model never read."""
    table = model.text_encoder.token.weight if isinstance(model.text_encoder.token, nn.Embedding) else model.text_encoder.token.base.weight
    words = table[2:].detach()
    g = torch.Generator().manual_seed(seed)
    return words.mean(0) + words.std(0) * torch.randn(words.shape[1], generator=g).to(words)


def prepare(model: nn.Module, tokenizer: Tokenizer, method: str, *, rank: int = 4, mult: int = 2,
            init_from: str | None = None) -> Tokenizer:
    """Make a TextUNet ready for ``method`` (:data:`METHODS`), in place: add the method's new word, wrap layers,
    freeze what the method does not train. Returns the tokenizer that knows the new word.

    ``init_from``: the word whose row textual inversion's new word starts from (default: the mean of the word rows;
    Gal et al. start from a coarse description of the concept). The identifier ``sks`` starts as a random row."""
    _check_method(method)
    word = new_word(method)
    tokenizer = adapt.add_word(model, tokenizer, word, init_from=init_from if method == "textual_inversion" else None)
    if method != "textual_inversion":
        with torch.no_grad():
            model.text_encoder.token.new[-1].copy_(_identifier_row(model))
    if method == "textual_inversion":
        adapt.freeze(model, adapt.NEW_WORD_PATTERNS)
    elif method == "dreambooth":
        adapt.freeze(model, ["unet.*"])
    elif method == "dreambooth_text":
        adapt.freeze(model, ["unet.*", "text_encoder.*"])
    elif method == "lora":
        adapt.add_lora(model, list(CROSS_ATTENTION_LORA_TARGETS), rank)
        adapt.freeze(model, adapt.LORA_PATTERNS)
    else:
        add_hypernetwork(model, mult)
        adapt.freeze(model, HYPERNETWORK_PATTERNS)
    return tokenizer


def trained_tensors(model: nn.Module) -> dict[str, Tensor]:
    """What a method changed, by parameter name: the trainable parameters, and always the new word rows."""
    out = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    out["text_encoder.token.new"] = model.text_encoder.token.new.detach().cpu().contiguous()
    return out


def save_personalisation(path: str | os.PathLike, model: nn.Module, tokenizer: Tokenizer, method: str,
                         base_checkpoint: str | os.PathLike, *, rank: int = 4, mult: int = 2,
                         extra: dict | None = None) -> Path:
    """Write what ``method`` trained (:func:`trained_tensors`) to ``<path>.safetensors`` and how to rebuild it (the
    method, its word, rank / mult, the SHA-256 of ``base_checkpoint``) to ``<path>.json``. Textual inversion's file
    is its word's row alone; DreamBooth's, the whole UNet. :func:`load_personalisation` reads it."""
    _check_method(method)
    tensors = trained_tensors(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = path.with_name(path.name + ".safetensors")
    save_file(tensors, str(weights))
    header = {"format": "tinydiff-personalisation", "version": 1, "method": method, "word": new_word(method),
              "base_sha256": read_config(base_checkpoint)["sha256"], "rank": rank, "mult": mult,
              "tensors": sorted(tensors), "extra": extra or {}}
    path.with_name(path.name + ".json").write_text(json.dumps(header, indent=2) + "\n")
    return weights


def load_personalisation(path: str | os.PathLike, model: nn.Module, tokenizer: Tokenizer,
                         base_checkpoint: str | os.PathLike) -> Tokenizer:
    """Apply the file written by :func:`save_personalisation` to ``model`` (the TextUNet loaded from
    ``base_checkpoint``, whose vocabulary is ``tokenizer``'s), in place; returns the tokenizer that knows the new
    word. Raises ``ValueError`` naming both hashes if the file was trained on another base."""
    path = Path(path)
    weights, sidecar = path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")
    if not (weights.is_file() and sidecar.is_file()):
        raise FileNotFoundError(f"personalisation {path}: expected {weights.name} and {sidecar.name} "
                                "(written by save_personalisation)")
    header = json.loads(sidecar.read_text())
    if header.get("format") != "tinydiff-personalisation":
        raise ValueError(f"{sidecar} is not a personalisation file (format {header.get('format')!r})")
    base_sha = read_config(base_checkpoint)["sha256"]
    if header["base_sha256"] != base_sha:
        raise ValueError(f"{path} was trained on the base checkpoint with SHA-256 {header['base_sha256']}, but "
                         f"{base_checkpoint} has SHA-256 {base_sha}: load it onto the checkpoint it was trained on")
    tokenizer = prepare(model, tokenizer, header["method"], rank=header["rank"], mult=header["mult"])
    tensors = load_file(str(weights))
    params = dict(model.named_parameters())
    unknown = [name for name in tensors if name not in params]
    if unknown:
        raise ValueError(f"{path} holds tensors this model does not have: {unknown[:4]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    model.requires_grad_(False)
    return tokenizer


# --- what is measured -------------------------------------------------------------------------------


def subject_prompts(word: str, n: int) -> list[str]:
    """The training prompt "a {word} three", ``n`` times: concept fidelity."""
    return [f"a {word} {C.DIGIT_WORDS[SUBJECT_DIGIT]}"] * n


def composition_prompts(word: str, per_prompt: int = 5) -> tuple[list[str], Tensor]:
    """The concept with what it was never trained with: every other digit, plain ("a {word} seven") and leaning
    left or right ("a {word} seven leaning right"), each ``per_prompt`` times. Returns (prompts, stated
    (digit, slant) [N, 2], slant ``C.UNSAID`` where the prompt says none)."""
    prompts, stated = [], []
    for d in range(10):
        if d == SUBJECT_DIGIT:
            continue
        for slant in (C.UNSAID, 0, 2):
            tail = "" if slant == C.UNSAID else " " + C.SLANT_WORDS[slant][0]
            prompts += [f"a {word} {C.DIGIT_WORDS[d]}{tail}"] * per_prompt
            stated += [[d, slant]] * per_prompt
    return prompts, torch.tensor(stated)


@torch.no_grad()
def concept_report(images: Tensor, stated: Tensor, judge_net: nn.Module) -> dict[str, float]:
    """How the concept shows in images [N, 1, 32, 32] of prompts stating (digit, slant) [N, 2] (slant may be
    ``C.UNSAID``): the share judged hollow, the share whose digit is the one asked for, the share that is both,
    and the slant accuracy (:func:`tinydiff.data.styles.slant`, over the prompts that state one)."""
    digit, is_hollow = judge(judge_net, images)
    right = digit == stated[:, 0].cpu()
    report = {"n": len(images), "hollow": float(is_hollow.float().mean()), "digit_accuracy": float(right.float().mean()),
              "hollow_and_digit": float((right & is_hollow).float().mean())}
    said = stated[:, 1] != C.UNSAID
    if bool(said.any()):
        measured = C.slant_of(images[said].cpu())
        report["slant_accuracy"] = float((measured == stated[said, 1].cpu()).float().mean())
    return report
