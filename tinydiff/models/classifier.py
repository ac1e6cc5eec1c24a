"""A small CNN digit classifier -- the feature extractor behind the course's image metrics.

    x [B, 1, 32, 32] -> conv block (16 ch, 32x32) -> pool -> conv block (32 ch, 16x16) -> pool
      -> conv block (64 ch, 8x8) -> global average pool -> features [B, 64] -> Linear -> logits [B, 10]

Each conv block is two (3x3 conv, BatchNorm, ReLU) layers. The 64 numbers before
the last layer are the *features*: :func:`tinydiff.metrics.frechet_distance`
compares their statistics between generated and real digits, just as FID does
with an Inception network (Heusel et al. 2017) -- but ours is trained on the
same 4,000 digits, so we call the number FD, not FID. 28 x 28 inputs are padded
to 32 x 32 with background (-1), like ``load_mnist(pad_to_32=True)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two (3x3 conv -> BatchNorm -> ReLU) layers: [B, c_in, H, W] -> [B, c_out, H, W]."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
    )


class Classifier(nn.Module):
    """CNN classifier: ``forward(x) -> logits [B, num_classes]``, ``features(x) -> [B, 4 * width]``.

    Images are [B, in_channels, 32, 32] (or 28 x 28, padded) in [-1, 1].
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        self.config = dict(in_channels=in_channels, num_classes=num_classes, width=width, dropout=dropout)
        self.body = nn.Sequential(
            _conv_block(in_channels, width), nn.MaxPool2d(2),
            _conv_block(width, 2 * width), nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features [B, 4 * width] of images x [B, C, H, W] in [-1, 1]."""
        if x.ndim != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"x must be images [B, {self.config['in_channels']}, H, W], got {list(x.shape)}")
        if x.shape[-2:] == (28, 28):
            x = F.pad(x, (2, 2, 2, 2), value=-1.0)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, num_classes]."""
        return self.head(self.dropout(self.features(x)))
