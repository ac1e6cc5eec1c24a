"""tinydiff.plot: every helper draws what the closed form says it should."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tinydiff import plot, schedules  # noqa: E402
from tinydiff.data import GaussianMixture  # noqa: E402


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def standard_normal() -> GaussianMixture:
    return GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None])


def test_use_course_style_sets_rcparams():
    with matplotlib.rc_context():
        plot.use_course_style()
        assert matplotlib.rcParams["figure.dpi"] == 80
        assert not matplotlib.rcParams["axes.spines.top"]
        assert not matplotlib.rcParams["axes.spines.right"]


def test_density_2d_draws_the_normal_density_on_the_grid(ax):
    n, lim = 41, 3.0
    image = plot.density_2d(ax, standard_normal(), lim=lim, n=n)
    grid = np.linspace(-lim, lim, n)
    expected = np.exp(-0.5 * (grid[None, :] ** 2 + grid[:, None] ** 2))  # max is 1 at the centre (n odd)
    np.testing.assert_allclose(np.asarray(image.get_array()), expected, atol=1e-5)
    assert tuple(image.get_extent()) == (-lim, lim, -lim, lim)


def test_density_2d_accepts_a_callable_and_checks_its_output(ax):
    image = plot.density_2d(ax, lambda x: -(x[:, 0] - 1.0) ** 2, lim=(-2.0, 2.0), n=5)
    row = np.exp(-(np.linspace(-2, 2, 5) - 1.0) ** 2)
    np.testing.assert_allclose(np.asarray(image.get_array()), np.tile(row, (5, 1)), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[M, 2\] to \[M\]"):
        plot.density_2d(ax, lambda x: x, n=5)
    with pytest.raises(TypeError, match="log-density"):
        plot.density_2d(ax, 3.0)


def test_scatter_2d_plots_the_points_with_the_density_behind(ax):
    points = torch.tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True)
    dots = plot.scatter_2d(ax, points, density=standard_normal(), lim=2.5, title="x_0")
    np.testing.assert_allclose(dots.get_offsets(), [[0.5, -1.0], [2.0, 0.25]])
    assert len(ax.images) == 1 and ax.get_xlim() == (-2.5, 2.5) and ax.get_title() == "x_0"
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plot.scatter_2d(ax, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="lim"):
        plot.scatter_2d(ax, torch.zeros(5, 2), lim=-1.0)


def test_vector_field_draws_fn_at_the_grid_points(ax):
    arrows = plot.vector_field(ax, lambda x: -x, lim=2.0, n=5)  # score of N(0, I)
    np.testing.assert_allclose(arrows.U, -arrows.X, atol=1e-6)
    np.testing.assert_allclose(arrows.V, -arrows.Y, atol=1e-6)
    assert sorted(set(np.round(arrows.X, 6))) == pytest.approx(np.linspace(-2, 2, 5))


def test_vector_field_normalize_gives_unit_arrows(ax):
    arrows = plot.vector_field(ax, lambda x: torch.stack([3 * x[:, 0] + 0.1, x[:, 1] ** 3], 1), n=6, normalize=True)
    np.testing.assert_allclose(np.hypot(arrows.U, arrows.V), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="vectors"):
        plot.vector_field(ax, lambda x: x[:, :1], n=4)


def test_vector_field_unit_draws_panels_on_one_scale():
    """With one ``unit``, a field 5 times longer gets 5 times longer arrows (matplotlib's default rescales each panel)."""
    fig, (a, b) = plt.subplots(1, 2)
    long = plot.vector_field(a, lambda x: torch.full_like(x, 5.0), lim=2.0, n=5, unit=5.0 * 2**0.5)
    short = plot.vector_field(b, lambda x: torch.full_like(x, 1.0), lim=2.0, n=5, unit=5.0 * 2**0.5)
    fig.canvas.draw()
    assert long.scale_units == short.scale_units == "xy" and long.scale == short.scale
    spacing = 4.0 / 4
    assert np.hypot(long.U, long.V)[0] / long.scale == pytest.approx(spacing)  # norm `unit`: one grid spacing
    assert np.hypot(short.U, short.V)[0] / short.scale == pytest.approx(spacing / 5)
    with pytest.raises(ValueError, match="unit"):
        plot.vector_field(a, lambda x: x, unit=0.0)
    plt.close(fig)


def test_make_grid_places_and_rescales_every_image():
    images = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0, 5.0, -7.0)])
    grid = plot.make_grid(images, nrow=2, padding=1)
    assert grid.shape == (3 * (2 + 1) + 1, 2 * (3 + 1) + 1)
    # image i sits at row i // 2, column i % 2; -1 -> 0, 0 -> 0.5, 1 -> 1, out-of-range values clipped
    for i, expected in enumerate([0.0, 0.5, 1.0, 1.0, 0.0]):
        r, c = divmod(i, 2)
        top, left = 1 + 3 * r, 1 + 4 * c
        np.testing.assert_allclose(grid[top : top + 2, left : left + 3], expected)
    assert grid[0].min() == 1.0  # padding is white


def test_make_grid_keeps_colour_channels_and_rejects_bad_shapes():
    rgb = torch.zeros(2, 3, 4, 4)
    rgb[:, 0] = 1.0  # red channel at the maximum
    grid = plot.make_grid(rgb, nrow=2, padding=0)
    assert grid.shape == (4, 8, 3)
    np.testing.assert_allclose(grid[..., 0], 1.0)
    np.testing.assert_allclose(grid[..., 1], 0.5)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        plot.make_grid(torch.zeros(2, 28, 28))
    with pytest.raises(ValueError, match="nrow"):
        plot.make_grid(torch.zeros(2, 1, 4, 4), nrow=0)


def test_image_grid_shows_the_grid_in_gray(ax):
    images = torch.linspace(-1, 1, 4 * 16).reshape(4, 1, 4, 4)
    shown = plot.image_grid(images, nrow=4, ax=ax, title="digits")
    np.testing.assert_allclose(np.asarray(shown.get_array()), plot.make_grid(images, nrow=4))
    assert shown.get_clim() == (0.0, 1.0) and ax.get_title() == "digits"
    plt.close(plot.image_grid(images).figure)  # ax=None makes its own figure


def test_schedule_curves_follow_the_closed_forms(ax):
    T = 200
    lin, cos = schedules.get("linear", T), schedules.get("cosine", T)
    alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T))  # Ho et al. eq. 4 with linear betas
    lines = plot.schedule_curves([lin, cos], "alpha_bar", ax=ax)
    np.testing.assert_allclose(lines[0].get_ydata(), alpha_bar, rtol=1e-5)
    np.testing.assert_allclose(lines[0].get_xdata(), np.arange(T))
    t = np.arange(1, T + 1) / T  # index t is the paper's step t+1 (Nichol & Dhariwal eq. 17)
    f = lambda u: np.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    np.testing.assert_allclose(lines[1].get_ydata()[:-5], (f(t) / f(0))[:-5], rtol=1e-5)  # end is beta-clipped
    assert [ln.get_label() for ln in lines] == ["linear", "cosine"]


def test_schedule_curves_snr_log_snr_and_marker(ax):
    s = schedules.get("linear", 100)
    alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 100))
    (line,) = plot.schedule_curves(s, "log_snr", ax=ax, marker_t=30, fraction=True)
    np.testing.assert_allclose(line.get_ydata(), np.log(alpha_bar / (1 - alpha_bar)), rtol=1e-5)
    np.testing.assert_allclose(line.get_xdata(), np.arange(100) / 100)
    marker = ax.lines[1]
    assert marker.get_xdata()[0] == pytest.approx(0.30)
    assert marker.get_ydata()[0] == pytest.approx(math.log(alpha_bar[30] / (1 - alpha_bar[30])), rel=1e-5)
    (snr,) = plot.schedule_curves(s, "snr", ax=plt.figure().gca())
    assert snr.axes.get_yscale() == "log"
    np.testing.assert_allclose(snr.get_ydata(), alpha_bar / (1 - alpha_bar), rtol=1e-5)
    plt.close(snr.figure)


def test_schedule_curves_rejects_bad_input(ax):
    s = schedules.get("cosine", 50)
    with pytest.raises(ValueError, match="alpha_bar"):
        plot.schedule_curves(s, "alphabar", ax=ax)
    with pytest.raises(ValueError, match="0 <= t <= 49"):
        plot.schedule_curves(s, ax=ax, marker_t=50)


# --- the demos' panels: they draw the arrays they are given ------------------------------------


def test_langevin_panels_draw_the_particles_and_the_occupancy_they_are_given():
    two = GaussianMixture(torch.tensor([0.7, 0.3]), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), torch.eye(2).expand(2, 2, 2))
    x = torch.tensor([[-1.0, 0.5], [1.0, 0.0], [-2.0, 0.0]])
    fig = plot.langevin_panels(x, two, torch.tensor([2 / 3, 1 / 3]), "plain", color="C3")
    left, right = fig.axes
    np.testing.assert_allclose(left.collections[0].get_offsets(), x.numpy())
    np.testing.assert_allclose([p.get_height() for p in right.patches], [0.7, 0.3, 2 / 3, 1 / 3], rtol=1e-6)
    assert (left.get_title(), right.get_title()) == ("plain", "3 finite particles")
    with pytest.raises(ValueError, match="one share per mode"):
        plot.langevin_panels(x, two, [1.0], "plain")
    plt.close("all")


def test_few_step_panels_title_each_sampler_with_its_note():
    samples = {"base": torch.zeros(5, 2), "student": torch.ones(5, 2)}
    fig = plot.few_step_panels(samples, 1, notes={"base": "ED / floor 3.0", "student": "ED / floor 1.0"})
    assert [ax.get_title() for ax in fig.axes] == ["base, 1 step\nED / floor 3.0", "student, 1 step\nED / floor 1.0"]
    np.testing.assert_allclose(fig.axes[1].collections[0].get_offsets(), np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"2-D points \[N, 2\] or images"):
        plot.few_step_panels({"a": torch.zeros(3, 5)}, 1)
    plt.close("all")


def test_digit_row_and_paths_figure_draw_one_panel():
    row = plot.digit_row(-torch.ones(3, 1, 4, 4), "three black digits")
    assert row.axes[0].get_title() == "three black digits"
    assert row.axes[0].get_images()[0].get_array().shape == (4 + 2, 3 * 4 + 4)  # one row, padded by 1
    xs = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]]])  # one path of two states
    paths = plot.paths_figure(xs, title="a path")
    np.testing.assert_allclose(paths.axes[0].lines[0].get_xydata(), [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    assert paths.axes[0].get_title() == "a path"
    plt.close("all")


def test_copies_figure_pairs_each_sample_with_its_nearest_training_image():
    from tinydiff.memorisation import measure_memorisation

    g = torch.Generator().manual_seed(0)
    train, heldout = torch.rand(40, 3, 8, 8, generator=g) * 2 - 1, torch.rand(20, 3, 8, 8, generator=g) * 2 - 1
    samples = torch.cat([train[:3], torch.rand(5, 3, 8, 8, generator=g) * 2 - 1])  # three exact copies
    m = measure_memorisation(samples, train, heldout, n_neighbours=10)
    top = m.most_copied(3)
    fig = plot.copies_figure(samples[top], train[m.index[top]], m.ratio[top])
    axes = fig.axes
    assert len(axes) == 6 and all(ax.get_title().startswith("ratio ") for ax in axes[:3])
    assert float(m.ratio[top].max()) < 1e-3  # the three copies come first
    for j in range(3):  # the top row shows the samples, the bottom row their nearest training images: here the same
        assert np.array_equal(axes[j].images[0].get_array(), axes[3 + j].images[0].get_array())
    with pytest.raises(ValueError, match="one shape"):
        plot.copies_figure(samples[:2], train[:3], m.ratio[:2])
    plt.close(fig)


def test_memorisation_curve_draws_each_length_against_size_above_the_floor():
    def point(n, length, steps, share, floor):
        return {"n_train": n, "length": length, "steps": steps,
                "pixels": {"share": share, "heldout_share": floor, "carlini_share": share / 2,
                           "heldout_carlini_share": floor / 2}}

    results = {"emoji": [point(100, "4x", 1600, 0.6, 0.01), point(100, "1x", 400, 0.2, 0.02),
                         point(1289, "1x", 400, 0.0, 0.0), point(1289, "4x", 1600, 0.05, 0.0)]}
    ax = plot.memorisation_curve(results)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["1x (400 steps)", "4x (1600 steps)", "held-out images (floor)"]
    assert lines["4x (1600 steps)"].get_xdata().tolist() == [100, 1289]
    assert lines["4x (1600 steps)"].get_ydata().tolist() == [0.6, 0.05]
    assert lines["held-out images (floor)"].get_ydata().tolist() == [0.02, 0.0]  # the highest floor per size
    assert ax.get_xscale() == "log"
    carlini = plot.memorisation_curve(results, criterion="carlini_share")
    assert carlini.get_lines()[1].get_ydata().tolist() == [0.3, 0.025]
    with pytest.raises(ValueError, match="no 'emoji' points measured in 'features'"):
        plot.memorisation_curve(results, space="features")
    with pytest.raises(ValueError, match="criterion must be one of"):
        plot.memorisation_curve(results, criterion="ratio")
    plt.close("all")


def test_spectrogram_row_and_trajectories_draw_what_they_are_given():
    images = torch.rand(2, 1, 64, 96) * 2 - 1
    fig = plot.spectrogram_row(images, ["a", "b"])
    axes = fig.axes
    np.testing.assert_allclose(axes[1].images[0].get_array(), images[1, 0].numpy())
    assert axes[0].images[0].get_extent()[1] == pytest.approx(96 * 64 / 8000)  # seconds: 96 hops of 8 ms
    with pytest.raises(ValueError, match="one title each"):
        plot.spectrogram_row(images, ["a"])
    path = torch.tensor([[[2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]])
    fig = plot.trajectories_figure({"clip": path})
    x, y = fig.axes[0].lines[0].get_data()
    np.testing.assert_allclose(x, [3, 5, 7])  # columns across, rows down
    np.testing.assert_allclose(y, [2, 4, 6])
    plt.close("all")
