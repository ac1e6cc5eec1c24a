"""Figures for the course: the one plotting module every notebook imports, and the home of every drawing function.

The small helpers draw one kind of picture on an ``ax`` you pass in and return the matplotlib object(s) they
made, so a notebook can restyle or animate them; the ``*_figure``, ``*_panels`` and ``*_row`` functions draw a whole
figure and return it. Nothing here calls ``plt.show()``: the notebook decides when a figure is shown.

- :func:`use_course_style`  one call at the top of a notebook: modest dpi, readable fonts
- :func:`density_2d`        a 2-D density exp(log p) as a shaded image
- :func:`scatter_2d`        2-D samples, optionally with the density drawn behind them
- :func:`vector_field`      arrows of a 2-D vector field (scores, velocities)
- :func:`make_grid` / :func:`image_grid`  a batch of images [N, C, H, W] in [-1, 1] as one picture
- :func:`schedule_curves`   alpha_bar, SNR or log-SNR of one or more noise schedules against t

The panels of the interactive demos live here too. They draw arrays they are given and run no network and no
sampler: :mod:`tinydiff.demos` samples and hands them the results, and :mod:`tinydiff.widgets` redraws a demo
when a control moves.

- :func:`explorer_figure`   the forward process at step t in closed form: schedule curves, noised points and digits
  (the noise drawn once, :class:`FixedNoise`)
- :func:`langevin_panels`   particles over their density, and their mode occupancy against the true weights
- :func:`draw_paths` / :func:`paths_figure`  2-D sampler paths
- :func:`digit_row`         one row of digits under a title
- :func:`sdedit_figure`     inputs above their SDEdit results from one t0
- :func:`few_step_panels`   several samplers' results side by side at one number of steps
- :func:`copies_figure`     the most-copied samples above their nearest training images (memorisation)

Tensors may live on any device; they are copied to the CPU for drawing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure, FigureBase
from torch import Tensor

from .data.toy import GaussianMixture
from .diffusion import q_sample
from .schedules import Schedule

LogDensity = Callable[[Tensor], Tensor]
"""A callable mapping points [M, 2] to log-densities [M] (e.g. ``GaussianMixture.log_prob``)."""

SCHEDULE_COLORS = {"linear": "C0", "cosine": "C1", "sigmoid": "C2", "scaled_linear": "C3"}
"""One colour per schedule name, so a schedule looks the same in every notebook."""


def use_course_style() -> None:
    """Set matplotlib rcParams for the course: dpi 80 (small notebooks), 11 pt fonts, no top/right spines.

    It also turns on constrained layout, so figures need no ``tight_layout()`` call (calling it warns).
    """
    mpl.rcParams.update(
        {
            "figure.dpi": 80,
            "savefig.dpi": 80,
            "figure.figsize": (6.0, 4.0),
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.fontsize": 10,
            "legend.frameon": False,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "image.cmap": "gray",
            "figure.constrained_layout.use": True,
        }
    )


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    """Any tensor (any device, with or without grad) or array as a float numpy array."""
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def _square(lim: float | tuple[float, float]) -> tuple[float, float]:
    """``lim`` as (low, high): a number L means the square [-L, L]^2."""
    lo, hi = (-float(lim), float(lim)) if np.isscalar(lim) else (float(lim[0]), float(lim[1]))
    if not hi > lo:
        raise ValueError(f"lim must be a positive number L (for [-L, L]) or a pair (low, high) with low < high, got {lim!r}")
    return lo, hi


def _grid_points(lim: float | tuple[float, float], n: int, device: torch.device | str | None) -> Tensor:
    """An n x n grid over the square ``lim`` as points [n*n, 2] (row-major, y varies slowest)."""
    if n < 2:
        raise ValueError(f"the grid needs at least 2 points per side, got n={n}")
    lo, hi = _square(lim)
    axis = torch.linspace(lo, hi, n, device=device)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def _log_density_fn(density: GaussianMixture | LogDensity) -> LogDensity:
    """Accept a GaussianMixture-like object (with ``log_prob``) or a plain callable."""
    if hasattr(density, "log_prob"):
        return density.log_prob
    if callable(density):
        return density
    raise TypeError(f"density must be a GaussianMixture (anything with .log_prob) or a callable log-density, got {type(density).__name__}")


@torch.no_grad()
def density_2d(
    ax: plt.Axes,
    density: GaussianMixture | LogDensity,
    lim: float | tuple[float, float] = 3.0,
    n: int = 150,
    cmap: str = "Blues",
    device: torch.device | str | None = None,
) -> mpl.image.AxesImage:
    """Shade exp(log p(x)) over the square ``lim`` on an n x n grid.

    ``density`` is a :class:`~tinydiff.data.GaussianMixture` or a callable
    mapping points [M, 2] to log-densities [M]; the grid is built on ``device``
    (default CPU) so a model on a GPU can be passed directly.
    """
    points = _grid_points(lim, n, device)
    log_p = _log_density_fn(density)(points)
    if log_p.shape != (n * n,):
        raise ValueError(f"the log-density must map points [M, 2] to [M], got shape {list(log_p.shape)} for M={n * n}")
    p = _numpy(torch.exp(log_p - log_p.max())).reshape(n, n)
    lo, hi = _square(lim)
    return ax.imshow(p, extent=(lo, hi, lo, hi), origin="lower", cmap=cmap, interpolation="bilinear")


def scatter_2d(
    ax: plt.Axes,
    points: Tensor | np.ndarray,
    density: GaussianMixture | LogDensity | None = None,
    lim: float | tuple[float, float] = 3.0,
    s: float = 2.0,
    color: str = "k",
    alpha: float = 0.5,
    title: str | None = None,
    **kwargs,
) -> mpl.collections.PathCollection:
    """Scatter 2-D samples [N, 2] on the square ``lim``, with ``density`` (see :func:`density_2d`) behind them.

    Extra keyword arguments go to ``ax.scatter``. Returns the scatter's PathCollection
    (``.set_offsets`` moves the points, e.g. in an animation).
    """
    xy = _numpy(points)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"points must have shape [N, 2], got {list(xy.shape)}")
    if density is not None:
        density_2d(ax, density, lim)
    dots = ax.scatter(xy[:, 0], xy[:, 1], s=s, c=color, alpha=alpha, linewidths=0, **kwargs)
    lo, hi = _square(lim)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal", xticks=[], yticks=[])
    if title is not None:
        ax.set_title(title)
    return dots


@torch.no_grad()
def vector_field(
    ax: plt.Axes,
    fn: Callable[[Tensor], Tensor],
    lim: float | tuple[float, float] = 3.0,
    n: int = 20,
    normalize: bool = False,
    device: torch.device | str | None = None,
    unit: float | None = None,
    **kwargs,
) -> mpl.quiver.Quiver:
    """Arrows of a 2-D vector field ``fn``: points [M, 2] -> vectors [M, 2] (e.g. a score) on an n x n grid.

    With ``normalize=True`` every arrow has the same length and only the direction
    is shown (scores near a mode and far from it differ by orders of magnitude).
    By default matplotlib scales each call's arrows to its own longest ones, so two panels cannot be
    compared by arrow length; with ``unit`` a vector of norm ``unit`` is drawn one grid spacing long,
    the same in every panel drawn with the same ``unit``. Extra keyword arguments go to ``ax.quiver``.
    """
    points = _grid_points(lim, n, device)
    vectors = fn(points)
    if vectors.shape != points.shape:
        raise ValueError(f"fn must map points [M, 2] to vectors [M, 2], got shape {list(vectors.shape)} for M={n * n}")
    v = _numpy(vectors)
    if normalize:
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    xy = _numpy(points)
    kwargs.setdefault("color", "0.3")
    if unit is not None:
        if not unit > 0:
            raise ValueError(f"unit must be a positive vector norm (drawn one grid spacing long), got {unit!r}")
        lo, hi = _square(lim)
        kwargs.update(scale_units="xy", scale=float(unit) / ((hi - lo) / (n - 1)))
    arrows = ax.quiver(xy[:, 0], xy[:, 1], v[:, 0], v[:, 1], angles="xy", **kwargs)
    lo, hi = _square(lim)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal")
    return arrows


def make_grid(images: Tensor, nrow: int = 8, padding: int = 1) -> np.ndarray:
    """Tile images [N, C, H, W] with values in [-1, 1] into one array in [0, 1].

    ``nrow`` images per row (as in torchvision). Values outside [-1, 1] (noised
    images) are clipped for display. Returns [rows*(H+p)+p, nrow*(W+p)+p] for
    C = 1, with a trailing channel axis of 3 for C = 3.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        got = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [N, C, H, W] with C = 1 or 3, got {got}")
    if nrow < 1:
        raise ValueError(f"nrow must be at least 1, got {nrow}")
    x = (images.detach().to("cpu", torch.float32).clamp(-1, 1) + 1) / 2
    n, c, h, w = x.shape
    ncol, rows = min(nrow, n), math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + padding) + padding, ncol * (w + padding) + padding)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    return grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()


def image_grid(
    images: Tensor,
    nrow: int = 8,
    ax: plt.Axes | None = None,
    title: str | None = None,
    padding: int = 1,
) -> mpl.image.AxesImage:
    """Show images [N, C, H, W] in [-1, 1] as one grid (:func:`make_grid`); -1 is black, 1 is white.

    Draws on ``ax`` (a new figure sized to the grid if None) and returns the AxesImage
    (``.set_data(make_grid(...))`` updates it).
    """
    grid = make_grid(images, nrow, padding)
    if ax is None:
        height, width = grid.shape[:2]
        _, ax = plt.subplots(figsize=(max(2.0, width / 40), max(2.0, height / 40)))
    shown = ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return shown


_QUANTITIES = {
    "alpha_bar": (lambda s: s.alpha_bars, r"$\bar\alpha_t$", "linear"),
    "snr": (lambda s: s.snr, r"SNR$(t) = \bar\alpha_t / (1 - \bar\alpha_t)$", "log"),
    "log_snr": (lambda s: s.log_snr, r"$\log$ SNR$(t)$", "linear"),
    "beta": (lambda s: s.betas, r"$\beta_t$", "linear"),
}


def schedule_curves(
    schedules: Schedule | Sequence[Schedule],
    quantity: str = "alpha_bar",
    ax: plt.Axes | None = None,
    marker_t: int | None = None,
    fraction: bool = False,
) -> list[mpl.lines.Line2D]:
    """Plot ``quantity`` ("alpha_bar", "snr", "log_snr" or "beta") of each schedule against the 0-based step t.

    With ``fraction=True`` the x-axis is t / T, to compare schedules with different T.
    ``marker_t`` (an index 0 .. T-1) adds a dot on every curve and a vertical line at that step.
    Returns one Line2D per schedule (the markers are not included).
    """
    if quantity not in _QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; choose one of {', '.join(_QUANTITIES)}")
    schedules = [schedules] if isinstance(schedules, Schedule) else list(schedules)
    get, ylabel, yscale = _QUANTITIES[quantity]
    ax = ax if ax is not None else plt.gca()
    lines = []
    for s in schedules:
        x = np.arange(s.T) / (s.T if fraction else 1)
        y = _numpy(get(s))
        (line,) = ax.plot(x, y, label=s.name, color=SCHEDULE_COLORS.get(s.name))
        lines.append(line)
        if marker_t is not None:
            if not 0 <= marker_t < s.T:
                raise ValueError(f"marker_t={marker_t} is out of range for {s.name} with T={s.T}: use 0 <= t <= {s.T - 1}")
            ax.plot(x[marker_t], y[marker_t], "o", color=line.get_color(), markersize=6)
    if marker_t is not None:
        ax.axvline(marker_t / (schedules[0].T if fraction else 1), color="0.5", lw=0.8, ls="--")
    ax.set(xlabel="t / T" if fraction else "t (0-based step)", ylabel=ylabel, yscale=yscale)
    if len(schedules) > 1:
        ax.legend()
    return lines


# --- the panels of the interactive demos ------------------------------------------------------
# Each draws the arrays it is given on ``fig`` (a Figure or SubFigure; made with pyplot if None) and returns it;
# tinydiff.demos samples what they draw, and tinydiff.widgets redraws a demo when a control moves.


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
        schedule_curves(schedule, "alpha_bar", ax=row[0], marker_t=step)
        schedule_curves(schedule, "log_snr", ax=row[1], marker_t=step)
        row[0].set_title(f"{schedule.name}, T={schedule.T}")
        row[1].set_title(f"log SNR = {float(schedule.log_snr[step]):.2f}")
        x_t = q_sample(schedule, data.points, step, data.points_noise)
        scatter_2d(row[2], x_t, lim=lim, title=rf"$x_t$ at t={step}, $\bar\alpha_t$={ab:.3f}")
        if data.images is not None:
            images_t = q_sample(schedule, data.images, step, data.images_noise)
            image_grid(images_t, nrow=nrow, ax=row[3], title=f"digits at t={step}")
    return fig


def langevin_panels(
    x: Tensor,
    mixture: GaussianMixture,
    occupancy: Sequence[float] | Tensor,
    title: str,
    color: str = "C0",
    fig: FigureBase | None = None,
    lim: float = 4.5,
) -> FigureBase:
    """Langevin particles and where they ended: left, the finite particles ``x`` [N, 2] over ``mixture``'s density
    (titled ``title``); right, their ``occupancy`` [K] of each mode (bars in ``color``) against ``mixture.weights``.
    Draws on ``fig`` (a Figure or SubFigure; made with pyplot if None) and returns it."""
    if len(occupancy) != mixture.n_components:
        raise ValueError(f"occupancy must have one share per mode ({mixture.n_components}), got {len(occupancy)}")
    if fig is None:
        fig = plt.figure(figsize=(8, 3.4))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    scatter_2d(left, x, mixture, lim=lim, title=title)
    k = list(range(mixture.n_components))
    right.bar(k, mixture.weights.tolist(), width=0.6, color="0.8", label="true weight")
    right.bar(k, [float(v) for v in occupancy], width=0.3, color=color, label="occupancy")
    right.set(xticks=k, xlabel="mode", ylim=(0, 1), title=f"{len(x)} finite particles")
    right.legend(fontsize=8)
    return fig


def draw_paths(
    ax: plt.Axes,
    xs: Tensor,
    density: GaussianMixture | None = None,
    title: str | None = None,
    every: int = 1,
    lim: float = 3.2,
    start: str = "$x_T$",
) -> None:
    """Draw 2-D sampler paths ``xs`` [S+1, B, 2] (a :class:`~tinydiff.samplers.Trajectory`'s ``xs``).

    One line per start point through every ``every``-th state and the last one, a black dot at
    the start (named ``start`` in a small legend: DDPM's x_T, or x_1 for a flow whose noise is at t = 1)
    and a red cross at the end x_0, over ``density`` if given.
    """
    if xs.ndim != 3 or xs.shape[2] != 2:
        raise ValueError(f"xs must be 2-D paths of shape [S+1, B, 2], got {list(xs.shape)}")
    xs = xs.detach().cpu()
    if density is not None:
        density_2d(ax, density, lim=lim)
    for b in range(xs.shape[1]):
        path = torch.cat([xs[::every, b], xs[-1:, b]])
        ax.plot(path[:, 0], path[:, 1], lw=0.8, alpha=0.8, color=f"C{b % 10}")
    ax.plot(xs[0, :, 0], xs[0, :, 1], "o", color="k", ms=3, label=f"start {start} (noise)")
    ax.plot(xs[-1, :, 0], xs[-1, :, 1], "x", color="r", ms=6, label="end $x_0$ (sample)")
    ax.legend(loc="lower right", fontsize=7, framealpha=0.8, handletextpad=0.3, borderpad=0.3)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[], title=title)


def paths_figure(
    xs: Tensor,
    density: GaussianMixture | None = None,
    title: str | None = None,
    fig: FigureBase | None = None,
    lim: float = 3.2,
) -> FigureBase:
    """One panel of 2-D sampler paths ``xs`` [S+1, B, 2] (:func:`draw_paths`) over ``density`` if given.
    Draws on ``fig`` (a Figure or SubFigure; made with pyplot if None) and returns it."""
    if fig is None:
        fig = plt.figure(figsize=(4.5, 4.5))
    draw_paths(fig.subplots(), xs, density, title, lim=lim)
    return fig


def digit_row(x: Tensor, title: str, fig: FigureBase | None = None) -> FigureBase:
    """Images x [N, C, H, W] in [-1, 1] as one row of digits under ``title``.
    Draws on ``fig`` (a Figure or SubFigure; made with pyplot if None) and returns it."""
    if fig is None:
        fig = plt.figure(figsize=(0.6 * len(x), 0.9))
    ax = fig.subplots()
    image_grid(x, nrow=len(x), ax=ax)
    ax.set_title(title, fontsize=9)
    return fig


def few_step_panels(
    samples: dict[str, Tensor],
    steps: int,
    density: GaussianMixture | None = None,
    notes: dict[str, str] | None = None,
    fig: FigureBase | None = None,
    lim: float = 3.2,
) -> FigureBase:
    """Several samplers' results side by side at the same number of ``steps``: ``samples[name]`` is what the sampler
    ``name`` drew. 2-D points [N, 2] get one scatter per panel over ``density``; images [N, C, H, W] in [-1, 1] get
    one row of digits per panel. Each title is the name and the number of steps, then ``notes[name]`` if given
    (e.g. a measure of the samples). Draws on ``fig`` (a Figure or SubFigure; made with pyplot if None) and returns it.
    """
    images = all(x.dim() == 4 for x in samples.values())
    if not images and not all(x.dim() == 2 and x.shape[1] == 2 for x in samples.values()):
        shapes = {name: list(x.shape) for name, x in samples.items()}
        raise ValueError(f"few_step_panels draws 2-D points [N, 2] or images [N, C, H, W]; the samples are {shapes}")
    if fig is None:
        fig = plt.figure(figsize=(6.5, 0.9 * len(samples)) if images else (3.0 * len(samples), 3.2))
    axes = np.atleast_1d(fig.subplots(len(samples), 1) if images else fig.subplots(1, len(samples)))
    for ax, (name, x) in zip(axes, samples.items()):
        label = f"{name}, {steps} step{'s' if steps != 1 else ''}"
        if notes:
            label += (" · " if images else "\n") + notes[name]
        if images:
            image_grid(x, nrow=len(x), ax=ax)
            ax.set_title(label, fontsize=8)
        else:
            scatter_2d(ax, x, density, lim=lim, title=label)
    return fig


def sdedit_figure(inputs: Tensor, edited: Tensor, t0: int, fig: FigureBase | None = None) -> FigureBase:
    """The inputs [N, C, H, W] above their SDEdit results from step ``t0`` (:func:`tinydiff.editing.sdedit`), one
    row each, in [-1, 1].
    Draws on ``fig`` (a Figure or SubFigure; made with pyplot if None) and returns it."""
    if inputs.shape != edited.shape:
        raise ValueError(f"inputs {list(inputs.shape)} and their edits {list(edited.shape)} must have one shape")
    if fig is None:
        fig = plt.figure(figsize=(0.65 * len(inputs), 1.8))
    top, bottom = fig.subplots(2, 1)
    image_grid(inputs, nrow=len(inputs), ax=top)
    top.set_title("input", fontsize=9)
    image_grid(edited, nrow=len(edited), ax=bottom)
    bottom.set_title(f"SDEdit from $t_0$ = {t0}", fontsize=9)
    return fig


# --- text to image ----------------------------------------------------------------------------


def captioned_grid(images: Tensor, captions: Sequence[str], ncol: int = 4, fig: FigureBase | None = None) -> FigureBase:
    """Images [N, 1, H, W] in [-1, 1], each above its caption (wrapped), ``ncol`` per row."""
    import textwrap

    n = len(images)
    rows = math.ceil(n / ncol)
    if fig is None:
        fig = plt.figure(figsize=(2.0 * ncol, 2.1 * rows))
    axes = np.atleast_1d(fig.subplots(rows, ncol)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, image, text in zip(axes, images, captions):
        image_grid(image[None], nrow=1, ax=ax, padding=0)
        ax.set_title("\n".join(textwrap.wrap(text, 22)), fontsize=8)
    return fig


def similarity_figure(similarity: Tensor, images: Tensor, prompts: Sequence[str], fig: FigureBase | None = None) -> FigureBase:
    """CLIP's cosine of every image (rows, drawn at the left) with every prompt (columns): similarity [R, C],
    images [R, 1, H, W], prompts C strings. Each row's best prompt is outlined."""
    R, C = similarity.shape
    if fig is None:
        fig = plt.figure(figsize=(1.2 + 0.55 * C, 1.6 + 0.45 * R))
    thumbs, matrix = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, C]})
    image_grid(images, nrow=1, ax=thumbs, padding=2)
    values = _numpy(similarity)
    shown = matrix.imshow(values, cmap="viridis", aspect="auto")
    matrix.set_xticks(range(C), prompts, rotation=60, ha="right", fontsize=8)
    matrix.set_yticks([])
    for r, c in enumerate(values.argmax(1)):
        matrix.add_patch(mpl.patches.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=1.5))
    fig.colorbar(shown, ax=matrix, label="cosine", shrink=0.8)
    return fig


def attention_figure(image: Tensor, maps: Tensor, words: Sequence[str], title: str = "",
                     fig: FigureBase | None = None) -> FigureBase:
    """What each word was read by: the decoded image [1, 1, H, W] and, per word, the cross-attention weight of every
    latent position on that word (maps [L, h, w], from :meth:`tinydiff.models.TextUNet.attention_maps`), on one
    colour scale. ``words`` names the first len(words) tokens (e.g. the prompt's words and ``<end>``)."""
    k = len(words)
    if fig is None:
        fig = plt.figure(figsize=(1.5 * (k + 1), 1.9))
    axes = fig.subplots(1, k + 1)
    image_grid(image, nrow=1, ax=axes[0], padding=0)
    axes[0].set_title(title or "image", fontsize=9)
    top = float(maps[:k].max())
    for ax, word, m in zip(axes[1:], words, maps[:k]):
        shown = ax.imshow(_numpy(m), cmap="magma", vmin=0.0, vmax=top, interpolation="nearest")
        ax.set_title(word, fontsize=9)
        ax.set_axis_off()
    fig.colorbar(shown, ax=list(axes[1:]), shrink=0.8, label="attention")
    return fig


# --------------------------------------------------------------------------- memorisation


def copies_figure(samples: Tensor, nearest: Tensor, scores: Tensor, label: str = "ratio",
                  fig: FigureBase | None = None) -> FigureBase:
    """The most-copied samples (top row) above their nearest training images (bottom row), each pair titled with its
    score: samples and nearest [K, C, H, W] in [-1, 1] (C = 1 or 3), scores [K] (for a
    :class:`tinydiff.memorisation.Memorisation`: ``ratio``, or ``carlini_distance`` with ``label="Carlini"``).
    Draws on ``fig`` (a Figure or SubFigure; made with pyplot if None) and returns it."""
    if not (isinstance(samples, Tensor) and isinstance(nearest, Tensor) and samples.shape == nearest.shape
            and samples.ndim == 4 and len(scores) == len(samples) >= 1):
        got = [list(v.shape) if isinstance(v, Tensor) else type(v).__name__ for v in (samples, nearest, scores)]
        raise ValueError(f"need samples and nearest [K, C, H, W] of one shape and scores [K], got {got}")
    k = len(samples)
    if fig is None:
        fig = plt.figure(figsize=(1.1 * k + 0.9, 2.6))
    axes = fig.subplots(2, k, squeeze=False)
    for j in range(k):
        image_grid(samples[j : j + 1], nrow=1, ax=axes[0, j], padding=0)
        image_grid(nearest[j : j + 1], nrow=1, ax=axes[1, j], padding=0)
        axes[0, j].set_title(f"{label} {float(scores[j]):.2g}", fontsize=8)
    for ax, text in ((axes[0, 0], "sample"), (axes[1, 0], "nearest\ntraining")):
        ax.text(-0.1, 0.5, text, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=8)
    return fig


def memorisation_curve(results: dict, space: str = "pixels", criterion: str = "share",
                       ax: plt.Axes | None = None) -> plt.Axes:
    """Memorised share against training-set size, one line per training length, above the held-out floor.

    ``results``: what ``benchmarks/memorisation.py`` writes -- its ``"emoji"`` list of points, each with
    ``n_train``, ``length`` ("1x", "4x", ...), ``steps`` and, per ``space`` ("pixels" or "features"), the
    :class:`tinydiff.memorisation.Memorisation` numbers ``share`` / ``heldout_share`` (``criterion="share"``:
    ratio to the held-out median below the threshold) or ``carlini_share`` / ``heldout_carlini_share``
    (``criterion="carlini_share"``: Carlini et al. 2023's relative distance below 1). The floor is the share of
    held-out images the same rule calls copies (dashed; the highest over lengths at each size). Log-scaled x.
    """
    floors = {"share": "heldout_share", "carlini_share": "heldout_carlini_share"}
    if criterion not in floors:
        raise ValueError(f"criterion must be one of {', '.join(floors)}, got {criterion!r}")
    points = [p for p in (results.get("emoji", []) if isinstance(results, dict) else []) if space in p]
    if not points:
        raise ValueError(f"results has no 'emoji' points measured in {space!r}: pass the dict that "
                         "benchmarks/memorisation.py writes (json.load of benchmarks/results/memorisation.json)")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    sizes = sorted({p["n_train"] for p in points})
    for length in sorted({p["length"] for p in points}, key=lambda s: float(s.rstrip("x"))):
        line = sorted((p["n_train"], p[space][criterion], p["steps"]) for p in points if p["length"] == length)
        ax.plot([n for n, _, _ in line], [v for _, v, _ in line], "o-", label=f"{length} ({line[0][2]} steps)")
    floor = [max(p[space][floors[criterion]] for p in points if p["n_train"] == n) for n in sizes]
    ax.plot(sizes, floor, "--", color="0.5", label="held-out images (floor)")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.minorticks_off()
    ax.set(xlabel="training images", ylabel=f"memorised share ({space})", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    return ax


def captioned_row(images: Tensor, captions: Sequence[str], title: str, fig: FigureBase | None = None) -> FigureBase:
    """Images [N, C, H, W] in [-1, 1] as one row under ``title``, with ``captions[i]`` under image i (e.g. "input",
    "bicubic", a classifier's label). Draws on ``fig`` (a Figure or SubFigure; made with pyplot if None), returns it."""
    if len(captions) != len(images):
        raise ValueError(f"give one caption per image: {len(images)} images, {len(captions)} captions")
    if fig is None:
        fig = plt.figure(figsize=(0.65 * len(images), 1.05))
    ax = fig.subplots()
    image_grid(images, nrow=len(images), ax=ax)
    h, w = images.shape[-2:]
    for i, caption in enumerate(captions):
        ax.text(1 + i * (w + 1) + w / 2, h + 2, caption, ha="center", va="top", fontsize=7)
    ax.set_ylim(h + 8, 0)
    ax.set_title(title, fontsize=9)
    return fig


def superres_rows(low: Tensor, outputs: dict[str, Tensor], factor: int, fig: FigureBase | None = None) -> FigureBase:
    """Super-resolution side by side: the low-resolution inputs low [N, C, h, w] (shown as blocks, nearest-neighbour)
    in the first row, then one row per method, ``outputs[name]`` [N, C, f h, f w] under its name. Returns the figure."""
    rows = {"input (8 x 8 blocks)" if low.shape[-1] == 8 else f"input ({low.shape[-1]} px)":
            low.repeat_interleave(factor, -2).repeat_interleave(factor, -1), **outputs}
    if fig is None:
        fig = plt.figure(figsize=(0.55 * len(low) + 1.6, 0.62 * len(rows)))
    axes = np.atleast_1d(fig.subplots(len(rows), 1))
    for ax, (name, x) in zip(axes, rows.items()):
        image_grid(x, nrow=len(x), ax=ax)
        ax.text(-2, x.shape[-2] / 2, name, ha="right", va="center", fontsize=8)
    return fig


def labelled_rows(rows: dict[str, Tensor], title: str = "", fig: FigureBase | None = None) -> FigureBase:
    """One row of images per label: ``rows[label]`` [N, C, H, W] in [-1, 1], the label left of its row (e.g. a
    prompt and what a model draws for it). Draws on ``fig`` (made with pyplot if None) and returns it."""
    n = max(len(x) for x in rows.values())
    if fig is None:
        fig = plt.figure(figsize=(0.55 * n + 2.2, 0.62 * len(rows) + (0.3 if title else 0)))
    axes = np.atleast_1d(fig.subplots(len(rows), 1))
    for ax, (name, x) in zip(axes, rows.items()):
        image_grid(x, nrow=n, ax=ax)
        ax.text(-2, x.shape[-2] / 2, name, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def tradeoff_figure(points: dict[str, tuple[float, float]], xlabel: str, ylabel: str, title: str = "",
                    ax: plt.Axes | None = None) -> plt.Axes:
    """A labelled scatter of (x, y) per name -- e.g. each personalisation run's drift against its fidelity."""
    if ax is None:
        ax = plt.figure(figsize=(6.2, 4.2)).subplots()
    for name, (x, y) in points.items():
        ax.scatter([x], [y], s=36, zorder=3)
        ax.annotate(name, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    return ax


def spectrogram_row(images: Tensor, titles: Sequence[str], fig: FigureBase | None = None) -> FigureBase:
    """Spectrogram images [N, 1, F, M] in [-1, 1] (:func:`tinydiff.data.audio.spectrogram_images`) side by side,
    low frequencies at the bottom, time in seconds along the bottom (hop 64 samples at 8 kHz = 8 ms per column).
    Draws on ``fig`` (made with pyplot if None) and returns it."""
    if images.ndim != 4 or images.shape[1] != 1 or len(titles) != len(images):
        raise ValueError(f"give spectrogram images [N, 1, F, M] and one title each, got {list(images.shape)} and "
                         f"{len(titles)} titles")
    if fig is None:
        fig = plt.figure(figsize=(2.1 * len(images), 1.9))
    axes = np.atleast_1d(fig.subplots(1, len(images), sharey=True))
    seconds = images.shape[-1] * 64 / 8000
    for i, (ax, x, title) in enumerate(zip(axes, images.detach().cpu().float(), titles)):
        ax.imshow(x[0].numpy(), origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1,
                  extent=(0, seconds, 0, images.shape[-2]), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time (s)", fontsize=8)
        if i == 0:
            ax.set_ylabel("mel band", fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


def trajectories_figure(paths: dict[str, Tensor], size: int = 32, fig: FigureBase | None = None) -> FigureBase:
    """The centre of the ink of each clip, frame by frame: ``paths[name]`` [B, T, 2] (row, column; from
    :func:`tinydiff.video.centres`), one panel per name, one line per clip, a dot at every frame and a cross at
    the first. Straight segments with sharp turns at the walls are a bouncing digit."""
    if fig is None:
        fig = plt.figure(figsize=(2.7 * len(paths), 2.9))
    axes = np.atleast_1d(fig.subplots(1, len(paths)))
    for ax, (name, path) in zip(axes, paths.items()):
        for i, clip in enumerate(path.detach().cpu().float()):
            line = ax.plot(clip[:, 1], clip[:, 0], "-o", ms=2.2, lw=1.0, color=f"C{i % 10}")[0]
            ax.plot(clip[0, 1], clip[0, 0], "x", ms=6, color=line.get_color())
        ax.set(xlim=(0, size), ylim=(size, 0), aspect="equal", title=name)
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=7)
    return fig
