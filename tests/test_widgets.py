"""tinydiff.widgets: the schedule explorer redraws when its controls move, and draws the closed form."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tinydiff import schedules, widgets  # noqa: E402


@pytest.fixture
def explorer():
    points = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    return widgets.schedule_explorer(points, images, schedule="linear", T=100, t=10, seed=3)


def test_moving_t_redraws_the_figure(explorer):
    before = bytes(explorer.image.value)
    assert before.startswith(b"\x89PNG")
    explorer.t.value = 90
    assert bytes(explorer.image.value) != before
    explorer.t.value = 10  # the noise is drawn once: back at t=10 we see the same picture
    assert bytes(explorer.image.value) == before


def test_changing_schedule_or_T_redraws_and_keeps_t_in_range(explorer):
    before = bytes(explorer.image.value)
    explorer.schedule_name.value = "cosine"
    assert bytes(explorer.image.value) != before
    assert explorer.schedule.name == "cosine"
    explorer.t.value = 99
    explorer.T.value = 10  # t stays at the same fraction of the way: the last step
    assert (explorer.t.max, explorer.t.value) == (9, 9)
    assert explorer.schedule.T == 10


def test_explorer_figure_shows_the_closed_form_x_t_with_fixed_noise():
    x0 = torch.tensor([[1.0, -2.0], [0.5, 0.5], [-1.0, 0.0]])
    data = widgets.FixedNoise.draw(x0, seed=0)
    s = schedules.get("linear", 1000)
    fig = widgets.explorer_figure(s, [0, 500], data)
    assert len(fig.axes) == 2 * 3  # no images: curves, log-SNR, points per row
    alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    for ax, t in zip(fig.axes[2::3], [0, 500]):
        expected = np.sqrt(alpha_bar[t]) * x0.numpy() + np.sqrt(1 - alpha_bar[t]) * data.points_noise.numpy()
        np.testing.assert_allclose(ax.collections[0].get_offsets(), expected, atol=1e-5)
    plt.close(fig)


def test_fixed_noise_is_seeded_and_shaped_like_the_data():
    images = torch.zeros(3, 1, 4, 4)
    a = widgets.FixedNoise.draw(torch.zeros(10, 2), images, seed=5)
    b = widgets.FixedNoise.draw(torch.zeros(10, 2), images, seed=5)
    assert a.images_noise.shape == images.shape
    assert torch.equal(a.points_noise, b.points_noise) and torch.equal(a.images_noise, b.images_noise)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        widgets.FixedNoise.draw(torch.zeros(10, 3))


def test_schedule_explorer_rejects_bad_arguments():
    points = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="known schedules"):
        widgets.schedule_explorer(points, schedule="quadratic")
    with pytest.raises(ValueError, match="0 <= t <= T-1 = 99"):
        widgets.schedule_explorer(points, T=100, t=100)
    data = widgets.FixedNoise.draw(points)
    for bad_t in (-1, 100, []):
        with pytest.raises(ValueError, match="0 <= t <= T-1 = 99"):
            widgets.explorer_figure(schedules.get("linear", 100), bad_t, data)
