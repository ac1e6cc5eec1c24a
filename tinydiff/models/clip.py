"""A tiny CLIP: an image encoder and a text encoder trained so that a digit and a true caption of it point the
same way (Radford et al. 2021).

    image x [B, 1, 32, 32] -> CNN (the classifier's body) -> Linear -> normalise -> u [B, E]
    prompt ids [B, L]      -> token + position embeddings -> TransformerBlock x layers -> LayerNorm
                           -> the state at <end> -> Linear -> normalise -> w [B, E]
    logits = exp(logit_scale) u w^T                                         [B_images, B_prompts]

Trained with the symmetric contrastive loss (:func:`tinydiff.losses.clip_loss`; Radford et al. 2021, Fig. 3),
the cosine u . w measures how well a caption fits an image. Three uses in notebook 13:

- zero-shot classification: the digit whose prompt "a photo of the digit k" has the highest cosine;
- the frozen text encoder's token *states* [B, L, width] are what the text-conditioned UNet reads through
  cross-attention (:class:`tinydiff.models.TextUNet`, as Stable Diffusion reads CLIP's);
- CLIP guidance and the CLIP score (:mod:`tinydiff.guidance`).

Token conventions are :mod:`tinydiff.tokenizer`'s: id 0 is ``<pad>`` (masked out), id 1 is ``<end>``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import TransformerBlock
from .classifier import Classifier

PAD_ID, END_ID = 0, 1  # tinydiff.tokenizer's special tokens


class TextEncoder(nn.Module):
    """Prompt ids [B, L] -> token states [B, L, width] (:meth:`forward`) or one vector per prompt (:meth:`pooled`).

    Each position starts as token embedding + learned position embedding; ``layers`` pre-LN transformer blocks
    let every token attend to every real (non-padding) token; a final LayerNorm. CLIP's text encoder is the same
    with a causal mask and 12 layers of width 512 (Radford et al. 2021, sec. 2.4).
    """

    def __init__(self, vocab_size: int, max_length: int, width: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.config = dict(vocab_size=vocab_size, max_length=max_length, width=width, layers=layers, heads=heads)
        self.width = width
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.randn(max_length, width) * 0.01)
        self.blocks = nn.ModuleList([TransformerBlock(width, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)

    def _check(self, ids: Tensor) -> None:
        L, V = self.config["max_length"], self.token.num_embeddings  # words added later included (adapt.add_word)
        if ids.ndim != 2 or ids.dtype != torch.long or ids.shape[1] != L:
            raise ValueError(f"prompt ids must be a LongTensor [B, {L}] from tokenizer.encode, got {ids.dtype} {list(ids.shape)}")
        if ids.device.type != "meta" and ids.numel() and bool(((ids < 0) | (ids >= V)).any()):
            raise ValueError(f"prompt ids must lie in 0..{V - 1}: was this tokenizer's vocabulary the one the encoder learned?")

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """(token states [B, L, width], mask [B, L], True at real tokens) for prompt ids [B, L]."""
        self._check(ids)
        mask = ids != PAD_ID
        x = self.token(ids) + self.position
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x), mask

    def pooled(self, ids: Tensor) -> Tensor:
        """The state at each prompt's ``<end>`` token: [B, width] (CLIP's "[EOS]" feature)."""
        states, _ = self(ids)
        end = (ids == END_ID).int().argmax(1)
        return states[torch.arange(len(ids), device=ids.device), end]


class TinyCLIP(nn.Module):
    """``forward(images, ids) -> logits [B_images, B_prompts]``; :meth:`encode_image` / :meth:`encode_text` -> unit
    vectors [B, embed_dim]; :meth:`similarity` -> the cosine of matching rows [B]. See the module docstring."""

    def __init__(self, vocab_size: int, max_length: int, embed_dim: int = 64, text_width: int = 64,
                 text_layers: int = 2, heads: int = 4, image_width: int = 16) -> None:
        super().__init__()
        self.config = dict(vocab_size=vocab_size, max_length=max_length, embed_dim=embed_dim, text_width=text_width,
                           text_layers=text_layers, heads=heads, image_width=image_width)
        self.text = TextEncoder(vocab_size, max_length, text_width, text_layers, heads)
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)
        # The image tower is the project's classifier CNN, its last layer projecting into the joint space.
        self.image = Classifier(in_channels=1, num_classes=embed_dim, width=image_width, dropout=0.0)
        # The temperature, learned as a log-scale starting at 1 / 0.07 (Radford et al. 2021, sec. 2.5).
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, images: Tensor) -> Tensor:
        """Unit image embeddings [B, embed_dim] of digits [B, 1, 32, 32] in [-1, 1]."""
        return F.normalize(self.image(images), dim=-1)

    def encode_text(self, ids: Tensor) -> Tensor:
        """Unit text embeddings [B, embed_dim] of prompt ids [B, L]."""
        return F.normalize(self.text_projection(self.text.pooled(ids)), dim=-1)

    def scale(self) -> Tensor:
        """exp(logit_scale), clipped at 100 as in CLIP's training (sec. 2.5)."""
        return self.logit_scale.clamp(max=math.log(100)).exp()

    def forward(self, images: Tensor, ids: Tensor) -> Tensor:
        """Logits [B_images, B_prompts] = exp(logit_scale) * cosine of every image with every prompt."""
        return self.scale() * self.encode_image(images) @ self.encode_text(ids).T

    def similarity(self, images: Tensor, ids: Tensor) -> Tensor:
        """Cosine of image i with prompt i, [B] (images [B, 1, 32, 32], ids [B, L])."""
        if len(images) != len(ids):
            raise ValueError(f"similarity pairs image i with prompt i: got {len(images)} images and {len(ids)} prompts")
        return (self.encode_image(images) * self.encode_text(ids)).sum(-1)
