"""The training loop (tinydiff.train) against closed forms: optimal linear denoiser, EMA recursion, resume."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

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


# --- the autoencoder and the tiny CLIP: the same loop with another objective --------------------------------------


def _adamw_steps(model, steps, lr, warmup_steps, loss_of_batch, weight_decay=0.0, grad_clip=None):
    """The optimizer step written out by hand, as train_autoencoder and train_clip took it before they became
    objectives of :func:`train`: the lr schedule (cosine), AdamW, optional clipping."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = learning_rate(step, lr, warmup_steps, steps, "cosine")
        loss = loss_of_batch()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()


def test_train_autoencoder_takes_the_same_steps_as_the_hand_written_loop():
    """Bit for bit: minibatch indices, then the reparameterisation's eps, from one generator; L1 + KL; clipping. A
    shipped checkpoint's recorded command reproduces it only while this holds."""
    from tinydiff.losses import autoencoder_loss
    from tinydiff.models import Autoencoder
    from tinydiff.train import train_autoencoder

    torch.manual_seed(0)
    ae = Autoencoder(channels=8, mults=(1, 2), latent_channels=2, image_size=16)
    reference = copy.deepcopy(ae)
    images = torch.rand(40, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    states = list(train_autoencoder(ae, images, steps=4, batch_size=8, lr=3e-3, warmup_steps=1, kl_weight=0.01,
                                    generator=torch.Generator().manual_seed(2), progress=False))
    g = torch.Generator().manual_seed(2)
    parts = []

    def loss_of_batch():
        x = images[torch.randint(0, len(images), (8,), generator=g)]
        loss, reconstruction, kl = autoencoder_loss(reference, x, kl_weight=0.01, generator=g)
        parts.append((loss.item(), reconstruction.item(), kl.item()))
        return loss

    _adamw_steps(reference, 4, 3e-3, 1, loss_of_batch, grad_clip=1.0)
    for p, q in zip(ae.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    assert [(s.loss, s.reconstruction, s.kl) for s in states] == parts


def test_train_clip_takes_the_same_steps_as_the_hand_written_loop():
    """Bit for bit: minibatch indices from the generator, the contrastive loss with every true caption a positive,
    AdamW with weight decay, no clipping. ``accuracy`` is the share of images whose best caption is a true one."""
    from tinydiff.data.captions import caption_is_true
    from tinydiff.losses import clip_loss
    from tinydiff.models import TinyCLIP
    from tinydiff.train import train_clip

    torch.manual_seed(0)
    clip = TinyCLIP(20, 6, embed_dim=16, text_width=16, text_layers=1, heads=2, image_width=4)
    reference = copy.deepcopy(clip)
    g = torch.Generator().manual_seed(1)
    images, ids = torch.rand(64, 1, 32, 32, generator=g) * 2 - 1, torch.randint(2, 20, (64, 6), generator=g)
    ids[:, -1] = 1  # every prompt ends with <end>
    attributes = torch.randint(0, 3, (64, 3), generator=g)
    stated = torch.where(torch.rand(64, 3, generator=g) < 0.5, attributes, torch.full_like(attributes, -1))
    states = list(train_clip(clip, images, ids, steps=4, batch_size=16, lr=3e-3, warmup_steps=1,
                             truth=(attributes, stated), generator=torch.Generator().manual_seed(2), progress=False))
    g = torch.Generator().manual_seed(2)
    seen = []

    def loss_of_batch():
        idx = torch.randint(0, len(images), (16,), generator=g)
        logits = reference(images[idx], ids[idx])
        positives = caption_is_true(stated[idx], attributes[idx])
        seen.append((clip_loss(logits, positives).item(), positives[torch.arange(16), logits.argmax(1)].float().mean().item()))
        return clip_loss(logits, positives)

    _adamw_steps(reference, 4, 3e-3, 1, loss_of_batch, weight_decay=0.1)
    for p, q in zip(clip.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    assert [(s.loss, s.accuracy) for s in states] == seen
    assert states[0].logit_scale == pytest.approx(1 / 0.07)  # the scale the first step's logits used


class ReadsFromTensors(TorchDispatchMode):
    """Counts the numbers read back from tensors (float(), .item(), bool(): on a GPU, each makes the host wait)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.reads += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def test_the_loop_reads_the_loss_every_step_on_the_cpu_and_every_log_every_steps_elsewhere(monkeypatch):
    """On the CPU reading a number costs nothing, and the loss is checked before each update; on an accelerator
    (here meta tensors, which stand in for one) the loop reads it only at steps log_every, 2 log_every, ..."""
    import tinydiff.train
    from tinydiff.models import MLP
    from tinydiff.train_state import as_float

    read_at = []
    monkeypatch.setattr(tinydiff.train, "as_float", lambda x: read_at.append(len(read_at)) or as_float(x))
    for device, expected in (("cpu", 12), ("meta", 2)):
        read_at.clear()
        model, data = MLP(hidden=16, n_blocks=1).to(device), torch.randn(64, 2).to(device)
        for _ in train(model, schedules.cosine(50), data, steps=12, batch_size=8, log_every=5, progress=False):
            pass
        assert len(read_at) == expected, device
    with pytest.raises(ValueError, match="log_every"):
        next(train(MLP(hidden=16, n_blocks=1), schedules.cosine(50), torch.randn(64, 2), steps=2, log_every=0))


def test_the_states_numbers_are_read_once_when_asked_for():
    """A state's loss, grad_norm (and an objective's numbers) stay 0-d tensors until first read, then are floats."""
    from tinydiff.models import MLP

    torch.manual_seed(0)
    states = list(train(MLP(hidden=16, n_blocks=1), schedules.cosine(50), torch.randn(64, 2), steps=6, batch_size=8,
                        generator=torch.Generator().manual_seed(0), progress=False))
    with ReadsFromTensors() as counter:
        norms = [s.grad_norm for s in states]
    assert counter.reads == 6 and all(isinstance(n, float) and math.isfinite(n) for n in norms)
    with ReadsFromTensors() as counter:
        assert [s.grad_norm for s in states] == norms
    assert counter.reads == 0
    with pytest.raises(AttributeError, match="its numbers are loss, grad_norm"):
        _ = states[0].kl
