"""What resuming a training run needs -- the weights, the EMA weights, the AdamW moments, the random generator and
the step -- and its file: safetensors tensors plus the JSON sidecar of :mod:`tinydiff.checkpoint`, never a pickle.

:func:`tinydiff.train.train` yields a :class:`TrainState` after every step; :func:`save_training_state` writes one and
:func:`load_training_state` reads it back, to pass as ``train(..., resume=state)``: the run then continues exactly as
the uninterrupted one would have.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import (
    build_model,
    checkpoint_paths,
    load_state_strict,
    model_config,
    read_config,
    read_tensors,
    write_tensors,
)


def as_float(x: Tensor | float) -> float:
    """A number as a float: a 0-d tensor is read (from a GPU this waits for the device); NaN on the meta
    device, which holds no values."""
    if not isinstance(x, Tensor):
        return float(x)
    return float("nan") if x.device.type == "meta" else float(x.detach())


class TrainState:
    """What :func:`tinydiff.train.train` yields after each step (and what resuming needs).

    ``step`` counts finished steps (1 after the first); ``loss`` is that step's value of the
    objective (L_simple by default, averaged over the ranks under torchrun) and ``grad_norm`` the gradient norm
    before clipping; an objective that reports more numbers of its step (:class:`tinydiff.losses.Objective`) makes
    them attributes too, e.g. ``state.kl``. ``ema`` is the EMA copy of ``model`` (None without ``ema_decay``);
    ``generator`` draws every minibatch and the objective's random draws (t, eps).

    The numbers stay where the step computed them until they are first read; then each is a float (NaN on
    meta tensors). Reading one from a GPU makes the host wait for the device, so a loop that reads them only
    when it logs lets the device run ahead.
    """

    step: int
    loss: float
    grad_norm: float

    def __init__(self, step: int, loss: Tensor | float, grad_norm: Tensor | float, model: nn.Module,
                 ema: nn.Module | None, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                 **numbers: Tensor | float) -> None:
        self.step, self.model, self.ema, self.optimizer, self.generator = step, model, ema, optimizer, generator
        self._numbers = {"loss": loss, "grad_norm": grad_norm, **numbers}

    def __getattr__(self, name: str) -> float:  # only for what __init__ did not set: the numbers, read once
        numbers = self.__dict__.get("_numbers", {})
        if name not in numbers:
            raise AttributeError(f"TrainState has no attribute {name!r}; its numbers are {', '.join(numbers)}")
        numbers[name] = as_float(numbers[name])
        return numbers[name]

    def __repr__(self) -> str:
        numbers = ", ".join(f"{name}={getattr(self, name):.4g}" for name in self._numbers)
        return f"TrainState(step={self.step}, {numbers})"


def save_training_state(path: str | os.PathLike, state, config: dict | None = None, extra: dict | None = None) -> Path:
    """Save a :class:`TrainState`: weights, EMA, AdamW state, generator and step.

    Tensors go to ``path`` (.safetensors) under the prefixes ``model.``, ``ema.``,
    ``optimizer.<param index>.<name>`` and ``generator``; the rest (step, the optimizer's
    hyper-parameters, the model config) to the .json beside it.
    """
    tensors = {f"model.{k}": v for k, v in state.model.state_dict().items()}
    if state.ema is not None:
        tensors |= {f"ema.{k}": v for k, v in state.ema.state_dict().items()}
    opt = state.optimizer.state_dict()
    for index, slots in opt["state"].items():
        for name, value in slots.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value)
    tensors["generator"] = state.generator.get_state()
    header = {
        "model": type(state.model).__name__,
        "config": model_config(state.model, config),
        "step": state.step,
        "loss": state.loss,
        "has_ema": state.ema is not None,
        "optimizer": type(state.optimizer).__name__,
        "param_groups": opt["param_groups"],
        "generator_device": str(state.generator.device),
        "extra": extra or {},
    }
    write_tensors(Path(path), tensors, header)
    return checkpoint_paths(path)[0]


def load_training_state(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Read back what :func:`save_training_state` wrote, as a TrainState to pass to ``train(..., resume=)``."""
    header = read_config(path)
    if "step" not in header:
        raise ValueError(f"{path} holds model weights only, not a training state; use load_checkpoint")
    tensors = read_tensors(path, header, "cpu")
    model = build_model(header["model"], header["config"])
    load_state_strict(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, "training state")
    model.to(device)
    ema = None
    if header["has_ema"]:
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        load_state_strict(ema, {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, "training state (EMA)")
    optimizer = getattr(torch.optim, header["optimizer"])(model.parameters())
    opt_state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": header["param_groups"]})
    generator = torch.Generator(device=header["generator_device"])
    generator.set_state(tensors["generator"])
    return TrainState(header["step"], header["loss"], float("nan"), model, ema, optimizer, generator)
