"""The UNet: shapes, use of t and y, the null class, and the parts against their definitions."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinydiff.models import UNet
from tinydiff.models.unet import ResBlock, SelfAttention


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Overwrite every parameter with noise (the zero-initialised output layers would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("size, mults", [(32, (1, 2, 2)), (16, (1, 2)), (8, (1, 1, 2)), (24, (1, 2))])
@pytest.mark.parametrize("channels_in", [1, 3])
def test_output_shape_equals_input_shape(size, mults, channels_in):
    model = UNet(in_channels=channels_in, channels=8, mults=mults)
    x = torch.randn(3, channels_in, size, size)
    assert model(x, torch.tensor([0, 5, 999])).shape == x.shape


def test_non_square_inputs():
    model = UNet(channels=8, mults=(1, 2))
    x = torch.randn(2, 1, 16, 8)
    assert model(x, torch.tensor([1, 2])).shape == x.shape


def test_starts_as_zero_and_uses_t():
    torch.manual_seed(0)
    model = UNet(channels=8, mults=(1, 2))
    x = torch.randn(2, 1, 16, 16)
    # The output convolution is zero-initialised: an untrained model predicts eps = 0.
    assert torch.equal(model(x, torch.tensor([3, 3])), torch.zeros_like(x))
    _randomise(model)
    same_x = x[:1].expand(2, -1, -1, -1)
    out = model(same_x, torch.tensor([10, 900]))
    assert not torch.allclose(out[0], out[1], atol=1e-4), "the UNet ignores t"
    out2 = model(same_x, torch.tensor([10, 10]))
    torch.testing.assert_close(out2[0], out2[1])


def test_uses_labels_and_the_null_class():
    torch.manual_seed(0)
    model = UNet(channels=8, mults=(1, 2), num_classes=10)
    _randomise(model)
    assert model.null_class == 10
    x = torch.randn(1, 1, 16, 16).expand(3, -1, -1, -1)
    t = torch.tensor([50, 50, 50])
    out = model(x, t, torch.tensor([3, 7, 10]))
    assert not torch.allclose(out[0], out[1], atol=1e-4), "the UNet ignores y"
    # y=None is the null label for the whole batch.
    torch.testing.assert_close(model(x, t), model(x, t, torch.full((3,), 10)))


def test_batch_elements_are_independent():
    """A sample's output must not depend on the other samples of the batch (no batch statistics)."""
    torch.manual_seed(0)
    model = UNet(channels=8, mults=(1, 2), num_classes=3)
    _randomise(model)
    x, t, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 10, 20, 30]), torch.tensor([0, 1, 2, 3])
    full = model(x, t, y)
    torch.testing.assert_close(model(x[2:3], t[2:3], y[2:3]), full[2:3], atol=1e-5, rtol=1e-4)


def test_resblock_matches_its_formula():
    torch.manual_seed(0)
    block = ResBlock(4, 8, emb_dim=6)
    _randomise(block, seed=1)
    h, e = torch.randn(2, 4, 5, 5), torch.randn(2, 6)
    z = block.conv1(F.silu(F.group_norm(h, 4, block.norm1.weight, block.norm1.bias)))
    scale, shift = (F.silu(e) @ block.emb.weight.T + block.emb.bias).chunk(2, dim=1)
    z = F.group_norm(z, 8, block.norm2.weight, block.norm2.bias) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    expected = block.skip(h) + block.conv2(F.silu(z))
    torch.testing.assert_close(block(h, e), expected)


def test_attention_matches_softmax_formula():
    """softmax(Q K^T / sqrt(d)) V per head, added to the input (Vaswani et al. 2017, eq. 1)."""
    torch.manual_seed(0)
    attn = SelfAttention(8, heads=2)
    _randomise(attn, seed=2)
    h = torch.randn(2, 8, 3, 3)
    qkv = attn.qkv(attn.norm(h)).reshape(2, 3, 2, 4, 9)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [B, heads, d, N]
    weights = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(4), dim=-1)  # [B, heads, N, N]
    out = (weights @ v.transpose(-1, -2)).transpose(-1, -2).reshape(2, 8, 3, 3)
    torch.testing.assert_close(attn(h), h + attn.proj(out))


def test_summary_prints_params_and_one_line_per_stage(capsys):
    model = UNet(channels=8, mults=(1, 2, 2), num_classes=10)
    model.summary()
    text = capsys.readouterr().out
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in text
    for stage in ("embed", "conv_in", "down0", "down1", "down2", "mid", "up2", "up1", "up0", "conv_out"):
        assert f"  {stage} " in text
    # The per-stage parameter counts add up to the total.
    per_stage = [int(line.split()[-1].replace(",", "")) for line in text.splitlines()[2:]]
    assert sum(per_stage) == sum(p.numel() for p in model.parameters())


def test_config_rebuilds_the_same_architecture():
    model = UNet(channels=8, mults=(1, 2), num_classes=4, n_res=2)
    clone = UNet(**model.config)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [(k, v.shape) for k, v in clone.state_dict().items()]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m(torch.randn(2, 1, 30, 30), torch.tensor([0, 1])), "divisible by 4"),
        (lambda m: m(torch.randn(2, 3, 32, 32), torch.tensor([0, 1])), r"shape \[B, 1, H, W\]"),
        (lambda m: m(torch.randn(2, 1, 32, 32), torch.tensor([0])), r"t must have shape \[B\]"),
        (lambda m: m(torch.randn(2, 1, 32, 32), torch.tensor([0, 1]), torch.tensor([1.0, 2.0])), "y must be a LongTensor"),
    ],
)
def test_bad_input_says_what_is_wrong(call, message):
    model = UNet(channels=8, mults=(1, 2, 2), num_classes=10)
    with pytest.raises(ValueError, match=message):
        call(model)


def test_unconditional_model_rejects_labels():
    with pytest.raises(ValueError, match="unconditional"):
        UNet(channels=8, mults=(1, 2))(torch.randn(1, 1, 8, 8), torch.tensor([0]), torch.tensor([1]))


def test_runs_on_meta_device():
    model = UNet(channels=8, mults=(1, 2), num_classes=10).to("meta")
    x = torch.empty(2, 1, 16, 16, device="meta")
    out = model(x, torch.zeros(2, dtype=torch.long, device="meta"), torch.zeros(2, dtype=torch.long, device="meta"))
    assert out.shape == x.shape and out.device.type == "meta"
