"""Interactive demos for the notebooks, each backed by a plain drawing function.

Every demo is two things: a drawing function ``*_figure(..., fig=None) -> Figure``
and an ipywidgets wrapper that redraws it when a control moves. The notebook's
static fallback figure calls the *same* drawing function, so a static render
(GitHub, a website, a viewer with no kernel) shows exactly what the widget shows.

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

Each wrapper renders its figure to PNG in the kernel (:func:`figure_png`) and shows
it in an ``ipywidgets.Image`` (see :class:`ScheduleExplorer` for why).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure, FigureBase
from torch import Tensor

from . import plot, samplers, schedules
from .data.toy import GaussianMixture, two_gaussians, two_moons
from .diffusion import q_sample
from .guidance import classifier_free
from .langevin import annealed_langevin, check_sigmas, langevin, mixture_score
from .metrics import mode_occupancy
from .schedules import Schedule


@dataclass(frozen=True)
class FixedNoise:
    """Clean data and one fixed noise draw for it.

    ``points`` [N, 2] and ``points_noise`` [N, 2]; ``images`` [M, C, H, W] in [-1, 1] and
    ``images_noise`` of the same shape, or both None (no digit panel).
    """

    points: Tensor
    points_noise: Tensor
    images: Tensor | None = None
    images_noise: Tensor | None = None

    @classmethod
    def draw(cls, points: Tensor, images: Tensor | None = None, seed: int = 0) -> "FixedNoise":
        """Draw eps ~ N(0, I) once for ``points`` [N, 2] and ``images`` [M, C, H, W] (on their devices), seeded."""
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"points must have shape [N, 2], got {list(points.shape)}")
        if images is not None and images.ndim != 4:
            raise ValueError(f"images must have shape [M, C, H, W], got {list(images.shape)}")
        g = torch.Generator().manual_seed(seed)
        eps_points = torch.randn(points.shape, generator=g).to(points)
        eps_images = None if images is None else torch.randn(images.shape, generator=g).to(images)
        return cls(points, eps_points, images, eps_images)


def _steps(t: int | Sequence[int], T: int) -> list[int]:
    """One 0-based step or several as a list of ints, each checked to lie in 0 .. T-1."""
    many = t if isinstance(t, Sequence) else [t]
    if not many or not all(hasattr(k, "__index__") and 0 <= k.__index__() < T for k in many):
        raise ValueError(f"t must be an integer step or a non-empty list of them, each 0 <= t <= T-1 = {T - 1}; got {t!r}")
    return [k.__index__() for k in many]


def explorer_figure(
    schedule: Schedule,
    t: int | Sequence[int],
    data: FixedNoise,
    fig: Figure | None = None,
    lim: float = 3.0,
    nrow: int = 4,
) -> Figure:
    """Draw the forward process of ``schedule`` at step t (0-based): one row of panels per t.

    Panels: alpha_bar_t and log-SNR(t) with a marker at t, the noised points x_t, the
    noised images x_t (if ``data`` has images; clipped to [-1, 1] for display).
    Draws on ``fig`` (made with pyplot if None, so a notebook shows it) and returns it.
    """
    steps = _steps(t, schedule.T)
    ncols = 4 if data.images is not None else 3
    if fig is None:
        fig = plt.figure(figsize=(3.0 * ncols, 2.7 * len(steps)))
    axes = fig.subplots(len(steps), ncols, squeeze=False)
    for row, step in zip(axes, steps):
        ab = float(schedule.alpha_bars[step])
        plot.schedule_curves(schedule, "alpha_bar", ax=row[0], marker_t=step)
        plot.schedule_curves(schedule, "log_snr", ax=row[1], marker_t=step)
        row[0].set_title(f"{schedule.name}, T={schedule.T}")
        row[1].set_title(f"log SNR = {float(schedule.log_snr[step]):.2f}")
        x_t = q_sample(schedule, data.points, step, data.points_noise)
        plot.scatter_2d(row[2], x_t, lim=lim, title=rf"$x_t$ at t={step}, $\bar\alpha_t$={ab:.3f}")
        if data.images is not None:
            images_t = q_sample(schedule, data.images, step, data.images_noise)
            plot.image_grid(images_t, nrow=nrow, ax=row[3], title=f"digits at t={step}")
    return fig


def figure_png(fig: Figure) -> bytes:
    """Render a matplotlib Figure to PNG bytes (at its own dpi)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


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
        self.image.value = figure_png(fig)


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


def langevin_figure(
    mixture: GaussianMixture,
    x_init: Tensor,
    step_size: float,
    n_steps: int,
    sigmas: Sequence[float] | Tensor | None = None,
    seed: int = 0,
    fig: FigureBase | None = None,
    lim: float = 4.5,
) -> FigureBase:
    """Run Langevin on ``mixture`` from ``x_init`` [N, 2] and draw the particles and their mode occupancy.

    ``sigmas=None``: plain Langevin, x <- x + (eps/2) s(x) + sqrt(eps) z for ``n_steps`` steps
    (Welling & Teh 2011, eq. 3). Otherwise annealed Langevin over the decreasing noise levels
    ``sigmas`` (Song & Ermon 2019, Algorithm 1) with n_steps // L steps per level (at least one)
    and alpha_i = eps sigma_i^2 / sigma_L^2, so ``step_size`` is the step at the last level.
    Noise comes from a generator seeded with ``seed``. Left panel: the finite particles over
    the density (a diverged run leaves none); right: :func:`~tinydiff.metrics.mode_occupancy`
    against ``mixture.weights``. Draws on ``fig`` (a Figure or SubFigure; made with pyplot if None) and returns it.
    """
    g = torch.Generator().manual_seed(seed)  # on the CPU: the same pictures on every device
    if sigmas is None:
        x = langevin(mixture.score, x_init, step_size=step_size, n_steps=n_steps, generator=g)
    else:
        levels = check_sigmas(sigmas)
        x = annealed_langevin(mixture_score(mixture), x_init, levels, step_size=step_size,
                              steps_per_level=max(1, n_steps // len(levels)), generator=g)
    x = x[torch.isfinite(x).all(dim=1)]
    if fig is None:
        fig = plt.figure(figsize=(8, 3.4))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    name = "plain" if sigmas is None else "annealed"
    plot.scatter_2d(left, x, mixture, lim=lim, title=rf"{name}, $\epsilon$ = {step_size:.3g}, {n_steps} steps")
    k = list(range(mixture.n_components))
    occupancy = mode_occupancy(mixture, x).tolist() if len(x) > 0 else [0.0] * len(k)
    right.bar(k, mixture.weights.tolist(), width=0.6, color="0.8", label="true weight")
    right.bar(k, occupancy, width=0.3, color="C0" if sigmas is None else "C3", label="occupancy")
    right.set(xticks=k, xlabel="mode", ylim=(0, 1), title=f"{len(x)} finite particles")
    right.legend(fontsize=8)
    return fig


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
        self.image.value = figure_png(fig)


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


def draw_paths(
    ax: plt.Axes,
    xs: Tensor,
    density: GaussianMixture | None = None,
    title: str | None = None,
    every: int = 1,
    lim: float = 3.2,
) -> None:
    """Draw 2-D sampler paths ``xs`` [S+1, B, 2] (a :class:`~tinydiff.samplers.Trajectory`'s ``xs``).

    One line per start point through every ``every``-th state and the last one, a dot at
    the start x_T and a cross at the end x_0, over ``density`` if given.
    """
    if xs.ndim != 3 or xs.shape[2] != 2:
        raise ValueError(f"xs must be 2-D paths of shape [S+1, B, 2], got {list(xs.shape)}")
    xs = xs.detach().cpu()
    if density is not None:
        plot.density_2d(ax, density, lim=lim)
    for b in range(xs.shape[1]):
        path = torch.cat([xs[::every, b], xs[-1:, b]])
        ax.plot(path[:, 0], path[:, 1], lw=0.8, alpha=0.8, color=f"C{b % 10}")
    ax.plot(xs[0, :, 0], xs[0, :, 1], "o", color="k", ms=3)
    ax.plot(xs[-1, :, 0], xs[-1, :, 1], "x", color="r", ms=6)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[], title=title)


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
    """Run DDIM from the starts ``x_T`` [B, 2] with this ``eta`` and draw the paths (:func:`draw_paths`).

    Each step is Song, Meng & Ermon 2021, eq. 12, with sigma_t(eta) of eq. 16: eta = 0 is the
    deterministic probability-flow path, eta = 1 adds DDPM's posterior noise. Noise comes
    from a generator seeded with ``seed``. Draws on ``fig`` (a Figure or SubFigure; made with pyplot if None)
    and returns it.
    """
    g = torch.Generator().manual_seed(seed)  # on the CPU: the same pictures on every device
    _, trajectory = samplers.ddim_sample(model, schedule, x_T.shape, steps=steps, eta=eta, x_T=x_T, generator=g,
                                         progress=False, return_trajectory=True)
    if fig is None:
        fig = plt.figure(figsize=(4.5, 4.5))
    draw_paths(fig.subplots(), trajectory.xs, density, rf"DDIM-{steps}, $\eta$ = {eta:.2f}", lim=lim)
    return fig


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
        self.image.value = figure_png(fig)


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


def guidance_figure(
    net: torch.nn.Module,
    schedule: Schedule,
    digit: int,
    scale: float,
    n: int = 8,
    steps: int = 20,
    seed: int = 0,
    prediction: str = "epsilon",
    fig: FigureBase | None = None,
) -> FigureBase:
    """Draw ``n`` samples of ``digit`` with classifier-free guidance at ``scale`` (DDIM, eta = 0; Ho & Salimans 2022, eq. 6).

    The starting noise comes from a CPU generator seeded with ``seed``, so moving the scale
    changes only the guidance: the same x_T, pulled harder towards the label. ``net`` is a
    class-conditional network with a null class (:func:`tinydiff.guidance.classifier_free`).
    """
    device = next(net.parameters()).device
    y = torch.full((n,), int(digit), dtype=torch.long, device=device)
    x_T = torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed)).to(device)
    x = samplers.ddim_sample(classifier_free(net, y, scale), schedule, x_T.shape, steps=steps, x_T=x_T,
                             prediction=prediction, clip_x0=1.0, progress=False)
    if fig is None:
        fig = plt.figure(figsize=(0.6 * n, 0.9))
    ax = fig.subplots()
    plot.image_grid(x, nrow=n, ax=ax)
    ax.set_title(f"digit {digit}, guidance scale s = {scale:g} (DDIM-{steps})", fontsize=9)
    return fig


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
        self.image.value = figure_png(fig)


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
