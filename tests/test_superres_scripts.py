"""scripts/train_superres.py and scripts/sample.py's super-resolution modes (--upscale, --upscaler), on tiny models."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tinydiff.checkpoint import read_config, save_checkpoint
from tinydiff.models import SuperResUNet, UNet

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(channels=8, mults=[1, 2], n_res=1, heads=2)


def woken(net):
    with torch.no_grad():  # random, non-zero output layers: outputs depend on the input
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    """A tiny 4 x 4 class-conditional base model and a tiny x2 SR3 model reading levels, saved as the scripts save."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("cascade")
    schedule = {"name": "cosine", "T": 50}
    base = woken(UNet(1, num_classes=10, **TINY))
    save_checkpoint(root / "base", base, base.config, extra={"schedule": schedule, "train": {"prediction": "v"},
                                                             "data_shape": [1, 4, 4], "superres": {"stage": "base"}})
    sr = woken(SuperResUNet(1, noise_levels=True, **TINY))
    save_checkpoint(root / "sr", sr, sr.config, extra={"schedule": schedule, "train": {"prediction": "v"},
                                                       "data_shape": [1, 8, 8],
                                                       "superres": {"stage": "sr", "factor": 2, "max_level": 20}})
    plain = woken(SuperResUNet(1, **TINY))
    save_checkpoint(root / "plain", plain, plain.config, extra={"schedule": schedule, "train": {"prediction": "v"},
                                                                "data_shape": [1, 8, 8],
                                                                "superres": {"stage": "sr", "factor": 2}})
    return root


def test_sample_script_runs_a_cascade(cascade, tmp_path, load_script):
    script = load_script("sample")
    out = tmp_path / "big"
    script.main(["--checkpoint", str(cascade / "base"), "--upscaler", str(cascade / "sr"), "--level", "10",
                 "--n", "3", "--sampler", "ddim:2", "--out", str(out)])
    data = np.load(out.with_suffix(".npz"))
    assert data["samples"].shape == (3, 1, 8, 8) and data["low"].shape == (3, 1, 4, 4)
    assert data["labels"].tolist() == [0, 1, 2] and out.with_suffix(".png").stat().st_size > 0


def test_sample_script_upscales_a_picture_file(cascade, tmp_path, load_script, capsys):
    script = load_script("sample")
    small = tmp_path / "small.png"
    Image.fromarray((np.arange(16).reshape(4, 4) * 16).astype(np.uint8)).save(small)
    script.main(["--checkpoint", str(cascade / "sr"), "--upscale", str(small), "--n", "2", "--sampler", "ddim:3",
                 "--out", str(tmp_path / "up")])
    data = np.load(tmp_path / "up.npz")
    assert data["samples"].shape == (2, 1, 8, 8)
    assert np.allclose(data["input"][0, 0], np.arange(16).reshape(4, 4) * 16 / 127.5 - 1, atol=1e-6)
    assert not np.allclose(data["samples"][0], data["samples"][1])  # two seeds, two answers
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(wide)
    script.main(["--checkpoint", str(cascade / "sr"), "--upscale", str(wide), "--n", "1", "--sampler", "ddim:2",
                 "--out", str(tmp_path / "wide_up")])
    assert "resized to the model's input size 4 x 4" in capsys.readouterr().err


@pytest.mark.parametrize("model, argv, message", [
    ("sr", [], "is an SR3 model: give it a picture"),
    ("base", ["--level", "3"], "--level goes with --upscaler or --upscale"),
    ("base", ["--upscaler", "base"], "is not a super-resolution"),
    ("base", ["--upscaler", "plain", "--level", "5"], "trained without noise-conditioning augmentation"),
    ("sr", ["--upscale", "missing.png"], "cannot read it as a picture"),
])
def test_sample_script_superres_mistakes_are_named(cascade, tmp_path, load_script, model, argv, message):
    script = load_script("sample")
    argv = [str(cascade / a) if a in ("base", "plain") else str(tmp_path / a) if a.endswith(".png") else a for a in argv]
    with pytest.raises(SystemExit, match=message):
        script.main(["--checkpoint", str(cascade / model), "--out", str(tmp_path / "x"), *argv])


@pytest.mark.parametrize("stage, model", [("base", {"name": "UNet", "channels": 8, "mults": [1, 2], "n_res": 1}),
                                          ("sr", {"name": "SuperResUNet", "noise_levels": True, **TINY}),
                                          ("regression", {"name": "UNet", **TINY})])
def test_train_superres_writes_a_checkpoint_with_its_recipe(stage, model, tmp_path, load_script):
    config = {"model": model, "schedule": {"name": "cosine", "T": 50},
              "train": {"steps": 2, "max_minutes": 0, "batch_size": 4, "lr": 1e-3, "warmup_steps": 0,
                        "weight_decay": 0.0, "ema_decay": 0.9, "grad_clip": 1.0, "prediction": "v", "p_uncond": 0.1},
              "superres": {"stage": stage, "data": "mnist", "factor": 4, "max_level": 20}, "seed": 0}
    path = tmp_path / f"{stage}.json"
    path.write_text(json.dumps(config))
    load_script("train_superres").main(["--config", str(path), "--output", str(tmp_path / stage / "model"),
                                        "--sample-every", "2"])
    extra = read_config(tmp_path / stage / "model")["extra"]
    assert extra["steps"] == 2 and extra["superres"]["stage"] == stage
    assert extra["data_shape"] == ([1, 8, 8] if stage == "base" else [1, 32, 32])
    assert (tmp_path / stage / "samples_000002.png").stat().st_size > 0


def test_train_superres_names_a_config_without_its_section(tmp_path, load_script):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"model": {"name": "UNet"}, "train": {"steps": 1}, "seed": 0}))
    with pytest.raises(SystemExit, match="needs a superres section"):
        load_script("train_superres").main(["--config", str(path)])
