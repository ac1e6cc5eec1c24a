"""scripts/train.py on a folder of pictures the test writes: checkpoint, grids, loss curve, resume, sample.py."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {  # a UNet of a few thousand weights and a 50-step schedule: each run takes about a second
    "model": {"name": "UNet", "channels": 8, "mults": [1, 2], "n_res": 1, "dropout": 0.0, "heads": 2},
    "schedule": {"name": "cosine", "T": 50},
    "train": {"steps": 4, "max_minutes": 0, "batch_size": 8, "lr": 1e-3, "warmup_steps": 0, "weight_decay": 0.0,
              "ema_decay": 0.9, "grad_clip": 1.0, "p_uncond": 0.1, "prediction": "v", "lr_schedule": "constant"},
    "seed": 0,
}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """16 colour pictures in two class sub-folders: reddish squares and bluish ones, 20 x 24 pixels (not square)."""
    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    for cls, colour in [("blue", (40, 60, 220)), ("red", (220, 50, 40))]:
        (root / cls).mkdir()
        for i in range(8):
            pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (24, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def run_args(pictures, config, runs, name, *more):
    return ["--images", str(pictures), "--size", "16", "--config", str(config), "--runs", str(runs), "--name", name,
            "--sample-every", "2", "--save-every", "2", "--grid-sampler", "ddim:2", "--device", "cpu", *more]


def test_train_writes_everything_resumes_and_sample_py_draws_colour(pictures, config, tmp_path, load_script,
                                                                      capsys):
    train = load_script("train")
    runs = tmp_path / "runs"
    train.main(run_args(pictures, config, runs, "tiny"))
    run = runs / "tiny"
    said = capsys.readouterr().out
    assert "Done: 4 steps" in said and str(run / "model.safetensors") in said and "loss.png" in said
    for name in ("model.safetensors", "model.json", "state.safetensors", "samples_000002.png", "samples_000004.png",
                 "loss.png"):
        assert (run / name).is_file(), name
    extra = json.loads((run / "model.json").read_text())["extra"]
    assert extra["classes"] == ["blue", "red"] and extra["data_shape"] == [3, 16, 16] and extra["steps"] == 4
    grid = np.asarray(Image.open(run / "samples_000004.png").convert("RGB")).astype(int)
    assert grid.shape == (1 + 8 * 17, 1 + 2 * 17, 3)  # 16 samples, one column per class, 1-pixel gaps
    assert np.abs(grid[..., 0] - grid[..., 2]).max() > 0  # saved in colour, not gray

    # resume to step 6 = one run of 6 steps, weight for weight
    train.main(run_args(pictures, config, runs, "tiny", "--steps", "6", "--resume", str(run / "state.safetensors")))
    assert json.loads((run / "model.json").read_text())["extra"]["steps"] == 6
    assert (run / "samples_000006.png").is_file()
    assert len(json.loads((run / "state.json").read_text())["extra"]["losses"]) == 6  # the curve goes on from step 1
    train.main(run_args(pictures, config, runs, "straight", "--steps", "6"))
    resumed, straight = load_file(run / "model.safetensors"), load_file(runs / "straight" / "model.safetensors")
    assert resumed.keys() == straight.keys()
    for key in resumed:
        assert (resumed[key] - straight[key]).abs().max() < 1e-6, key

    out = tmp_path / "drawn"
    load_script("sample").main(["--checkpoint", str(run / "model"), "--n", "4", "--sampler", "ddim:2",
                                "--out", str(out)])
    arrays = np.load(out.with_name("drawn.npz"))
    assert arrays["samples"].shape == (4, 3, 16, 16) and arrays["labels"].tolist() == [0, 1, 0, 1]
    png = Image.open(out.with_name("drawn.png"))
    assert png.mode in ("RGB", "RGBA")
    rgb = np.asarray(png.convert("RGB")).astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).max() > 0


def test_train_unconditional_with_flips_and_sample_py(pictures, config, tmp_path, load_script):
    runs = tmp_path / "runs"
    load_script("train").main(run_args(pictures, config, runs, "plain", "--unconditional", "--flip",
                                       "--steps", "2", "--channels", "1"))
    extra = json.loads((runs / "plain" / "model.json").read_text())["extra"]
    assert extra["classes"] == [] and extra["data_shape"] == [1, 16, 16] and extra["source"]["flip"]
    out = tmp_path / "plain"
    load_script("sample").main(["--checkpoint", str(runs / "plain" / "model"), "--n", "3", "--sampler", "ddim:2",
                                "--out", str(out)])
    arrays = np.load(out.with_name("plain.npz"))
    assert arrays["samples"].shape == (3, 1, 16, 16) and "labels" not in arrays


def test_train_limit_takes_a_seeded_subset_and_snapshots_are_the_ema_of_their_step(pictures, config, tmp_path,
                                                                                    load_script):
    train, runs = load_script("train"), tmp_path / "runs"
    train.main(run_args(pictures, config, runs, "few", "--limit", "10", "--snapshot-at", "2", "4"))
    run = runs / "few"
    source = json.loads((run / "model.json").read_text())["extra"]["source"]
    assert source["n_images"] == 10 and source["limit"] == 10 and source["limit_seed"] == 0
    assert source["indices"] == sorted(set(source["indices"])) and len(source["indices"]) == 10
    assert all(0 <= i < 16 for i in source["indices"])
    snapshot = json.loads((run / "model_2.json").read_text())["extra"]
    assert snapshot["steps"] == 2 and snapshot["source"] == source
    last, final = load_file(run / "model_4.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.equal(last[k], final[k]) for k in final)  # the snapshot at the last step is the final model
    early = load_file(run / "model_2.safetensors")
    assert any(not torch.equal(early[k], final[k]) for k in final)
    # the same seed draws the same subset; another seed another one
    train.main(run_args(pictures, config, runs, "again", "--limit", "10", "--steps", "2"))
    assert json.loads((runs / "again" / "model.json").read_text())["extra"]["source"]["indices"] == source["indices"]
    train.main(run_args(pictures, config, runs, "other", "--limit", "10", "--limit-seed", "1", "--steps", "2"))
    assert json.loads((runs / "other" / "model.json").read_text())["extra"]["source"]["indices"] != source["indices"]


def test_subset_is_drawn_without_replacement_in_order(load_script):
    from tinydiff.data import ImageSet

    module = load_script("train")
    data = ImageSet(torch.arange(20.0).view(20, 1, 1, 1), torch.arange(20) % 3, ("a", "b", "c"),
                    tuple("abcdefghijklmnopqrst"))
    part, index = module.subset(data, 7, seed=3)
    assert index == sorted(set(index)) and len(index) == 7
    assert part.images.flatten().tolist() == [float(i) for i in index]  # image i of the subset is image index[i]
    assert part.labels.tolist() == [i % 3 for i in index] and part.names == tuple(data.names[i] for i in index)
    assert module.subset(data, 20, seed=0)[1] == list(range(20))
    for bad in (0, 21, 2.5, True):
        with pytest.raises(ValueError, match="--limit must be a number of images from 1 to the 20"):
            module.subset(data, bad, seed=0)


@pytest.mark.parametrize("case, more, message", [
    ("empty", [], "no image files"),
    ("pictures", ["--size", "15"], "size 15 is not a multiple of 2"),
    ("pictures", ["--batch-size", "32"], "fewer than the batch size 32"),
    ("missing", [], "image folder not found"),
    ("pictures", ["--sample-every", "0"], "--sample-every must be at least 1"),
    ("pictures", ["--limit", "17"], "--limit must be a number of images from 1 to the 16"),
    ("pictures", ["--limit", "4"], "fewer than the batch size 8"),
    ("pictures", ["--snapshot-at", "2", "9"], r"--snapshot-at: steps must lie from 1 to the run's 4 steps, got \[9\]"),
])
def test_train_bad_input_says_what_to_fix(case, more, message, pictures, config, tmp_path, load_script):
    folder = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "pictures": pictures}[case]
    if case == "empty":
        folder.mkdir()
    argv = run_args(folder, config, tmp_path / "runs", "bad")
    argv[argv.index("--size") + 1] = "16"
    with pytest.raises(SystemExit, match=message):
        load_script("train").main([*argv, *more])


def test_train_takes_device_and_the_emoji_config_builds_a_colour_unet(load_script, capsys):
    from tinydiff.models import UNet

    script = load_script("train")
    with pytest.raises(SystemExit) as failed:
        script.main(["--device", "tpu"])
    assert failed.value.code == 2 and "argument --device: 'tpu' is not a device" in capsys.readouterr().err
    config = json.loads((Path(__file__).resolve().parents[1] / "configs" / "emoji_ddpm.json").read_text())
    kwargs = {k: v for k, v in config["model"].items() if k != "name"}
    assert kwargs["in_channels"] == 3 and kwargs["num_classes"] == 8
    with torch.device("meta"):
        net = UNet(**kwargs)
        x = torch.zeros(2, 3, 32, 32)
        assert net(x, torch.zeros(2, dtype=torch.long), y=torch.zeros(2, dtype=torch.long)).shape == x.shape
