"""Interactive demos for the notebooks and the classroom demo page: controls that redraw a figure.

Every demo is two things: a function that draws the figure for given values, ``(..., fig=None) -> Figure``
(:mod:`tinydiff.demos` when it samples, :mod:`tinydiff.plot` when it only draws), and an :class:`Explorer` here
that binds ipywidgets controls to that function's arguments and redraws it when a control moves. A notebook's
static figure after its widget calls the *same* function, so a static render (GitHub, a website, a viewer with no
kernel) shows exactly what the widget shows.

- :func:`schedule_explorer`: the forward process for (schedule, T, t) (:func:`tinydiff.plot.explorer_figure`):
  the alpha_bar and log-SNR curves with a marker at t, a noised 2-D point cloud and a grid of noised digits. The
  noise is drawn once (:class:`~tinydiff.plot.FixedNoise`): moving t shows the same points and digits getting
  noisier, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with one fixed eps (Ho et al. 2020, eq. 4).
- :func:`langevin_explorer`: plain or annealed Langevin on a Gaussian mixture for a chosen step size and number
  of steps (:func:`tinydiff.demos.langevin_figure`).
- :func:`ddim_eta_explorer`: DDIM paths from fixed starts for a chosen eta (:func:`tinydiff.demos.ddim_paths_figure`).
- :func:`guidance_explorer`: images of one class from fixed noise under classifier-free guidance at a chosen
  scale (:func:`tinydiff.demos.guidance_figure`): digits, or colour images of a class picked by name.
- :func:`sdedit_explorer`: sketches and their SDEdit results for a chosen t0, computed beforehand
  (:func:`tinydiff.plot.sdedit_figure`).
- :func:`few_step_explorer`: several samplers side by side at a chosen number of steps
  (:func:`tinydiff.demos.few_step_figure`).
- :func:`adapter_explorer`: digits from an adapted model for a chosen method and adapter scale
  (:func:`tinydiff.demos.adapter_figure`).
- :func:`prompt_explorer`: digits for a typed prompt at a chosen guidance scale (:func:`tinydiff.demos.prompt_figure`).
- :func:`superres_explorer`: several SR3 upscalings of a test digit, or of a coarse digit drawn on an 8 x 8 grid
  (:class:`PixelGrid`), at a chosen augmentation level (:func:`tinydiff.demos.superres_figure`).
- :func:`spoken_digit_explorer`: pick a digit and a guidance scale, see the spectrograms the sound model draws and
  hear them (:func:`tinydiff.demos.spoken_digits`, :func:`tinydiff.plot.spectrogram_row`).
- :func:`prompt_edit_explorer`: a test digit edited from its caption to a typed one by SDEdit, inversion and
  prompt-to-prompt, at a chosen strength (:func:`tinydiff.demos.prompt_edit_figure`).
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable, Sequence
from functools import partial

import ipywidgets as W
import torch
import traitlets
from matplotlib.figure import Figure
from torch import Tensor

from . import demos, plot, samplers, schedules
from .data.audio import wav_bytes
from .data.toy import GaussianMixture, two_gaussians, two_moons
from .langevin import check_sigmas
from .schedules import Schedule

__all__ = ["Explorer", "PIXEL_RATIO", "adapter_explorer", "ddim_eta_explorer", "few_step_explorer", "figure_png",
           "guidance_explorer", "langevin_explorer", "prompt_edit_explorer", "prompt_explorer", "schedule_explorer", "sdedit_explorer",
           "show_figure", "spoken_digit_explorer", "superres_explorer"]


def figure_png(fig: Figure, dpi: float | None = None) -> bytes:
    """Render a matplotlib Figure to PNG bytes (at its own dpi unless ``dpi`` is given)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi if dpi is not None else fig.dpi)
    return buffer.getvalue()


PIXEL_RATIO = 2
"""Device pixels per CSS pixel that the widgets draw for: 2 is crisp on high-DPI screens and projectors."""


def show_figure(image: W.Image, fig: Figure) -> None:
    """Draw ``fig`` into the Image widget at its display size: ``PIXEL_RATIO`` x its pixels, shown at
    (inches x dpi) CSS pixels -- the size the notebook's static figures have -- and never stretched to the
    width of the cell (a box's children stretch unless told otherwise)."""
    image.value = figure_png(fig, dpi=fig.dpi * PIXEL_RATIO)
    image.width = str(round(fig.get_figwidth() * fig.dpi))
    image.layout.align_self = "flex-start"


def _default_images() -> Tensor | None:
    """Sixteen test digits, or None if the MNIST file is not available (the digit panel is then left out)."""
    try:
        from .data import load_mnist

        images, _ = load_mnist("test")
    except (ImportError, FileNotFoundError):
        return None
    return images[:16]


class Explorer(W.VBox):
    """Controls above an ``ipywidgets.Image`` that shows ``draw(**values, fig=fig)``, redrawn whenever a control moves.

    ``controls`` are rows of named controls, shown top to bottom (a row of several side by side); the names are
    ``draw``'s keyword arguments, each given its control's value, and each control is an attribute of the explorer
    by its name (``explorer.t.value = 90`` moves it). Every redraw draws on a new ``Figure(figsize, dpi)``. With
    ``check``, called with the same values, a ``ValueError`` or ``TypeError`` it raises is shown as a message above
    the figure instead of a redraw (a typed prompt with an unknown word), and the last figure stays.

    Why an Image widget rather than an Output widget: the figure is rendered to PNG in the kernel
    (:func:`show_figure`), so the result does not depend on the matplotlib backend (inline, ipympl) or on how a
    front end replays captured output. The Output widget's capture of matplotlib figures behaves differently in
    JupyterLab, VS Code and Colab (duplicated or missing figures, flicker on clear_output); an Image widget is a
    core widget that every front end displays the same way. It also makes the widget testable: ``image.value``
    holds the PNG bytes.
    """

    def __init__(self, draw: Callable[..., object], controls: Sequence[dict[str, W.ValueWidget]],
                 figsize: tuple[float, float], dpi: float | None = None,
                 check: Callable[..., object] | None = None) -> None:
        self.draw, self.figsize, self.dpi, self.check = draw, figsize, dpi, check
        self.message = W.HTML()
        self.image = W.Image(format="png")
        self.controls = {name: control for row in controls for name, control in row.items()}
        for name, control in self.controls.items():
            if hasattr(type(self), name) or name in vars(self):
                raise ValueError(f"a control cannot be called {name!r}: the explorer has an attribute of that name")
            setattr(self, name, control)
            control.observe(lambda _: self.render(), names="value")
        rows = [W.HBox(list(row.values())) if len(row) > 1 else next(iter(row.values())) for row in controls]
        super().__init__([*rows, *([self.message] if check else []), self.image])
        self.render()

    def render(self) -> None:
        """Draw the figure for the controls' current values into the Image widget."""
        values = {name: control.value for name, control in self.controls.items()}
        if self.check is not None:
            try:
                self.check(**values)
            except (ValueError, TypeError) as err:
                self.message.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
                return
            self.message.value = ""
        fig = Figure(figsize=self.figsize, dpi=self.dpi)
        self.draw(**values, fig=fig)
        show_figure(self.image, fig)


def on_release(kind: type[W.ValueWidget], value, description: str, **options) -> W.ValueWidget:
    """A control of ``kind`` that reports its value when it is let go, not while it is dragged (every redraw
    samples again)."""
    return kind(value=value, description=description, continuous_update=False, **options)


def schedule_explorer(
    points: Tensor | None = None,
    images: Tensor | None = None,
    schedule: str = "cosine",
    T: int = 1000,
    t: int = 250,
    seed: int = 0,
) -> Explorer:
    """The schedule explorer: pick a schedule and T, move t, watch the curves, points and digits change together.

    ``points`` [N, 2] default: 1000 two-moons samples; ``images`` [M, 1, H, W] in [-1, 1]
    default: 16 MNIST test digits (left out if the data file is missing). The noise
    is drawn once with ``seed`` (``explorer.data``). When T changes, t keeps its fraction of the way through.
    Returns an ipywidgets container; display it.
    """
    if schedule not in schedules.NAMES:
        raise ValueError(f"unknown schedule {schedule!r}; known schedules are: {', '.join(schedules.NAMES)}")
    if not 0 <= t < T:
        raise ValueError(f"t={t} is out of range: indices are 0-based, 0 <= t <= T-1 = {T - 1}")
    if points is None:
        points = two_moons(1000, generator=torch.Generator().manual_seed(seed))
    if images is None:
        images = _default_images()
    data = plot.FixedNoise.draw(points, images, seed)
    name = W.Dropdown(options=list(schedules.NAMES), value=schedule, description="schedule")
    steps = W.BoundedIntText(value=T, min=2, max=4000, step=50, description="T")
    step = on_release(W.IntSlider, t, "t", min=0, max=T - 1)

    def keep_fraction(change: dict) -> None:  # observes T before the explorer does: t is in range when it redraws
        fraction = step.value / max(change["old"] - 1, 1)
        with step.hold_trait_notifications():
            step.max = change["new"] - 1
            step.value = round(fraction * (change["new"] - 1))

    steps.observe(keep_fraction, names="value")

    def draw(schedule_name: str, T: int, t: int, fig: Figure) -> None:
        plot.explorer_figure(schedules.get(schedule_name, T=T), t, data, fig=fig)

    explorer = Explorer(draw, [{"schedule_name": name, "T": steps}, {"t": step}],
                        figsize=(3.0 * (4 if data.images is not None else 3), 2.7))
    explorer.data = data  # for the static figure after the widget, with the same noise
    return explorer


def langevin_explorer(
    mixture: GaussianMixture | None = None,
    x_init: Tensor | None = None,
    sigmas: Sequence[float] | Tensor | None = None,
    step_size: float = 0.02,
    steps: int = 500,
    annealed: bool = False,
    seed: int = 0,
) -> Explorer:
    """The Langevin explorer: move the step size and the number of steps, switch annealing on and off.

    ``mixture`` default: two Gaussians 4 apart with weights 0.8 / 0.2 (std 0.5), the case where
    plain Langevin gets the weights wrong. ``x_init`` [N, 2] default: 1000 points uniform on
    [-4, 4]^2 (seeded). ``sigmas`` default: 10 levels geometric from 4 down to 0.25. The start and the
    seed are fixed, so the same controls always give the same picture.
    Returns an ipywidgets container; display it.
    """
    mixture = mixture if mixture is not None else two_gaussians(separation=4.0, weights=(0.8, 0.2), std=0.5)
    if x_init is None:
        x_init = 4 * (2 * torch.rand(1000, 2, generator=torch.Generator().manual_seed(seed)) - 1)
    if x_init.ndim != 2 or x_init.shape[1] != 2:
        raise ValueError(f"x_init must be 2-D points of shape [N, 2], got {list(x_init.shape)}")
    levels = check_sigmas(sigmas if sigmas is not None else torch.logspace(math.log10(4.0), math.log10(0.25), 10))

    def draw(step_size: float, steps: int, annealed: bool, fig: Figure) -> None:
        demos.langevin_figure(mixture, x_init, step_size, steps, levels if annealed else None, seed=seed, fig=fig)

    controls = {"step_size": on_release(W.FloatLogSlider, step_size, "step size", base=10, min=-3, max=-0.3, step=0.1),
                "steps": on_release(W.IntSlider, steps, "steps", min=10, max=1000, step=10),
                "annealed": W.Checkbox(value=annealed, description="annealing")}
    return Explorer(draw, [controls], figsize=(8, 3.4))


def ddim_eta_explorer(
    model: samplers.Model,
    schedule: Schedule,
    x_T: Tensor,
    density: GaussianMixture | None = None,
    eta: float = 0.5,
    steps: int = 100,
    seed: int = 8,
) -> Explorer:
    """The DDIM eta explorer: move eta in [0, 1] and watch the paths from the starts ``x_T`` [B, 2] roughen
    (the same starts and the same seed at every eta).

    ``model(x_t, t)`` predicts epsilon (e.g. :class:`~tinydiff.oracle.MixtureEpsilon`); ``density``
    (e.g. the mixture) is shaded behind the paths. Returns an ipywidgets container; display it.
    """
    if x_T.ndim != 2 or x_T.shape[1] != 2:
        raise ValueError(f"x_T must be 2-D start points of shape [B, 2], got {list(x_T.shape)}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta={eta} is outside the slider's range [0, 1] (0: deterministic DDIM, 1: DDPM-like noise)")
    draw = partial(demos.ddim_paths_figure, model, schedule, x_T, steps=steps, seed=seed, density=density)
    return Explorer(draw, [{"eta": on_release(W.FloatSlider, eta, "eta", min=0.0, max=1.0, step=0.05)}],
                    figsize=(4.5, 4.5))


DIGITS_DPI = 110
"""Rows of digits are drawn at the size and resolution they are shown at."""


def guidance_explorer(net: torch.nn.Module, schedule: Schedule, digit: int | str = 3, scale: float = 1.0, n: int = 8,
                      steps: int = 20, prediction: str = "epsilon", *, classes: Sequence[str] | None = None,
                      shape: tuple[int, int, int] | None = None, seed: int = 0) -> Explorer:
    """The guidance explorer: pick a class, move the scale s in [0, 8], and watch the same noises become that class.

    ``net`` is a class-conditional network ``net(x_t, t, y)`` with a ``null_class`` (e.g. the shipped MNIST UNet,
    or the emoji UNet of notebook 14), sampled in pixel space with DDIM-``steps`` from ``n`` noises fixed by
    ``seed`` (:func:`tinydiff.demos.guidance_figure`: the same seed and controls give the same row). Without
    ``classes`` the class is a digit, picked from a dropdown of 0 .. K-1 (``explorer.digit``); with ``classes``,
    the model's class names (:attr:`tinydiff.pretrained.DiffusionModel.classes`), it is picked by name
    (``explorer.label``, whose value is the class's index) and ``digit`` may be a name. ``shape`` is one image's
    (C, H, W), default (the network's in_channels, 32, 32); colour images are drawn in colour. The scale slider
    is the explorer's only slider (``explorer.scale``). Returns an ipywidgets container; display it.
    """
    if getattr(net, "null_class", None) is None:
        raise ValueError("guidance_explorer needs a class-conditional network with a null class (UNet(num_classes=10))")
    label = demos.class_index(digit, classes, net.num_classes)
    if classes is None:
        choice = {"digit": W.Dropdown(options=list(range(net.num_classes)), value=label, description="digit")}
    else:
        choice = {"label": W.Dropdown(options=[(name, i) for i, name in enumerate(classes)], value=label,
                                      description="class")}
    (key,) = choice

    def draw(scale: float, fig: Figure, **chosen: int) -> None:  # chosen: the class control's value, by its name
        demos.guidance_figure(net, schedule, chosen[key], scale, n=n, steps=steps, seed=seed, prediction=prediction,
                              fig=fig, classes=classes, shape=shape)

    controls = {**choice, "scale": on_release(W.FloatSlider, scale, "scale s", min=0.0, max=8.0, step=0.5)}
    return Explorer(draw, [controls], figsize=(0.6 * n, 0.9), dpi=DIGITS_DPI)


def sdedit_explorer(inputs: Tensor, edits: dict, t0: int | None = None) -> Explorer:
    """Move t0 and watch SDEdit trade faithfulness for realism: ``edits[t0]`` are the ``inputs`` [N, C, H, W] edited
    from step t0 (:func:`tinydiff.editing.sdedit`), computed beforehand so the slider redraws at once.
    ``t0`` is where the slider starts (default: the middle value). Returns an ipywidgets container; display it.
    """
    if not edits:
        raise ValueError("sdedit_explorer needs at least one edit: {t0: sdedit(..., inputs, t0, ...)}")
    for key, edited in edits.items():
        if edited.shape != inputs.shape:
            raise ValueError(f"edits[{key}] has shape {list(edited.shape)}, the inputs {list(inputs.shape)}")
    options = sorted(edits)
    t0 = options[len(options) // 2] if t0 is None else t0
    if t0 not in edits:
        raise ValueError(f"t0={t0} is not one of the edits' steps {options}")

    def draw(t0: int, fig: Figure) -> None:
        plot.sdedit_figure(inputs, edits[t0], t0, fig=fig)

    return Explorer(draw, [{"t0": on_release(W.SelectionSlider, t0, "t0", options=options)}],
                    figsize=(0.65 * len(inputs), 1.8), dpi=DIGITS_DPI)


def few_step_explorer(panels: dict, step_options: Sequence[int] = (1, 2, 4, 8, 16), steps: int = 1,
                      density: GaussianMixture | None = None, measure=None, images: bool = False) -> Explorer:
    """Move the number of steps and watch several samplers side by side: ``panels[name](steps)`` -> points [N, 2]
    (a scatter each, over ``density``), or with ``images=True`` images [N, C, H, W] in [-1, 1] (a row each).

    Each callable should be cheap (cache its samples): the figure is redrawn on every move. ``measure(x)``
    (optional) is printed in each title. Returns an ipywidgets container; display it.
    """
    if not panels:
        raise ValueError("few_step_explorer needs at least one panel: {name: steps -> samples [N, 2]}")
    if steps not in step_options:
        raise ValueError(f"steps={steps} is not one of the slider's options {list(step_options)}")
    draw = partial(demos.few_step_figure, panels, density=density, measure=measure)
    control = {"steps": on_release(W.SelectionSlider, steps, "steps", options=list(step_options))}
    if images:
        return Explorer(draw, [control], figsize=(6.5, 0.9 * len(panels)), dpi=DIGITS_DPI)
    return Explorer(draw, [control], figsize=(3.0 * len(panels), 3.2))


def adapter_explorer(methods: dict, schedule: Schedule, scale: float = 1.0, prediction: str = "epsilon",
                     guidance: float = 1.5, steps: int = 20) -> Explorer:
    """Pick an adaptation and move its adapter scale: ``methods[name] = (network with LoRA layers, label)``.

    Scale 0 is the base model, 1 the adapted one, in between an interpolation (the LoRA branch times s), above 1
    an extrapolation. Each network keeps the adapter scale it had. Returns an ipywidgets container; display it.
    """
    if not methods:
        raise ValueError("adapter_explorer needs at least one method: {name: (network, label)}")
    if not 0.0 <= scale <= 1.5:
        raise ValueError(f"scale={scale} is outside the slider's range [0, 1.5]")

    def draw(method: str, scale: float, fig: Figure) -> None:
        net, label = methods[method]
        demos.adapter_figure(net, schedule, label, scale, method, steps=steps, guidance=guidance,
                             prediction=prediction, fig=fig)

    controls = {"method": W.Dropdown(options=list(methods), value=list(methods)[0], description="method"),
                "scale": on_release(W.FloatSlider, scale, "scale", min=0.0, max=1.5, step=0.25)}
    return Explorer(draw, [controls], figsize=(4.8, 0.9), dpi=DIGITS_DPI)


def prompt_explorer(model, prompt: str = "a bold seven", guidance: float = 3.0, n: int = 8,
                    steps: int = 20) -> Explorer:
    """Type a prompt from the captions' vocabulary and move the guidance scale: the same noises become that prompt.
    A prompt the tokenizer cannot read shows its error (with the vocabulary) instead of a new figure.

    ``model`` is a text-conditioned :class:`tinydiff.pretrained.DiffusionModel` (e.g. the shipped ``mnist_text``).
    Returns an ipywidgets container; display it.
    """
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("prompt_explorer needs a text-conditioned model: "
                         "load_diffusion_model('data/checkpoints/mnist_text')")
    model.tokenizer.encode(prompt)  # a bad starting prompt is the caller's error: say it now
    draw = partial(demos.prompt_figure, model, n=n, steps=steps)
    controls = {"prompt": on_release(W.Text, prompt, "prompt", layout=W.Layout(width="360px")),
                "guidance": on_release(W.FloatSlider, guidance, "guidance", min=0.0, max=8.0, step=0.5)}
    return Explorer(draw, [controls], figsize=(0.6 * n, 0.9), dpi=DIGITS_DPI,
                    check=lambda prompt, guidance: model.tokenizer.encode(prompt))


class PixelGrid(W.GridBox):
    """A ``size`` x ``size`` grid of toggle buttons to draw a coarse image with: ``value`` is the tuple of the
    pixels, row by row, 1 where a button is down (ink) and 0 where it is up; it changes, and observers hear it, on
    every click, so an :class:`Explorer` can take the grid as a control."""

    value = traitlets.Tuple()

    def __init__(self, pixels: Sequence[int], size: int = 8, description: str = "") -> None:
        if len(pixels) != size * size:
            raise ValueError(f"a {size} x {size} grid needs {size * size} pixels, got {len(pixels)}")
        self.buttons = [W.ToggleButton(value=bool(p), layout=W.Layout(width="22px", height="22px", padding="0"),
                                       tooltip=f"row {i // size}, column {i % size}") for i, p in enumerate(pixels)]
        super().__init__(self.buttons, layout=W.Layout(grid_template_columns=f"repeat({size}, 22px)",
                                                       grid_gap="1px"))
        self.description = description
        self.value = tuple(int(b.value) for b in self.buttons)
        for b in self.buttons:
            b.observe(lambda _: setattr(self, "value", tuple(int(x.value) for x in self.buttons)), names="value")

    def image(self) -> Tensor:
        """The drawing as an image [1, 1, size, size] in [-1, 1]: ink +1 (white, as MNIST's strokes), background -1."""
        size = int(math.isqrt(len(self.value)))
        return torch.tensor(self.value, dtype=torch.float32).view(1, 1, size, size) * 2 - 1


def superres_explorer(net: torch.nn.Module, schedule: Schedule, inputs: Tensor, labels: Tensor | None = None, *,
                      levels: Sequence[int] = (0, 50, 100, 150, 200, 250, 300), level: int = 0, n: int = 6,
                      steps: int = 20, prediction: str = "v", factor: int = 4,
                      classifier: torch.nn.Module | None = None, seed: int = 0) -> Explorer:
    """Pick a small image -- one of ``inputs`` [N, 1, h, w] (e.g. test digits shrunk to 8 x 8) or your own drawing on
    an h x h grid -- and an augmentation level s, and see ``n`` SR3 upscalings (:func:`tinydiff.demos.superres_figure`).

    ``net`` is a :class:`~tinydiff.models.SuperResUNet`; with noise levels the slider ``explorer.level`` sets s
    (Ho et al. 2022, sec. 4.1; a model without noise levels ignores it). The default ``levels`` span 0..300, the
    range the shipped ``mnist_sr`` was trained on (its s_max); give ``levels`` for a model trained on another. ``explorer.choice`` picks the input (-1: the
    drawing, ``explorer.drawing``, which starts as input 0 thresholded at 0). With ``labels`` the dropdown names each
    input's class, with ``classifier`` each upscaling is captioned with the class it reads. Returns the explorer.
    """
    if inputs.ndim != 4 or inputs.shape[1] != 1 or inputs.shape[2] != inputs.shape[3]:
        raise ValueError(f"inputs must be square one-channel images [N, 1, h, h], got {list(inputs.shape)}")
    options = [(f"test image {i}" + (f" (a {int(labels[i])})" if labels is not None else ""), i)
               for i in range(len(inputs))] + [("my drawing (the grid below)", -1)]
    drawing = PixelGrid((inputs[0, 0] > 0).int().flatten().tolist(), size=inputs.shape[-1])
    level = level if level in levels else levels[0]

    def draw(choice: int, level: int, drawing: tuple, fig: Figure) -> None:
        low = inputs[choice : choice + 1] if choice >= 0 else torch.tensor(drawing, dtype=inputs.dtype).view(
            1, 1, *inputs.shape[-2:]) * 2 - 1
        demos.superres_figure(net, schedule, low, level, n=n, steps=steps, seed=seed, prediction=prediction,
                              factor=factor, classifier=classifier, fig=fig)

    controls = [{"choice": W.Dropdown(options=options, value=0, description="input")},
                {"level": on_release(W.SelectionSlider, level, "level s", options=list(levels))},
                {"drawing": drawing}]
    return Explorer(draw, controls, figsize=(0.65 * (n + 2), 1.25), dpi=DIGITS_DPI)


def prompt_edit_explorer(model, images: Tensor, captions: Sequence[str], target: str | None = None,
                         strength: float = 0.8, guidance: float = 6.0, steps: int = 20) -> Explorer:
    """Pick a real digit (one of ``images`` [N, 1, 32, 32], each described by its true ``captions[i]``), type the
    caption to edit it to, and set the strength: the digit redrawn by SDEdit, inversion and prompt-to-prompt
    (:func:`tinydiff.demos.prompt_edit_figure`) at classifier-free ``guidance``. The typed caption must read with the model's tokenizer and have as
    many words as the source (prompt-to-prompt swaps words in place); otherwise the error shows instead.
    ``model`` is the text-conditioned :class:`tinydiff.pretrained.DiffusionModel`. Returns the explorer."""
    if len(images) != len(captions) or images.ndim != 4:
        raise ValueError(f"give one caption per image [N, 1, 32, 32]: {len(captions)} captions, {list(images.shape)}")
    tok = model.tokenizer
    target = target if target is not None else captions[0]
    options = [(f"{i}: {c}", i) for i, c in enumerate(captions)]

    def check(choice: int, target: str, strength: float) -> None:
        same = tok.padding_mask(tok.encode(captions[choice])).sum() == tok.padding_mask(tok.encode(target)).sum()
        if not bool(same):
            raise ValueError(f'"{target}" has another number of words than "{captions[choice]}": prompt-to-prompt '
                             "swaps words in place, so keep the length (e.g. change thin to bold)")

    def draw(choice: int, target: str, strength: float, fig: Figure) -> None:
        demos.prompt_edit_figure(model, images[choice: choice + 1], captions[choice], target, strength, guidance,
                                 steps=steps, fig=fig)

    controls = [{"choice": W.Dropdown(options=options, value=0, description="digit")},
                {"target": on_release(W.Text, target, "edit to", layout=W.Layout(width="360px")),
                 "strength": on_release(W.FloatSlider, strength, "strength", min=0.2, max=1.0, step=0.1)}]
    return Explorer(draw, controls, figsize=(4.6, 1.5), dpi=DIGITS_DPI, check=check)


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def spoken_digit_explorer(model, digit: int = 3, guidance: float = 2.0, n: int = 3, steps: int = 20) -> Explorer:
    """Pick a digit and a guidance scale: ``n`` spoken digits from the sound model (a
    :class:`tinydiff.pretrained.DiffusionModel` on spectrogram images), drawn as spectrograms and played one after
    another by the audio player under the figure (:func:`tinydiff.demos.spoken_digits`; fixed noise, so only the
    controls change what you hear). Returns the explorer; ``explorer.audio.value`` holds the WAV bytes."""
    player = W.Audio(format="wav", autoplay=False, loop=False)

    def draw(digit: int, guidance: float, fig: Figure) -> None:
        images, waves = demos.spoken_digits(model, digit, guidance, n=n, steps=steps)
        plot.spectrogram_row(images, [f'"{DIGIT_WORDS[digit]}", guidance {guidance:g}'] * n, fig)
        player.value = wav_bytes(waves)

    controls = [{"guidance": on_release(W.FloatSlider, guidance, "guidance", min=0.0, max=6.0, step=0.5),
                 "digit": W.Dropdown(options=[(w, i) for i, w in enumerate(DIGIT_WORDS)], value=digit,
                                     description="digit")}]
    explorer = Explorer(draw, controls, figsize=(2.0 * n, 2.1), dpi=DIGITS_DPI)
    explorer.audio = player
    explorer.children = (*explorer.children, player)
    return explorer
