"""Digits described in words: captions made from each image's own measured attributes, so they are never wrong.

A caption names the digit and, optionally, two attributes measured on the image itself (:mod:`.styles`):

- **thickness**: the image's ink divided by the median ink of its class among the original training digits
  (a "1" has far less ink than an "8" at the same stroke width). ``thin`` below :data:`THIN_BELOW`, ``bold``
  above :data:`BOLD_ABOVE`, otherwise ``regular`` -- which a caption leaves unsaid.
- **slant**: :func:`.styles.slant`. ``left`` below -:data:`SLANT_LIMIT`, ``right`` above it, otherwise ``upright``.

On the shipped MNIST most digits are regular and lean a little right, so :func:`styled_digits` makes balanced
variants: every digit is first stood upright (:func:`.styles.deskew`), then drawn with one of the nine
(thickness, slant) combinations, by :func:`.styles.thin_half` / :func:`.styles.thicken` and
:func:`.styles.shear` by -/+ :data:`SHEAR`. The attributes are then *measured* on the result, not assumed.

Captions say the digit and any subset of the attributes, with synonyms and several templates
(:func:`caption`): "a bold seven leaning right", "the digit 7, thick, slanted right", "a photo of the digit
seven". A caption is true of an image when every attribute it states holds (:func:`caption_is_true`), so
"a seven" is true of every seven. One combination can be held out of training (:data:`HELD_OUT`: bold
sevens), to test whether a model composes "bold" and "seven" having seen each only with others.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import styles
from .mnist import load_mnist

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS = ("thin", "regular", "bold")
THIN_BELOW, BOLD_ABOVE = 0.75, 1.4   # ink / class median
SLANT_LIMIT = 0.2                     # |slant| above this leans
SHEAR = 0.4                           # the shear of the slanted variants
HELD_OUT = (7, THICKNESS.index("bold"))  # (digit, thickness) never shown in training
UNSAID = -1                           # an attribute a caption does not state

# Words per attribute value (synonyms); a caption draws one of them.
THICKNESS_WORDS = {0: ("thin", "light"), 2: ("bold", "thick")}
SLANT_WORDS = {0: ("leaning left", "slanted left"), 1: ("upright", "standing straight"),
               2: ("leaning right", "slanted right")}
TEMPLATES = ("a {thickness} {digit} {slant}", "a photo of a {thickness} {digit} {slant}",
             "the digit {digit}, {thickness}, {slant}", "a photo of the digit {digit}")
"""The caption templates. The last one states no attribute: it is CLIP's zero-shot prompt (Radford et al. 2021, sec. 3.1.4)."""


def vocabulary() -> list[str]:
    """Every word a caption can use, in a fixed order (the tokenizer's vocabulary)."""
    words: list[str] = []
    texts = [*TEMPLATES, *DIGIT_WORDS, *(str(k) for k in range(10)),
             *(w for ws in THICKNESS_WORDS.values() for w in ws), *(w for ws in SLANT_WORDS.values() for w in ws)]
    for text in texts:
        for word in text.replace(",", " , ").split():
            if not word.startswith("{") and word not in words:
                words.append(word)
    return words


MAX_LENGTH = 12
"""Token ids per prompt: the longest caption has 8 words, plus ``<end>``, with room for a learner's prompt."""


def tokenizer():
    """The :class:`tinydiff.tokenizer.Tokenizer` of the captions: :func:`vocabulary`, :data:`MAX_LENGTH` ids."""
    from ..tokenizer import Tokenizer

    return Tokenizer(vocabulary(), MAX_LENGTH)


def reference_ink(images: Tensor, labels: Tensor) -> Tensor:
    """The median ink of each class, float64 [10]: the yardstick of thickness (from the original training digits)."""
    amount = styles.ink(images)
    missing = [k for k in range(10) if not bool((labels == k).any())]
    if missing:
        raise ValueError(f"reference_ink needs digits of every class, missing {missing}")
    return torch.stack([amount[labels.cpu() == k].median() for k in range(10)])


def thickness_of(images: Tensor, labels: Tensor, reference: Tensor) -> Tensor:
    """Thickness class per image, LongTensor [B]: 0 thin, 1 regular, 2 bold (ink / reference[label], see module)."""
    ratio = styles.ink(images) / reference.cpu().to(torch.float64)[labels.cpu()]
    return (ratio > THIN_BELOW).long() + (ratio > BOLD_ABOVE).long()


def slant_of(images: Tensor) -> Tensor:
    """Slant class per image, LongTensor [B]: 0 left, 1 upright, 2 right (:func:`.styles.slant` against
    +-:data:`SLANT_LIMIT`)."""
    s = styles.slant(images)
    return (s >= -SLANT_LIMIT).long() + (s > SLANT_LIMIT).long()


def attributes(images: Tensor, labels: Tensor, reference: Tensor) -> Tensor:
    """(digit, thickness, slant) measured per image: LongTensor [B, 3]."""
    return torch.stack([labels.cpu().long(), thickness_of(images, labels, reference), slant_of(images)], 1)


def styled_digits(images: Tensor, labels: Tensor, reference: Tensor, *, copies: int = 1,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Balanced variants of digits [N, 1, H, W]: each copy stands every digit upright, then draws it in one
    (thickness, slant) combination, all nine equally often. Returns (images [copies * N, 1, H, W], their
    measured attributes [copies * N, 3])."""
    if copies < 1:
        raise ValueError(f"copies must be a positive number of variants per digit, got {copies}")
    upright = styles.deskew(images)
    made, attrs = [], []
    for _ in range(copies):
        on = generator.device if generator is not None else torch.device("cpu")  # a generator draws on its own device
        combo = torch.randperm(len(images), generator=generator, device=on).to(images.device) % 9
        thick, lean = combo // 3, combo % 3
        x = upright.clone()
        x[thick == 0] = styles.thin_half(upright[thick == 0])
        x[thick == 2] = styles.thicken(upright[thick == 2])
        x = styles.shear(x, (lean.to(x.dtype) - 1) * SHEAR)
        made.append(x)
        attrs.append(attributes(x, labels, reference))
    return torch.cat(made), torch.cat(attrs)


def without_held_out(images: Tensor, attrs: Tensor) -> tuple[Tensor, Tensor]:
    """Drop every image of the :data:`HELD_OUT` combination (bold sevens): what the text models train on."""
    keep = ~((attrs[:, 0] == HELD_OUT[0]) & (attrs[:, 1] == HELD_OUT[1]))
    return images[keep], attrs[keep]


def caption(digit: int, thickness: int = UNSAID, slant: int = UNSAID, *, template: int = 0, synonym: int = 0,
            numeral: bool = False) -> str:
    """One caption: the digit (its word, or with ``numeral`` the figure) and the attributes given (``UNSAID``
    or regular thickness leave them out), in ``TEMPLATES[template]``, with the ``synonym``-th word of each."""
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be 0..9, got {digit}")
    if template == len(TEMPLATES) - 1 and (thickness not in (UNSAID, 1) or slant != UNSAID):
        raise ValueError("the last template states no attribute; pick another template for these attributes")
    parts = {"digit": str(digit) if numeral else DIGIT_WORDS[digit],
             "thickness": THICKNESS_WORDS[thickness][synonym % 2] if thickness in THICKNESS_WORDS else "",
             "slant": SLANT_WORDS[slant][synonym % 2] if slant in SLANT_WORDS else ""}
    text = TEMPLATES[template].format(**parts)
    while ", ," in text or ",," in text:  # an unsaid attribute leaves an empty list item
        text = text.replace(", ,", ",").replace(",,", ",")
    return " ".join(text.replace(" ,", ",").strip(" ,").split())


def random_captions(attrs: Tensor, *, p_say: float = 0.8, generator: torch.Generator | None = None) -> tuple[list[str], Tensor]:
    """A true caption per image from its attributes [N, 3]: each attribute said with probability ``p_say``,
    a random template, synonym and word/figure. Returns (captions, the attributes each caption states [N, 3],
    ``UNSAID`` where it does not)."""
    n = len(attrs)
    u = torch.rand(n, 5, generator=generator, device=generator.device if generator is not None else None).cpu()
    template = (u[:, 0] * len(TEMPLATES)).long().clamp(max=len(TEMPLATES) - 1)
    stated = attrs.clone()
    stated[:, 1] = torch.where((u[:, 1] < p_say) & (attrs[:, 1] != 1), attrs[:, 1], UNSAID)
    stated[:, 2] = torch.where(u[:, 2] < p_say, attrs[:, 2], UNSAID)
    bare = template == len(TEMPLATES) - 1
    stated[bare, 1:] = UNSAID
    texts = [caption(int(d), int(th), int(sl), template=int(tp), synonym=int(u[i, 3] < 0.5), numeral=bool(u[i, 4] < 0.2))
             for i, ((d, th, sl), tp) in enumerate(zip(stated.tolist(), template.tolist()))]
    return texts, stated


def caption_is_true(stated: Tensor, attrs: Tensor) -> Tensor:
    """Whether each caption (stated attributes [M, 3]) is true of each image (attributes [N, 3]): BoolTensor [N, M].

    True when the digit matches and every attribute the caption states matches the image's."""
    s, a = stated[None, :, :], attrs[:, None, :]
    return ((s == a) | (s == UNSAID)).all(-1)


@dataclass
class CaptionedDigits:
    """Digits with true captions: images [N, 1, 32, 32], attributes [N, 3] measured on them, captions (N strings)
    and the attributes each caption states [N, 3] (``UNSAID`` where it says nothing)."""

    images: Tensor
    attributes: Tensor
    captions: list[str]
    stated: Tensor


def captioned_digits(split: str = "train", *, copies: int = 3, seed: int = 0, hold_out: bool = True) -> CaptionedDigits:
    """The shipped digits of ``split`` as :func:`styled_digits` (``copies`` variants each) with one random true
    caption per image; with ``hold_out`` the :data:`HELD_OUT` combination is removed. Deterministic in ``seed``;
    the thickness yardstick is always the original training digits (:func:`reference_ink`)."""
    train_images, train_labels = load_mnist("train", pad_to_32=True)
    reference = reference_ink(train_images, train_labels)
    images, labels = (train_images, train_labels) if split == "train" else load_mnist(split, pad_to_32=True)
    generator = torch.Generator().manual_seed(seed)
    made, attrs = styled_digits(images, labels, reference, copies=copies, generator=generator)
    if hold_out:
        made, attrs = without_held_out(made, attrs)
    texts, stated = random_captions(attrs, generator=generator)
    return CaptionedDigits(made, attrs, texts, stated)
