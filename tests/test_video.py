"""The spatio-temporal UNet (notebook 17): a fresh one is the image UNet on every frame; it is equivariant to shifting
the clip in time away from its ends; it runs end to end (loss, guidance, sampler) on meta tensors; bad input is refused.
And the measures of temporal consistency (tinydiff.video) against closed forms."""

import pytest
import torch

from tinydiff import schedules, video
from tinydiff.data import load_mnist
from tinydiff.data.moving import moving_digits
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


# ---- the measures of tinydiff.video, against closed forms ----



def test_centres_ink_and_acceleration_of_a_moving_dot():
    # one white pixel moving on a straight line, then reflected: centres are its pixels, acceleration only at the bounce
    path = [(2, 3), (4, 4), (6, 5), (4, 6), (2, 7)]
    clips = torch.full((1, len(path), 1, 10, 10), -1.0)
    for k, (r, c) in enumerate(path):
        clips[0, k, 0, r, c] = 1.0
    torch.testing.assert_close(video.centres(clips)[0], torch.tensor(path, dtype=torch.float32))
    torch.testing.assert_close(video.ink(clips), torch.ones(1, len(path)))
    a = video.acceleration(video.centres(clips))[0]
    torch.testing.assert_close(a, torch.tensor([[0.0, 0.0], [-4.0, 0.0], [0.0, 0.0]]))


def test_real_moving_clips_keep_their_ink_and_move_in_straight_lines_between_bounces():
    images, labels = load_mnist("test")
    clips, _, positions, _ = moving_digits(images[:20], labels[:20], 20, generator=torch.Generator().manual_seed(0))
    assert float(video.ink(clips).std(1).max()) < 1e-3                       # the whole digit in every frame
    exact = video.acceleration(positions[:, 0]).abs().amax(-1)               # [B, T - 2] from the physics
    measured = video.acceleration(video.centres(clips)).abs().amax(-1)
    straight = exact < 1e-9
    assert float(measured[straight].max()) <= 2.0                             # rounding to whole pixels, per frame
    assert float(straight.float().mean()) > 0.5


def test_identity_drift_is_zero_for_a_still_picture_and_about_one_for_independent_frames():
    g = torch.Generator().manual_seed(0)
    still = torch.randn(6, 1, 16, generator=g).expand(6, 12, 16)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert video.identity_drift(still, labels) == 0.0
    fresh = torch.randn(600, 12, 16, generator=g)  # every frame an independent draw, as between clips
    assert abs(video.identity_drift(fresh, torch.arange(600) % 2) - 1.0) < 0.05
    with pytest.raises(ValueError, match="two clips of one label"):
        video.identity_drift(fresh[:2], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"clips must be \[B, T, 1, H, W\]"):
        video.centres(torch.zeros(2, 1, 8, 8))


# ---- scripts/train_mnist.py trains the sound and video models from their configs' data sections ----

def tiny_config(tmp_path, name, data, model_name="UNet", steps=3, **more):
    import json

    config = {
        "data": data,
        "model": {"name": model_name, "in_channels": 1, "channels": 8, "mults": [1, 2], "n_res": 1, "num_classes": 10,
                  "dropout": 0.0, "heads": 4, **({"temporal_kernel": 3} if model_name == "VideoUNet" else {})},
        "schedule": {"name": "cosine", "T": 50},
        "train": {"steps": steps, "max_minutes": 0, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "weight_decay": 0.0,
                  "ema_decay": 0.9, "grad_clip": 1.0, "p_uncond": 0.1, "prediction": "v", "lr_schedule": "cosine"},
        "seed": 0,
        "output": str(tmp_path / "out" / name),
        **more,
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def test_train_mnist_trains_sound_frames_and_a_video_model_from_the_image_model(tmp_path, monkeypatch, load_script):
    import sys

    from tinydiff.checkpoint import load_checkpoint, read_config

    script = load_script("train_mnist")
    monkeypatch.chdir(tmp_path)

    def run(config, *more):
        monkeypatch.setattr(sys, "argv", ["train_mnist.py", "--config", str(config), "--device", "cpu", *more])
        script.main()

    run(tiny_config(tmp_path, "sound", {"name": "spoken_digits"}, steps=1))
    sound = read_config(tmp_path / "out" / "sound")["extra"]
    assert sound["data_shape"] == [1, 64, 96] and sound["data"] == {"name": "spoken_digits"}

    run(tiny_config(tmp_path, "frames", {"name": "moving_frames"}))
    frames = load_checkpoint(tmp_path / "out" / "frames")
    run(tiny_config(tmp_path, "video", {"name": "moving_digits", "frames": 4}, "VideoUNet",
                    init=str(tmp_path / "out" / "frames")), "--stop-at", "2")
    header = read_config(tmp_path / "out" / "video")
    extra = header["extra"]
    assert header["model"] == "VideoUNet" and extra["data_shape"] == [4, 1, 32, 32] and extra["steps"] == 2
    assert extra["init"]["sha256"] == read_config(tmp_path / "out" / "frames")["sha256"]
    assert extra["train"]["steps"] == 3  # --stop-at stops the run, not the learning-rate schedule
    video = load_checkpoint(tmp_path / "out" / "video")
    # the spatial layers moved on from the image model's in training, but they started there
    assert set(frames.state_dict()) < set(video.state_dict())

    # --init with a checkpoint of the config's own model: a second stage from its weights
    run(tiny_config(tmp_path, "video2", {"name": "moving_digits", "frames": 4}, "VideoUNet", steps=1),
        "--init", str(tmp_path / "out" / "video"))
    assert read_config(tmp_path / "out" / "video2")["extra"]["init"]["steps"] == 2
    with pytest.raises(SystemExit, match="unknown data 'sound'"):
        run(tiny_config(tmp_path, "bad", {"name": "sound"}))
