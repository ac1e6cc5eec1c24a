"""Train the 2-D MLP a few steps with tinydiff.train -- under torchrun, or as one process.

Used by tests/test_distributed.py:

    torchrun --standalone --nproc_per_node 2 tests/helpers/ddp_train.py OUT.safetensors 8
    python tests/helpers/ddp_train.py OUT.safetensors 16           # the same run as one process

The second argument is the per-process batch. Rank 0 writes the final weights and EMA.
"""

import sys

import torch
from safetensors.torch import save_file

from tinydiff import distributed, schedules
from tinydiff.models import MLP
from tinydiff.train import train

STEPS = 20


def main(out: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    world = distributed.setup("cpu")
    torch.manual_seed(0)  # the same initial weights on every rank (DDP would copy rank 0's anyway)
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(1)) * torch.tensor([2.0, 0.5])
    model = MLP(hidden=32, n_blocks=2)
    state = None
    for state in train(model, schedules.get("cosine", T=100), data, steps=STEPS, batch_size=batch_size, lr=1e-2,
                       ema_decay=0.9, generator=torch.Generator().manual_seed(2), progress=False):
        pass
    if world.is_main:
        tensors = {f"model.{k}": v.contiguous() for k, v in state.model.state_dict().items()}
        tensors.update({f"ema.{k}": v.contiguous() for k, v in state.ema.state_dict().items()})
        save_file(tensors, out, metadata={"world_size": str(world.size), "loss": repr(state.loss)})
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
