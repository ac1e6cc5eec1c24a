"""Interactive demos for the notebooks, each backed by a plain drawing function.

:func:`explorer_figure` draws the forward process for (schedule, t): the
alpha_bar and log-SNR curves with a marker at t, a noised 2-D point cloud and
a grid of noised digits. :func:`schedule_explorer` wraps it in ipywidgets
(schedule, T, t). The notebook's static fallback figure calls the *same*
:func:`explorer_figure`, so a static render (GitHub, a website, a viewer with
no kernel) shows exactly what the widget shows.

The noise is drawn once (:class:`FixedNoise`): moving t shows the same points
and the same digits getting noisier, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
with one fixed eps (Ho et al. 2020, eq. 4).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

from . import plot, schedules
from .data.toy import two_moons
from .diffusion import q_sample
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
