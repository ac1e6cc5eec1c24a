"""Animate 2-D sampler trajectories (watch noise turn into data), and play video clips.

:func:`animate_trajectory` turns the states a sampler visited, [S, B, 2], into a
matplotlib ``FuncAnimation`` of about 50 frames. In a notebook, show it with

    from IPython.display import HTML
    HTML(anim.to_jshtml())          # or tinydiff.animation.to_html(anim), which keeps the file small

and put ``# NBVAL_IGNORE_OUTPUT`` on the first line of that cell (the HTML embeds
frames that nbval should not compare). Each frame is a picture stored in the
notebook, so keep ``n_frames`` and ``dpi`` small: 50 frames at dpi 60 cost a few
hundred kB.
"""

from __future__ import annotations

from collections.abc import Sequence

import re

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.animation import FuncAnimation
from torch import Tensor

from . import plot


def frame_indices(n_states: int, n_frames: int = 50) -> list[int]:
    """About ``n_frames`` evenly spaced indices into ``n_states`` states, always including the first and the last."""
    if n_states < 1 or n_frames < 1:
        raise ValueError(f"need at least one state and one frame, got n_states={n_states}, n_frames={n_frames}")
    return sorted(set(np.linspace(0, n_states - 1, min(n_frames, n_states)).round().astype(int).tolist()))


def _as_panels(trajectory_xs: Tensor | Sequence[Tensor]) -> list[Tensor]:
    panels = [trajectory_xs] if isinstance(trajectory_xs, Tensor) else list(trajectory_xs)
    if not panels:
        raise ValueError("give at least one trajectory of shape [S, B, 2]")
    for xs in panels:
        if not isinstance(xs, Tensor) or xs.ndim != 3 or xs.shape[2] != 2:
            got = list(xs.shape) if isinstance(xs, Tensor) else type(xs).__name__
            raise ValueError(f"a trajectory must be a tensor [S, B, 2] (states, points, 2-D), got {got}")
        if xs.shape[0] != panels[0].shape[0]:
            raise ValueError(f"all panels need the same number of states S, got {[p.shape[0] for p in panels]}")
    return [xs.detach().to("cpu", torch.float32) for xs in panels]


def animate_trajectory(
    trajectory_xs: Tensor | Sequence[Tensor],
    *,
    density: object | None = None,
    lim: float | tuple[float, float] = 3.0,
    n_frames: int = 50,
    frame_labels: Sequence[str] | None = None,
    panel_titles: Sequence[str] | None = None,
    interval: int = 100,
    size: float = 3.0,
    dpi: int = 60,
    s: float = 3.0,
    color: str = "C3",
) -> FuncAnimation:
    """An animation of points moving along a trajectory: xs [S, B, 2] -> FuncAnimation of about ``n_frames`` frames.

    ``trajectory_xs`` may also be a list of trajectories with the same S, drawn side by
    side (e.g. x_t and the predicted x_0). ``density`` (a GaussianMixture or a
    log-density callable, see :func:`tinydiff.plot.density_2d`) is shaded behind the
    points; ``frame_labels`` [S] (e.g. "t = 999") titles each frame. The figure is
    closed, so only the animation shows: call ``.to_jshtml()`` (or :func:`to_html`).
    """
    panels = _as_panels(trajectory_xs)
    n_states = panels[0].shape[0]
    if frame_labels is not None and len(frame_labels) != n_states:
        raise ValueError(f"frame_labels needs one label per state ({n_states}), got {len(frame_labels)}")
    if panel_titles is not None and len(panel_titles) != len(panels):
        raise ValueError(f"panel_titles needs one title per panel ({len(panels)}), got {len(panel_titles)}")
    frames = frame_indices(n_states, n_frames)
    with mpl.rc_context({"figure.constrained_layout.use": False}):
        fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size + 0.3), dpi=dpi, squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.88, wspace=0.05)
    dots = [plot.scatter_2d(ax, xs[0], density, lim=lim, s=s, color=color, alpha=0.6) for ax, xs in zip(axes[0], panels)]
    heading = fig.suptitle("")

    def draw(i: int) -> list:
        for dot, xs in zip(dots, panels):
            dot.set_offsets(xs[i].numpy())
        if panel_titles is not None:
            for ax, title in zip(axes[0], panel_titles):
                ax.set_title(title, fontsize=10)
        heading.set_text(frame_labels[i] if frame_labels is not None else f"step {i} / {n_states - 1}")
        return [*dots, heading]

    anim = FuncAnimation(fig, draw, frames=frames, interval=interval, blit=False)
    plt.close(fig)
    return anim


def animate_clips(clips: dict[str, Tensor], *, interval: int = 125, scale: float = 0.55, dpi: int = 80) -> FuncAnimation:
    """Play clips: ``clips[name]`` [B, T, 1, H, W] in [-1, 1] (the same T for every name), one row per name, the B
    clips of a row side by side, frame k of every clip shown at once. ``interval`` ms per frame (125: 8 frames a
    second). The figure is closed; show the animation with :func:`to_html`."""
    rows = {name: x.detach().to("cpu", torch.float32) for name, x in clips.items()}
    lengths = {x.shape[1] for x in rows.values()}
    if not rows or any(x.ndim != 5 or x.shape[2] != 1 for x in rows.values()) or len(lengths) != 1:
        raise ValueError("give clips [B, T, 1, H, W] with the same number of frames T under every name, got "
                         + ", ".join(f"{k}: {list(x.shape)}" for k, x in rows.items()))
    n, frames = max(len(x) for x in rows.values()), lengths.pop()
    with mpl.rc_context({"figure.constrained_layout.use": False}):
        fig, axes = plt.subplots(len(rows), 1, figsize=(scale * n + 1.6, scale * len(rows) + 0.35), dpi=dpi,
                                 squeeze=False)
    fig.subplots_adjust(left=0.2 if n < 6 else 0.12, right=0.99, bottom=0.01, top=0.9, hspace=0.15)
    shown = []
    for ax, (name, x) in zip(axes[:, 0], rows.items()):
        shown.append(plot.image_grid(x[:, 0], nrow=n, ax=ax))
        ax.text(-2, x.shape[-2] / 2, name, ha="right", va="center", fontsize=8)
    heading = fig.suptitle("", fontsize=9)

    def draw(k: int) -> list:
        for image, x in zip(shown, rows.values()):
            image.set_data(plot.make_grid(x[:, k], nrow=n))
        heading.set_text(f"frame {k + 1} / {frames}")
        return [*shown, heading]

    anim = FuncAnimation(fig, draw, frames=frames, interval=interval, blit=False)
    plt.close(fig)
    return anim


def to_html(anim: FuncAnimation, frame_format: str = "jpeg"):
    """The animation as an ``IPython.display.HTML`` player (``anim.to_jshtml()``) with compact frames.

    JPEG frames are several times smaller than PNG ones for shaded densities, which
    keeps notebooks with animations at a few hundred kB.
    """
    from IPython.display import HTML

    with mpl.rc_context({"animation.frame_format": frame_format}):
        return HTML(offline_player(anim.to_jshtml()))


# matplotlib's player draws its buttons with Font Awesome icons from a CDN: with no network (or on the offline
# course website) the buttons are blank and the page logs a failed request. The same buttons with text symbols:
PLAYER_ICONS = {
    "fa fa-minus": "\u2212", "fa fa-fast-backward": "\u23ee", "fa fa-step-backward": "\u25c2",
    "fa fa-play fa-flip-horizontal": "\u25c0", "fa fa-pause": "\u23f8", "fa fa-play": "\u25b6",
    "fa fa-step-forward": "\u25b8", "fa fa-fast-forward": "\u23ed", "fa fa-plus": "+",
}


def offline_player(html: str) -> str:
    """``anim.to_jshtml()``'s player with no request to a CDN: the Font Awesome stylesheet link removed and each
    icon replaced by a text symbol (the buttons keep their titles)."""
    html = re.sub(r'<link rel="stylesheet"\s+href="https://[^"]*font-awesome[^"]*">', "", html)
    for icon, symbol in PLAYER_ICONS.items():
        html = html.replace(f'<i class="{icon}"></i>', symbol)
    return html
