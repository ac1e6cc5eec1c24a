"""The training loop (tinydiff.train) against closed forms: optimal linear denoiser, EMA recursion, resume."""

import copy
import math

import pytest
import torch
from torch import nn

from tinydiff import schedules
from tinydiff.data import two_moons
from tinydiff.train import TrainState, ema_update, learning_rate, train


class PerStepAffine(nn.Module):
    """eps_theta(x_t, t) = a_t * x_t + b_t: one scale and shift per timestep (can represent the optimum for Gaussian data)."""

    def __init__(self, T: int, dim: int = 2) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(T))
        self.b = nn.Parameter(torch.zeros(T, dim))

    def forward(self, x, t):
        return self.a[t][:, None] * x + self.b[t]


class Recorder(nn.Module):
    """A tiny conditional model that remembers the labels it was called with."""

    null_class = 10

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append(y.clone())
        return self.lin(x)


def test_learns_the_optimal_gaussian_denoiser():
    """For x_0 ~ N(m, s^2 I), E[eps | x_t] = c_t (x_t - sqrt(ab_t) m) with c_t = sqrt(1-ab_t) / (ab_t s^2 + 1 - ab_t).

    The per-step affine model must converge to a_t = c_t, b_t = -c_t sqrt(ab_t) m, and its
    loss must fall from 1 (= E|eps|^2 for a zero model) towards the minimum 1 - sqrt(1-ab) c_t.
    """
    torch.manual_seed(0)
    schedule = schedules.linear(T=4, beta_start=0.1, beta_end=0.6)
    m, s = torch.tensor([1.0, -2.0]), 0.5
    data = m + s * torch.randn(20000, 2)
    model = PerStepAffine(schedule.T)
    g = torch.Generator().manual_seed(1)
    losses = [st.loss for st in train(model, schedule, data, steps=400, batch_size=512, lr=0.05, generator=g, progress=False)]
    ab = schedule.alpha_bars.float()
    c = (1 - ab).sqrt() / (ab * s**2 + 1 - ab)
    torch.testing.assert_close(model.a.detach(), c, atol=0.05, rtol=0)
    torch.testing.assert_close(model.b.detach(), -(c * ab.sqrt())[:, None] * m, atol=0.08, rtol=0)
    assert losses[0] == pytest.approx(1.0, abs=0.15)
    best = float((1 - (1 - ab).sqrt() * c).mean())
    assert sum(losses[-50:]) / 50 == pytest.approx(best, abs=0.05)


def test_ema_follows_its_recursion():
    """theta_ema_n = d_n theta_ema_{n-1} + (1 - d_n) theta_n from the initial weights, d_n = min(d, (1 + n) / (10 + n))."""
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    expected = [p.detach().clone() for p in model.parameters()]
    d = 0.5  # the warm-up value (1 + n) / (10 + n) reaches 0.5 at n = 8: both regimes are exercised
    g = torch.Generator().manual_seed(0)
    for state in train(lambda_model(model), schedules.linear(10), torch.randn(64, 2), steps=12, batch_size=8,
                       lr=0.1, ema_decay=d, generator=g, progress=False):
        n = state.step - 1
        d_n = min(d, (1 + n) / (10 + n))
        expected = [d_n * e + (1 - d_n) * p.detach() for e, p in zip(expected, state.model.parameters())]
    for e, p in zip(expected, state.ema.parameters()):
        torch.testing.assert_close(p, e)
    assert not any(p.requires_grad for p in state.ema.parameters())
    # The EMA moved away from the initial weights but is not the final weights.
    assert not torch.allclose(state.ema.weight, state.model.weight)


def lambda_model(linear: nn.Linear) -> nn.Module:
    """Wrap a Linear so it takes (x, t) -- the model convention of the training loop."""

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = linear.weight
            self.bias = linear.bias

        def forward(self, x, t):
            return x @ self.weight.T + self.bias

    return Wrapped()


def test_ema_update_closed_form():
    a, b = nn.Linear(1, 1), nn.Linear(1, 1)
    with torch.no_grad():
        a.weight.fill_(1.0), a.bias.fill_(0.0), b.weight.fill_(3.0), b.bias.fill_(-1.0)
    ema_update(a, b, decay=0.75)
    assert a.weight.item() == pytest.approx(0.75 * 1 + 0.25 * 3)
    assert a.bias.item() == pytest.approx(-0.25)


def test_nan_loss_stops_before_touching_the_weights():
    model = nn.Linear(2, 2)
    wrapped = lambda_model(model)
    data = torch.randn(32, 2)
    data[5:] = float("nan")  # most batches contain a NaN
    before = model.weight.detach().clone()
    with pytest.raises(FloatingPointError, match="loss is nan at step 1.*Lower the learning rate"):
        for _ in train(wrapped, schedules.linear(10), data, steps=5, batch_size=16, progress=False,
                       generator=torch.Generator().manual_seed(0)):
            pass
    assert torch.equal(model.weight, before)


def _run(model, steps, resume=None, **kw):
    g = torch.Generator().manual_seed(123)
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(7))
    last = None
    for last in train(model, schedules.cosine(50), data, steps=steps, batch_size=32, lr=1e-2, ema_decay=0.9,
                      generator=g, resume=resume, progress=False, **kw):
        if resume is None and last.step == 5 and steps == 5:
            break
    return last


def test_resume_continues_the_same_run():
    from tinydiff.models import MLP

    torch.manual_seed(0)
    init = MLP(hidden=16, n_blocks=1)
    straight = _run(copy.deepcopy(init), 10)
    half = _run(copy.deepcopy(init), 5)
    assert half.step == 5
    resumed = _run(copy.deepcopy(half.model), 10, resume=half)
    assert resumed.step == 10
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(straight.ema.parameters(), resumed.ema.parameters()):
        assert torch.equal(p, q)
    assert resumed.loss == straight.loss


def test_resume_restores_the_weights_into_a_freshly_built_model(tmp_path):
    """Interrupt, save the state to disk, read it back, resume into a *new* model: exactly the uninterrupted run."""
    from tinydiff.models import MLP
    from tinydiff.train_state import load_training_state, save_training_state

    torch.manual_seed(0)
    init = MLP(hidden=16, n_blocks=1)
    straight = _run(copy.deepcopy(init), 10)
    half = _run(copy.deepcopy(init), 5)
    save_training_state(tmp_path / "state", half, config={"hidden": 16, "n_blocks": 1})
    torch.manual_seed(99)
    fresh = MLP(hidden=16, n_blocks=1)  # other random weights: resuming must replace them
    assert not torch.equal(next(fresh.parameters()), next(half.model.parameters()))
    resumed = _run(fresh, 10, resume=load_training_state(tmp_path / "state"))
    assert resumed.model is fresh and resumed.step == 10
    for p, q in zip(straight.model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(straight.ema.parameters(), resumed.ema.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="does not fit MLP"):
        _run(MLP(hidden=8, n_blocks=1), 10, resume=half)  # a model of another shape: a clear error, not garbage


def test_labels_and_null_class_dropout():
    torch.manual_seed(0)
    model = Recorder()
    labels = torch.arange(4000) % 10
    data = torch.randn(4000, 2)
    for _ in train(model, schedules.linear(10), data, labels=labels, p_uncond=0.25, steps=20, batch_size=200,
                   generator=torch.Generator().manual_seed(0), progress=False):
        pass
    y = torch.cat(model.seen)
    frac = (y == Recorder.null_class).float().mean().item()
    # 4000 Bernoulli(0.25) draws: standard deviation ~0.007.
    assert frac == pytest.approx(0.25, abs=0.03)
    assert set(y[y != 10].tolist()) <= set(range(10))
    model.seen.clear()
    for _ in train(model, schedules.linear(10), data, labels=labels, steps=3, batch_size=50, progress=False):
        pass
    assert all((s != 10).all() for s in model.seen)


def test_callable_data_and_toy_mlp():
    """A 2-D toy sampler plugs straight in as data(batch_size, generator=g); an MLP f(x [B,2], t [B]) trains."""
    from tinydiff.models import MLP

    torch.manual_seed(0)
    states = list(train(MLP(hidden=32, n_blocks=1), schedules.cosine(100), two_moons, steps=30, batch_size=64,
                        lr=3e-3, generator=torch.Generator().manual_seed(0), progress=False))
    assert [s.step for s in states] == list(range(1, 31))
    assert all(math.isfinite(s.loss) and math.isfinite(s.grad_norm) for s in states)
    assert isinstance(states[-1], TrainState) and states[-1].ema is None


def test_runs_on_meta_tensors():
    """No hard-coded device: model and data on the meta device (shapes only) go through every line."""
    from tinydiff.models import MLP

    model = MLP(hidden=16, n_blocks=1).to("meta")
    data = torch.empty(100, 2, device="meta")
    states = list(train(model, schedules.linear(20), data, steps=2, batch_size=8, ema_decay=0.9, progress=False))
    assert states[-1].step == 2
    assert all(p.device.type == "meta" for p in states[-1].ema.parameters())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": -1}, "steps must be"),
        ({"steps": 2, "batch_size": 0}, "batch_size"),
        ({"steps": 2, "ema_decay": 1.0}, "ema_decay"),
        ({"steps": 2, "labels": torch.zeros(3, dtype=torch.long)}, "labels must be"),
        ({"steps": 2, "labels": torch.zeros(10, dtype=torch.long), "p_uncond": 0.1}, "null class"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        next(train(lambda_model(nn.Linear(2, 2)), schedules.linear(10), torch.randn(10, 2), progress=False, **kwargs))


def test_learning_rate_schedule_closed_form():
    # warm-up is linear and reaches lr on its last step; cosine halves lr midway and ends at 0 (SGDR, eta_min = 0)
    assert learning_rate(0, 1.0, 10, 110) == pytest.approx(0.1)
    assert learning_rate(9, 1.0, 10, 110, "cosine") == pytest.approx(1.0)
    assert learning_rate(10, 1.0, 10, 110, "cosine") == pytest.approx(1.0)
    assert learning_rate(60, 1.0, 10, 110, "cosine") == pytest.approx(0.5)
    assert learning_rate(35, 1.0, 10, 110, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(109, 1.0, 10, 110, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert learning_rate(500, 2e-4, 10, 110, "constant") == 2e-4
    with pytest.raises(ValueError, match="unknown lr schedule 'step'"):
        learning_rate(0, 1.0, 0, 10, "step")


def test_train_sets_each_steps_learning_rate_from_the_schedule():
    data = two_moons(256, generator=torch.Generator().manual_seed(0))
    seen = []
    for state in train(PerStepAffine(20), schedules.linear(20), data, steps=30, batch_size=16, lr=0.01, warmup_steps=5,
                       lr_schedule="cosine", generator=torch.Generator().manual_seed(0), progress=False):
        seen.append(state.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([learning_rate(s, 0.01, 5, 30, "cosine") for s in range(30)])
    assert seen[-1] < 1e-4 < seen[5]
