"""Colour images: a 3-channel UNet with every sampler, guidance and the loss on meta tensors (no hard-coded device,
no float64 off the CPU, no generator on another device), and a 64 x 64 UNet that takes one real training step.

Issue 30: the UNet, schedules, training loop, samplers and guidance take any channel count and any size that is a
multiple of ``UNet.size_multiple``; these tests make that true for 3 channels at 32 and 64 pixels.
"""

import json
from pathlib import Path

import pytest
import torch

from tinydiff import schedules
from tinydiff.guidance import guided_digits
from tinydiff.losses import diffusion_loss
from tinydiff.models import UNet
from tinydiff.registry import METHODS, SamplerSpec

from test_device import META, AcceleratorRules

ROOT = Path(__file__).resolve().parents[1]


def _colour_unet(**overrides) -> UNet:
    config = dict(channels=8, mults=(1, 2), n_res=1, num_classes=8, heads=2, in_channels=3)
    return UNet(**{**config, **overrides})


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "heun", "dpm", "plms", "sde", "pc", "flow-euler", "flow-heun"])
def test_three_channel_guided_sampling_keeps_the_rules_on_meta(kind):
    method = METHODS[kind]
    spec = SamplerSpec(kind, 20 if kind == "ddpm" else 4, method.spacing, 1.0 if kind == "ddpm" else 0.0)
    net = _colour_unet().to(META)
    labels = torch.tensor([0, 3, 7])
    with AcceleratorRules() as rules:
        try:
            x = guided_digits(net, schedules.cosine(20), labels, 2.0, seed=0, shape=(3, 16, 16), sampler=spec,
                              prediction="velocity" if method.flow else "v")
            assert x.device == META and x.shape == (3, 3, 16, 16)
        except RuntimeError as error:  # the corrector's step size reads the score's norm: no numbers on meta
            assert kind == "pc" and "meta" in str(error), error
    assert not rules.broken, rules.broken


def test_three_channel_loss_with_labels_on_meta():
    net = _colour_unet().to(META)
    x0 = torch.empty(4, 3, 16, 16, device=META)
    y = torch.empty(4, dtype=torch.long, device=META)
    with AcceleratorRules() as rules:
        loss = diffusion_loss(net, schedules.cosine(50), x0, prediction="v", y=y)
    assert loss.device == META and loss.shape == () and not rules.broken


def test_the_shipped_colour_recipe_builds_at_64_pixels_and_takes_one_training_step():
    """configs/emoji_ddpm.json's UNet on 64 x 64 colour images: a loss, its gradient and an optimiser step."""
    config = json.loads((ROOT / "configs" / "emoji_ddpm.json").read_text())["model"]
    config.pop("name")
    torch.manual_seed(0)
    net = UNet(**config)
    assert config["in_channels"] == 3 and 64 % net.size_multiple == 0
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    y = torch.tensor([1, 5])
    assert net(x0, torch.tensor([10, 900]), y).shape == x0.shape
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for _ in range(3):  # the output layer and each block's last conv start at zero: the gradient reaches in stages
        loss = diffusion_loss(net, schedules.cosine(1000), x0, prediction="v", generator=g, y=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss) and loss.item() > 0
    still = [name for (name, p), b in zip(net.named_parameters(), before) if torch.equal(p, b)]
    assert not still, f"parameters that did not move: {still}"


def test_a_size_the_unet_cannot_halve_says_so():
    net = _colour_unet(mults=(1, 2, 4))
    assert net.size_multiple == 4
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.zeros(1, 3, 30, 30), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
