"""Editing a real digit by editing its caption (Part 14, notebook 16): "a thin seven" -> "a bold seven".

All three editors take the digit's latent z_0 to the level t0 = strength x (T - 1), then run DDIM (eta = 0) down
under the *edited* caption, on the same grid as SDEdit (the first t0 + 1 steps, trailing spacing):

1. **SDEdit** (Meng et al. 2022), the baseline: z_t0 = forward-noised z_0 (fresh random noise).
2. **Inversion**: z_t0 = DDIM inversion of z_0 under the *source* caption (Song, Meng & Ermon 2021, sec. 5.4;
   :func:`tinydiff.samplers.ddim_invert`). Under the source caption at guidance 1 the way down returns z_0, up to
   the inversion's step error; under guidance s > 1 it does not, because the guided model is not the one that was
   inverted -- the failure that null-text inversion (Mokady et al. 2023) repairs by tuning the empty prompt's
   embedding per step. We invert at s = 1 and edit at s > 1, and measure what that costs.
3. **Prompt-to-prompt** (Hertz et al. 2022, sec. 3.2, "word swap"): inversion as in 2, then the source and edited
   captions are sampled side by side from the same z_t0, and for the first ``inject`` share of the steps every
   cross-attention block of the edited branch uses the *source* branch's attention maps M_t in place of its own:
   where each pixel reads from stays where the source put it, while what it reads (the values of the edited word)
   changes. Their Edit(M_t, M*_t, t) = M_t for t >= tau, M*_t after.

:func:`prefix` is the trick that lets the course's one DDIM sampler and its inversion start or stop at t0: the first
t0 + 1 steps of a schedule are a schedule, with the same alpha_bars.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .editing import noise_to_level
from .guidance import classifier_free, conditional
from .samplers import ddim_invert, ddim_sample
from .schedules import Schedule
from .tensors import randn

EDITORS = ("sdedit", "inversion", "prompt_to_prompt")


def prefix(schedule: Schedule, t0: int) -> Schedule:
    """The first t0 + 1 steps of ``schedule`` as a schedule of its own (alpha_bar_t unchanged for t <= t0): DDIM on
    it with ``spacing="trailing"`` starts exactly at t0, as SDEdit's grid does."""
    if isinstance(t0, bool) or not isinstance(t0, int) or not 0 <= t0 < schedule.T:
        raise ValueError(f"t0 must be an integer step in 0..{schedule.T - 1}, got {t0!r}")
    return Schedule(f"{schedule.name}[:{t0 + 1}]", schedule.betas[: t0 + 1])


def level(schedule: Schedule, strength: float) -> int:
    """t0 = round(strength x (T - 1)): how far an edit goes back towards noise (SDEdit's knob), 0 < strength <= 1."""
    if not 0 < strength <= 1:
        raise ValueError(f"the strength must lie in (0, 1] (the share of the way back to noise), got {strength}")
    return round(strength * (schedule.T - 1))


class AttentionInjection(nn.Module):
    """The network with prompt-to-prompt's attention control: a batch holds source and edited rows in groups
    [source (n rows), edited (n rows)] -- and, under classifier-free guidance, the same again for the null prompt --
    and while t >= ``until`` each cross-attention block gives the edited rows the source rows' weights.
    ``net(x_t, t, y)`` as the wrapped TextUNet; ``null_class`` and ``check_condition`` are its own."""

    def __init__(self, net: nn.Module, n: int, until: int) -> None:
        super().__init__()
        self.net, self.n, self.until = net, int(n), int(until)
        self.null_class = net.null_class

    def check_condition(self, y: Tensor) -> Tensor:
        return self.net.check_condition(y)

    def share(self, weights: Tensor) -> Tensor:
        """Cross-attention weights [B, heads, HW, L] with each group's edited rows replaced by its source rows."""
        groups = weights.reshape(-1, 2, self.n, *weights.shape[1:])
        return torch.stack([groups[:, 0], groups[:, 0]], 1).reshape(weights.shape)

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor) -> Tensor:
        if x_t.shape[0] % (2 * self.n):
            raise ValueError(f"a batch of {x_t.shape[0]} rows is not groups of {self.n} source + {self.n} edited rows")
        with attention_edit(self.net, self.share if int(t[0]) >= self.until else None):
            return self.net(x_t, t, y)


@contextlib.contextmanager
def attention_edit(net: nn.Module, edit) -> Iterator[None]:
    """Within the block, every cross-attention block of ``net`` passes its weights through ``edit`` (None: no edit)."""
    blocks = net.cross_attention_blocks()
    for block in blocks:
        block.attention_edit = edit
    try:
        yield
    finally:
        for block in blocks:
            block.attention_edit = None


def _guided(net: nn.Module, ids: Tensor, guidance: float) -> nn.Module:
    return classifier_free(net, ids, guidance) if guidance != 1.0 else conditional(net, ids)


@torch.no_grad()
def edit(net: nn.Module, schedule: Schedule, z0: Tensor, source_ids: Tensor, target_ids: Tensor, *,
         editor: str, strength: float, guidance: float = 3.0, steps: int = 25, inject: float = 0.5,
         prediction: str = "v", generator: torch.Generator | None = None) -> Tensor:
    """Edited latents [B, *latent] of latents z0 [B, *latent] from their source captions to the target captions
    (ids [B, L] each), by ``editor`` (:data:`EDITORS`) at ``strength`` (t0 = :func:`level`), DDIM on ``steps`` of the
    first t0 + 1 steps at classifier-free ``guidance``. Inversion always runs at guidance 1 (see the module
    docstring); ``inject`` is prompt-to-prompt's share of the steps with the source's attention maps.
    ``generator`` draws SDEdit's noise."""
    if editor not in EDITORS:
        raise ValueError(f"unknown editor {editor!r}; choose one of {', '.join(EDITORS)}")
    if not 0 <= inject <= 1:
        raise ValueError(f"inject must lie in [0, 1] (the share of steps with the source's attention), got {inject}")
    if editor == "prompt_to_prompt" and not torch.equal(source_ids != 0, target_ids != 0):
        raise ValueError("prompt-to-prompt's word swap needs source and target captions of the same number of words "
                         "(each pixel keeps its attention on the same token positions)")
    t0 = level(schedule, strength)
    head = prefix(schedule, t0)
    steps = min(steps, t0 + 1)
    if editor == "sdedit":
        z_t0 = noise_to_level(z0, float(schedule.alpha_bars[t0]), randn(z0.shape, generator=generator,
                                                                         device=z0.device, dtype=z0.dtype))
    else:
        z_t0 = ddim_invert(conditional(net, source_ids), head, z0, steps=steps, spacing="trailing",
                           prediction=prediction, progress=False)
    if editor != "prompt_to_prompt":
        return ddim_sample(_guided(net, target_ids, guidance), head, z0.shape, steps=steps, spacing="trailing",
                           x_T=z_t0, prediction=prediction, progress=False)
    # the source and the edited branch side by side; the source's maps for the first `inject` share of the steps
    until = round((1 - inject) * t0) if inject > 0 else t0 + 1  # tau: the source's maps while t >= tau
    injected = AttentionInjection(net, len(z0), until)
    both = ddim_sample(_guided(injected, torch.cat([source_ids, target_ids]), guidance), head, (2 * len(z0), *z0.shape[1:]),
                       steps=steps, spacing="trailing", x_T=torch.cat([z_t0, z_t0]), prediction=prediction,
                       progress=False)
    return both[len(z0):]
