"""The training loop, as a generator -- one loop for every network the course trains.

One step is Ho et al. 2020, Algorithm 1: draw a minibatch x_0, a timestep
t ~ U{0..T-1} and noise eps, and take a gradient step on L_simple
(:func:`tinydiff.losses.diffusion_loss`). Around it: AdamW, gradient clipping,
an exponential moving average (EMA) of the weights, optional class labels with
a learned "null" class (for classifier-free guidance, Ho & Salimans 2022),
and optional bf16 autocast on CUDA. Another objective (:class:`tinydiff.losses.Objective`)
changes only what is minimised: flow matching, progressive distillation, and the two
networks around a diffusion model, the autoencoder of latent diffusion
(:func:`train_autoencoder`) and the tiny CLIP (:func:`train_clip`).

:func:`train` *yields* a :class:`TrainState` after every step, so a notebook
drives it with a plain ``for`` loop -- loss curves, sample previews and
checkpoints need no callbacks::

    for state in train(model, schedule, images, steps=2000):
        if state.step % 500 == 0:
            print(state.step, state.loss)

Several processes: under ``torchrun``, after :func:`tinydiff.distributed.setup`, the same
call trains with DistributedDataParallel -- each of N ranks takes its slice of one global
batch of N x ``batch_size``, so the run equals a single process with batch N x ``batch_size``
(:mod:`tinydiff.distributed`). Without a process group nothing changes.

Resuming: pass a previous state (or one read back by
:func:`tinydiff.train_state.load_training_state`) as ``resume=``. It restores
the weights (into ``model``, which may be freshly built), the step, the optimizer,
the EMA and the random generator, so an interrupted run continues exactly as the
uninterrupted one would have.

On a GPU the host only queues work; reading a number back (a loss to print) makes it wait
until the device has caught up. The loop reads the loss every ``log_every`` steps (on the
CPU, where reading costs nothing, at every step), and the numbers of a :class:`TrainState`
are read when the caller first asks for them, as nanoGPT reads its loss only when it logs.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import load_state_strict
from .losses import Autoencoding, Contrastive, Denoising, Objective
from .schedules import Schedule
from .tensors import device_and_dtype, to_device
from .train_state import TrainState, as_float

DataSource = Tensor | Callable[..., Tensor | tuple[Tensor, Tensor]]
"""A tensor x_0 [N, *data] to draw minibatches from, or ``data(batch_size, generator=g) -> x_0 [B, *data]``."""


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """EMA of the weights: theta_ema <- decay * theta_ema + (1 - decay) * theta (Polyak averaging; Ho et al. 2020, app. B).

    Buffers (e.g. running statistics) are copied, not averaged.
    """
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def _draw_batch(data: DataSource, labels: Tensor | None, batch_size: int, generator: torch.Generator):
    """A minibatch (x_0 [B, *data], y [B] or None), drawn with replacement via ``generator``."""
    if callable(data) and not isinstance(data, Tensor):
        out = data(batch_size, generator=generator)
        return out if isinstance(out, tuple) else (out, None)
    idx = to_device(torch.randint(0, data.shape[0], (batch_size,), generator=generator, device=generator.device),
                    data.device)
    return data[idx], (labels[to_device(idx, labels.device)] if labels is not None else None)


def _drop_labels(y: Tensor, p_uncond: float, null_class: int | Tensor, generator: torch.Generator) -> Tensor:
    """Replace each condition by the null one with probability p_uncond (Ho & Salimans 2022, Algorithm 1).

    y: labels [B] with ``null_class`` an int, or prompt ids [B, L] with ``null_class`` the empty prompt's ids [L]."""
    drop = to_device(torch.rand(y.shape[:1], generator=generator, device=generator.device), y.device) < p_uncond
    null = to_device(torch.as_tensor(null_class, dtype=y.dtype), y.device).expand_as(y)
    return torch.where(drop.view(-1, *[1] * (y.ndim - 1)), null, y)


LR_SCHEDULES = ("constant", "cosine")


def learning_rate(step: int, lr: float, warmup_steps: int, steps: int, schedule: str = "constant") -> float:
    """The learning rate of 0-based step ``step``: a linear warm-up, then constant or cosine decay.

    warm-up (step < warmup_steps):  lr * (step + 1) / warmup_steps
    "constant":                     lr
    "cosine":                       lr * (1 + cos(pi * p)) / 2,  p = (step - warmup_steps) / (steps - warmup_steps)

    The cosine decay to 0 at the last step is SGDR without restarts (Loshchilov & Hutter
    2017, eq. 5, with eta_min = 0). A pure function of the step, so resuming needs no state.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant" or steps <= warmup_steps:
        return lr
    progress = (step - warmup_steps) / (steps - warmup_steps)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _check_args(model, data, labels, steps, batch_size, ema_decay, p_uncond, null_class, log_every) -> None:
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int (the step to stop at), got {steps!r}")
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"log_every must be a positive int (read the loss every log_every steps), got {log_every!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1) (e.g. 0.999) or be None for no EMA, got {ema_decay}")
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must lie in [0, 1), got {p_uncond}")
    if isinstance(data, Tensor):
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"data must have shape [N, *data] with N >= 1, got {list(data.shape)}")
    elif not callable(data):
        raise TypeError("data must be a tensor [N, *data] or a callable data(batch_size, generator=g) -> x_0 batch")
    if labels is not None:
        if not isinstance(data, Tensor) or labels.shape[:1] != data.shape[:1] or labels.ndim > 2:
            raise ValueError("labels must be a LongTensor [N] (or prompt ids [N, L]) matching a data tensor [N, *data]")
        if labels.dtype != torch.long:
            raise TypeError(f"labels must be class indices of dtype torch.long, got {labels.dtype}")
    if p_uncond > 0 and null_class is None:
        raise ValueError("p_uncond > 0 needs a null class: give null_class= or use a model with a `null_class` attribute")
    if not any(True for _ in model.parameters()):
        raise ValueError("the model has no parameters to train")


def _objective(schedule: Schedule | None, objective: Objective | None, prediction: str) -> Objective:
    """What to minimise: L_simple on ``schedule`` for ``prediction`` unless another objective is given."""
    if objective is None:
        if schedule is None:
            raise ValueError("give a noise schedule (tinydiff.schedules), or objective= for one that needs none")
        return Denoising(schedule, prediction)
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be a tinydiff.losses.Objective, got {type(objective).__name__}")
    if prediction != "epsilon":
        raise ValueError("prediction= belongs to the default objective; with objective= the objective sets the target")
    if schedule is not None and objective.schedule is not None and schedule != objective.schedule:
        raise ValueError(f"the model is trained for {schedule!r} but the objective (e.g. its teacher) uses "
                         f"{objective.schedule!r}: a student must keep its teacher's schedule")
    return objective


def train(
    model: nn.Module,
    schedule: Schedule | None,
    data: DataSource,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 2e-4,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    lr_schedule: str = "constant",
    prediction: str = "epsilon",
    ema_decay: float | None = None,
    grad_clip: float | None = 1.0,
    labels: Tensor | None = None,
    p_uncond: float = 0.0,
    null_class: int | Tensor | None = None,
    generator: torch.Generator | None = None,
    autocast_bf16: bool = False,
    resume: TrainState | None = None,
    progress: bool = True,
    objective: Objective | None = None,
    log_every: int = 10,
) -> Iterator[TrainState]:
    """Train ``model`` with L_simple until ``steps`` steps are done, yielding a :class:`TrainState` after each.

    Args:
        model: called as ``model(x_t, t)`` (x_t [B, *data], t LongTensor [B]) or, with
            ``labels``, as ``model(x_t, t, y=y)`` (y LongTensor [B]); returns [B, *data].
        data: x_0 [N, *data] (minibatches drawn with replacement, moved to the model's
            device), or ``data(batch_size, generator=g)`` returning x_0 [B, *data]
            (or a pair (x_0, y)) -- e.g. ``tinydiff.data.two_moons``.
        steps: the total number of steps; a resumed run goes on from ``resume.step``.
        lr, weight_decay, warmup_steps: AdamW (Loshchilov & Hutter 2019), lr ramped up
            linearly over the first ``warmup_steps`` steps (Ho et al. 2020 use 5000).
        lr_schedule: after the warm-up, ``"constant"`` or ``"cosine"`` decay to 0 at ``steps``
            (:func:`learning_rate`).
        prediction: the regression target, ``"epsilon"`` | ``"x0"`` | ``"v"``.
        ema_decay: keep an EMA of the weights with this decay (e.g. 0.999), warmed up as
            min(ema_decay, (1 + n) / (10 + n)) at step n (0-based); None for no EMA.
        grad_clip: clip the gradient norm to this value (Ho et al. use 1.0); None to skip.
        labels, p_uncond, null_class: class labels [N] (or prompt ids [N, L] for a
            :class:`~tinydiff.models.TextUNet`); each is replaced by ``null_class`` (default
            ``model.null_class``: the null label, or the empty prompt) with probability ``p_uncond``.
        batch_size: examples per step -- per process when several train together under torchrun
            (the global batch is then N x ``batch_size``, drawn alike on every rank and split).
        generator: draws minibatches, t and eps; default: a CPU generator seeded from
            torch's global seed (so ``torch.manual_seed`` makes the run reproducible).
            Under torchrun it must be seeded alike on every rank.
        autocast_bf16: bf16 mixed precision for the forward pass, on CUDA only.
        resume: a state to continue from (weights, step, optimizer, EMA and generator are restored).
        objective: what to minimise instead of L_simple (a :class:`tinydiff.losses.Objective`):
            ``tinydiff.flow.FlowMatching()`` (``schedule`` may then be None), ``tinydiff.flow.Reflow()``,
            ``tinydiff.distill.Distillation(...)``, ``tinydiff.losses.Autoencoding(...)``,
            ``tinydiff.losses.Contrastive(...)``. Everything else in the loop stays the same; the numbers
            the objective reports become attributes of each state.
        log_every: the loop reads the loss back every ``log_every`` steps, for the progress bar and
            the check below; in between, nothing waits for an accelerator (on the CPU it reads every step).

    Raises ``FloatingPointError`` if the loss is NaN or inf: on the CPU at that step, before any
    weight is changed; on an accelerator at the next read, up to ``log_every - 1`` updates later.
    """
    null_class = null_class if null_class is not None else getattr(model, "null_class", None)
    objective = _objective(schedule, objective, prediction)
    _check_args(model, data, labels, steps, batch_size, ema_decay, p_uncond, null_class, log_every)
    learning_rate(0, lr, warmup_steps, steps, lr_schedule)  # rejects an unknown lr_schedule before any work
    device, dtype = device_and_dtype(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if ema_decay is not None else None
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
    start = 0
    if resume is not None:
        start = resume.step
        if resume.model is not model:  # e.g. a freshly built model: it continues from the saved weights, not its own
            load_state_strict(model, resume.model.state_dict(), "resumed state")
        optimizer.load_state_dict(resume.optimizer.state_dict())
        generator.set_state(resume.generator.get_state())
        if ema is not None:
            if resume.ema is None:
                raise ValueError("resume has no EMA weights but ema_decay is set; resume with ema_decay=None")
            ema.load_state_dict(resume.ema.state_dict())
    use_bf16 = autocast_bf16 and device.type == "cuda"
    if autocast_bf16 and not use_bf16:
        warnings.warn(f"autocast_bf16 works on CUDA only; training in {dtype} on {device.type}", stacklevel=2)

    world = distributed.current()
    net = model
    if world.size > 1:  # gradients averaged over the ranks in backward (the weights start equal: DDP copies rank 0's)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    mine = slice(world.rank * batch_size, (world.rank + 1) * batch_size)  # this rank's part of the global batch

    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train", disable=not progress or not world.is_main)
    for step in bar:
        for group in optimizer.param_groups:  # a function of the step alone, so resuming needs nothing extra
            group["lr"] = learning_rate(step, lr, warmup_steps, steps, lr_schedule)
        # One global batch, drawn alike on every rank (and the objective's t and eps with it);
        # with one process the slice is all of it.
        x0, y = _draw_batch(data, labels, world.size * batch_size, generator)
        x0 = to_device(x0.to(dtype=dtype), device)  # the dtype first, on the data's device (MPS has no float64)
        kwargs = {}
        if y is not None:
            y = to_device(y, device)
            y = _drop_labels(y, p_uncond, null_class, generator) if p_uncond > 0 else y
            kwargs["y"] = y[mine]
        draws = objective.draw(x0, generator)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        with autocast:
            loss = objective.loss(net, x0[mine], tuple(d[mine] for d in draws), **kwargs)
        loss, reported = loss if isinstance(loss, tuple) else (loss, {})
        mean_loss = distributed.mean_over_ranks(loss.detach())  # the loss of the whole global batch, not read yet
        logging = (step + 1) % log_every == 0
        if logging or device.type == "cpu":
            value = as_float(mean_loss)
            if not math.isfinite(value) and loss.device.type != "meta":
                when = ("training stopped before updating the weights" if device.type == "cpu" else
                        f"it is read every {log_every} steps, so it may have gone bad (and the weights with it) "
                        f"up to {log_every - 1} steps earlier")
                raise FloatingPointError(
                    f"the loss is {value} at step {step + 1}; {when}. "
                    f"Lower the learning rate (lr={lr}), keep grad_clip on, or check the data for NaN/inf."
                )
            if progress and logging:
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip is not None else math.inf)
        optimizer.step()
        if ema is not None:  # a short memory at first, so the average forgets the random initial weights
            ema_update(ema, model, min(ema_decay, (1 + step) / (10 + step)))
        numbers = {name: distributed.mean_over_ranks(x.detach()) for name, x in reported.items()}
        yield TrainState(step + 1, mean_loss, norm, model, ema, optimizer, generator, **numbers)
    bar.close()


# --- the networks around a diffusion model: the same loop, another objective ----------------------


def train_autoencoder(
    model: nn.Module,
    images: Tensor,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    warmup_steps: int = 0,
    lr_schedule: str = "cosine",
    kl_weight: float = 1e-4,
    grad_clip: float | None = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = True,
    log_every: int = 10,
) -> Iterator[TrainState]:
    """Train a VAE (e.g. :class:`tinydiff.models.Autoencoder`, with its ``latent_shape``) on images [N, C, H, W].

    :func:`train` with :class:`tinydiff.losses.Autoencoding` (L1 + ``kl_weight`` x KL, no schedule), no EMA
    and no weight decay; each state also has the step's ``reconstruction`` error and ``kl``.
    """
    return train(model, None, images, objective=Autoencoding(model.latent_shape, kl_weight), steps=steps,
                 batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, lr_schedule=lr_schedule,
                 grad_clip=grad_clip, generator=generator, progress=progress, log_every=log_every)


def train_clip(
    model: nn.Module,
    images: Tensor,
    ids: Tensor,
    *,
    steps: int,
    truth: tuple[Tensor, Tensor] | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    warmup_steps: int = 100,
    lr_schedule: str = "cosine",
    weight_decay: float = 0.1,
    generator: torch.Generator | None = None,
    progress: bool = True,
    log_every: int = 10,
) -> Iterator[TrainState]:
    """Train a :class:`tinydiff.models.TinyCLIP` on pairs (images [N, 1, 32, 32], prompt ids [N, L]).

    :func:`train` with :class:`tinydiff.losses.Contrastive` (:func:`tinydiff.losses.clip_loss` over each
    minibatch), the examples' indices as labels, no gradient clipping and no EMA. ``truth = (image attributes
    [N, 3], stated caption attributes [N, 3])`` (:mod:`tinydiff.data.captions`) lets every caption in the batch
    that is true of an image count as a positive, not only its own. Each state also has the step's in-batch
    ``accuracy`` and ``logit_scale``.
    """
    if ids.shape[:1] != images.shape[:1] or ids.ndim != 2 or ids.dtype != torch.long:
        raise ValueError(f"ids must be prompt ids [N, L] (LongTensor) for the N = {len(images)} images, got {list(ids.shape)}")
    device, _ = device_and_dtype(model)
    objective = Contrastive(ids.to(device), None if truth is None else (truth[0].to(device), truth[1].to(device)))
    return train(model, None, images, labels=torch.arange(len(images)), objective=objective, steps=steps,
                 batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                 lr_schedule=lr_schedule, grad_clip=None, generator=generator, progress=progress, log_every=log_every)
