"""tinydiff.cli: what the scripts and benchmarks share -- --device, configs, the judge, provenance."""

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

from tinydiff import cli

ROOT = Path(__file__).resolve().parents[1]
# the scripts that run a network (make_mnist.py builds the data set; the others serve or build pages)
NETWORK_SCRIPTS = ["adapt", "distill_mnist", "eval_images", "eval_mnist", "sample", "train", "train_autoencoder", "train_classifier",
                   "train_clip", "train_mnist", "train_text_unet"]


def test_device_names_are_checked_against_what_torch_sees(monkeypatch):
    assert cli.parse_device("cpu") == "cpu" and cli.parse_device(" CPU ") == "cpu"
    for bad in ("gpu", "cuda:x", "cuda:", "mps:0", "cpu:1", "tpu", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="not a device: choose cpu, cuda, cuda:N or mps"):
            cli.parse_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(argparse.ArgumentTypeError, match="no CUDA device.*--device cpu"):
            cli.parse_device(name)
    with pytest.raises(argparse.ArgumentTypeError, match="no Apple MPS device.*--device cpu"):
        cli.parse_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert cli.parse_device("cuda") == "cuda" and cli.parse_device("cuda:1") == "cuda:1"
    with pytest.raises(argparse.ArgumentTypeError, match="2 CUDA device.*cuda:0 to cuda:1"):
        cli.parse_device("cuda:2")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert cli.parse_device("mps") == "mps"


@pytest.mark.parametrize("name", NETWORK_SCRIPTS)
def test_every_script_that_runs_a_network_takes_device(name, load_script, monkeypatch, capsys):
    script = load_script(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    with pytest.raises(SystemExit) as done:
        script.main()
    assert done.value.code == 0 and "--device" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--device", "tpu"])
    with pytest.raises(SystemExit) as failed:
        script.main()
    assert failed.value.code == 2 and "argument --device: 'tpu' is not a device" in capsys.readouterr().err


def test_load_config_applies_the_overrides_that_are_given(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"name": "UNet", "channels": 8}, "train": {"steps": 10, "lr": 1e-3}, "seed": 3}))
    config, train, model = cli.load_config(path, steps=2, lr=None)
    assert config["seed"] == 3 and train == {"steps": 2, "lr": 1e-3} and model == {"channels": 8}
    with pytest.raises(SystemExit, match="no such file"):
        cli.load_config(tmp_path / "missing.json")
    path.write_text(json.dumps({"model": {}}))
    with pytest.raises(SystemExit, match="has no train, seed"):
        cli.load_config(path)


def test_seeded_seeds_the_global_generator_and_returns_a_cpu_one():
    g = cli.seeded(7)
    a, b = torch.rand(3), torch.rand(3, generator=g)
    torch.manual_seed(7)
    assert torch.equal(a, torch.rand(3)) and torch.equal(b, torch.rand(3, generator=torch.Generator().manual_seed(7)))


def test_mean_of_last_and_provenance():
    assert cli.mean_of_last([1.0, 2.0, 3.0, 5.0], 2) == 4.0 and cli.mean_of_last([2.0], 100) == 2.0
    with pytest.raises(ValueError, match="no values"):
        cli.mean_of_last([], 5)
    plain, paired = cli.provenance(), cli.provenance([0.5, 0.5, 0.5])
    assert {"command", "machine", "load_average", "date"} <= set(plain) and "python" in plain["command"]
    assert paired["load_average_before"] == [0.5, 0.5, 0.5] and "load_average_after" in paired


def test_the_judge_scores_real_digits_near_its_floor():
    judge = cli.load_judge(ROOT / "data" / "checkpoints" / "mnist_classifier")
    from tinydiff.data import load_mnist

    x, y = load_mnist("train", pad_to_32=True)
    report = judge.report(x[:200], y[:200])
    assert judge.test_features.shape[0] == 1000 and report["label_accuracy"] > 0.95 and report["fd"] > 0
