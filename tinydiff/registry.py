"""Samplers by name, as the scripts, benchmarks and evaluation take them: ``ddim:50``, ``dpm:20``, ``flow-heun:10``.

One table, :data:`METHODS`, describes every sampler once: its label for tables and figures, its function (the
samplers' one interface, from :mod:`tinydiff.samplers`, :mod:`tinydiff.solvers` or :mod:`tinydiff.flow`), how many
network calls ``steps`` steps cost, and the fewest steps it accepts. Its default timestep spacing is read from the
function's own signature. A new sampler is its update rule in one of those modules plus one entry here.

This module sits above everything it names; nothing below imports it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from .diffusion import FLOW_PREDICTION
from .flow import flow_sample
from .samplers import Model, _check_eta, ddim_sample, ddim_timesteps, ddpm_sample
from .schedules import Schedule
from .solvers import dpm_solver_sample, heun_sample, plms_sample, predictor_corrector_sample, reverse_sde_sample


@dataclass(frozen=True)
class Method:
    """One sampler: ``label`` for tables (``DPM-Solver++(2M)``); ``sample``, the function; ``calls(steps)``, its
    network calls for ``steps`` steps; ``fewest_steps``; ``flow``: it integrates a flow-matching velocity (no
    schedule, no spacing)."""

    label: str
    sample: Callable[..., Tensor]
    calls: Callable[[int], int]
    fewest_steps: int = 1
    flow: bool = False

    @property
    def spacing(self) -> str:
        """The default timestep spacing, as in the function's signature (``uniform`` for a flow, ``all`` for DDPM)."""
        if self.flow:
            return "uniform"
        spacing = inspect.signature(self.sample).parameters.get("spacing")
        return "all" if spacing is None else spacing.default


METHODS: dict[str, Method] = {
    "ddpm": Method("DDPM", ddpm_sample, lambda steps: steps),
    "ddim": Method("DDIM", ddim_sample, lambda steps: steps),
    # Heun: two calls a step but the last, an Euler step to the clean sample (Karras et al. 2022, Algorithm 1)
    "heun": Method("Heun", heun_sample, lambda steps: 2 * steps - 1),
    "dpm": Method("DPM-Solver++(2M)", dpm_solver_sample, lambda steps: steps, fewest_steps=2),
    # PLMS: one extra call in its first step (the pseudo improved Euler start)
    "plms": Method("PLMS", plms_sample, lambda steps: steps + 1, fewest_steps=4),
    "sde": Method("SDE", reverse_sde_sample, lambda steps: steps),
    # predictor-corrector with one corrector step: predictor + corrector at every step but the last
    "pc": Method("PC", predictor_corrector_sample, lambda steps: 2 * (steps - 1) + 1),
    "flow-euler": Method("flow Euler", partial(flow_sample, method="euler"), lambda steps: steps, flow=True),
    "flow-heun": Method("flow Heun", partial(flow_sample, method="heun"), lambda steps: 2 * steps, flow=True),
}


def network_calls(kind: str, steps: int) -> int:
    """How many times sampler ``kind`` (a key of :data:`METHODS`) calls the model in ``steps`` steps."""
    if kind not in METHODS:
        raise ValueError(f"unknown sampler {kind!r}; known: {', '.join(METHODS)}")
    return METHODS[kind].calls(steps)


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler named by a short string, as the scripts take it (``--sampler``).

    ``ddpm`` (or ``ddpm:<T>``): :func:`~tinydiff.samplers.ddpm_sample`, all T steps.
    ``ddim:<steps>[:<spacing>[:<eta>]]``: :func:`~tinydiff.samplers.ddim_sample`, e.g. ``ddim:50`` (leading spacing,
    eta = 0) or ``ddim:50:trailing:1``. ``<solver>:<steps>[:<spacing>]`` with a solver of :mod:`tinydiff.solvers` --
    ``heun``, ``dpm`` (DPM-Solver++(2M)), ``plms``, ``sde`` (reverse SDE, Euler-Maruyama), ``pc``
    (predictor-corrector) -- e.g. ``dpm:20``. ``flow-euler:<steps>`` and ``flow-heun:<steps>``:
    :func:`tinydiff.flow.flow_sample` for a flow-matching model (it ignores the schedule). Calling a spec runs that
    sampler with the keywords every sampler shares.
    """

    kind: str
    steps: int
    spacing: str = "leading"
    eta: float = 0.0

    @classmethod
    def parse(cls, text: str, T: int) -> SamplerSpec:
        kind, *rest = text.split(":")
        if kind == "ddpm" and (not rest or rest == [str(T)]):
            return cls("ddpm", T, "all", 1.0)
        method = METHODS.get(kind)
        most = 0 if method is None or kind == "ddpm" else 1 if method.flow else 3 if kind == "ddim" else 2
        if not 1 <= len(rest) <= most or not rest[0].isdigit() or (method.flow and int(rest[0]) < 1):
            raise ValueError(f"unknown sampler {text!r}: write ddpm (all {T} steps), ddim:<steps>[:<spacing>[:<eta>]], "
                             "<solver>:<steps>[:<spacing>] with a solver of heun, dpm, plms, sde, pc, "
                             "or flow-euler:<steps> / flow-heun:<steps> for a flow-matching model; "
                             "e.g. ddim:50, ddim:50:leading:1, dpm:20 or flow-heun:10")
        steps = int(rest[0])
        spacing = rest[1] if len(rest) > 1 and rest[1] else method.spacing
        eta = _check_eta(float(rest[2])) if len(rest) > 2 else 0.0
        if not method.flow:
            ddim_timesteps(T, steps, spacing)  # validates steps and spacing
        if steps < method.fewest_steps:
            raise ValueError(f"{kind} needs steps >= {method.fewest_steps}, got {steps}; for fewer steps use ddim")
        return cls(kind, steps, spacing, eta)

    def with_eta(self, eta: float) -> SamplerSpec:
        """The same DDIM sampler with another eta (DDPM has no eta to change)."""
        if self.kind != "ddim":
            raise ValueError("eta applies to ddim samplers only; ddpm's noise is fixed by its variance")
        return SamplerSpec(self.kind, self.steps, self.spacing, _check_eta(eta))

    @property
    def name(self) -> str:
        """A label for tables and figures: ``DDPM-1000``, ``DDIM-50``, ``DDIM-50 eta=1``, ``DDIM-50 trailing``,
        ``DPM-Solver++(2M)-20 trailing``, ``flow Heun-10``."""
        label = f"{METHODS[self.kind].label}-{self.steps}"
        if self.kind == "ddpm" or METHODS[self.kind].flow:
            return label
        spacing = "" if self.spacing == "leading" else f" {self.spacing}"
        return label + spacing + ("" if self.eta == 0 else f" eta={self.eta:g}")

    @property
    def network_calls(self) -> int:
        """How many times the sampler calls the model (:func:`network_calls`)."""
        return network_calls(self.kind, self.steps)

    def __call__(self, model: Model, schedule: Schedule | None, shape, *, x_T: Tensor | None = None,
                 generator: torch.Generator | None = None, prediction: str = "epsilon", clip_x0: float | None = None,
                 progress: bool = True) -> Tensor:
        method = METHODS[self.kind]
        if method.flow:
            if prediction != FLOW_PREDICTION:
                raise ValueError(f"{self.name} integrates a velocity; this model predicts {prediction!r}")
            return method.sample(model, shape, steps=self.steps, x_T=x_T, generator=generator, progress=progress)
        if schedule is None:
            raise ValueError(f"{self.name} needs the model's noise schedule; a flow-matching model (no schedule) "
                             "samples with flow-euler:<steps> or flow-heun:<steps>")
        shared = dict(x_T=x_T, generator=generator, prediction=prediction, clip_x0=clip_x0, progress=progress)
        if self.kind == "ddpm":
            return ddpm_sample(model, schedule, shape, **shared)
        if self.kind == "ddim":
            shared["eta"] = self.eta
        return method.sample(model, schedule, shape, steps=self.steps, spacing=self.spacing, **shared)
