"""Interactive demos for the notebooks, each backed by a plain drawing function.

Every demo is two things: a drawing function ``*_figure(..., fig=None) -> Figure``, which
lives in :mod:`tinydiff.demos` when it samples and in :mod:`tinydiff.plot` when it only draws, and an ipywidgets wrapper here that
redraws it when a control moves. The notebook's static fallback figure calls the *same*
drawing function, so a static render (GitHub, a website, a viewer with no kernel) shows
exactly what the widget shows.

- :func:`explorer_figure` / :func:`schedule_explorer` (notebook 01): the forward
  process for (schedule, t): the alpha_bar and log-SNR curves with a marker at t,
  a noised 2-D point cloud and a grid of noised digits. The noise is drawn once
  (:class:`FixedNoise`): moving t shows the same points and digits getting noisier,
  x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with one fixed eps (Ho et al. 2020, eq. 4).
- :func:`langevin_figure` / :func:`langevin_explorer` (notebook 02): plain or
  annealed Langevin on a Gaussian mixture for a chosen step size and number of
  steps; the particles and their mode occupancy against the true weights.
- :func:`ddim_paths_figure` / :func:`ddim_eta_explorer` (notebook 06): DDIM paths
  (Song, Meng & Ermon 2021, eqs. 12 and 16) from fixed starts for a chosen eta.
- :func:`guidance_figure` / :func:`guidance_explorer` (notebook 07): digits of one
  class from fixed noise, under classifier-free guidance at a chosen scale.
- :func:`sdedit_figure` / :func:`sdedit_explorer` (notebook 10): sketches and their SDEdit results for a
  chosen t0 (precomputed).
- :func:`few_step_figure` / :func:`few_step_explorer` (notebook 11): several samplers side by side
  at a chosen number of steps (the base flow, the reflowed flow, the distilled student; or digits).
- :func:`adapter_figure` / :func:`adapter_explorer` (notebook 12): digits from an adapted model for a chosen
  method and adapter scale (0 = base, 1 = adapted).
- :func:`prompt_figure` / :func:`prompt_explorer` (notebook 13): digits for a typed prompt at a chosen
  guidance scale.

Each wrapper renders its figure to PNG in the kernel (:func:`figure_png`) and shows
it in an ``ipywidgets.Image`` (see :class:`ScheduleExplorer` for why).
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence

import ipywidgets as W
import torch
from matplotlib.figure import Figure
from torch import Tensor

from . import samplers, schedules
from .data.toy import GaussianMixture, two_gaussians, two_moons
from .demos import adapter_figure, ddim_paths_figure, few_step_figure, guidance_figure, langevin_figure, prompt_figure
from .langevin import check_sigmas
from .plot import FixedNoise, draw_paths, explorer_figure, sdedit_figure
from .schedules import Schedule

__all__ = [  # the drawing functions are tinydiff.plot's and tinydiff.demos'; imported here because every widget redraws one
    "AdapterExplorer", "DDIMEtaExplorer", "FewStepExplorer", "adapter_explorer", "adapter_figure", "FixedNoise", "GuidanceExplorer", "LangevinExplorer", "ScheduleExplorer",
    "ddim_eta_explorer", "ddim_paths_figure", "draw_paths", "explorer_figure", "few_step_explorer", "few_step_figure",
    "figure_png", "guidance_explorer", "guidance_figure", "langevin_explorer", "langevin_figure", "schedule_explorer",
    "show_figure", "PromptExplorer", "prompt_explorer", "prompt_figure", "SDEditExplorer", "sdedit_explorer",
    "sdedit_figure",
]


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


class ScheduleExplorer(W.VBox):
    """Controls (schedule, T, t) above an ``ipywidgets.Image`` showing :func:`explorer_figure`.

    Why an Image widget rather than an Output widget: the figure is rendered to PNG
    in the kernel, so the result does not depend on the matplotlib backend
    (inline, ipympl) or on how a front end replays captured output. The Output
    widget's capture of matplotlib figures behaves differently in JupyterLab,
    VS Code and Colab (duplicated or missing figures, flicker on clear_output);
    an Image widget is a core widget that every front end displays the same way.
    It also makes the widget testable: ``image.value`` holds the PNG bytes.
    """

    def __init__(self, data: FixedNoise, schedule: str = "cosine", T: int = 1000, t: int = 250) -> None:
        self.data = data
        self.schedule_name = W.Dropdown(options=list(schedules.NAMES), value=schedule, description="schedule")
        self.T = W.BoundedIntText(value=T, min=2, max=4000, step=50, description="T")
        self.t = W.IntSlider(value=t, min=0, max=T - 1, description="t", continuous_update=False)
        self.image = W.Image(format="png")
        for control in (self.schedule_name, self.T):
            control.observe(self._on_schedule_change, names="value")
        self.t.observe(lambda _: self.render(), names="value")
        super().__init__([W.HBox([self.schedule_name, self.T]), self.t, self.image])
        self.render()

    @property
    def schedule(self) -> Schedule:
        return schedules.get(self.schedule_name.value, T=int(self.T.value))

    def _on_schedule_change(self, change: dict) -> None:
        """Keep t at the same fraction of the way through when T changes, then redraw."""
        if change["owner"] is self.T:
            fraction = self.t.value / max(change["old"] - 1, 1)
            with self.t.hold_trait_notifications():
                self.t.max = change["new"] - 1
                self.t.value = round(fraction * (change["new"] - 1))
        self.render()

    def render(self) -> None:
        """Redraw the figure for the current (schedule, T, t) into the Image widget."""
        ncols = 4 if self.data.images is not None else 3
        fig = Figure(figsize=(3.0 * ncols, 2.7))
        explorer_figure(self.schedule, int(self.t.value), self.data, fig=fig)
        show_figure(self.image, fig)


def schedule_explorer(
    points: Tensor | None = None,
    images: Tensor | None = None,
    schedule: str = "cosine",
    T: int = 1000,
    t: int = 250,
    seed: int = 0,
) -> ScheduleExplorer:
    """The schedule explorer: pick a schedule and T, move t, watch the curves, points and digits change together.

    ``points`` [N, 2] default: 1000 two-moons samples; ``images`` [M, 1, H, W] in [-1, 1]
    default: 16 MNIST test digits (left out if the data file is missing). The noise
    is drawn once with ``seed``. Returns an ipywidgets container; display it.
    """
    if schedule not in schedules.NAMES:
        raise ValueError(f"unknown schedule {schedule!r}; known schedules are: {', '.join(schedules.NAMES)}")
    if not 0 <= t < T:
        raise ValueError(f"t={t} is out of range: indices are 0-based, 0 <= t <= T-1 = {T - 1}")
    if points is None:
        points = two_moons(1000, generator=torch.Generator().manual_seed(seed))
    if images is None:
        images = _default_images()
    return ScheduleExplorer(FixedNoise.draw(points, images, seed), schedule=schedule, T=T, t=t)


# --- Langevin: step size, number of steps, annealing on/off (notebook 02) -----------------------


class LangevinExplorer(W.VBox):
    """Controls (step size, steps, annealing) above an ``ipywidgets.Image`` showing :func:`langevin_figure`.

    The start ``x_init`` and the seed are fixed, so the same controls always give the same picture.
    """

    def __init__(self, mixture: GaussianMixture, x_init: Tensor, sigmas: Tensor, step_size: float = 0.02,
                 n_steps: int = 500, annealed: bool = False, seed: int = 0) -> None:
        self.mixture, self.x_init, self.sigmas, self.seed = mixture, x_init, sigmas, seed
        self.step_size = W.FloatLogSlider(value=step_size, base=10, min=-3, max=-0.3, step=0.1,
                                          description="step size", continuous_update=False)
        self.n_steps = W.IntSlider(value=n_steps, min=10, max=1000, step=10, description="steps", continuous_update=False)
        self.annealed = W.Checkbox(value=annealed, description="annealing")
        self.image = W.Image(format="png")
        for control in (self.step_size, self.n_steps, self.annealed):
            control.observe(lambda _: self.render(), names="value")
        super().__init__([W.HBox([self.step_size, self.n_steps, self.annealed]), self.image])
        self.render()

    def render(self) -> None:
        """Rerun Langevin for the current controls and draw the result into the Image widget."""
        fig = Figure(figsize=(8, 3.4))
        sigmas = self.sigmas if self.annealed.value else None
        langevin_figure(self.mixture, self.x_init, float(self.step_size.value), int(self.n_steps.value),
                        sigmas, seed=self.seed, fig=fig)
        show_figure(self.image, fig)


def langevin_explorer(
    mixture: GaussianMixture | None = None,
    x_init: Tensor | None = None,
    sigmas: Sequence[float] | Tensor | None = None,
    step_size: float = 0.02,
    n_steps: int = 500,
    annealed: bool = False,
    seed: int = 0,
) -> LangevinExplorer:
    """The Langevin explorer: move the step size and the number of steps, switch annealing on and off.

    ``mixture`` default: two Gaussians 4 apart with weights 0.8 / 0.2 (std 0.5), the case where
    plain Langevin gets the weights wrong. ``x_init`` [N, 2] default: 1000 points uniform on
    [-4, 4]^2 (seeded). ``sigmas`` default: 10 levels geometric from 4 down to 0.25.
    Returns an ipywidgets container; display it.
    """
    mixture = mixture if mixture is not None else two_gaussians(separation=4.0, weights=(0.8, 0.2), std=0.5)
    if x_init is None:
        x_init = 4 * (2 * torch.rand(1000, 2, generator=torch.Generator().manual_seed(seed)) - 1)
    if x_init.ndim != 2 or x_init.shape[1] != 2:
        raise ValueError(f"x_init must be 2-D points of shape [N, 2], got {list(x_init.shape)}")
    levels = check_sigmas(sigmas if sigmas is not None else torch.logspace(math.log10(4.0), math.log10(0.25), 10))
    return LangevinExplorer(mixture, x_init, levels, step_size, n_steps, annealed, seed)


# --- DDIM: paths for a chosen eta (notebook 06) ------------------------------------------------


class DDIMEtaExplorer(W.VBox):
    """An eta slider above an ``ipywidgets.Image`` showing :func:`ddim_paths_figure` (same starts, same seed)."""

    def __init__(self, model: samplers.Model, schedule: Schedule, x_T: Tensor, density: GaussianMixture | None,
                 eta: float = 0.5, steps: int = 100, seed: int = 8) -> None:
        self.model, self.schedule, self.x_T, self.density = model, schedule, x_T, density
        self.steps, self.seed = steps, seed
        self.eta = W.FloatSlider(value=eta, min=0.0, max=1.0, step=0.05, description="eta", continuous_update=False)
        self.image = W.Image(format="png")
        self.eta.observe(lambda _: self.render(), names="value")
        super().__init__([self.eta, self.image])
        self.render()

    def render(self) -> None:
        """Rerun DDIM for the current eta and draw its paths into the Image widget."""
        fig = Figure(figsize=(4.5, 4.5))
        ddim_paths_figure(self.model, self.schedule, self.x_T, float(self.eta.value), self.steps, self.seed,
                          self.density, fig=fig)
        show_figure(self.image, fig)


def ddim_eta_explorer(
    model: samplers.Model,
    schedule: Schedule,
    x_T: Tensor,
    density: GaussianMixture | None = None,
    eta: float = 0.5,
    steps: int = 100,
    seed: int = 8,
) -> DDIMEtaExplorer:
    """The DDIM eta explorer: move eta in [0, 1] and watch the paths from the starts ``x_T`` [B, 2] roughen.

    ``model(x_t, t)`` predicts epsilon (e.g. :class:`~tinydiff.oracle.MixtureEpsilon`); ``density``
    (e.g. the mixture) is shaded behind the paths. Returns an ipywidgets container; display it.
    """
    if x_T.ndim != 2 or x_T.shape[1] != 2:
        raise ValueError(f"x_T must be 2-D start points of shape [B, 2], got {list(x_T.shape)}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta={eta} is outside the slider's range [0, 1] (0: deterministic DDIM, 1: DDPM-like noise)")
    return DDIMEtaExplorer(model, schedule, x_T, density, eta, steps, seed)


# --------------------------------------------------------------------------- notebook 07: guidance


class GuidanceExplorer(W.VBox):
    """Digit and guidance-scale controls above an ``ipywidgets.Image`` showing :func:`guidance_figure`."""

    def __init__(self, net: torch.nn.Module, schedule: Schedule, digit: int = 3, scale: float = 1.0, n: int = 8,
                 steps: int = 20, prediction: str = "epsilon") -> None:
        self.net, self.schedule, self.n, self.steps, self.prediction = net, schedule, n, steps, prediction
        self.digit = W.Dropdown(options=list(range(net.num_classes)), value=digit, description="digit")
        self.scale = W.FloatSlider(value=scale, min=0.0, max=8.0, step=0.5, description="scale s",
                                   continuous_update=False)
        self.image = W.Image(format="png")
        for control in (self.digit, self.scale):
            control.observe(lambda _: self.render(), names="value")
        super().__init__([W.HBox([self.digit, self.scale]), self.image])
        self.render()

    def render(self) -> None:
        """Sample again for the current digit and scale and show the row of digits."""
        fig = Figure(figsize=(0.6 * self.n, 0.9), dpi=110)
        guidance_figure(self.net, self.schedule, int(self.digit.value), float(self.scale.value), self.n, self.steps,
                        prediction=self.prediction, fig=fig)
        show_figure(self.image, fig)


def guidance_explorer(net: torch.nn.Module, schedule: Schedule, digit: int = 3, scale: float = 1.0, n: int = 8,
                      steps: int = 20, prediction: str = "epsilon") -> GuidanceExplorer:
    """The guidance explorer: pick a digit, move the scale s in [0, 8], and watch the same noises become that digit.

    ``net`` is a class-conditional network ``net(x_t, t, y)`` with a ``null_class`` (e.g. the
    shipped MNIST UNet). Returns an ipywidgets container; display it.
    """
    if getattr(net, "null_class", None) is None:
        raise ValueError("guidance_explorer needs a class-conditional network with a null class (UNet(num_classes=10))")
    if not 0 <= digit < net.num_classes:
        raise ValueError(f"digit must be one of 0..{net.num_classes - 1}, got {digit}")
    return GuidanceExplorer(net, schedule, digit, scale, n, steps, prediction)


# --------------------------------------------------------------------------- notebook 10: SDEdit


class SDEditExplorer(W.VBox):
    """A slider over t0 above an ``ipywidgets.Image`` showing :func:`sdedit_figure` for the chosen t0."""

    def __init__(self, inputs: Tensor, edits: dict, t0: int) -> None:
        self.inputs, self.edits = inputs, edits
        self.t0 = W.SelectionSlider(options=sorted(edits), value=t0, description="t0", continuous_update=False)
        self.image = W.Image(format="png")
        self.t0.observe(lambda _: self.render(), names="value")
        super().__init__([self.t0, self.image])
        self.render()

    def render(self) -> None:
        """Draw the inputs above their edits from the chosen t0."""
        fig = Figure(figsize=(0.65 * len(self.inputs), 1.8), dpi=110)
        sdedit_figure(self.inputs, self.edits[self.t0.value], int(self.t0.value), fig=fig)
        show_figure(self.image, fig)


def sdedit_explorer(inputs: Tensor, edits: dict, t0: int | None = None) -> SDEditExplorer:
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
    return SDEditExplorer(inputs, edits, t0)


# --------------------------------------------------------------------------- notebook 11: few-step samplers


class FewStepExplorer(W.VBox):
    """A slider over numbers of steps above an ``ipywidgets.Image`` showing :func:`few_step_figure`."""

    def __init__(self, panels: dict, step_options: Sequence[int], steps: int, density: GaussianMixture | None,
                 score=None, images: bool = False) -> None:
        self.panels, self.density, self.score = panels, density, score
        # digits are drawn at the size and resolution they are shown at (110 dpi, like the other digit widgets)
        self.figsize, self.dpi = ((6.5, 0.9 * len(panels)), 110) if images else ((3.0 * len(panels), 3.2), None)
        self.steps = W.SelectionSlider(options=list(step_options), value=steps, description="steps",
                                       continuous_update=False)
        self.image = W.Image(format="png")
        self.steps.observe(lambda _: self.render(), names="value")
        super().__init__([self.steps, self.image])
        self.render()

    def render(self) -> None:
        """Draw every panel at the chosen number of steps."""
        fig = Figure(figsize=self.figsize, dpi=self.dpi)
        few_step_figure(self.panels, int(self.steps.value), self.density, self.score, fig=fig)
        show_figure(self.image, fig)


def few_step_explorer(panels: dict, step_options: Sequence[int] = (1, 2, 4, 8, 16), steps: int = 1,
                      density: GaussianMixture | None = None, score=None, images: bool = False) -> FewStepExplorer:
    """Move the number of steps and watch several samplers side by side: ``panels[name](steps)`` -> points [N, 2]
    (a scatter each, over ``density``), or with ``images=True`` images [N, C, H, W] in [-1, 1] (a row each).

    Each callable should be cheap (cache its samples): the figure is redrawn on every move. ``score(x)``
    (optional) is printed in each title. Returns an ipywidgets container; display it.
    """
    if not panels:
        raise ValueError("few_step_explorer needs at least one panel: {name: steps -> samples [N, 2]}")
    if steps not in step_options:
        raise ValueError(f"steps={steps} is not one of the slider's options {list(step_options)}")
    return FewStepExplorer(panels, step_options, steps, density, score, images)


# --------------------------------------------------------------------------- notebook 12: adapters


class AdapterExplorer(W.VBox):
    """A method dropdown and an adapter-scale slider above an ``ipywidgets.Image`` showing :func:`adapter_figure`."""

    def __init__(self, methods: dict, schedule: Schedule, scale: float, prediction: str, guidance: float,
                 steps: int) -> None:
        self.methods, self.schedule, self.prediction, self.guidance = methods, schedule, prediction, guidance
        self.steps = steps
        self.method = W.Dropdown(options=list(methods), value=list(methods)[0], description="method")
        self.scale = W.FloatSlider(value=scale, min=0.0, max=1.5, step=0.25, description="scale",
                                   continuous_update=False)
        self.image = W.Image(format="png")
        for control in (self.method, self.scale):
            control.observe(lambda _: self.render(), names="value")
        super().__init__([W.HBox([self.method, self.scale]), self.image])
        self.render()

    def render(self) -> None:
        """Sample the chosen method's network at the chosen adapter scale."""
        net, label = self.methods[self.method.value]
        fig = Figure(figsize=(4.8, 0.9), dpi=110)
        adapter_figure(net, self.schedule, label, float(self.scale.value), self.method.value, steps=self.steps,
                       guidance=self.guidance, prediction=self.prediction, fig=fig)
        show_figure(self.image, fig)


def adapter_explorer(methods: dict, schedule: Schedule, scale: float = 1.0, prediction: str = "epsilon",
                     guidance: float = 1.5, steps: int = 20) -> AdapterExplorer:
    """Pick an adaptation and move its adapter scale: ``methods[name] = (network with LoRA layers, label)``.

    Scale 0 is the base model, 1 the adapted one, in between an interpolation (the LoRA branch times s), above 1
    an extrapolation. Returns an ipywidgets container; display it.
    """
    if not methods:
        raise ValueError("adapter_explorer needs at least one method: {name: (network, label)}")
    if not 0.0 <= scale <= 1.5:
        raise ValueError(f"scale={scale} is outside the slider's range [0, 1.5]")
    return AdapterExplorer(methods, schedule, scale, prediction, guidance, steps)


# --------------------------------------------------------------------------- notebook 13: text to image


class PromptExplorer(W.VBox):
    """A prompt box and a guidance-scale slider above an ``ipywidgets.Image`` showing :func:`prompt_figure`; a prompt
    the tokenizer cannot read shows its error (with the vocabulary) instead of a figure."""

    def __init__(self, model, prompt: str, guidance: float, n: int, steps: int) -> None:
        self.model, self.n, self.steps = model, n, steps
        self.prompt = W.Text(value=prompt, description="prompt", continuous_update=False,
                             layout=W.Layout(width="360px"))
        self.guidance = W.FloatSlider(value=guidance, min=0.0, max=8.0, step=0.5, description="guidance",
                                      continuous_update=False)
        self.message = W.HTML()
        self.image = W.Image(format="png")
        for control in (self.prompt, self.guidance):
            control.observe(lambda _: self.render(), names="value")
        super().__init__([W.HBox([self.prompt, self.guidance]), self.message, self.image])
        self.render()

    def render(self) -> None:
        """Sample the prompt at the chosen scale, or say why the prompt cannot be read."""
        try:
            self.model.tokenizer.encode(self.prompt.value)
        except (ValueError, TypeError) as err:
            self.message.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
            return
        self.message.value = ""
        fig = Figure(figsize=(0.6 * self.n, 0.9), dpi=110)
        prompt_figure(self.model, self.prompt.value, float(self.guidance.value), n=self.n, steps=self.steps, fig=fig)
        show_figure(self.image, fig)


def prompt_explorer(model, prompt: str = "a bold seven", guidance: float = 3.0, n: int = 8,
                    steps: int = 20) -> PromptExplorer:
    """Type a prompt from the captions' vocabulary and move the guidance scale: the same noises become that prompt.

    ``model`` is a text-conditioned :class:`tinydiff.pretrained.DiffusionModel` (e.g. the shipped ``mnist_text``).
    Returns an ipywidgets container; display it.
    """
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("prompt_explorer needs a text-conditioned model: load_diffusion_model('data/checkpoints/mnist_text')")
    model.tokenizer.encode(prompt)  # a bad starting prompt is the caller's error: say it now
    return PromptExplorer(model, prompt, guidance, n, steps)
