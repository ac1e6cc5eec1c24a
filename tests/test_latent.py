"""Latent diffusion: the autoencoder, its KL term, the scale factor, latent checkpoints, end to end on meta."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from tinydiff.checkpoint import read_config, save_checkpoint
from tinydiff.evaluation import balanced_labels, sample_digits
from tinydiff.guidance import classifier_free
from tinydiff.latent import LatentCodec, latent_scale_factor
from tinydiff.losses import autoencoder_loss, gaussian_kl
from tinydiff.models import Autoencoder, UNet
from tinydiff.pretrained import load_diffusion_model, load_latent_codec
from tinydiff.registry import SamplerSpec
from tinydiff.samplers import ddim_sample
from tinydiff.train import train_autoencoder

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def small_autoencoder() -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(channels=8, mults=(1, 2, 2), latent_channels=4)


def test_encode_decode_shapes_round_trip():
    ae = small_autoencoder()
    assert ae.latent_shape == (4, 8, 8) and ae.image_shape == (1, 32, 32)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    mean, logvar = ae.encode(x)
    assert mean.shape == logvar.shape == (3, 4, 8, 8)
    assert ae.decode(mean).shape == x.shape
    x_hat, m, lv = ae(x, generator=torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape and torch.equal(m, mean) and torch.equal(lv, logvar)
    # f = 2 ** (len(mults) - 1): one more level halves the latent again
    assert Autoencoder(channels=8, mults=(1, 2, 2, 2), latent_channels=3).latent_shape == (3, 4, 4)


def test_kl_matches_the_closed_form_of_a_diagonal_gaussian():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 4, 8, 8, generator=g), torch.randn(5, 4, 8, 8, generator=g)
    # torch.distributions' own KL(N(m, s) || N(0, 1)) per dimension, summed per example
    expected = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_kl(mean, logvar), expected, rtol=1e-5, atol=1e-5)
    # known values: the prior itself has KL 0; a unit shift of the mean costs 1/2 per dimension
    assert torch.equal(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))
    torch.testing.assert_close(gaussian_kl(torch.ones(2, 3), torch.zeros(2, 3)), torch.full((2,), 1.5))
    # sigma = e: 1/2 (e^2 - 1 - 2) per dimension
    torch.testing.assert_close(gaussian_kl(torch.zeros(1, 1), torch.full((1, 1), 2.0)), torch.tensor([0.5 * (math.e**2 - 3)]))
    with pytest.raises(ValueError, match="mean and logvar"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_autoencoder_loss_is_l1_plus_weighted_kl():
    ae = small_autoencoder()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    loss, rec, kl = autoencoder_loss(ae, x, kl_weight=0.01, generator=torch.Generator().manual_seed(1))
    x_hat, mean, logvar = ae(x, generator=torch.Generator().manual_seed(1))
    l1 = (x_hat - x).abs().flatten(1).sum(1)
    torch.testing.assert_close(rec, l1.mean() / 1024)
    torch.testing.assert_close(loss, (l1 + 0.01 * gaussian_kl(mean, logvar)).mean())


def test_training_the_autoencoder_lowers_the_reconstruction_error():
    ae = small_autoencoder()
    g = torch.Generator().manual_seed(0)
    # 16 blobby "images" in [-1, 1]
    images = torch.nn.functional.avg_pool2d(torch.randn(16, 1, 32, 32, generator=g), 5, 1, 2).clamp(-1, 1).sign() * 0.9
    states = list(train_autoencoder(ae, images, steps=60, batch_size=16, lr=3e-3, generator=g, progress=False))
    first, last = sum(s.reconstruction for s in states[:5]) / 5, sum(s.reconstruction for s in states[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert states[-1].step == 60 and math.isfinite(states[-1].kl)


def test_scale_factor_gives_unit_variance_latents():
    g = torch.Generator().manual_seed(0)
    z = 5.49 * torch.randn(2000, 4, 8, 8, generator=g) + 0.1  # Stable Diffusion's latents have std ~ 5.49
    assert latent_scale_factor(z) == pytest.approx(1 / 5.49, rel=0.01)
    ae = small_autoencoder()
    images = torch.rand(64, 1, 32, 32, generator=g) * 2 - 1
    codec = LatentCodec(ae, latent_scale_factor(ae.encode(images)[0]))
    latents = codec.encode_dataset(images, batch_size=16)
    assert latents.shape == (64, 4, 8, 8)
    assert float(latents.std()) == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(codec.decode(latents), ae.decode(ae.encode(images)[0]), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        LatentCodec(ae, 0.0)
    with pytest.raises(ValueError, match="standard deviation"):
        latent_scale_factor(torch.ones(8, 4))


def test_sampled_latents_follow_the_posterior():
    ae = small_autoencoder()
    codec = LatentCodec(ae, 2.0)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    mean, logvar = ae.encode(x)
    draws = torch.stack([codec.encode(x, generator=torch.Generator().manual_seed(i)) for i in range(400)])
    # z = 2 * (mean + std * eps): its mean and std over draws are 2 * mean and 2 * std
    torch.testing.assert_close(draws.mean(0), 2 * mean, atol=0.25 * float(torch.exp(0.5 * logvar).max()), rtol=0)
    torch.testing.assert_close(draws.std(0) / (2 * torch.exp(0.5 * logvar)), torch.ones_like(mean), atol=0.2, rtol=0)


def test_bad_shapes_say_what_is_wrong():
    ae = small_autoencoder()
    with pytest.raises(ValueError, match=r"pad 28x28 MNIST to 32x32"):
        ae.encode(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"encoder takes images \[B, 1, 32, 32\]"):
        ae.encode(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"decoder takes latents \[B, 4, 8, 8\].*rather than a latent"):
        ae.decode(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="divisible by the downsampling factor"):
        Autoencoder(mults=(1, 2, 2), image_size=30)


@pytest.fixture()
def latent_checkpoint(tmp_path):
    """A tiny autoencoder with its scale factor, and a tiny latent UNet that names it."""
    ae = small_autoencoder()
    save_checkpoint(tmp_path / "ae", ae, ae.config, extra={"scale_factor": 1.7})
    torch.manual_seed(1)
    net = UNet(in_channels=4, channels=8, mults=(1, 2), num_classes=10)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    extra = {"schedule": {"name": "cosine", "T": 50}, "train": {"prediction": "v"}, "recommended_guidance": 2.0,
             "latent": {"autoencoder": "ae", "autoencoder_sha256": read_config(tmp_path / "ae")["sha256"]}}
    save_checkpoint(tmp_path / "ldm", net, net.config, extra=extra)
    return tmp_path / "ldm"


def test_a_latent_checkpoint_brings_its_autoencoder_and_decodes(latent_checkpoint):
    m = load_diffusion_model(latent_checkpoint)
    assert m.codec is not None and m.codec.scale_factor == 1.7 and m.sample_shape == (4, 8, 8) and m.clip_x0 is None
    labels = balanced_labels(5)
    x = sample_digits(m, labels, sampler=SamplerSpec.parse("ddim:3", 50), guidance=2.0, batch_size=5, progress=False)
    assert x.shape == (5, 1, 32, 32)
    # the same as sampling the latents by hand and decoding them
    z = ddim_sample(classifier_free(m.net, labels, 2.0), m.schedule, (5, 4, 8, 8), steps=3, prediction="v",
                    generator=torch.Generator().manual_seed(0), progress=False)
    torch.testing.assert_close(x, m.codec.decode(z))


def test_a_latent_checkpoint_without_its_autoencoder_is_a_clear_error(latent_checkpoint):
    folder = latent_checkpoint.parent
    other = Autoencoder(channels=8, mults=(1, 2, 2))
    save_checkpoint(folder / "ae", other, other.config, extra={"scale_factor": 1.7})  # another autoencoder
    with pytest.raises(ValueError, match="is not the autoencoder .* was trained on"):
        load_diffusion_model(latent_checkpoint)
    (folder / "ae.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="is a latent diffusion model.*not there"):
        load_diffusion_model(latent_checkpoint)
    ae = small_autoencoder()
    save_checkpoint(folder / "plain", ae, ae.config)
    with pytest.raises(ValueError, match="no extra.scale_factor"):
        load_latent_codec(folder / "plain")


def test_latent_model_end_to_end_on_meta():
    """Training loss, guided sampling and decoding of a latent model, with no data: nothing is created on the CPU."""
    from tinydiff import schedules
    from tinydiff.losses import diffusion_loss

    meta = torch.device("meta")
    codec = LatentCodec(small_autoencoder().to(meta), 0.5)
    net = UNet(in_channels=4, channels=8, mults=(1, 2), num_classes=10).to(meta)
    s = schedules.get("cosine", T=20)
    z = codec.encode(torch.empty(3, 1, 32, 32, device=meta))
    assert z.device == meta and z.shape == (3, 4, 8, 8)
    y = torch.zeros(3, dtype=torch.long, device=meta)
    assert diffusion_loss(net, s, z, prediction="v", y=y).device == meta
    x = codec.decode(ddim_sample(classifier_free(net, y, 2.0), s, (3, 4, 8, 8), steps=2, prediction="v", progress=False))
    assert x.device == meta and x.shape == (3, 1, 32, 32)


def test_sample_script_samples_a_latent_checkpoint(latent_checkpoint, tmp_path, load_script):
    script = load_script("sample")
    out = tmp_path / "digits"
    script.main(["--checkpoint", str(latent_checkpoint), "--n", "4", "--sampler", "ddim:2", "--out", str(out)])
    data = np.load(out.with_suffix(".npz"))
    assert data["samples"].shape == (4, 1, 32, 32) and data["samples"].min() >= -1 and data["samples"].max() <= 1
    assert out.with_suffix(".png").is_file()


def test_the_shipped_latent_model_brings_the_shipped_autoencoder():
    from tinydiff.data import load_mnist

    m = load_diffusion_model(ROOT / "data" / "checkpoints" / "mnist_latent")
    ae_json = read_config(ROOT / "data" / "checkpoints" / "mnist_autoencoder")
    assert m.codec.scale_factor == ae_json["extra"]["scale_factor"] and m.sample_shape == (4, 8, 8)
    assert m.net.null_class == 10 and m.recommended_guidance is not None and m.prediction == "v"
    x, _ = load_mnist("test", pad_to_32=True)
    z = m.codec.encode(x[:50])
    assert abs(float(z.std()) - 1.0) < 0.2  # unit variance on unseen digits too, roughly
    assert float((m.codec.decode(z).clamp(-1, 1) - x[:50]).abs().mean()) < 0.1  # and they decode back


def test_train_mnist_script_trains_a_latent_model_that_loads_with_its_autoencoder(tmp_path, monkeypatch, load_script):
    """configs with "latent": the script encodes the digits once, trains, and records the autoencoder by path and SHA."""
    import json
    import sys

    ae = small_autoencoder()
    save_checkpoint(tmp_path / "ae", ae, ae.config, extra={"scale_factor": 1.5})
    config = {
        "model": {"name": "UNet", "in_channels": 4, "channels": 8, "mults": [1, 2], "n_res": 1, "num_classes": 10,
                  "dropout": 0.0, "heads": 4},
        "schedule": {"name": "cosine", "T": 50},
        "latent": {"autoencoder": str(tmp_path / "ae")},
        "train": {"steps": 3, "max_minutes": 0, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "weight_decay": 0.0,
                  "ema_decay": 0.9, "grad_clip": 1.0, "p_uncond": 0.1, "prediction": "v", "lr_schedule": "cosine"},
        "seed": 0,
        "output": str(tmp_path / "out" / "ldm"),
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    script = load_script("train_mnist")
    monkeypatch.chdir(tmp_path)  # the script keeps its resumable state in ./runs
    monkeypatch.setattr(sys, "argv", ["train_mnist.py", "--config", str(tmp_path / "config.json"), "--device", "cpu"])
    script.main()
    extra = read_config(tmp_path / "out" / "ldm")["extra"]
    assert extra["latent"]["autoencoder"] == "../ae" and extra["data_shape"] == [4, 8, 8] and extra["steps"] == 3
    m = load_diffusion_model(tmp_path / "out" / "ldm")
    assert m.codec.scale_factor == 1.5 and m.sample_shape == (4, 8, 8) and m.prediction == "v"
