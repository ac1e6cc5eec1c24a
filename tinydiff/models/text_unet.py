"""A text-conditioned UNet: ``model(z_t, t, y=prompt ids [B, L]) -> prediction``, Stable Diffusion's shape in miniature.

    ids [B, L] -> frozen text encoder (the tiny CLIP's) -> token states c [B, L, D], mask [B, L]
    z_t, t     -> UNet whose every ResBlock is followed by CrossAttention(h, c, mask)  (Rombach et al. 2022, sec. 3.3)

The prompt reaches the pixels only through attention: there is no label embedding and no pooled text vector
added to the time embedding, so the attention weights show which words each position read
(:meth:`TextUNet.attention_maps`).

The null condition of classifier-free guidance is the empty prompt ``[<end>, <pad>, ...]``
(:attr:`TextUNet.null_class`, the same attribute name as a class-conditional UNet's null label), so
:mod:`tinydiff.guidance` and :func:`tinydiff.train.train` treat labels and prompts alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .clip import END_ID, PAD_ID, TextEncoder
from .unet import UNet


class TextUNet(nn.Module):
    """A :class:`~tinydiff.models.UNet` with cross-attention (``context_dim`` = the text width) and a frozen
    :class:`~tinydiff.models.clip.TextEncoder`.

    Args:
        unet: the UNet's arguments (without ``num_classes``, which must be None, and ``context_dim``).
        text_encoder: the text encoder's arguments (:attr:`TextEncoder.config`).
    """

    def __init__(self, unet: dict, text_encoder: dict) -> None:
        super().__init__()
        if unet.get("num_classes") is not None or "context_dim" in unet:
            raise ValueError("a TextUNet reads prompts, not labels: give the UNet no num_classes and no context_dim")
        self.config = dict(unet=dict(unet), text_encoder=dict(text_encoder))
        self.text_encoder = TextEncoder(**text_encoder).eval().requires_grad_(False)
        self.unet = UNet(**unet, context_dim=self.text_encoder.width)
        self.max_length = self.text_encoder.config["max_length"]

    def train(self, mode: bool = True) -> TextUNet:
        """Train mode for the UNet; the text encoder stays frozen, in eval mode."""
        super().train(mode)
        self.text_encoder.eval()
        return self

    @property
    def null_class(self) -> Tensor:
        """The empty prompt's ids [L]: the null condition of classifier-free guidance."""
        ids = torch.full((self.max_length,), PAD_ID, dtype=torch.long)
        ids[0] = END_ID
        return ids

    def check_condition(self, y: Tensor) -> Tensor:
        """Raise unless y is prompt ids [B, L] with an <end> in every row; return it."""
        if not isinstance(y, Tensor) or y.ndim != 2 or y.dtype != torch.long or y.shape[1] != self.max_length:
            got = f"{y.dtype} {list(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"a TextUNet's condition is prompt ids, a LongTensor [B, {self.max_length}] from "
                             f"tokenizer.encode(prompts), got {got}")
        if y.device.type != "meta" and y.numel() and not bool((y == END_ID).any(1).all()):
            raise ValueError("every prompt needs an <end> token: make the ids with tokenizer.encode")
        return y

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x [B, C, H, W], t LongTensor [B], y prompt ids [B, L] (None: the empty prompt) -> prediction [B, C, H, W].

        Gradients reach the text encoder only where one of its parameters is trainable (a new word of textual
        inversion, :func:`tinydiff.adapt.add_word`); the frozen encoder runs without building a graph."""
        if y is None:
            y = self.null_class.to(x.device).expand(x.shape[0], -1)
        self.check_condition(y)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {y.shape[0]} prompts: give one prompt per image")
        learning = any(p.requires_grad for p in self.text_encoder.parameters())  # a new word, or a tuned encoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and learning):
            states, mask = self.text_encoder(y)
        return self.unet(x, t, context=states, context_mask=mask)

    def cross_attention_blocks(self) -> list[nn.Module]:
        """Every cross-attention block, down path, middle, up path."""
        u = self.unet
        return [*(b for level in u.down_text for b in level), u.mid_text, *(b for level in u.up_text for b in level)]

    @contextlib.contextmanager
    def ignoring_text(self) -> Iterator[TextUNet]:
        """Within the block, every cross-attention block returns its input: the prompt cannot reach the UNet
        (an ablation that shows it has no other way in)."""
        blocks = self.cross_attention_blocks()
        for block in blocks:
            block.enabled = False
        try:
            yield self
        finally:
            for block in blocks:
                block.enabled = True

    @torch.no_grad()
    def attention_maps(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """How much each position read from each token: [B, L, H, W], the cross-attention weights averaged over
        the heads and over the blocks at the full resolution H x W of x (each pixel's weights sum to 1 over L)."""
        blocks = self.cross_attention_blocks()
        for block in blocks:
            block.record = True
        try:
            self(x, t, y)
            H, W = x.shape[-2:]
            maps = [b.last_weights.mean(1) for b in blocks if b.last_weights.shape[2] == H * W]  # [B, H*W, L] each
        finally:
            for block in blocks:
                block.record, block.last_weights = False, None
        return torch.stack(maps).mean(0).transpose(1, 2).reshape(x.shape[0], -1, H, W)


def text_unet_from(unet: UNet, text_encoder: TextEncoder) -> TextUNet:
    """A TextUNet that starts as the *unconditional* mode of a trained class-conditional ``unet``.

    Every UNet weight is copied; the label embedding goes, and its null row is folded into the time embedding's
    last bias (e = TimeEmbedding(t) + label_emb(null) either way). The new cross-attention blocks start as the
    identity (zero output projection), so for any prompt the new model predicts what ``unet`` predicts with the
    null label -- it already draws digits, and training only has to teach it to read. ``text_encoder``'s weights
    are copied in and frozen. The same start as adding a new condition to a trained model through zero-initialised
    layers (Zhang et al. 2023, ControlNet, sec. 3.1)."""
    if unet.num_classes is None:
        raise ValueError("text_unet_from needs a class-conditional UNet (its null label is the unconditional model)")
    config = {k: v for k, v in unet.config.items() if k not in ("num_classes", "context_dim")}
    model = TextUNet(unet=config, text_encoder=text_encoder.config)
    state = {k: v for k, v in unet.state_dict().items() if not k.startswith("label_emb.")}
    state["time_emb.mlp.2.bias"] = state["time_emb.mlp.2.bias"] + unet.label_emb.weight[unet.null_class].detach()
    missing, unexpected = model.unet.load_state_dict(state, strict=False)
    if unexpected or any(not k.split(".")[0].endswith("_text") for k in missing):
        raise RuntimeError(f"unexpected weights {unexpected} / missing non-text weights {missing}")
    model.text_encoder.load_state_dict(text_encoder.state_dict())
    return model.to(next(unet.parameters()).device)
