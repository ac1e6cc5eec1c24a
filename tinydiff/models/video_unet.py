"""The UNet made spatio-temporal: model(x_t [B, T, C, H, W], t [B], y [B] = None) -> prediction [B, T, C, H, W].

Video diffusion (Ho et al. 2022b, sec. 3) keeps the image UNet and *factorises* space and time: every layer of
the image network runs on each frame alone -- the frames are folded into the batch, [B, T, C, H, W] ->
[B * T, C, H, W] -- and new layers mix information *across* frames, each at one pixel. Ours is the 1-D convolution
over time of Make-A-Video's pseudo-3-D convolution (Singer et al. 2022, sec. 3), placed after every ResBlock and
after the middle attention (where a text UNet puts its cross-attention; :meth:`tinydiff.models.UNet.trunk`)::

    h [B*T, c, H, W] -> h + Conv1d_time(SiLU(GroupNorm(h)))        kernel 3 over the T frames, at every pixel

The noise level t and the label y are the clip's, shared by its frames.

Two consequences a learner can check (``tests/test_video.py``):

- Each temporal layer starts at zero (its convolution's weights are zero), so a fresh VideoUNet is the image
  UNet applied to every frame independently. :meth:`VideoUNet.from_image_model` copies a trained image UNet's
  weights into the spatial layers: training then starts from the per-frame model and only has to learn what
  ties the frames together (Singer et al. 2022 initialise their temporal layers as the identity for this reason).
- No layer knows the absolute frame number, and each temporal convolution sees one frame either side: the network
  is *equivariant to shifting the clip in time*, exactly, for every frame farther from the clip's ends than the
  number of temporal layers on its longest path (the zero padding at the ends is the only thing that tells
  frames apart).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .unet import UNet, _groups


def time_fold(h: Tensor, frames: int) -> Tensor:
    """Features of every frame of B clips, [B * T, C, H, W] (frame k of clip b at b * T + k), -> one sequence over
    time per clip and pixel, [B * H * W, C, T]: what a 1-D convolution over time reads."""
    BT, C, H, W = h.shape
    return h.reshape(BT // frames, frames, C, H, W).permute(0, 3, 4, 2, 1).reshape(-1, C, frames)


def time_unfold(z: Tensor, frames: int, height: int, width: int) -> Tensor:
    """The inverse of :func:`time_fold`: [B * H * W, C, T] -> [B * T, C, H, W]."""
    C = z.shape[1]
    return z.reshape(-1, height, width, C, frames).permute(0, 4, 3, 1, 2).reshape(-1, C, height, width)


class TemporalConv(nn.Module):
    """A residual 1-D convolution across frames at every pixel (Singer et al. 2022, sec. 3): h [B * T, c, H, W] ->
    same, h + Conv1d(SiLU(GroupNorm(h))) along T with zero padding. The convolution starts at zero, so the layer
    starts as the identity. ``frames`` = T tells it how the batch folds."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"the temporal kernel must be odd (1 frame, then as many either side), got {kernel}")
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, h: Tensor, frames: int) -> Tensor:
        z = self.conv(time_fold(F.silu(self.norm(h)), frames))  # [B * H * W, C, T]
        return h + time_unfold(z, frames, *h.shape[-2:])


class VideoUNet(UNet):
    """The UNet of :mod:`tinydiff.models.unet` on clips [B, T, C, H, W], with a :class:`TemporalConv` after every
    ResBlock and after the middle attention (see the module docstring). Takes :class:`~tinydiff.models.UNet`'s
    arguments but ``context_dim`` / ``out_channels``, and ``temporal_kernel`` (odd, frames per temporal
    convolution). Its state dict is the image UNet's plus ``down_time.*``, ``mid_time.*``, ``up_time.*``."""

    def __init__(self, in_channels: int = 1, channels: int = 32, mults: tuple[int, ...] | list[int] = (1, 2, 2),
                 n_res: int = 1, num_classes: int | None = None, dropout: float = 0.0, heads: int = 4,
                 temporal_kernel: int = 3) -> None:
        super().__init__(in_channels, channels, mults, n_res, num_classes, dropout, heads)
        self.config["temporal_kernel"] = temporal_kernel
        widths = [channels * m for m in mults]
        self.down_time = nn.ModuleList([nn.ModuleList([TemporalConv(w, temporal_kernel) for _ in range(n_res)])
                                        for w in widths])
        self.mid_time = TemporalConv(widths[-1], temporal_kernel)
        self.up_time = nn.ModuleList([nn.ModuleList([TemporalConv(widths[i], temporal_kernel) for _ in range(n_res)])
                                      for i in reversed(range(len(widths)))])

    @classmethod
    def from_image_model(cls, image_model: UNet, temporal_kernel: int = 3) -> VideoUNet:
        """A VideoUNet whose spatial layers are a copy of a trained (class-conditional or unconditional) image UNet's
        and whose temporal layers are zero: at first it *is* that model applied to every frame."""
        if type(image_model) is not UNet or "context_dim" in image_model.config or "out_channels" in image_model.config:
            raise ValueError("from_image_model needs a plain tinydiff.models.UNet (no text, no extra input channels)")
        video = cls(**image_model.config, temporal_kernel=temporal_kernel)
        missing, unexpected = video.load_state_dict(image_model.state_dict(), strict=False)
        assert not unexpected and all(k.split(".")[0] in ("down_time", "mid_time", "up_time") for k in missing)
        p = next(image_model.parameters())
        return video.to(device=p.device, dtype=p.dtype)

    def time_block(self, where: tuple) -> TemporalConv:
        """The temporal layer at ``where``: ("down", i, j), ("mid",) or ("up", i, j) (see :meth:`UNet.trunk`)."""
        if where[0] == "mid":
            return self.mid_time
        return (self.down_time if where[0] == "down" else self.up_time)[where[1]][where[2]]

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x [B, T, C, H, W], t LongTensor [B] (0-based), y LongTensor [B] or None -> prediction [B, T, C, H, W]."""
        factor = self.size_multiple
        C = self.config["in_channels"]
        if x.ndim != 5 or x.shape[2] != C or x.shape[3] % factor or x.shape[4] % factor:
            raise ValueError(f"x must be clips [B, T, {C}, H, W] with H and W divisible by {factor}, got "
                             f"{list(x.shape)} (an image batch [B, C, H, W] is a clip of one frame: x[:, None])")
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape [B] = [{x.shape[0]}], got {list(t.shape)}")
        B, T = x.shape[:2]
        e = self.embed(t, y).repeat_interleave(T, dim=0)  # [B * T, E]: every frame at the clip's t and y
        out = self.trunk(x.reshape(B * T, *x.shape[2:]), e, lambda h, where: self.time_block(where)(h, T))
        return out.reshape(B, T, *out.shape[1:])

    def summary(self, image_size: int = 32) -> None:
        """The image UNet's summary (:meth:`UNet.summary`; its stages run on every frame), then the temporal layers."""
        super().summary(image_size)
        added = sum(p.numel() for m in (self.down_time, self.mid_time, self.up_time) for p in m.parameters())
        print(f"  {'temporal layers (1-D convolutions over the frames)':<51} {added:>9,}")
