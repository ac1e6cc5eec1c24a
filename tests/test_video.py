"""The spatio-temporal UNet (notebook 17): a fresh one is the image UNet on every frame; it is equivariant to shifting
the clip in time away from its ends; it runs end to end (loss, guidance, sampler) on meta tensors; bad input is refused."""

import pytest
import torch

from tinydiff import schedules
from tinydiff.guidance import classifier_free
from tinydiff.losses import diffusion_loss
from tinydiff.models import TemporalConv, UNet, VideoUNet
from tinydiff.samplers import ddim_sample


def perturbed(model, scale=0.05, seed=0):
    """Every weight moved at random, the zero-initialised ones too, so no layer is the identity by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


def small_image_model():
    torch.manual_seed(0)
    return perturbed(UNet(channels=8, mults=(1, 2), n_res=1, num_classes=10))


def test_a_fresh_video_unet_is_the_image_unet_on_every_frame():
    image = small_image_model()
    video = VideoUNet.from_image_model(image).eval()
    x = torch.randn(2, 5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([3, 700]), torch.tensor([4, 10])  # 10: the null label
    with torch.no_grad():
        out = video(x, t, y)
        per_frame = image(x.flatten(0, 1), t.repeat_interleave(5), y.repeat_interleave(5)).reshape(out.shape)
    torch.testing.assert_close(out, per_frame, atol=1e-5, rtol=1e-5)


def temporal_depth(model: VideoUNet) -> int:
    """Temporal layers on the longest path through the network: down, middle and up."""
    return sum(len(b) for b in model.down_time) + 1 + sum(len(b) for b in model.up_time)


def test_the_video_unet_is_equivariant_to_shifting_time_away_from_the_ends():
    model = perturbed(VideoUNet(channels=8, mults=(1, 2), n_res=1, num_classes=10), seed=2)
    R = temporal_depth(model)  # each temporal layer reaches one frame further
    T, s = 2 * R + 8, 3
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, T + s, 1, 8, 8, generator=g)
    t, y = torch.tensor([500]), torch.tensor([7])
    with torch.no_grad():
        early, late = model(x[:, :T], t, y), model(x[:, s:], t, y)  # the same frames, s frames apart
    # frame k of `late` is frame k + s of `early`; it must match wherever neither end is within reach
    inside = slice(R, T - s - R)
    torch.testing.assert_close(late[:, inside], early[:, R + s: T - R], atol=1e-5, rtol=1e-4)
    # ...and the frames do talk to each other: near the ends the two differ, as zero padding says they should
    assert (late[:, 0] - early[:, s]).abs().max() > 1e-3


def test_a_temporal_layer_mixes_neighbouring_frames_of_one_clip():
    layer = TemporalConv(4)
    torch.nn.init.normal_(layer.conv.weight)
    h = torch.randn(2 * 6, 4, 5, 5)  # B = 2 clips of 6 frames
    out = layer(h, frames=6)
    bumped = h.clone()
    bumped[6 + 2, :, 1, 3] += 1.0  # clip 1, frame 2, one pixel
    change = (layer(bumped, frames=6) - out).abs().flatten(1).amax(1)  # [12]: per frame
    # frames 1..3 of clip 1 change (kernel 3; the GroupNorm spreads the bump over its frame), no other frame does
    expected = torch.zeros(12, dtype=torch.bool)
    expected[6 + 1: 6 + 4] = True
    assert torch.equal(change > 1e-6, expected)


def test_the_video_unet_runs_end_to_end_on_meta_tensors():
    meta = torch.device("meta")
    model = VideoUNet(channels=8, mults=(1, 2), n_res=1, num_classes=10).to(meta)
    s = schedules.get("cosine", T=20)
    x0 = torch.empty(3, 4, 1, 8, 8, device=meta)
    y = torch.tensor([1, 2, 3], device=meta)
    loss = diffusion_loss(model, s, x0, prediction="v", y=y)
    assert loss.device == meta and loss.shape == ()
    x = ddim_sample(classifier_free(model, torch.tensor([1, 2, 3]), 3.0), s, (3, 4, 1, 8, 8), steps=3,
                    prediction="v", progress=False)
    assert x.device == meta and x.shape == (3, 4, 1, 8, 8)


def test_bad_input_gets_a_clear_error():
    model = VideoUNet(channels=8, mults=(1, 2), n_res=1, num_classes=10)
    with pytest.raises(ValueError, match=r"clips \[B, T, 1, H, W\].*x\[:, None\]"):
        model(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible by 2"):
        model(torch.randn(2, 3, 1, 9, 8), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="plain tinydiff.models.UNet"):
        VideoUNet.from_image_model(UNet(channels=8, mults=(1, 2), context_dim=16))
    with pytest.raises(ValueError, match="odd"):
        TemporalConv(4, kernel=2)
