"""Training on several processes (GPUs, or CPU cores) with PyTorch's own tools: torchrun + DistributedDataParallel.

Nothing here is needed on one machine with one process: without torchrun, :func:`setup`
returns a world of one and :func:`tinydiff.train.train` runs exactly as it always did.

Under ``torchrun`` each process gets its rank in the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`setup` joins that process group --
NCCL for CUDA, Gloo for the CPU -- and from then on :func:`tinydiff.train.train` wraps the model
in ``torch.nn.parallel.DistributedDataParallel`` (DDP, Li et al. 2020):

- every rank draws the same global minibatch (the same seed on every rank) and keeps its own
  slice of it, so N processes with batch B train exactly like one process with batch N x B;
- DDP averages the gradients over the ranks during ``backward``, so every rank takes the same
  optimizer step and the weights stay identical;
- only rank 0 (``World.is_main``) shows a progress bar, logs and writes checkpoints.

Launch (README, "Training on several GPUs")::

    torchrun --standalone --nproc_per_node 4 scripts/train_mnist.py --config configs/mnist_ddpm.json
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` in 0 .. ``size`` - 1, and ``local_rank`` on its machine (its GPU)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, shows progress and writes files."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher that sets ``WORLD_SIZE`` and ``RANK``) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup(device: str | torch.device = "cpu") -> World:
    """Join the process group described by torchrun's environment; a world of one if there is none.

    ``device`` is the kind of device this run trains on: ``"cuda"`` uses the NCCL backend and
    makes ``cuda:LOCAL_RANK`` this process's current GPU; anything else uses Gloo.
    Call :func:`teardown` when training is done.
    """
    if not launched_by_torchrun():
        return World()
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run a single process (without torchrun)")
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return world


def current() -> World:
    """The world this process is part of: from the initialised process group, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def mean_over_ranks(value: Tensor) -> Tensor:
    """The mean of a tensor over all ranks (itself in a world of one), e.g. a loss to log."""
    if current().size == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / current().size


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. "my time is up"), so all ranks stop at the same step."""
    if current().size == 1:
        return flag
    value = torch.tensor(float(flag), device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def teardown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
