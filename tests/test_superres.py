"""Super-resolution (notebook 15): the degradations against closed forms, the conditioned UNet, its objectives,
sampling and cascades end to end on tiny models and on meta tensors, and the distortion metrics."""

import math

import pytest
import torch

from tinydiff import schedules, superres
from tinydiff.checkpoint import load_checkpoint, save_checkpoint
from tinydiff.diffusion import q_sample, training_target
from tinydiff.metrics import psnr, ssim
from tinydiff.models import SuperResUNet, UNet
from tinydiff.train import train

META = torch.device("meta")
TINY = dict(channels=8, mults=[1, 2], n_res=1, heads=2)


def checkerboard(n: int) -> torch.Tensor:
    i = torch.arange(n)
    return ((i[:, None] + i[None, :]) % 2 * 2 - 1).double()[None, None]  # +-1, period 2


def tiny_sr(noise_levels: bool = True, **kw) -> SuperResUNet:
    torch.manual_seed(0)
    net = SuperResUNet(1, noise_levels=noise_levels, **{**TINY, **kw})
    for name, p in net.named_parameters():  # the zero-initialised convolutions make every block the identity
        if name.endswith(("conv2.weight", "conv_out.weight")):  # and the output 0: give them something to say
            torch.nn.init.normal_(p, std=0.1)
    return net


# --- degradations, closed forms -------------------------------------------------------------------------------

def test_downsample_is_the_block_mean():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    want = torch.tensor([[(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4], [(8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]])
    assert torch.equal(superres.downsample(x, 2)[0, 0], want)
    assert torch.equal(superres.downsample(torch.full((2, 3, 8, 8), 0.3), 4), torch.full((2, 3, 2, 2), 0.3))


def test_the_anti_aliased_downsample_removes_a_checkerboard_that_striding_aliases():
    board = checkerboard(8)
    assert torch.equal(superres.downsample(board, 2), torch.zeros(1, 1, 4, 4))  # its mean: 0
    assert torch.equal(board[..., ::2, ::2], -torch.ones(1, 1, 4, 4))  # a plain subsample: a false flat image


def test_nearest_upsampling_is_the_right_inverse_of_downsampling():
    low = torch.randn(3, 2, 5, 4, dtype=torch.float64)
    up = superres.upsample(low, 3, "nearest")
    assert up.shape == (3, 2, 15, 12) and torch.equal(up[..., 4, 7], low[..., 1, 2])
    assert torch.allclose(superres.downsample(up, 3), low, atol=1e-15)


def test_bicubic_keeps_constants_and_the_sample_points_mean():
    assert torch.allclose(superres.upsample(torch.full((1, 1, 4, 4), -0.7), 4), torch.full((1, 1, 16, 16), -0.7))
    # Keys' kernel interpolates: with f = 2 on pixel centres no output lands on an input sample, but a flat
    # image of a checkerboard's mean stays that mean, and the output of a checkerboard stays within its range
    up = superres.upsample(checkerboard(4), 2)
    assert up.shape == (1, 1, 8, 8) and up.abs().max() <= 1.5


def test_consistency_error_on_known_cases():
    low = torch.randn(2, 1, 8, 8)
    assert superres.consistency_error(superres.upsample(low, 4, "nearest"), low, 4).abs().max() < 1e-6
    shifted = superres.upsample(low, 4, "nearest") + torch.tensor([0.1, -0.25]).view(2, 1, 1, 1)
    assert torch.allclose(superres.consistency_error(shifted, low, 4), torch.tensor([0.1, 0.25]), atol=1e-6)


def test_augmentation_is_the_forward_process_at_level_s():
    s = schedules.cosine(100)
    cond, eps = torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randn(4, 1, 8, 8, dtype=torch.float64)
    level = torch.tensor([0, 10, 50, 99])
    ab = s.alpha_bars[level].view(4, 1, 1, 1)
    assert torch.allclose(superres.augment(s, cond, level, eps), ab.sqrt() * cond + (1 - ab).sqrt() * eps)


@pytest.mark.parametrize("call, message", [
    (lambda: superres.downsample(torch.zeros(1, 1, 6, 6), 4), "multiples of factor 4"),
    (lambda: superres.downsample(torch.zeros(6, 6), 2), r"images \[B, C, H, W\]"),
    (lambda: superres.upsample(torch.zeros(1, 1, 2, 2), 2, "bilinear"), "bicubic, nearest"),
    (lambda: superres.upsample(torch.zeros(1, 1, 2, 2), 0), "positive int"),
    (lambda: superres.consistency_error(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4), 4), "low has"),
    (lambda: superres.SuperResolution(schedules.cosine(10), 2, max_level=10), "0..9"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the conditioned UNet -------------------------------------------------------------------------------------

def test_the_conditioning_image_and_its_level_change_the_output():
    net = tiny_sr()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    cond, level = torch.randn(2, 1, 8, 8), torch.tensor([0, 0])
    out = net(x, t, cond=cond, level=level)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, t, cond=cond + 0.5, level=level))
    assert not torch.allclose(out, net(x, t, cond=cond, level=torch.tensor([200, 200])))
    changed = cond.clone()
    changed[1] += 1.0  # only the second image's conditioning: only its output moves
    other = net(x, t, cond=changed, level=level)
    assert torch.equal(other[0], out[0]) and not torch.allclose(other[1], out[1])


def test_a_unet_with_other_output_channels_and_an_added_embedding():
    unet = UNet(in_channels=3, out_channels=1, **TINY)
    assert unet.config["out_channels"] == 1 and "out_channels" not in UNet(**TINY).config
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    assert unet(x, t).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="time embedding's shape"):
        unet(x, t, emb=torch.zeros(2, 5))


@pytest.mark.parametrize("kwargs, message", [
    (dict(cond=torch.zeros(2, 1, 4, 4), level=torch.tensor([0, 0])), r"upsampled to x's size, \[2, 1, 8, 8\]"),
    (dict(cond=torch.zeros(2, 3, 8, 8), level=torch.tensor([0, 0])), r"\[2, 1, 8, 8\], got \[2, 3, 8, 8\]"),
    (dict(cond=torch.zeros(2, 1, 8, 8)), "give level"),
])
def test_bad_conditioning_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_sr()(torch.zeros(2, 1, 8, 8), torch.tensor([0, 0]), **kwargs)


def test_a_model_without_noise_levels_refuses_a_level():
    with pytest.raises(ValueError, match="without noise_levels"):
        tiny_sr(noise_levels=False)(torch.zeros(1, 1, 8, 8), torch.tensor([0]), cond=torch.zeros(1, 1, 8, 8),
                                    level=torch.tensor([0]))
    with pytest.raises(ValueError, match="no num_classes"):
        SuperResUNet(1, num_classes=10, **TINY)


def test_checkpoint_round_trip(tmp_path):
    net = tiny_sr()
    save_checkpoint(tmp_path / "sr", net, net.config)
    back = load_checkpoint(tmp_path / "sr")
    assert isinstance(back, SuperResUNet) and back.noise_levels and back.config == net.config
    x, t, c = torch.randn(1, 1, 8, 8), torch.tensor([5]), torch.randn(1, 1, 8, 8)
    assert torch.equal(back(x, t, cond=c, level=t), net(x, t, cond=c, level=t))


# --- the objectives, against the loss written out ----------------------------------------------------------------

def test_the_sr3_loss_is_l_simple_with_the_augmented_conditioning_image():
    s = schedules.cosine(50)
    net = tiny_sr()
    x0 = torch.randn(3, 1, 8, 8)
    objective = superres.SuperResolution(s, 2, "v", max_level=20)
    t, eps, level, eps_c = objective.draw(x0, torch.Generator().manual_seed(0))
    assert level.max() <= 20
    cond = superres.upsample(superres.downsample(x0, 2), 2)
    ab = s.alpha_bars[level].float().view(3, 1, 1, 1)
    cond = ab.sqrt() * cond + (1 - ab).sqrt() * eps_c
    out = net(q_sample(s, x0, t, eps), t, cond=cond, level=level)
    want = (out - training_target(s, x0, eps, t, "v")).pow(2).mean()
    assert torch.allclose(objective.loss(net, x0, (t, eps, level, eps_c)), want, atol=1e-6)


def test_the_regression_loss_is_the_squared_error_of_one_call():
    torch.manual_seed(0)
    net = UNet(1, **TINY)
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    x0 = torch.randn(2, 1, 8, 8)
    up = superres.upsample(superres.downsample(x0, 4), 4)
    want = (net(up, torch.zeros(2, dtype=torch.long)) - x0).pow(2).mean()
    assert torch.allclose(superres.Regression(4).loss(net, x0, ()), want)


def test_training_lowers_the_sr3_loss_on_one_batch():
    s = schedules.cosine(50)
    net = SuperResUNet(1, noise_levels=True, **TINY)
    x0 = torch.randn(8, 1, 8, 8).clamp(-1, 1)
    g = torch.Generator().manual_seed(0)
    losses = [float(st.loss) for st in train(net, None, x0, steps=60, batch_size=8, lr=3e-3, generator=g,
                                             objective=superres.SuperResolution(s, 2, "v", max_level=10),
                                             progress=False)]
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


# --- sampling -------------------------------------------------------------------------------------------------------

def test_upscale_and_cascade_shapes_and_determinism():
    s = schedules.cosine(20)
    sr = tiny_sr()
    low = torch.rand(3, 1, 4, 4) * 2 - 1
    a = superres.upscale(sr, s, low, 2, level=5, steps=4, seed=1)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, superres.upscale(sr, s, low, 2, level=5, steps=4, seed=1))
    assert not torch.equal(a, superres.upscale(sr, s, low, 2, level=5, steps=4, seed=2))
    torch.manual_seed(0)
    base = UNet(1, num_classes=3, **TINY)
    small, big = superres.cascade(base, s, sr, s, torch.tensor([0, 2]), 4, 2, level=5, steps=3, base_steps=3)
    assert small.shape == (2, 1, 4, 4) and big.shape == (2, 1, 8, 8)


def test_the_upscaler_names_a_missing_or_unwanted_level():
    s = schedules.cosine(20)
    with pytest.raises(ValueError, match="exactly when the model reads noise levels"):
        superres.Upscaler(tiny_sr(), torch.zeros(1, 1, 4, 4), 2, schedule=s)
    with pytest.raises(ValueError, match="exactly when"):
        superres.Upscaler(tiny_sr(noise_levels=False), torch.zeros(1, 1, 4, 4), 2, schedule=s, level=3)
    with pytest.raises(ValueError, match="3 channels but the model reads 1"):
        superres.Upscaler(tiny_sr(), torch.zeros(1, 3, 4, 4), 2, schedule=s, level=3)


def test_training_step_and_sampling_on_meta_tensors():
    from test_device import AcceleratorRules

    s = schedules.cosine(20)
    net = tiny_sr().to(META)
    x0 = torch.empty(4, 1, 8, 8, device=META)
    g = torch.Generator().manual_seed(0)
    with AcceleratorRules() as rules:
        objective = superres.SuperResolution(s, 2, "v", max_level=10)
        assert objective.loss(net, x0, objective.draw(x0, g)).device == META
        assert superres.Regression(2).loss(UNet(1, **TINY).to(META), x0, ()).device == META
        out = superres.upscale(net, s, torch.empty(2, 1, 4, 4, device=META), 2, level=3, steps=3, clip_x0=None)
        assert out.device == META and out.shape == (2, 1, 8, 8)
    assert not rules.broken, rules.broken


# --- distortion metrics ---------------------------------------------------------------------------------------------

def test_psnr_of_a_constant_error():
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.allclose(psnr(x, x + 0.02), torch.full((2,), 10 * math.log10(4 / 0.02**2)), atol=1e-3)


def test_ssim_closed_forms():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2))
    # two flat images a, b on the [0, 1] scale: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.25, 0.75, 0.01**2
    flat = ssim(torch.full((1, 1, 8, 8), 2 * a - 1), torch.full((1, 1, 8, 8), 2 * b - 1))
    assert torch.allclose(flat, torch.tensor([(2 * a * b + c1) / (a * a + b * b + c1)]), atol=1e-6)
    with pytest.raises(ValueError, match="at least window"):
        ssim(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


def test_projection_makes_any_image_consistent_and_keeps_the_detail_inside_blocks():
    x, low = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 2, 2, dtype=torch.float64)
    p = superres.project(x, low, 4)
    assert torch.allclose(superres.downsample(p, 4), low, atol=1e-12)
    detail = x - superres.upsample(superres.downsample(x, 4), 4, "nearest")  # what A cannot see: kept exactly
    assert torch.allclose(p - superres.upsample(low, 4, "nearest"), detail, atol=1e-12)
    assert torch.allclose(superres.project(p, low, 4), p, atol=1e-12)  # a projection: twice is once


def test_consistent_upscaling_shrinks_back_to_its_input():
    s = schedules.cosine(20)
    low = torch.rand(2, 1, 4, 4) * 1.6 - 0.8
    plain = superres.upscale(tiny_sr(), s, low, 2, level=3, steps=4, prediction="v")
    out = superres.upscale(tiny_sr(), s, low, 2, level=3, steps=4, consistent=True, prediction="v")
    assert out.abs().max() <= 1
    assert superres.consistency_error(out, low, 2).max() < 0.01 * superres.consistency_error(plain, low, 2).min()
    with pytest.raises(ValueError, match="give schedule="):
        superres.Upscaler(tiny_sr(noise_levels=False), low, 2, consistent=True)


def test_projection_within_bounds_is_a_valid_image_and_nearly_consistent():
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64) * 2.4 - 1.2  # some pixels outside [-1, 1]
    truth = torch.rand(3, 1, 8, 8, dtype=torch.float64) * 2 - 1
    low = superres.downsample(truth, 4)  # an input that a valid image shrinks to
    once = superres.project(x, low, 4, bounds=(-1, 1), iterations=1)
    many = superres.project(x, low, 4, bounds=(-1, 1), iterations=200)
    assert once.abs().max() <= 1 and many.abs().max() <= 1
    assert superres.consistency_error(many, low, 4).max() < 0.1 * superres.consistency_error(once, low, 4).max()
    assert superres.consistency_error(many, low, 4).max() < 1e-3
