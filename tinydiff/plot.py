"""Figures for the course: the one plotting module every notebook imports.

Each helper draws one kind of picture on an ``ax`` you pass in and returns the
matplotlib object(s) it made, so a notebook can restyle or animate them. No
helper calls ``plt.show()``: the notebook decides when a figure is shown.

- :func:`use_course_style`  one call at the top of a notebook: modest dpi, readable fonts
- :func:`density_2d`        a 2-D density exp(log p) as a shaded image
- :func:`scatter_2d`        2-D samples, optionally with the density drawn behind them
- :func:`vector_field`      arrows of a 2-D vector field (scores, velocities)
- :func:`make_grid` / :func:`image_grid`  a batch of images [N, C, H, W] in [-1, 1] as one picture
- :func:`schedule_curves`   alpha_bar, SNR or log-SNR of one or more noise schedules against t

Tensors may live on any device; they are copied to the CPU for drawing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from .data.toy import GaussianMixture
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
    **kwargs,
) -> mpl.quiver.Quiver:
    """Arrows of a 2-D vector field ``fn``: points [M, 2] -> vectors [M, 2] (e.g. a score) on an n x n grid.

    With ``normalize=True`` every arrow has the same length and only the direction
    is shown (scores near a mode and far from it differ by orders of magnitude).
    Extra keyword arguments go to ``ax.quiver``.
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
