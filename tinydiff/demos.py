"""The pictures of the notebooks' widgets and the classroom demo page: each function draws its samples -- runs
Langevin, a sampler or a network -- and hands the arrays to :mod:`tinydiff.plot`, which only draws.

Each is a plain function of its arguments that returns the figure: :mod:`tinydiff.widgets` redraws one when a
control moves, and a notebook calls the same function for the static figure after its widget, so a static render
shows what the widget shows. The noise comes from a CPU generator seeded with ``seed``: the same picture on every
device, and the same controls always give the same picture.

- :func:`langevin_figure`    plain or annealed Langevin on a mixture, with mode occupancy
- :func:`ddim_paths_figure`  DDIM paths from fixed 2-D starts for one eta
- :func:`guidance_figure`    images of one class under classifier-free guidance at one scale (digits, or colour
  images of a named class)
- :func:`few_step_figure`    several few-step samplers side by side at one number of steps
- :func:`adapter_figure`     digits from an adapted network at one adapter scale (the network is left as it was)
- :func:`prompt_figure`      digits for one prompt from a text-conditioned model
- :func:`superres_figure`    several SR3 upscalings of one small image, beside the input and bicubic
- :func:`spoken_digits`      spoken digits from the sound model, as spectrogram images and as sound
- :func:`prompt_edit_figure` one real digit edited from its caption to another by SDEdit, inversion and
  prompt-to-prompt, at one strength

:func:`class_index` (a class by index or by name) and :func:`image_shape` (a network's image shape) are the
checks and defaults :func:`guidance_figure` and its widget share.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import FigureBase
from torch import Tensor

from . import plot, samplers
from .adapt import lora_layers, set_adapter_scale
from .data.audio import waveforms_from_images
from .data.styles import ink
from .data.toy import GaussianMixture
from .guidance import guided_digits
from .langevin import annealed_langevin, check_sigmas, langevin, mixture_score
from .metrics import classify, mode_occupancy
from .prompt_editing import EDITORS, edit
from .schedules import Schedule
from .superres import upsample, upscale
from .text_to_image import prompt_digits


def langevin_figure(
    mixture: GaussianMixture,
    x_init: Tensor,
    step_size: float,
    steps: int,
    sigmas: Sequence[float] | Tensor | None = None,
    seed: int = 0,
    fig: FigureBase | None = None,
    lim: float = 4.5,
) -> FigureBase:
    """Run Langevin on ``mixture`` from ``x_init`` [N, 2] and draw the particles and their mode occupancy
    (:func:`tinydiff.plot.langevin_panels`).

    ``sigmas=None``: plain Langevin, x <- x + (eps/2) s(x) + sqrt(eps) z for ``steps`` steps
    (Welling & Teh 2011, eq. 3). Otherwise annealed Langevin over the decreasing noise levels
    ``sigmas`` (Song & Ermon 2019, Algorithm 1) with steps // L steps per level (at least one)
    and alpha_i = eps sigma_i^2 / sigma_L^2, so ``step_size`` is the step at the last level.
    A diverged particle is left out; the occupancy (:func:`~tinydiff.metrics.mode_occupancy`) is that of the
    finite ones.
    """
    g = torch.Generator().manual_seed(seed)
    if sigmas is None:
        x = langevin(mixture.score, x_init, step_size=step_size, steps=steps, generator=g)
    else:
        sigmas = check_sigmas(sigmas)
        x = annealed_langevin(mixture_score(mixture), x_init, sigmas, step_size=step_size,
                              steps_per_level=max(1, steps // len(sigmas)), generator=g)
    x = x[torch.isfinite(x).all(dim=1)]
    occupancy = mode_occupancy(mixture, x) if len(x) > 0 else torch.zeros(mixture.n_components)
    name = "plain" if sigmas is None else "annealed"
    return plot.langevin_panels(x, mixture, occupancy, rf"{name}, $\epsilon$ = {step_size:.3g}, {steps} steps",
                                color="C0" if sigmas is None else "C3", fig=fig, lim=lim)


def ddim_paths_figure(
    model: samplers.Model,
    schedule: Schedule,
    x_T: Tensor,
    eta: float,
    steps: int = 100,
    seed: int = 8,
    density: GaussianMixture | None = None,
    fig: FigureBase | None = None,
    lim: float = 3.2,
) -> FigureBase:
    """Run DDIM from the starts ``x_T`` [B, 2] with this ``eta`` and draw the paths
    (:func:`tinydiff.plot.paths_figure`).

    Each step is Song, Meng & Ermon 2021, eq. 12, with sigma_t(eta) of eq. 16: eta = 0 is the
    deterministic probability-flow path, eta = 1 adds DDPM's posterior noise.
    """
    g = torch.Generator().manual_seed(seed)
    _, trajectory = samplers.ddim_sample(model, schedule, x_T.shape, steps=steps, eta=eta, x_T=x_T, generator=g,
                                         progress=False, return_trajectory=True)
    return plot.paths_figure(trajectory.xs, density, rf"DDIM-{steps}, $\eta$ = {eta:.2f}", fig=fig, lim=lim)


def class_index(label: int | str, classes: Sequence[str] | None, num_classes: int) -> int:
    """The index of the class ``label`` of a network with ``num_classes`` classes: ``label`` itself (0 ..
    num_classes - 1), or with ``classes`` -- the model's class names, label i is ``classes[i]``
    (:attr:`tinydiff.pretrained.DiffusionModel.classes`) -- a class's name or index."""
    if classes is not None:
        if len(classes) != num_classes:
            raise ValueError(f"classes has {len(classes)} names but the network has {num_classes} classes: pass the "
                             "model's own class names (DiffusionModel.classes)")
        if isinstance(label, str):
            if label not in classes:
                raise ValueError(f"unknown class {label!r}; the model's classes are: {', '.join(map(repr, classes))}")
            return list(classes).index(label)
    elif isinstance(label, str):
        raise ValueError(f"a class by name ({label!r}) needs the model's class names: pass classes=model.classes")
    if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label < num_classes:
        what = "digit" if classes is None else "class"
        raise ValueError(f"{what} must be one of 0..{num_classes - 1}" + ("" if classes is None else " or a class name")
                         + f", got {label!r}")
    return int(label)


def image_shape(net: torch.nn.Module, size: int = 32) -> tuple[int, int, int]:
    """One image's shape (C, size, size) for a pixel-space network: C is its ``in_channels`` (1 for MNIST, 3 for
    colour; the config of a :class:`~tinydiff.models.UNet`, or of the UNet a TextUNet wraps), 1 if it records none."""
    config = getattr(net, "config", None) or {}
    config = config.get("unet", config)
    return int(config.get("in_channels", 1)), size, size


def guidance_figure(
    net: torch.nn.Module,
    schedule: Schedule,
    digit: int | str,
    scale: float,
    n: int = 8,
    steps: int = 20,
    seed: int = 0,
    prediction: str = "epsilon",
    fig: FigureBase | None = None,
    *,
    classes: Sequence[str] | None = None,
    shape: tuple[int, int, int] | None = None,
) -> FigureBase:
    """``n`` samples of one class with classifier-free guidance at ``scale`` (DDIM, eta = 0; Ho & Salimans 2022,
    eq. 6), as one row (:func:`tinydiff.plot.digit_row`).

    ``digit`` is the class: its index, or with ``classes`` (the model's class names,
    :attr:`tinydiff.pretrained.DiffusionModel.classes`) its name or index; the title then names the class.
    ``shape`` is one image's (C, H, W), default (the network's in_channels, 32, 32): C = 3 is drawn in colour.
    The starting noise is fixed by ``seed`` (a CPU generator), so moving the scale changes only the guidance: the
    same x_T, pulled harder towards the label; the same seed gives the same row. ``net`` is a class-conditional
    network with a null class (:func:`tinydiff.guidance.classifier_free`).
    """
    label = class_index(digit, classes, net.num_classes)
    x = guided_digits(net, schedule, label, scale, n=n, steps=steps, seed=seed, prediction=prediction,
                      shape=shape if shape is not None else image_shape(net))
    if classes is None:
        title = (f"s = 0: the unconditional model, the label {digit} is ignored (DDIM-{steps})" if scale == 0
                 else f"digit {digit}, guidance scale s = {scale:g} (DDIM-{steps})")
    else:
        title = (f"s = 0: the unconditional model, {classes[label]} ignored (DDIM-{steps})" if scale == 0
                 else f"{classes[label]}, guidance scale s = {scale:g} (DDIM-{steps})")
    return plot.digit_row(x, title, fig)


def few_step_figure(
    panels: dict[str, Callable[[int], Tensor]],
    steps: int,
    density: GaussianMixture | None = None,
    measure: Callable[[Tensor], float] | None = None,
    fig: FigureBase | None = None,
    lim: float = 3.2,
) -> FigureBase:
    """Samplers side by side at the same number of ``steps`` (:func:`tinydiff.plot.few_step_panels`):
    ``panels[name](steps)`` returns 2-D points [N, 2] (a scatter each, over ``density``) or images [N, C, H, W] in
    [-1, 1] (a row each). With ``measure`` -- energy distance over its noise floor, a number per set of samples --
    each title carries "ED / floor" and its value.
    """
    samples = {name: draw(steps) for name, draw in panels.items()}
    notes = {name: f"ED / floor {measure(x):.1f}" for name, x in samples.items()} if measure else None
    return plot.few_step_panels(samples, steps, density, notes, fig=fig, lim=lim)


def adapter_figure(
    net: torch.nn.Module,
    schedule: Schedule,
    label: int,
    scale: float,
    title: str = "",
    n: int = 8,
    steps: int = 20,
    guidance: float = 1.5,
    seed: int = 0,
    prediction: str = "epsilon",
    fig: FigureBase | None = None,
) -> FigureBase:
    """``n`` digits of ``label`` from a network with LoRA layers at adapter scale ``scale`` (0 = the base model,
    1 = adapted; :func:`tinydiff.adapt.set_adapter_scale`), DDIM (trailing) with classifier-free guidance at
    ``guidance``, from fixed noise: moving the scale changes only the adapter. The title carries the row's mean ink
    (:func:`tinydiff.data.styles.ink`, the measure of the thick style).

    Each LoRA layer is back at the scale it had when this returns (or raises); a network without LoRA layers (a
    new label, or the base model) is sampled as it is.
    """
    found = {layer: layer.scale for layer in lora_layers(net).values()}
    try:
        if found:
            set_adapter_scale(net, scale)
        x = guided_digits(net, schedule, label, guidance, n=n, steps=steps, seed=seed, prediction=prediction,
                          spacing="trailing")
    finally:
        for layer, layer_scale in found.items():
            set_adapter_scale(layer, layer_scale)
    label_text = f"{title}{', ' if title else ''}adapter scale {scale:g}: ink {float(ink(x).mean()):.3f}"
    return plot.digit_row(x, label_text, fig)


def prompt_figure(
    model,
    prompt: str,
    guidance: float,
    n: int = 8,
    steps: int = 20,
    seed: int = 0,
    clip: torch.nn.Module | None = None,
    clip_guidance: float = 0.0,
    fig: FigureBase | None = None,
) -> FigureBase:
    """``n`` digits for one ``prompt`` from a text-conditioned latent model (a
    :class:`tinydiff.pretrained.DiffusionModel` with a tokenizer), DDIM (trailing) from fixed noise under
    classifier-free guidance at ``guidance`` and CLIP guidance at ``clip_guidance``, as one row."""
    x = prompt_digits(model.net, model.schedule, model.codec, model.tokenizer, [prompt] * n, guidance=guidance,
                      clip=clip, clip_guidance=clip_guidance, steps=steps, seed=seed, prediction=model.prediction)
    extra = f", CLIP guidance {clip_guidance:g}" if clip_guidance else ""
    return plot.digit_row(x, f'"{prompt}", guidance {guidance:g}{extra}', fig)


def superres_figure(
    net: torch.nn.Module,
    schedule: Schedule,
    low: Tensor,
    level: int | None = 0,
    n: int = 6,
    steps: int = 20,
    seed: int = 0,
    prediction: str = "v",
    factor: int = 4,
    classifier: torch.nn.Module | None = None,
    fig: FigureBase | None = None,
) -> FigureBase:
    """``n`` SR3 upscalings of one low-resolution image low [1, C, h, w] (DDIM-``steps``, eta = 0, trailing, from
    ``n`` noises fixed by ``seed``), beside the input and its bicubic upsampling, as one captioned row
    (:func:`tinydiff.plot.captioned_row`). ``level`` is the augmentation level s of the conditioning image for a
    model with noise levels (:class:`tinydiff.superres.Upscaler`; None for one without). With a ``classifier``,
    each upscaling is captioned with the class it reads: where the small image is ambiguous, they differ."""
    if low.ndim != 4 or low.shape[0] != 1:
        raise ValueError(f"low must be one image [1, C, h, w], got {list(low.shape)}")
    level = level if getattr(net, "noise_levels", False) else None
    x = upscale(net, schedule, low.expand(n, -1, -1, -1), factor, level=level, steps=steps, seed=seed,
                prediction=prediction)
    guesses = [str(int(c)) for c in classify(classifier, x.cpu())] if classifier is not None else [""] * n
    low = low.cpu()
    row = torch.cat([low.repeat_interleave(factor, -2).repeat_interleave(factor, -1), upsample(low, factor), x.cpu()])
    words = "reads as" if classifier is not None else ""
    title = (f"{n} SR3 upscalings{' at augmentation level s = ' + str(level) if level is not None else ''} "
             f"(DDIM-{steps}){'; captions: the class the classifier ' + words if words else ''}")
    return plot.captioned_row(row, ["input", "bicubic", *guesses], title, fig)


EDITOR_NAMES = {"sdedit": "SDEdit", "inversion": "inversion", "prompt_to_prompt": "prompt-to-prompt"}


def prompt_edit_figure(
    model,
    image: Tensor,
    source: str,
    target: str,
    strength: float,
    guidance: float = 3.0,
    steps: int = 20,
    inject: float = 0.5,
    seed: int = 0,
    fig: FigureBase | None = None,
) -> FigureBase:
    """One real digit image [1, 1, 32, 32] captioned ``source``, redrawn under the caption ``target`` by each of
    :data:`tinydiff.prompt_editing.EDITORS` at ``strength`` (DDIM-``steps`` at ``guidance``; prompt-to-prompt keeps
    the source's attention maps for the first ``inject`` share of the steps), as one captioned row. ``model`` is
    the text-conditioned latent :class:`tinydiff.pretrained.DiffusionModel` (e.g. ``mnist_text``)."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be one digit [1, 1, 32, 32], got {list(image.shape)}")
    device = next(model.net.parameters()).device
    z0 = model.codec.encode(image.to(device))
    src, tgt = model.tokenizer.encode(source).to(device), model.tokenizer.encode(target).to(device)
    edited = [model.codec.decode(edit(model.net, model.schedule, z0, src, tgt, editor=e, strength=strength,
                                      guidance=guidance, steps=steps, inject=inject, prediction=model.prediction,
                                      generator=torch.Generator(device).manual_seed(seed))).clamp(-1, 1).cpu()
              for e in EDITORS]
    if fig is None:
        fig = plt.figure(figsize=(4.6, 1.5))
    t0 = round(strength * (model.schedule.T - 1))
    return plot.captioned_row(torch.cat([image.cpu(), *edited]), ["original", *(EDITOR_NAMES[e] for e in EDITORS)],
                              f'"{source}" -> "{target}"\nstrength {strength:g} (t0 = {t0}), guidance {guidance:g}', fig)


def spoken_digits(model, digit: int, guidance: float, n: int = 3, steps: int = 20,
                  seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` spoken ``digit``s from the class-conditional sound model (``spoken_digits_ddpm``, a
    :class:`tinydiff.pretrained.DiffusionModel` on spectrogram images [1, 64, 96]): DDIM with ``steps`` steps under
    classifier-free ``guidance`` from fixed noise, then Griffin-Lim (64 iterations, phases from the same seed).
    Returns (images [n, 1, 64, 96], waveforms [n, 6080] at 8 kHz) on the CPU; :func:`tinydiff.plot.spectrogram_row`
    draws the first, :func:`tinydiff.data.audio.wav_bytes` plays the second."""
    if tuple(model.sample_shape) != (1, 64, 96):
        raise ValueError(f"spoken_digits needs the sound model (spoken_digits_ddpm), whose samples are spectrogram "
                         f"images [1, 64, 96]; this model draws {list(model.sample_shape)}")
    images = guided_digits(model.net, model.schedule, int(digit), guidance, n=n, steps=steps, seed=seed,
                           prediction=model.prediction, shape=model.sample_shape).cpu()
    return images, waveforms_from_images(images, generator=torch.Generator().manual_seed(seed))
