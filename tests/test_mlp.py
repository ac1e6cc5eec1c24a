"""The residual MLP for 2-D toys: shapes, use of t, dtype/device, bad input, and that it learns."""

import pytest
import torch

from tinydiff import schedules
from tinydiff.data import eight_gaussians
from tinydiff.losses import diffusion_loss
from tinydiff.models import MLP
from tinydiff.train import train


def randomised(model: MLP, seed: int = 0) -> MLP:
    """The output layer starts at zero (so the first loss is exactly 1); give it weights to test the forward pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.out.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_output_shape_matches_input(dim):
    model = MLP(dim=dim, hidden=32, n_blocks=2)
    x = torch.randn(7, dim)
    assert model(x, torch.arange(7)).shape == (7, dim)


def test_zero_initialised_output_gives_loss_one():
    """eps_theta = 0 at initialisation, so L_simple = E|eps|^2 / D = 1 up to sampling error."""
    torch.manual_seed(0)
    model = MLP()
    sched = schedules.get("linear", T=1000)
    x0 = eight_gaussians().sample(20_000, generator=torch.Generator().manual_seed(0))
    loss = diffusion_loss(model, sched, x0, generator=torch.Generator().manual_seed(1)).item()
    assert abs(loss - 1.0) < 0.02


def test_the_model_uses_t():
    torch.manual_seed(0)
    model = randomised(MLP())
    x = torch.randn(4, 2).repeat(2, 1)
    out = model(x, torch.tensor([0, 0, 0, 0, 999, 999, 999, 999]))
    assert (out[:4] - out[4:]).abs().max() > 1e-3
    torch.testing.assert_close(model(x[:4], torch.zeros(4, dtype=torch.long)), out[:4])


def test_follows_dtype_and_runs_on_meta():
    model = randomised(MLP(hidden=16, n_blocks=1)).double()
    assert model(torch.randn(3, 2, dtype=torch.float64), torch.tensor([1, 2, 3])).dtype == torch.float64
    meta = MLP(hidden=16, n_blocks=1).to("meta")
    out = meta(torch.empty(3, 2, device="meta"), torch.zeros(3, dtype=torch.long, device="meta"))
    assert out.device.type == "meta" and out.shape == (3, 2)


def test_bad_input_raises_clear_errors():
    model = MLP()
    with pytest.raises(ValueError, match=r"x must have shape \[B, 2\]"):
        model(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"t must be a tensor of shape \[B\] = \[4\]"):
        model(torch.randn(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"t must be a tensor of shape \[B\]"):
        model(torch.randn(4, 2), 5)
    with pytest.raises(ValueError, match="even hidden"):
        MLP(hidden=33)


def test_a_few_dozen_steps_already_lower_the_loss():
    """Not convergence (that takes a minute, see notebook 04): 40 steps must beat the zero model's loss of 1 clearly."""
    torch.manual_seed(0)
    model = MLP()
    sched = schedules.get("linear", T=1000)
    data = eight_gaussians().sample(4096, generator=torch.Generator().manual_seed(0))
    for state in train(model, sched, data, steps=40, batch_size=256, lr=3e-3,
                       generator=torch.Generator().manual_seed(0), progress=False):
        pass
    loss = diffusion_loss(model, sched, data, generator=torch.Generator().manual_seed(1)).item()
    assert loss < 0.7
