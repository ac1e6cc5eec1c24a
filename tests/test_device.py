"""No hard-coded devices: run the core on "meta" tensors.

A meta tensor has a shape and dtype but no data. Mixing it with a tensor that was
created on the CPU by mistake raises, so these tests catch a hard-coded device
without needing a GPU.
"""

import pytest
import torch
from torch import nn

from tinydiff import schedules
from tinydiff.diffusion import predict_eps, predict_x0, q_posterior, q_sample, q_step, training_target
from tinydiff.losses import diffusion_loss
from tinydiff.models.embeddings import TimeEmbedding, sinusoidal_embedding
from tinydiff.samplers import ddpm_sample

META = torch.device("meta")


@pytest.mark.parametrize("name", schedules.NAMES)
def test_forward_process_on_meta(name):
    s = schedules.get(name, T=50)
    x0 = torch.empty(4, 1, 8, 8, device=META)
    noise = torch.empty_like(x0)
    t = torch.empty(4, dtype=torch.long, device=META)
    for out in (
        q_sample(s, x0, t, noise),
        q_step(s, x0, t, noise),
        *q_posterior(s, x0, x0, t),
        predict_x0(s, x0, t, noise, "v"),
        predict_eps(s, x0, t, noise, "x0"),
        training_target(s, x0, noise, t, "v"),
    ):
        assert out.device == META


def test_cpu_tensor_mixed_into_meta_raises():
    """The premise of this file: a stray CPU tensor in a meta computation is an error."""
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.ones(3) + torch.empty(3, device=META)


class _TinyEps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.time = TimeEmbedding(16, freq_dim=8)
        self.net = nn.Linear(2 + 16, 2)

    def forward(self, x, t):
        return self.net(torch.cat([x, self.time(t)], dim=1))


def test_embedding_loss_and_sampler_on_meta():
    s = schedules.get("cosine", T=20)
    model = _TinyEps().to(META)
    assert sinusoidal_embedding(torch.empty(3, dtype=torch.long, device=META), 8).device == META
    loss = diffusion_loss(model, s, torch.empty(5, 2, device=META))
    assert loss.device == META
    x = ddpm_sample(model, s, (5, 2), progress=False)
    assert x.device == META
