"""Basic contract of ddpm_sample (and the model convention every sampler shares): shapes, x_T, seeds, bad input."""

import functools
import math

import pytest
import torch
from torch import nn

from tinydiff import schedules
from tinydiff.samplers import ddim_sample, ddpm_sample


def zero_eps(x, t):
    return torch.zeros_like(x)


class Recorder:
    """A zero-epsilon model that remembers the t it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t):
        self.calls.append(t.clone())
        return torch.zeros_like(x)


def test_model_sees_long_timesteps_from_T_minus_1_down_to_0():
    s = schedules.get("linear", T=20)
    model = Recorder()
    ddpm_sample(model, s, (3, 2), generator=torch.Generator().manual_seed(0), progress=False)
    assert [c.tolist() for c in model.calls] == [[t] * 3 for t in range(19, -1, -1)]
    assert all(c.dtype == torch.long for c in model.calls)


def test_one_step_closed_form_and_x_T_is_used_and_untouched():
    """T = 1 and eps_hat = 0: the only step returns x0_hat = x_T / sqrt(alpha_bar_0) (Ho et al. eq. 15), no noise."""
    s = schedules.get("linear", T=1)
    x_T = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    before = x_T.clone()
    out = ddpm_sample(zero_eps, s, x_T.shape, x_T=x_T, progress=False)
    torch.testing.assert_close(out, x_T / math.sqrt(1 - 1e-4))
    assert torch.equal(x_T, before)


def test_two_steps_closed_form_with_zero_eps():
    """T = 2, eps_hat = 0, noise z at the first step:
    x_0 = (x_T / sqrt(ab_1) * coef_x0 + coef_xt x_T + sqrt(beta_tilde_1) z) / sqrt(ab_0)  (Ho et al. eqs. 7, 15)."""
    s = schedules.linear(T=2, beta_start=0.1, beta_end=0.3)
    b0, b1 = 0.1, 0.3
    ab0, ab1 = 1 - b0, (1 - b0) * (1 - b1)
    x_T = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = ddpm_sample(zero_eps, s, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(1), progress=False)
    z = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x0_hat = x_T / math.sqrt(ab1)
    mean = math.sqrt(ab0) * b1 / (1 - ab1) * x0_hat + math.sqrt(1 - b1) * (1 - ab0) / (1 - ab1) * x_T
    x1 = mean + math.sqrt((1 - ab0) / (1 - ab1) * b1) * z
    torch.testing.assert_close(out, x1 / math.sqrt(ab0))


def test_shapes_dtype_and_trajectory():
    s = schedules.get("cosine", T=30)
    x_T = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    out, traj = ddpm_sample(zero_eps, s, x_T.shape, x_T=x_T, progress=False, return_trajectory=True,
                            generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 6, 6) and out.dtype == torch.float64
    assert traj.timesteps.tolist() == list(range(29, -1, -1))
    assert traj.xs.shape == (31, 2, 1, 6, 6) and traj.x0_preds.shape == (30, 2, 1, 6, 6)
    assert torch.equal(traj.xs[0], x_T) and torch.equal(traj.xs[-1], out)


def test_dtype_and_device_follow_the_model_parameters():
    s = schedules.get("linear", T=5)
    out = ddpm_sample(zero_eps, s, (4, 3), progress=False)  # a plain function has no parameters: CPU float32
    assert out.dtype == torch.float32 and out.device.type == "cpu"

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x, t):
            return self.lin(x)

    assert ddpm_sample(Net().double(), s, (4, 3), progress=False).dtype == torch.float64


def test_generator_reproducibility():
    s = schedules.get("cosine", T=50)
    a = ddpm_sample(zero_eps, s, (8, 2), generator=torch.Generator().manual_seed(0), progress=False)
    b = ddpm_sample(zero_eps, s, (8, 2), generator=torch.Generator().manual_seed(0), progress=False)
    c = ddpm_sample(zero_eps, s, (8, 2), generator=torch.Generator().manual_seed(1), progress=False)
    assert torch.equal(a, b) and not torch.equal(a, c)
    x_T = torch.zeros(8, 2)
    d = ddpm_sample(zero_eps, s, (8, 2), x_T=x_T, generator=torch.Generator().manual_seed(0), progress=False)
    assert not torch.equal(d, a)  # x_T replaced the first draw


def test_runs_on_meta_tensors():
    s = schedules.get("linear", T=10)
    x_T = torch.empty(2, 3, device="meta")
    assert ddpm_sample(zero_eps, s, x_T.shape, x_T=x_T, progress=False).device.type == "meta"


@pytest.mark.parametrize("sampler", [ddpm_sample, functools.partial(ddim_sample, steps=10)])
def test_bad_inputs(sampler):
    s = schedules.get("linear", T=100)
    with pytest.raises(ValueError, match="shape must be"):
        sampler(zero_eps, s, (0, 2), progress=False)
    with pytest.raises(ValueError, match="x_T has shape"):
        sampler(zero_eps, s, (2, 2), x_T=torch.zeros(2, 3), progress=False)
    with pytest.raises(ValueError, match="must return a tensor shaped like x_t"):
        sampler(lambda x, t: x.sum(1), s, (2, 2), progress=False)
    with pytest.raises(ValueError, match="must return a tensor"):
        sampler(lambda x, t: None, s, (2, 2), progress=False)
    with pytest.raises(ValueError, match="unknown prediction type 'noise'"):
        sampler(zero_eps, s, (2, 2), prediction="noise", progress=False)


def test_unknown_variance():
    with pytest.raises(ValueError, match="unknown variance 'learned'; choose one of beta_tilde, beta"):
        ddpm_sample(zero_eps, schedules.get("linear", T=10), (2, 2), variance="learned", progress=False)


def test_every_sampler_has_the_one_interface():
    """One convention for every sampler (README, "Names"): the number of steps is ``steps`` and always the caller's
    choice (DDPM runs all T; the editing samplers' None means all T, as their papers do); the starting noise is
    ``x_T`` (T = 1 for a flow); noise comes through ``generator``; ``progress`` and ``return_trajectory`` exist
    everywhere, and a trajectory is a :class:`~tinydiff.samplers.Trajectory`."""
    import inspect

    from tinydiff import editing, flow, langevin, samplers, solvers

    loops = [samplers.ddpm_sample, samplers.ddim_sample, samplers.ddim_invert, solvers.heun_sample,
             solvers.dpm_solver_sample, solvers.plms_sample, solvers.reverse_sde_sample,
             solvers.predictor_corrector_sample, flow.flow_sample, editing.inpaint, editing.sdedit,
             langevin.langevin, langevin.annealed_langevin]
    for sampler in loops:
        p = inspect.signature(sampler).parameters
        name = sampler.__name__
        assert {"progress", "return_trajectory"} <= set(p), name
        assert "generator" in p or name == "ddim_invert", name  # inversion is deterministic
        assert "n_steps" not in p and "x_1" not in p, name
        if "steps" in p:
            assert p["steps"].kind is inspect.Parameter.KEYWORD_ONLY, name
            default = p["steps"].default
            assert default is inspect.Parameter.empty or (default is None and sampler in (editing.inpaint, editing.sdedit)), name
        if "x_T" in p or sampler in (samplers.ddim_sample, flow.flow_sample):
            assert p["x_T"].default is None, name
        assert "Trajectory" in str(inspect.signature(sampler).return_annotation), name
