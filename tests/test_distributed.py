"""DistributedDataParallel through torchrun: 2 Gloo processes on the CPU train exactly like one process.

Each rank draws the same global batch and keeps its half; DDP averages the gradients. So
2 processes with batch B must end with the weights of 1 process with batch 2B, up to the
float round-off of summing the gradient in another order.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tinydiff import distributed
from tinydiff.models import MLP

HELPER = Path(__file__).parent / "helpers" / "ddp_train.py"


def _run(command: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_two_gloo_processes_train_like_one_process_with_twice_the_batch(tmp_path):
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    _run([sys.executable, str(HELPER), str(one), "16"], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(HELPER), str(two), "8"], tmp_path)
    with safe_open(str(two), "pt") as f:
        assert f.metadata()["world_size"] == "2"
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys()
    torch.manual_seed(0)
    initial = MLP(hidden=32, n_blocks=2).state_dict()
    moved = max(float((a[f"model.{k}"] - v).abs().max()) for k, v in initial.items())
    assert moved > 1e-2, "training did not change the weights: the comparison would prove nothing"
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-6), f"{key}: max difference {float((a[key] - b[key]).abs().max()):.3g}"


def test_without_torchrun_the_world_has_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_torchrun()
    world = distributed.setup("cpu")
    assert (world.rank, world.size, world.is_main) == (0, 1, True)
    assert distributed.current() == world
    value = torch.tensor(3.0)
    assert distributed.mean_over_ranks(value) is value
