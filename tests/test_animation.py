"""The trajectory animation helper: frame selection, panels, bad input."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.animation import FuncAnimation

from tinydiff.animation import animate_trajectory, frame_indices, to_html


def test_frame_indices_are_evenly_spread_and_keep_both_ends():
    idx = frame_indices(1001, 50)
    assert idx[0] == 0 and idx[-1] == 1000 and len(idx) == 50
    assert idx == sorted(set(idx))
    assert frame_indices(7, 50) == list(range(7))  # fewer states than frames: every state once


def test_animation_draws_the_requested_states():
    xs = torch.arange(11.0)[:, None, None].expand(11, 3, 2).clone()  # state i puts every point at (i, i)
    anim = animate_trajectory([xs, -xs], n_frames=4, frame_labels=[f"s{i}" for i in range(11)], panel_titles=["a", "b"])
    assert isinstance(anim, FuncAnimation)
    anim._init_draw()
    anim._func(10)  # draw the last state
    fig = anim._fig
    assert fig._suptitle.get_text() == "s10"
    offsets = [ax.collections[-1].get_offsets() for ax in fig.axes]
    assert (offsets[0] == 10).all() and (offsets[1] == -10).all()
    assert "<script" in to_html(anim).data


def test_player_needs_no_network():
    """matplotlib's player links Font Awesome from a CDN; ours has no URL at all and every button a visible symbol."""
    anim = animate_trajectory([torch.zeros(3, 4, 2)], n_frames=3)
    raw, ours = anim.to_jshtml(), to_html(anim).data
    assert "https://" in raw and 'class="fa ' in raw                      # what the fix is for
    assert "https://" not in ours and "http://" not in ours and 'class="fa ' not in ours
    assert ours.count("<button") == raw.count("<button") == 9
    assert "\u25b6" in ours and "\u23f8" in ours                          # play and pause


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"\[S, B, 2\]"):
        animate_trajectory(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="same number of states"):
        animate_trajectory([torch.zeros(5, 3, 2), torch.zeros(4, 3, 2)])
    with pytest.raises(ValueError, match="one label per state"):
        animate_trajectory(torch.zeros(5, 3, 2), frame_labels=["a"])


def test_animate_clips_shows_frame_k_of_every_clip_and_refuses_unequal_lengths():
    import numpy as np

    from tinydiff import plot
    from tinydiff.animation import animate_clips

    clips = torch.rand(3, 5, 1, 8, 8) * 2 - 1
    anim = animate_clips({"a": clips, "b": -clips[:2]})
    assert len(list(anim.new_frame_seq())) == 5
    anim._func(2)  # draw frame 3: each row's picture is that row's clips at frame index 2
    rows = anim._fig.axes
    np.testing.assert_allclose(rows[0].images[0].get_array(), plot.make_grid(clips[:, 2], nrow=3))
    assert anim._fig._suptitle.get_text() == "frame 3 / 5"
    with pytest.raises(ValueError, match="same number of frames"):
        animate_clips({"a": clips, "b": clips[:, :4]})
