"""Adapting a trained network: LoRA layers, merging them into the weights, freezing, and adapter files.

LoRA (Hu et al. 2021) keeps a pretrained weight W frozen and learns a low-rank change to it:

    h = W x + (alpha / r) * s * B A x,     A [r, in] (random), B [out, r] (zero at the start),

so at the start the adapted layer computes exactly what the base layer did (B = 0), and training moves only
r * (in + out) numbers per layer instead of in * out. ``alpha / r`` is the paper's scaling (sec. 4.1: "we scale
dW x by alpha / r"); ``s`` is an extra *adapter scale* at sampling time -- 0 is the base model, 1 the adapted one,
values in between interpolate. What the common libraries call these:

==========================  ===========================================================================
tinydiff                    ``rank`` = r, ``alpha`` (default r, so alpha / r = 1), ``scale`` = s
peft                        ``r``, ``lora_alpha``; the layer multiplies by ``lora_alpha / r``
diffusers' training scripts ``rank``; they set ``lora_alpha = rank``, so the factor is 1
cloneofsimo/lora            a flat ``scale`` on B A (no alpha / r); its "alpha" is a *merge ratio*
==========================  ===========================================================================

For a convolution (kernel k x k) the down-projection A is a convolution with the layer's own kernel, stride and
padding into r channels, and the up-projection B a 1 x 1 convolution back: B A is then a k x k convolution of rank
r, and merging adds sum_j B[:, j] A[j] to the kernel. (Hu et al. 2021 treat linear layers only; this form for
convolutions is what LyCORIS calls LoCon, Yeh et al. 2024.)

Read in this order: :class:`LoRALinear`, :class:`LoRAConv2d`, :func:`add_lora` (wrap layers in place by name),
:func:`merge_lora` / :func:`set_adapter_scale`, :func:`freeze`, :func:`add_label` (a new
label learned with everything else frozen), then the adapter files
(:func:`save_adapter`, :func:`load_adapter`), which hold only the low-rank factors and the SHA-256 of the base
checkpoint they belong to.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .checkpoint import read_config
from .tokenizer import Tokenizer


def _check_rank(rank: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"the LoRA rank must be a positive int (e.g. 4), got {rank!r}")
    return rank


def check_scale(scale: float) -> float:
    """An adapter scale: a finite number (0 = the base model, 1 = the adapted one)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"the adapter scale must be a finite number (0 = base model, 1 = adapted), got {scale!r}")
    return float(scale)


class _LoRA(nn.Module):
    """What both LoRA layers share: the frozen base layer, the factors ``down`` (A) and ``up`` (B), the factor
    alpha / r, the adapter scale s, and whether B A is currently merged into the base weight."""

    def __init__(self, base: nn.Module, down: nn.Module, up: nn.Module, rank: int, alpha: float | None) -> None:
        super().__init__()
        self.base, self.down, self.up = base, down, up
        self.rank = rank
        self.alpha = float(alpha) if alpha is not None else float(rank)
        self.scale = 1.0
        self.merged = False
        base.requires_grad_(False)
        nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))  # A random (as nn.Linear's default init), B zero
        nn.init.zeros_(up.weight)

    @property
    def factor(self) -> float:
        """(alpha / r) * s: what multiplies B A x."""
        return self.alpha / self.rank * self.scale

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if self.merged or self.scale == 0.0:
            return out
        return out + self.factor * self.up(self.down(x))

    def delta_weight(self) -> Tensor:
        raise NotImplementedError

    def merge(self) -> None:
        """W <- W + (alpha / r) s B A: the same outputs with no extra work per call. The base weight is kept aside
        (a copy, while merged), so :meth:`unmerge` restores it bit for bit rather than by a subtraction."""
        if not self.merged:
            self._base_weight = self.base.weight.detach().clone()
            with torch.no_grad():
                self.base.weight += self.delta_weight()
            self.merged = True

    def unmerge(self) -> None:
        """Back to the frozen base weight, exactly, plus a separate low-rank branch."""
        if self.merged:
            with torch.no_grad():
                self.base.weight.copy_(self._base_weight)
            del self._base_weight
            self.merged = False


class LoRALinear(_LoRA):
    """``nn.Linear`` W x + b plus (alpha / r) s B A x (Hu et al. 2021, eq. 3): x [..., in] -> [..., out]."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        rank = _check_rank(rank)
        down = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        up = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        super().__init__(base, down, up, rank, alpha)

    @property
    def in_features(self) -> int:
        """The base layer's, so that code reading ``layer.in_features`` works on the wrapped layer."""
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> Tensor:
        """(alpha / r) s B A, shaped like the base weight [out, in]."""
        return self.factor * self.up.weight @ self.down.weight


class LoRAConv2d(_LoRA):
    """``nn.Conv2d`` plus (alpha / r) s B A: A a convolution with the layer's kernel, stride, padding and dilation
    into r channels, B a 1 x 1 convolution back. x [B, in, H, W] -> [B, out, H', W']."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float | None = None) -> None:
        rank = _check_rank(rank)
        if base.groups != 1:
            raise ValueError(f"LoRA on a grouped convolution (groups={base.groups}) is not supported")
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation,
                         bias=False, padding_mode=base.padding_mode, **like)
        up = nn.Conv2d(rank, base.out_channels, 1, bias=False, **like)
        super().__init__(base, down, up, rank, alpha)

    def delta_weight(self) -> Tensor:
        """(alpha / r) s sum_r B[o, r] A[r, i, kh, kw], shaped like the base kernel [out, in, kh, kw]."""
        return self.factor * torch.einsum("or,rikl->oikl", self.up.weight[:, :, 0, 0], self.down.weight)


def lora_layers(net: nn.Module) -> dict[str, _LoRA]:
    """Every LoRA layer in ``net``, by module name."""
    return {name: m for name, m in net.named_modules() if isinstance(m, _LoRA)}


def add_lora(net: nn.Module, targets: Sequence[str], rank: int, alpha: float | None = None) -> list[str]:
    """Wrap, in place, every ``nn.Linear`` and ``nn.Conv2d`` whose module name matches one of the ``targets``
    (shell-style patterns, e.g. ``"*attn.qkv"``, ``"up.*.conv2"``) in a LoRA layer of this ``rank``; returns the
    wrapped names. Raises ``ValueError`` if a pattern matches no such layer (a typo would otherwise train nothing).
    Freeze the rest yourself (:func:`freeze`): the wrapped base layers are frozen, other modules are not."""
    rank = _check_rank(rank)
    if isinstance(targets, str) or not targets:
        raise ValueError(f"targets must be a list of layer-name patterns, e.g. ['*attn.qkv'], got {targets!r}")
    layers = {name: m for name, m in net.named_modules()
              if isinstance(m, (nn.Linear, nn.Conv2d)) and not isinstance(m, _LoRA)
              and not any(name.startswith(p + ".") for p in lora_layers(net))}
    chosen = {}
    for pattern in targets:
        hits = [name for name in layers if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            sample = ", ".join(list(layers)[:6])
            raise ValueError(f"the target {pattern!r} matches no nn.Linear or nn.Conv2d in the network "
                             f"({len(layers)} candidates, e.g. {sample})")
        chosen.update({name: layers[name] for name in hits})
    for name, layer in chosen.items():
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        wrapper = LoRALinear(layer, rank, alpha) if isinstance(layer, nn.Linear) else LoRAConv2d(layer, rank, alpha)
        setattr(parent, child, wrapper)
    return sorted(chosen)


def set_adapter_scale(net: nn.Module, scale: float) -> None:
    """Set s in every LoRA layer (0 = the base network, 1 = the adapted one); a merged network is re-merged at s."""
    scale = check_scale(scale)
    for layer in lora_layers(net).values():
        was_merged = layer.merged
        layer.unmerge()
        layer.scale = scale
        if was_merged:
            layer.merge()


def merge_lora(net: nn.Module) -> None:
    """Fold every LoRA branch into its base weight (the same outputs; no extra cost per call)."""
    for layer in lora_layers(net).values():
        layer.merge()


def freeze(net: nn.Module, trainable: Iterable[str] = ()) -> int:
    """Freeze every parameter of ``net`` except those whose name matches a pattern in ``trainable`` (shell-style,
    e.g. ``"*.down.weight"``); returns the number of trainable parameters left."""
    patterns = list(trainable)
    for name, p in net.named_parameters():
        p.requires_grad_(any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns))
    return trainable_parameters(net)


def trainable_parameters(net: nn.Module) -> int:
    """How many numbers an optimizer would change: the parameters with ``requires_grad``."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


# --- a new label, learned while the network stays frozen (the idea of textual inversion) -------------


class NewLabels(nn.Module):
    """A class-conditional network's label embedding with new rows kept apart from the frozen table.

    Labels 0..K (the base's classes and its null label) read the base table; label K + j (j = 1, 2, ...) reads
    ``new[j - 1]``. The new rows are a separate parameter, so an optimizer -- weight decay included -- cannot move
    a base row: the known textual-inversion bug of a grown embedding matrix whose "frozen" rows still decay.
    y [B] -> [B, dim] for labels; token ids [B, L] -> [B, L, dim] for words (:func:`add_word`).
    """

    def __init__(self, base: nn.Embedding, init: Tensor) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.new = nn.Parameter(init.detach().clone().reshape(-1, base.embedding_dim))

    @property
    def num_embeddings(self) -> int:
        """Rows in all: the base table's and the new ones (as ``nn.Embedding.num_embeddings``)."""
        return self.base.num_embeddings + self.new.shape[0]

    def forward(self, y: Tensor) -> Tensor:
        known = y < self.base.num_embeddings
        old = self.base(torch.where(known, y, torch.zeros_like(y)))
        fresh = self.new[(y - self.base.num_embeddings).clamp(min=0, max=self.new.shape[0] - 1)]
        return torch.where(known[..., None], old, fresh)


def add_label(net: nn.Module, init_from: int | None = None) -> int:
    """Give a class-conditional UNet one more label, learned later while everything else is frozen (Gal et al.
    2022's textual inversion, with a label row in place of a word embedding). The new row starts as a copy of
    label ``init_from``'s row (default: the mean of the class rows). Returns the new label's index (after the
    null label: K + 1 for the first, with K classes); ``net.extra_labels`` counts them, and the guidance wrappers
    accept them. Train it with ``freeze(net, NEW_LABEL_PATTERNS)``."""
    emb = getattr(net, "label_emb", None)
    if emb is None:
        raise ValueError("add_label needs a class-conditional network with a label embedding (UNet(num_classes=10))")
    classes = net.num_classes
    table = emb.base.weight if isinstance(emb, NewLabels) else emb.weight
    if init_from is not None and not 0 <= init_from < classes:
        raise ValueError(f"init_from must be a class 0..{classes - 1}, got {init_from}")
    row = table[init_from] if init_from is not None else table[:classes].mean(0)
    if isinstance(emb, NewLabels):
        emb.new = nn.Parameter(torch.cat([emb.new.detach(), row.detach()[None]]))
    else:
        net.label_emb = NewLabels(emb, row)
    net.extra_labels = getattr(net, "extra_labels", 0) + 1
    return net.null_class + net.extra_labels


NEW_LABEL_PATTERNS = ("label_emb.new",)
"""The parameter name of the new label rows (for :func:`freeze`)."""


def add_word(net: nn.Module, tokenizer: Tokenizer, word: str, init_from: str | None = None) -> Tokenizer:
    """Textual inversion's new word (Gal et al. 2022, sec. 3): give a text-conditioned network's frozen text
    encoder one more token, whose embedding row v* is the only thing trained later (their eq. 2: the denoising
    loss, minimised over v* alone). The row starts as a copy of ``init_from``'s row (Gal et al. start from the
    embedding of a coarse one-word description of the concept, e.g. "sculpture"; default here: the mean of the word
    rows) and lives in
    :class:`NewLabels`, apart from the frozen table. Returns the tokenizer that knows the word (ids of the other
    words unchanged, so every old prompt encodes as before). Train with ``freeze(net, NEW_WORD_PATTERNS)``."""
    encoder = getattr(net, "text_encoder", None)
    if encoder is None:
        raise ValueError("add_word needs a text-conditioned network with a text_encoder (a TextUNet, notebook 13)")
    emb = encoder.token
    if emb.num_embeddings != len(tokenizer):
        raise ValueError(f"the tokenizer has {len(tokenizer)} ids but the text encoder {emb.num_embeddings}: "
                         "pass the tokenizer the network was trained with (and the words added since)")
    if init_from is not None and init_from not in tokenizer.vocabulary[2:]:
        raise ValueError(f"init_from must be a word of the vocabulary, got {init_from!r}")
    grown = tokenizer.with_words([word])
    table = emb.base.weight if isinstance(emb, NewLabels) else emb.weight
    row = table[tokenizer.ids[init_from]] if init_from is not None else table[2:].mean(0)
    if isinstance(emb, NewLabels):
        emb.new = nn.Parameter(torch.cat([emb.new.detach(), row.detach()[None]]))
    else:
        encoder.token = NewLabels(emb, row)
    return grown


NEW_WORD_PATTERNS = ("text_encoder.token.new",)
"""The parameter name of the new word rows (for :func:`freeze`)."""


def save_words(path: str | os.PathLike, net: nn.Module, tokenizer: Tokenizer, base_checkpoint: str | os.PathLike,
               extra: dict | None = None) -> Path:
    """Write the words added by :func:`add_word` -- their embedding rows to ``<path>.safetensors`` [n, width], their
    names to ``<path>.json`` with the SHA-256 of ``base_checkpoint`` -- the whole of a textual inversion: a few
    hundred bytes of weights. ``tokenizer`` is the grown one :func:`add_word` returned. :func:`load_words` reads it."""
    emb = getattr(getattr(net, "text_encoder", None), "token", None)
    if not isinstance(emb, NewLabels):
        raise ValueError("the network has no new words: add them with add_word (and train them) before saving")
    n = emb.new.shape[0]
    if len(tokenizer) != emb.num_embeddings:
        raise ValueError(f"the tokenizer has {len(tokenizer)} ids but the text encoder {emb.num_embeddings}: pass "
                         "the tokenizer add_word returned")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = path.with_name(path.name + ".safetensors")
    save_file({"text_encoder.token.new": emb.new.detach().cpu().contiguous()}, str(weights))
    header = {"format": "tinydiff-words", "version": 1, "base_sha256": read_config(base_checkpoint)["sha256"],
              "words": tokenizer.vocabulary[-n:], "extra": extra or {}}
    path.with_name(path.name + ".json").write_text(json.dumps(header, indent=2) + "\n")
    return weights


def load_words(path: str | os.PathLike, net: nn.Module, tokenizer: Tokenizer,
               base_checkpoint: str | os.PathLike) -> Tokenizer:
    """Add the words saved by :func:`save_words` to ``net`` (the text-conditioned network loaded from
    ``base_checkpoint``, whose vocabulary is ``tokenizer``'s); returns the tokenizer that knows them. Raises
    ``ValueError`` naming both hashes if the words were learned on another base."""
    path = Path(path)
    weights, sidecar = path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")
    if not (weights.is_file() and sidecar.is_file()):
        raise FileNotFoundError(f"words {path}: expected {weights.name} and {sidecar.name} (written by save_words)")
    header = json.loads(sidecar.read_text())
    if header.get("format") != "tinydiff-words":
        raise ValueError(f"{sidecar} is not a file of words (format {header.get('format')!r}; save_words writes them)")
    base_sha = read_config(base_checkpoint)["sha256"]
    if header.get("base_sha256") != base_sha:
        raise ValueError(f"the words in {path} were learned on the base checkpoint with SHA-256 "
                         f"{header.get('base_sha256')}, but {base_checkpoint} has SHA-256 {base_sha}: an embedding "
                         "means nothing to another text encoder. Load them onto the checkpoint they were learned on.")
    for word in header["words"]:
        tokenizer = add_word(net, tokenizer, word)
    rows = load_file(str(weights))["text_encoder.token.new"]
    new = net.text_encoder.token.new
    with torch.no_grad():
        new[-len(rows):].copy_(rows)
    return tokenizer


LORA_PATTERNS = ("*.down.weight", "*.up.weight")
"""The parameter names of the LoRA factors (for :func:`freeze`: ``freeze(model, LORA_PATTERNS)``)."""

UNET_LORA_TARGETS = ("*attn.qkv", "*attn.proj", "mid*.conv*", "up.*.conv1", "up.*.conv2")
"""Where notebook 12 puts LoRA in the course's UNet: the attention projections and the convolutions of the middle
and up paths (4.3 % of the shipped MNIST UNet's parameters at rank 4)."""


def partial_finetune_patterns(net: nn.Module) -> list[str]:
    """Partial fine-tuning of the course's UNet: the attention block and the last (highest-resolution) up-blocks
    with the output layers -- the parameter-name patterns for :func:`freeze`."""
    return ["mid_attn.*", f"up.{len(net.up) - 1}.*", "norm_out.*", "conv_out.*"]


METHODS = ("full", "partial", "lora", "label", "replay")
"""The adaptation methods of notebook 12. ``replay`` trains like ``full``: it is full fine-tuning with *replay* --
``scripts/adapt.py`` mixes the base model's own samples of the other classes into the data, against forgetting. Its
loss has the form of DreamBooth's prior preservation, but it is not DreamBooth (Ruiz et al. 2023), which binds a
subject to a new identifier and replays samples of the subject's *own* class: :mod:`tinydiff.personalise`."""


def prepare(net: nn.Module, method: str, rank: int = 4, alpha: float | None = None) -> int | None:
    """Make the course's UNet ready for one of :data:`METHODS`, in place: wrap layers in LoRA, add a label, freeze
    what the method does not train. Returns the new label to train on for ``"label"``, else None (the digits
    keep their own labels). Count what is left with :func:`trainable_parameters`."""
    if method not in METHODS:
        raise ValueError(f"unknown adaptation method {method!r}; choose one of {', '.join(METHODS)}")
    if method in ("full", "replay"):
        net.requires_grad_(True)
    elif method == "partial":
        freeze(net, partial_finetune_patterns(net))
    elif method == "lora":
        add_lora(net, list(UNET_LORA_TARGETS), rank, alpha)
        freeze(net, LORA_PATTERNS)
    else:
        label = add_label(net)
        freeze(net, NEW_LABEL_PATTERNS)
        return label
    return None


# --- adapter files: the low-rank factors only, tied to their base checkpoint --------------------


def save_adapter(path: str | os.PathLike, net: nn.Module, base_checkpoint: str | os.PathLike,
                 extra: dict | None = None) -> Path:
    """Write the LoRA factors of ``net`` (and any labels added by :func:`add_label`) to ``<path>.safetensors`` and
    what rebuilds them (rank, alpha, layer names, the number of new labels) to ``<path>.json``, with the SHA-256 of
    ``base_checkpoint``: :func:`load_adapter` refuses another base."""
    layers = lora_layers(net)
    new_labels = net.label_emb.new if isinstance(getattr(net, "label_emb", None), NewLabels) else None
    if not layers and new_labels is None:
        raise ValueError("the network has no LoRA layers and no new labels: add them with add_lora or add_label "
                         "before saving an adapter")
    tensors = {} if new_labels is None else {"label_emb.new": new_labels.detach().cpu().contiguous()}
    for name, layer in layers.items():
        tensors[f"{name}.down.weight"] = layer.down.weight.detach().cpu().contiguous()
        tensors[f"{name}.up.weight"] = layer.up.weight.detach().cpu().contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = path.with_name(path.name + ".safetensors")
    save_file(tensors, str(weights))
    header = {"format": "tinydiff-adapter", "version": 1, "base_sha256": read_config(base_checkpoint)["sha256"],
              "layers": {name: {"rank": layer.rank, "alpha": layer.alpha} for name, layer in layers.items()},
              "new_labels": 0 if new_labels is None else new_labels.shape[0],
              "extra": extra or {}}
    path.with_name(path.name + ".json").write_text(json.dumps(header, indent=2) + "\n")
    return weights


def load_adapter(path: str | os.PathLike, net: nn.Module, base_checkpoint: str | os.PathLike,
                 scale: float = 1.0) -> nn.Module:
    """Add the adapter at ``path`` to ``net`` (the network loaded from ``base_checkpoint``), at adapter scale
    ``scale``; returns ``net``. Raises ``ValueError`` naming both hashes if the adapter was trained on another
    base, and ``FileNotFoundError`` if its files are missing."""
    path = Path(path)
    weights, sidecar = path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")
    if not (weights.is_file() and sidecar.is_file()):
        raise FileNotFoundError(f"adapter {path}: expected {weights.name} and {sidecar.name} (written by save_adapter)")
    header = json.loads(sidecar.read_text())
    base_sha = read_config(base_checkpoint)["sha256"]
    if header.get("base_sha256") != base_sha:
        raise ValueError(f"adapter {path} was trained on the base checkpoint with SHA-256 {header.get('base_sha256')}, "
                         f"but {base_checkpoint} has SHA-256 {base_sha}: its low-rank updates mean nothing on these "
                         "weights. Load it onto the checkpoint it was trained on.")
    scale = check_scale(scale)
    for name, spec in header["layers"].items():
        add_lora(net, [name], spec["rank"], spec["alpha"])
    for _ in range(header.get("new_labels", 0)):
        add_label(net)
    tensors = load_file(str(weights))
    layers = lora_layers(net)
    with torch.no_grad():
        if header.get("new_labels", 0):
            net.label_emb.new.copy_(tensors["label_emb.new"])
        for name, layer in layers.items():
            layer.down.weight.copy_(tensors[f"{name}.down.weight"])
            layer.up.weight.copy_(tensors[f"{name}.up.weight"])
    set_adapter_scale(net, scale)
    return net
