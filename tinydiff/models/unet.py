"""A small UNet for 32 x 32 digits: model(x_t [B, C, H, W], t [B], y [B] = None) -> prediction [B, C, H, W].

The DDPM network of Ho et al. 2020 (sec. 4 and appendix B), shrunk to run on a
CPU. Its parts, in the order the data flows::

    e = TimeEmbedding(t) + label_embedding(y)       sinusoidal features of t -> MLP; plus a learned vector per class
    h = conv_in(x_t)                                 C -> ch[0] channels
    down:  ResBlock(h, e) x n_res, keep h as a skip, halve H and W    (for every level but the last)
    mid:   ResBlock, SelfAttention, ResBlock         at the lowest resolution (8 x 8 for 32 x 32 inputs)
    up:    ResBlock(concat(h, skip), e) x n_res, double H and W by a transposed conv (mirror of the down path)
    out  = conv_out(SiLU(GroupNorm(h)))              back to C channels, zero-initialised

A ResBlock is GroupNorm -> SiLU -> conv -> GroupNorm, then the time (and label)
embedding sets a per-channel scale and shift, -> SiLU -> conv, plus the input
(Ho et al. 2020, app. B; scale/shift as in Dhariwal & Nichol 2021, sec. 3).
Because e enters every block, the network can be a different function at
every t -- it must be: predicting eps at t = 0 and at t = T-1 are different tasks.

Text conditioning (optional, ``context_dim=D``): a :class:`~tinydiff.models.attention.CrossAttention`
block after every ResBlock and in the middle reads text token states ``context`` [B, L, D] (Rombach et al.
2022, sec. 3.3); :class:`tinydiff.models.TextUNet` supplies them from a frozen text encoder.

Class conditioning (optional, ``num_classes=K``): labels 0..K-1 are the classes
and label K (``model.null_class``) is the learned "null" label meaning "no
class". Training with some labels replaced by the null label (``p_uncond`` in
:func:`tinydiff.train.train`) gives one network that is both conditional and
unconditional, as classifier-free guidance needs (Ho & Salimans 2022, sec. 3.2).
``y=None`` means "null label for the whole batch".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import CrossAttention
from .embeddings import TimeEmbedding


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 when the channels divide, else the largest divisor <= 8."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class ResBlock(nn.Module):
    """Residual block with time-conditioned scale/shift: h [B, c_in, H, W], e [B, E] -> [B, c_out, H, W].

    out = skip(h) + conv2(dropout(SiLU(GN(conv1(SiLU(GN(h)))) * (1 + scale(e)) + shift(e))))
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)  # -> (scale, shift) per channel
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        z = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.emb(F.silu(e))[:, :, None, None].chunk(2, dim=1)
        z = self.norm2(z) * (1 + scale) + shift
        z = self.conv2(self.dropout(F.silu(z)))
        return self.skip(h) + z


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions (Vaswani et al. 2017, eq. 1), residual: [B, c, H, W] -> same.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V, with Q, K, V 1x1 convolutions of GroupNorm(h).
    """

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor) -> Tensor:
        B, C, H, W = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        # [B, heads, H*W, d] for each of q, k, v
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return h + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """The UNet of the module docstring.

    Args:
        in_channels: C of the images (1 for MNIST).
        channels: base width ch[0]; level i has ``channels * mults[i]`` channels.
        mults: width multiplier per resolution level; H and W must be divisible by 2^(len(mults) - 1).
        n_res: ResBlocks per level on the way down (and on the way up).
        num_classes: K for class conditioning (labels 0..K-1, null label K), or None.
        dropout: dropout inside the ResBlocks (Ho et al. use 0.1 on CIFAR-10).
        heads: attention heads in the middle block (and in the cross-attention blocks).
        context_dim: width D of the text states the cross-attention blocks read, or None for none.
        out_channels: channels of the prediction, if not ``in_channels`` (an image-conditioned UNet reads its
            conditioning image as extra input channels but predicts only the image's:
            :class:`tinydiff.models.SuperResUNet`).

    ``model.config`` holds these arguments (what :mod:`tinydiff.checkpoint` stores).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        mults: tuple[int, ...] | list[int] = (1, 2, 2),
        n_res: int = 1,
        num_classes: int | None = None,
        dropout: float = 0.0,
        heads: int = 4,
        context_dim: int | None = None,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or channels < 1 or n_res < 1 or not mults or min(mults) < 1:
            raise ValueError("in_channels, channels, n_res and every entry of mults must be positive")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be a positive number of classes or None, got {num_classes}")
        self.config = dict(in_channels=in_channels, channels=channels, mults=list(mults), n_res=n_res,
                           num_classes=num_classes, dropout=dropout, heads=heads)
        if context_dim is not None:  # only then, so configs of the checkpoints saved before it stay as they were
            if context_dim < 1:
                raise ValueError(f"context_dim must be a positive width of the text states or None, got {context_dim}")
            self.config["context_dim"] = context_dim
        if out_channels is not None:  # likewise: only then
            if out_channels < 1:
                raise ValueError(f"out_channels must be a positive number of channels or None, got {out_channels}")
            self.config["out_channels"] = out_channels
        self.context_dim = context_dim
        self.num_classes = num_classes
        widths = [channels * m for m in mults]
        emb_dim = max(4 * channels, 128)
        self.time_emb = TimeEmbedding(emb_dim, freq_dim=64)
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)

        self.down = nn.ModuleList()  # level i: n_res ResBlocks at widths[i], then a stride-2 conv
        self.downsample = nn.ModuleList()
        c = widths[0]
        for i, w in enumerate(widths):
            self.down.append(nn.ModuleList([ResBlock(c if j == 0 else w, w, emb_dim, dropout) for j in range(n_res)]))
            c = w
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(w, w, 3, stride=2, padding=1))

        self.mid1 = ResBlock(c, c, emb_dim, dropout)
        self.mid_attn = SelfAttention(c, heads)
        self.mid2 = ResBlock(c, c, emb_dim, dropout)

        self.up = nn.ModuleList()  # mirror: n_res ResBlocks on concat(h, skip), then a learned x2 upsampling
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(widths))):
            w = widths[i]
            self.up.append(nn.ModuleList([ResBlock(2 * w, w, emb_dim, dropout) for _ in range(n_res)]))
            # ConvTranspose2d(k=4, s=2, p=1) doubles H and W and moves to the next level's width.
            self.upsample.append(nn.Identity() if i == 0 else nn.ConvTranspose2d(w, widths[i - 1], 4, stride=2, padding=1))
        if context_dim is not None:  # one cross-attention per ResBlock, in lists beside the ResBlocks'
            self.down_text = nn.ModuleList([nn.ModuleList([CrossAttention(w, context_dim, heads) for _ in range(n_res)])
                                            for w in widths])
            self.mid_text = CrossAttention(widths[-1], context_dim, heads)
            self.up_text = nn.ModuleList([nn.ModuleList([CrossAttention(widths[i], context_dim, heads) for _ in range(n_res)])
                                          for i in reversed(range(len(widths)))])
        c = widths[0]
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, out_channels or in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def null_class(self) -> int | None:
        """The label meaning "no class" (= num_classes), or None for an unconditional UNet."""
        return self.num_classes

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this: 2^(len(mults) - 1), one halving per level but the last."""
        return 2 ** (len(self.down) - 1)

    def embed(self, t: Tensor, y: Tensor | None) -> Tensor:
        """e = TimeEmbedding(t) + label_emb(y): t [B], y [B] or None -> [B, max(4 * channels, 128)]."""
        e = self.time_emb(t)
        if self.label_emb is None:
            if y is not None:
                raise ValueError("this UNet is unconditional (num_classes=None); call it without y")
            return e
        if y is None:
            y = torch.full_like(t, self.null_class, dtype=torch.long)
        if y.shape != t.shape or y.dtype != torch.long:
            raise ValueError(f"y must be a LongTensor [B] = [{t.shape[0]}] of labels 0..{self.num_classes}, got {y.dtype} {list(y.shape)}")
        return e + self.label_emb(y)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, context: Tensor | None = None,
                context_mask: Tensor | None = None, emb: Tensor | None = None) -> Tensor:
        """x [B, C, H, W], t LongTensor [B] (0-based), y LongTensor [B] or None -> prediction [B, C, H, W].

        A text-conditioned UNet (``context_dim``) also takes ``context`` [B, L, context_dim] and its padding
        mask ``context_mask`` BoolTensor [B, L] (True at real tokens). ``emb`` [B, max(4 * channels, 128)] is
        added to the time embedding e: another scalar condition, such as the noise level of a super-resolution
        model's conditioning image (:class:`tinydiff.models.SuperResUNet`)."""
        factor = self.size_multiple
        if x.ndim != 4 or x.shape[1] != self.config["in_channels"] or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"x must have shape [B, {self.config['in_channels']}, H, W] with H and W divisible by {factor}, "
                f"got {list(x.shape)} (pad 28x28 MNIST to 32x32: load_mnist(pad_to_32=True))"
            )
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape [B] = [{x.shape[0]}], got {list(t.shape)}")
        if (context is None) != (self.context_dim is None):
            raise ValueError("give context (text states [B, L, context_dim]) exactly when the UNet has context_dim "
                             f"(here {self.context_dim})")
        e = self.embed(t, y)
        if emb is not None:
            if emb.shape != e.shape:
                raise ValueError(f"emb must have the time embedding's shape {list(e.shape)}, got {list(emb.shape)}")
            e = e + emb
        if context is None:
            return self.trunk(x, e)
        return self.trunk(x, e, lambda h, where: self.text_block(where)(h, context, context_mask))

    def text_block(self, where: tuple[str, ...] | tuple[str, int, int]) -> CrossAttention:
        """The cross-attention block at ``where``: ("down", i, j), ("mid",) or ("up", i, j) (see :meth:`trunk`)."""
        if where[0] == "mid":
            return self.mid_text
        return (self.down_text if where[0] == "down" else self.up_text)[where[1]][where[2]]

    def trunk(self, x: Tensor, e: Tensor, after: Callable[[Tensor, tuple], Tensor] | None = None) -> Tensor:
        """The network proper: x [B, C, H, W] and the embedding e [B, E] -> prediction [B, C_out, H, W].

        ``after(h, where)`` runs on the features after every ResBlock, ``where`` = ("down", level, block) or
        ("up", level, block), and after the middle attention, ("mid",): the text blocks of a text-conditioned
        UNet go there, and the temporal layers of :class:`tinydiff.models.VideoUNet`. None: nothing runs there."""
        after = after or (lambda h, where: h)
        h = self.conv_in(x)
        skips = []
        for i, (blocks, downsample) in enumerate(zip(self.down, self.downsample)):
            for j, block in enumerate(blocks):
                h = after(block(h, e), ("down", i, j))
                skips.append(h)
            h = downsample(h)
        h = after(self.mid_attn(self.mid1(h, e)), ("mid",))
        h = self.mid2(h, e)
        for i, (blocks, upsample) in enumerate(zip(self.up, self.upsample)):
            for j, block in enumerate(blocks):
                h = after(block(torch.cat([h, skips.pop()], dim=1), e), ("up", i, j))
            h = upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def summary(self, image_size: int = 32) -> None:
        """Print the parameter count and one line per stage: resolution, channels in -> out, parameters."""

        def count(*modules: nn.Module) -> int:
            return sum(p.numel() for m in modules for p in m.parameters())

        def row(name: str, size: int, c_in: int | str, c_out: int | str, note: str, *modules: nn.Module) -> str:
            return f"  {name:<9} {f'{size}x{size}':>6}  {c_in:>4} -> {c_out:<4} {note:<7} {count(*modules):>9,}"

        cond = f", class-conditional ({self.num_classes} classes + null)" if self.num_classes else ""
        lines = [f"UNet: {count(self):,} parameters{cond}",
                 f"  {'stage':<9} {'size':>6}  {'channels':^12} {'':<7} {'params':>9}"]
        emb = [m for m in (self.time_emb, self.label_emb) if m is not None]
        lines.append(row("embed", 1, "t,y" if self.num_classes else "t", self.time_emb.mlp[-1].out_features, "", *emb))
        size = image_size
        lines.append(row("conv_in", size, self.conv_in.in_channels, self.conv_in.out_channels, "", self.conv_in))
        for i, (blocks, down) in enumerate(zip(self.down, self.downsample)):
            note = "" if isinstance(down, nn.Identity) else "+down"
            lines.append(row(f"down{i}", size, blocks[0].norm1.num_channels, blocks[-1].conv2.out_channels, note, blocks, down))
            size = size // 2 if note else size
        c = self.mid1.conv2.out_channels
        lines.append(row("mid", size, c, c, "+attn", self.mid1, self.mid_attn, self.mid2))
        for i, (blocks, up) in enumerate(zip(self.up, self.upsample)):
            note = "" if isinstance(up, nn.Identity) else "+up"
            c_out = up.out_channels if note else blocks[-1].conv2.out_channels
            lines.append(row(f"up{len(self.up) - 1 - i}", size, blocks[0].norm1.num_channels, c_out, note, blocks, up))
            size = size * 2 if note else size
        lines.append(row("conv_out", size, self.conv_out.in_channels, self.conv_out.out_channels, "", self.norm_out, self.conv_out))
        if self.context_dim is not None:
            lines.append(f"  {'cross-attention blocks (text, width ' + str(self.context_dim) + ')':<39} "
                         f"{count(self.down_text, self.mid_text, self.up_text):>9,}")
        print("\n".join(lines))
