"""tinydiff.widgets and tinydiff.demos: each explorer redraws when a control moves; each demo draws the closed form."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tinydiff import demos, plot, schedules, widgets  # noqa: E402
from tinydiff.data import GaussianMixture  # noqa: E402
from tinydiff.oracle import MixtureEpsilon  # noqa: E402


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


def test_figure_is_shown_at_its_own_size_with_twice_the_pixels(explorer):
    """Not stretched to the cell's width (the issue's blurry eta explorer): the Image is as wide as the figure in
    CSS pixels (inches x dpi) and holds PIXEL_RATIO times as many pixels, for high-DPI screens."""
    png = bytes(explorer.image.value)
    png_width, png_height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    css_width = int(explorer.image.width)
    assert explorer.image.layout.align_self == "flex-start"
    assert widgets.PIXEL_RATIO == 2 and abs(png_width - 2 * css_width) <= 2
    ncols = 4  # points, digits and two curve panels: 3 inches each (schedule_explorer)
    assert css_width == round(3.0 * ncols * plt.rcParams["figure.dpi"])
    assert png_height < png_width


def test_changing_schedule_or_T_redraws_and_keeps_t_in_range(explorer):
    before = bytes(explorer.image.value)
    explorer.schedule_name.value = "cosine"
    assert bytes(explorer.image.value) != before
    explorer.t.value = 99
    explorer.T.value = 10  # t stays at the same fraction of the way: the last step
    assert (explorer.t.max, explorer.t.value) == (9, 9)
    expected, fig = widgets.W.Image(), Figure(figsize=explorer.figsize)  # what the function draws for these values
    plot.explorer_figure(schedules.get("cosine", T=10), 9, explorer.data, fig=fig)
    widgets.show_figure(expected, fig)
    assert bytes(explorer.image.value) == bytes(expected.value)


def test_an_explorer_binds_its_controls_to_the_keywords_of_its_drawing_function():
    drawn = []

    def draw(a: int, b: str, fig) -> None:
        drawn.append((a, b))
        fig.subplots().set_title(f"{a} {b}")

    explorer = widgets.Explorer(draw, [{"a": widgets.W.IntSlider(value=1)}, {"b": widgets.W.Text(value="x")}],
                                figsize=(2, 1), check=lambda a, b: b.encode("ascii"))
    explorer.a.value = 2
    explorer.b.value = "\u00e9"  # check raises: the message, no redraw, the last figure kept
    kept = bytes(explorer.image.value)
    assert drawn == [(1, "x"), (2, "x")] and "ascii" in explorer.message.value
    explorer.b.value = "y"
    assert drawn[-1] == (2, "y") and explorer.message.value == "" and bytes(explorer.image.value) != kept
    assert [type(c).__name__ for c in explorer.children] == ["IntSlider", "Text", "HTML", "Image"]
    with pytest.raises(ValueError, match="'image'"):
        widgets.Explorer(lambda image, fig: None, [{"image": widgets.W.IntSlider()}], figsize=(2, 1))


def test_explorer_figure_shows_the_closed_form_x_t_with_fixed_noise():
    x0 = torch.tensor([[1.0, -2.0], [0.5, 0.5], [-1.0, 0.0]])
    data = plot.FixedNoise.draw(x0, seed=0)
    s = schedules.get("linear", 1000)
    fig = plot.explorer_figure(s, [0, 500], data)
    assert len(fig.axes) == 2 * 3  # no images: curves, log-SNR, points per row
    alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    for ax, t in zip(fig.axes[2::3], [0, 500]):
        expected = np.sqrt(alpha_bar[t]) * x0.numpy() + np.sqrt(1 - alpha_bar[t]) * data.points_noise.numpy()
        np.testing.assert_allclose(ax.collections[0].get_offsets(), expected, atol=1e-5)
    plt.close(fig)


def test_fixed_noise_is_seeded_and_shaped_like_the_data():
    images = torch.zeros(3, 1, 4, 4)
    a = plot.FixedNoise.draw(torch.zeros(10, 2), images, seed=5)
    b = plot.FixedNoise.draw(torch.zeros(10, 2), images, seed=5)
    assert a.images_noise.shape == images.shape
    assert torch.equal(a.points_noise, b.points_noise) and torch.equal(a.images_noise, b.images_noise)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plot.FixedNoise.draw(torch.zeros(10, 3))


def test_schedule_explorer_rejects_bad_arguments():
    points = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="known schedules"):
        widgets.schedule_explorer(points, schedule="quadratic")
    with pytest.raises(ValueError, match="0 <= t <= T-1 = 99"):
        widgets.schedule_explorer(points, T=100, t=100)
    data = plot.FixedNoise.draw(points)
    for bad_t in (-1, 100, []):
        with pytest.raises(ValueError, match="0 <= t <= T-1 = 99"):
            plot.explorer_figure(schedules.get("linear", 100), bad_t, data)


# --- Langevin explorer (notebook 02) -------------------------------------------------------------


def far_apart() -> GaussianMixture:
    """Two narrow Gaussians 8 apart with weights 0.7 / 0.3: plain Langevin cannot cross between them."""
    return GaussianMixture(torch.tensor([0.7, 0.3]), torch.tensor([[-4.0, 0.0], [4.0, 0.0]]), 0.25 * torch.eye(2).expand(2, 2, 2))


@pytest.fixture
def langevin_widget():
    x_init = 4 * (2 * torch.rand(200, 2, generator=torch.Generator().manual_seed(1)) - 1)
    return widgets.langevin_explorer(x_init=x_init, step_size=0.02, steps=20, seed=2)


def test_langevin_explorer_redraws_when_each_control_moves(langevin_widget):
    before = bytes(langevin_widget.image.value)
    assert before.startswith(b"\x89PNG")
    for control, value in [(langevin_widget.step_size, 0.1), (langevin_widget.steps, 40), (langevin_widget.annealed, True)]:
        control.value = value
        after = bytes(langevin_widget.image.value)
        assert after != before, f"moving {control.description} did not redraw"
        before = after


def test_langevin_figure_plain_stays_in_its_mode_annealed_finds_the_weights():
    """Closed form: from the left mode, plain Langevin never reaches a mode 8 sigma-units away: occupancy [1, 0].
    Annealing from sigma = 6 mixes the modes first: occupancy near the weights [0.7, 0.3] (400 points: sd 0.023)."""
    mixture = far_apart()
    x_init = torch.tensor([-4.0, 0.0]) + 0.5 * torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    plain = demos.langevin_figure(mixture, x_init, step_size=0.02, steps=50)
    bars = [p.get_height() for p in plain.axes[1].patches]
    np.testing.assert_allclose(bars, [0.7, 0.3, 1.0, 0.0])  # true weights, then occupancy
    sigmas = torch.logspace(math.log10(6.0), math.log10(0.3), 8)
    annealed = demos.langevin_figure(mixture, x_init, step_size=0.02, steps=400, sigmas=sigmas)
    occupancy = [p.get_height() for p in annealed.axes[1].patches][2:]
    np.testing.assert_allclose(occupancy, [0.7, 0.3], atol=0.1)
    assert len(annealed.axes[0].collections[0].get_offsets()) == 400
    plt.close("all")


def test_langevin_figure_drops_diverged_particles():
    """Step 100 on variances 0.25 is far above the stability limit 4 v = 1: every particle blows up."""
    x_init = torch.zeros(10, 2)
    fig = demos.langevin_figure(far_apart(), x_init, step_size=100.0, steps=200)
    assert len(fig.axes[0].collections[0].get_offsets()) == 0
    assert fig.axes[1].get_title() == "0 finite particles"
    plt.close(fig)


def test_langevin_explorer_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        widgets.langevin_explorer(x_init=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="strictly decreasing"):
        widgets.langevin_explorer(x_init=torch.zeros(5, 2), sigmas=[0.1, 1.0])


# --- DDIM eta explorer (notebook 06) -------------------------------------------------------------


@pytest.fixture
def ddim_widget():
    mixture = far_apart()
    schedule = schedules.get("linear", 100)
    starts = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    return widgets.ddim_eta_explorer(MixtureEpsilon(mixture, schedule), schedule, starts, mixture, eta=0.0, steps=10)


def test_ddim_eta_explorer_redraws_when_eta_moves(ddim_widget):
    before = bytes(ddim_widget.image.value)
    assert before.startswith(b"\x89PNG")
    ddim_widget.eta.value = 1.0
    assert bytes(ddim_widget.image.value) != before
    ddim_widget.eta.value = 0.0  # deterministic and seeded: the same picture again
    assert bytes(ddim_widget.image.value) == before


def test_ddim_paths_figure_draws_the_closed_form_path_of_a_zero_eps_model():
    """With eps_hat = 0, eq. 12 is x_prev = sqrt(alpha_bar_prev / alpha_bar_t) x_t, so the state entering
    step tau_i is x_T sqrt(alpha_bar_{tau_i} / alpha_bar_{tau_1}) and the end point is x_T / sqrt(alpha_bar_{tau_1})."""
    T, steps = 100, 5
    x_T = torch.tensor([[1.0, -0.5], [0.2, 0.3]], dtype=torch.float64)
    fig = demos.ddim_paths_figure(lambda x, t: torch.zeros_like(x), schedules.get("linear", T), x_T, eta=0.0, steps=steps)
    alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T))
    taus = np.arange(0, T, T // steps)[::-1]  # leading spacing: 80, 60, 40, 20, 0
    scale = np.append(np.sqrt(alpha_bar[taus] / alpha_bar[taus[0]]), 1 / np.sqrt(alpha_bar[taus[0]]))
    lines = fig.axes[0].lines
    for b in range(2):
        path = lines[b].get_xydata()
        np.testing.assert_allclose(path[:-1], scale[:, None] * x_T[b].numpy(), rtol=1e-6)  # the last point repeats the end
    np.testing.assert_allclose(lines[3].get_xydata(), x_T.numpy() / np.sqrt(alpha_bar[taus[0]]), rtol=1e-6)  # the crosses
    plt.close(fig)


def test_ddim_eta_explorer_rejects_bad_arguments():
    schedule = schedules.get("linear", 10)
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        widgets.ddim_eta_explorer(model, schedule, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        widgets.ddim_eta_explorer(model, schedule, torch.zeros(4, 2), eta=1.5)
    with pytest.raises(ValueError, match=r"\[S\+1, B, 2\]"):
        plot.draw_paths(plt.figure().subplots(), torch.zeros(3, 2))
    plt.close("all")


@pytest.fixture
def guidance_widget():
    from tinydiff.models import UNet

    torch.manual_seed(0)
    net = UNet(channels=8, mults=(1, 2), num_classes=10).eval()
    with torch.no_grad():  # a non-zero output layer, so the label and the scale change the picture
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return widgets.guidance_explorer(net, schedules.cosine(50), digit=3, scale=1.0, n=4, steps=3)


def test_guidance_explorer_redraws_when_scale_or_digit_moves(guidance_widget):
    before = bytes(guidance_widget.image.value)
    assert before.startswith(b"\x89PNG")
    guidance_widget.scale.value = 4.0
    after_scale = bytes(guidance_widget.image.value)
    assert after_scale != before
    guidance_widget.digit.value = 7
    assert bytes(guidance_widget.image.value) != after_scale
    guidance_widget.digit.value, guidance_widget.scale.value = 3, 1.0  # fixed noise: back to the first picture
    assert bytes(guidance_widget.image.value) == before


def test_guidance_explorer_rejects_bad_arguments():
    from tinydiff.models import UNet

    with pytest.raises(ValueError, match="class-conditional"):
        widgets.guidance_explorer(UNet(channels=8, mults=(1, 2)), schedules.cosine(50))
    with pytest.raises(ValueError, match="digit must be one of 0..9"):
        widgets.guidance_explorer(UNet(channels=8, mults=(1, 2), num_classes=10), schedules.cosine(50), digit=12)


def colour_checkpoint(path):
    """A random-weight colour model of notebook 14's kind, small: 3 channels, 3 named classes, v-prediction;
    saved and loaded the way the shipped emoji model is (its JSON's extra.classes, as scripts/train.py writes it)."""
    from tinydiff.checkpoint import save_checkpoint
    from tinydiff.models import UNet
    from tinydiff.pretrained import load_diffusion_model

    torch.manual_seed(0)
    net = UNet(channels=8, mults=(1, 2), num_classes=3, in_channels=3).eval()
    with torch.no_grad():  # a non-zero output layer, so the class and the scale change the picture
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    extra = {"schedule": {"name": "cosine", "T": 50}, "train": {"prediction": "v"}, "data_shape": [3, 16, 16],
             "classes": ["red things", "green things", "blue things"]}
    save_checkpoint(path, net, extra=extra)
    return load_diffusion_model(path)


@pytest.fixture
def colour_model(tmp_path):
    return colour_checkpoint(tmp_path / "colour")


def test_diffusion_model_reads_its_class_names(colour_model, tmp_path):
    from tinydiff.checkpoint import update_extra
    from tinydiff.pretrained import load_diffusion_model

    assert colour_model.classes == ("red things", "green things", "blue things")
    assert colour_model.sample_shape == (3, 16, 16) and demos.image_shape(colour_model.net) == (3, 32, 32)
    update_extra(tmp_path / "colour", classes=[])  # an unconditional run records no names (scripts/train.py)
    assert load_diffusion_model(tmp_path / "colour").classes is None
    update_extra(tmp_path / "colour", classes=None)
    assert load_diffusion_model(tmp_path / "colour").classes is None


def test_guidance_explorer_picks_a_named_class_and_redraws_in_colour(colour_model):
    m = colour_model
    widget = widgets.guidance_explorer(m.net, m.schedule, digit="green things", scale=1.0, n=3, steps=2,
                                       prediction=m.prediction, classes=m.classes, shape=m.sample_shape)
    row = widget.children[0]
    assert [type(c).__name__ for c in row.children] == ["Dropdown", "FloatSlider"]  # the scale: the main slider
    assert widget.label.options == (("red things", 0), ("green things", 1), ("blue things", 2))
    assert (widget.label.label, widget.label.value, widget.label.description) == ("green things", 1, "class")
    first = bytes(widget.image.value)
    widget.scale.value = 4.0
    scaled = bytes(widget.image.value)
    widget.label.value = 2
    assert len({first, scaled, bytes(widget.image.value)}) == 3
    widget.label.value, widget.scale.value = 1, 1.0  # fixed noise: back to the first picture
    assert bytes(widget.image.value) == first
    same = widgets.guidance_explorer(m.net, m.schedule, digit=1, n=3, steps=2, prediction=m.prediction,
                                     classes=m.classes, shape=m.sample_shape)  # a class by index; the same seed
    other = widgets.guidance_explorer(m.net, m.schedule, digit=1, n=3, steps=2, prediction=m.prediction,
                                      classes=m.classes, shape=m.sample_shape, seed=1)
    assert bytes(same.image.value) == first and bytes(other.image.value) != first


def test_guidance_figure_draws_colour_images_as_they_are(colour_model):
    """The row shows the samples' own colours: (x + 1) / 2 per channel, an RGB image (no colormap), and the title
    names the class."""
    from tinydiff.guidance import guided_digits

    m = colour_model
    fig = demos.guidance_figure(m.net, m.schedule, "blue things", 3.0, n=3, steps=2, seed=4, prediction="v",
                                classes=m.classes, shape=(3, 16, 16))
    x = guided_digits(m.net, m.schedule, 2, 3.0, n=3, steps=2, seed=4, prediction="v", shape=(3, 16, 16))
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape == (16 + 2, 3 * 17 + 1, 3)
    np.testing.assert_allclose(shown[1:17, 1:17], ((x[0].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy(), atol=1e-6)
    assert x[0].std(dim=(1, 2)).min() > 0 and not torch.allclose(x[0, 0], x[0, 1])  # a true colour image
    assert fig.axes[0].get_title() == "blue things, guidance scale s = 3 (DDIM-2)"
    plt.close(fig)
    fig = demos.guidance_figure(m.net, m.schedule, 0, 0.0, n=1, steps=1, classes=m.classes, shape=(3, 16, 16))
    assert fig.axes[0].get_title() == "s = 0: the unconditional model, red things ignored (DDIM-1)"
    plt.close(fig)


def test_guidance_explorer_names_the_classes_it_knows(colour_model):
    m = colour_model
    with pytest.raises(ValueError, match="unknown class 'cats'; the model's classes are: 'red things'"):
        widgets.guidance_explorer(m.net, m.schedule, digit="cats", classes=m.classes)
    with pytest.raises(ValueError, match="needs the model's class names"):
        widgets.guidance_explorer(m.net, m.schedule, digit="red things")
    with pytest.raises(ValueError, match="classes has 2 names but the network has 3 classes"):
        widgets.guidance_explorer(m.net, m.schedule, digit=0, classes=("a", "b"))
    with pytest.raises(ValueError, match="class must be one of 0..2 or a class name, got 3"):
        demos.guidance_figure(m.net, m.schedule, 3, 1.0, classes=m.classes)


# --- notebook 11: few-step samplers side by side ----------------------------------------------------


def test_few_step_explorer_redraws_when_steps_move():
    calls = []

    def line(steps):  # points on a line whose slope is the number of steps: a different picture per value
        calls.append(steps)
        u = torch.linspace(-1, 1, 50)
        return torch.stack([u, steps * u / 16], 1)

    widget = widgets.few_step_explorer({"a": line, "b": lambda n: -line(n)}, step_options=(1, 2, 4), steps=1,
                                       measure=lambda x: float(x[:, 1].abs().mean()))
    before = bytes(widget.image.value)
    assert before.startswith(b"\x89PNG") and calls == [1, 1]
    widget.steps.value = 4
    assert bytes(widget.image.value) != before and calls[-2:] == [4, 4]
    widget.steps.value = 1
    assert bytes(widget.image.value) == before


def test_few_step_figure_titles_carry_the_score():
    fig = demos.few_step_figure({"base": lambda n: torch.zeros(5, 2), "student": lambda n: torch.ones(5, 2)}, 2,
                               measure=lambda x: float(x.mean()) + 1)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["base, 2 steps\nED / floor 1.0", "student, 2 steps\nED / floor 2.0"]
    plt.close(fig)


def test_few_step_explorer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one panel"):
        widgets.few_step_explorer({})
    with pytest.raises(ValueError, match="not one of the slider's options"):
        widgets.few_step_explorer({"a": lambda n: torch.zeros(3, 2)}, step_options=(1, 2), steps=3)


def test_few_step_figure_draws_a_row_of_digits_per_image_panel():
    calls = []

    def digits(steps):
        calls.append(steps)
        return torch.full((3, 1, 8, 8), steps / 8 - 1)

    fig = demos.few_step_figure({"teacher": digits, "student": digits}, 4)
    assert [ax.get_title() for ax in fig.axes] == ["teacher, 4 steps", "student, 4 steps"] and calls == [4, 4]
    assert fig.axes[0].get_images()[0].get_array().shape[1] == 3 * 8 + 4 * 1  # three digits in a row, padded
    plt.close(fig)
    widget = widgets.few_step_explorer({"a": digits}, step_options=(1, 4), steps=1, images=True)
    before = bytes(widget.image.value)
    widget.steps.value = 4
    assert bytes(widget.image.value) != before
    with pytest.raises(ValueError, match=r"2-D points \[N, 2\] or images"):
        demos.few_step_figure({"a": lambda n: torch.zeros(3, 5)}, 1)


# --- notebook 10: SDEdit ------------------------------------------------------------------------------------


def test_sdedit_explorer_shows_the_edit_of_the_chosen_t0():
    inputs = -torch.ones(4, 1, 8, 8)
    edits = {t0: torch.full((4, 1, 8, 8), t0 / 1000) for t0 in (100, 500, 900)}
    widget = widgets.sdedit_explorer(inputs, edits)
    assert widget.t0.value == 500 and list(widget.t0.options) == [100, 500, 900]  # starts in the middle
    before = bytes(widget.image.value)
    widget.t0.value = 900
    after = bytes(widget.image.value)
    widget.t0.value = 500
    assert after != before and bytes(widget.image.value) == before
    fig = plot.sdedit_figure(inputs, edits[100], 100)
    top, bottom = (ax.get_images()[0].get_array() for ax in fig.axes)
    assert float(top[4, 4]) < float(bottom[4, 4])  # inside the first digit: the black input above its grey edit
    assert fig.axes[0].get_title() == "input" and "100" in fig.axes[1].get_title()
    plt.close(fig)


def test_sdedit_explorer_rejects_bad_arguments():
    inputs = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="at least one edit"):
        widgets.sdedit_explorer(inputs, {})
    with pytest.raises(ValueError, match=r"edits\[100\] has shape"):
        widgets.sdedit_explorer(inputs, {100: torch.zeros(3, 1, 8, 8)})
    with pytest.raises(ValueError, match="not one of the edits' steps"):
        widgets.sdedit_explorer(inputs, {100: inputs}, t0=300)


def test_adapter_explorer_redraws_when_the_scale_moves_and_scale_zero_is_the_base():
    from tinydiff import adapt
    from tinydiff.models import UNet

    torch.manual_seed(0)
    net = UNet(channels=8, mults=(1, 2), num_classes=10).eval()
    with torch.no_grad():
        net.conv_out.weight.normal_(0, 0.1)
    base = demos.adapter_figure(net, schedules.cosine(50), 3, 0.0, steps=2)
    base_png = widgets.figure_png(base)
    plt.close(base)
    adapt.add_lora(net, ["*attn.qkv", "up.*.conv2"], rank=2)
    with torch.no_grad():
        for layer in adapt.lora_layers(net).values():
            layer.up.weight.normal_(0, 0.5)
    widget = widgets.adapter_explorer({"lora": (net, 3)}, schedules.cosine(50), scale=0.0, steps=2)
    zero = bytes(widget.image.value)
    widget.scale.value = 1.0
    assert bytes(widget.image.value) != zero
    same = demos.adapter_figure(net, schedules.cosine(50), 3, 0.0, steps=2)  # scale 0 draws the base model's digits
    assert widgets.figure_png(same) == base_png
    plt.close(same)
    with pytest.raises(ValueError, match="at least one method"):
        widgets.adapter_explorer({}, schedules.cosine(50))


def test_adapter_figure_leaves_the_network_as_it_found_it():
    """A figure is no side effect: each LoRA layer keeps its scale and its merged weight, also when sampling fails."""
    from tinydiff import adapt
    from tinydiff.models import UNet

    torch.manual_seed(0)
    net = UNet(channels=8, mults=(1, 2), num_classes=10).eval()
    adapt.add_lora(net, ["*attn.qkv", "up.*.conv2"], rank=2)
    layers = list(adapt.lora_layers(net).values())
    with torch.no_grad():
        for layer in layers:
            layer.up.weight.normal_(0, 0.5)
    adapt.set_adapter_scale(net, 0.25)
    layers[0].merge()
    layers[1].scale = 0.5  # one layer set by hand: restored to its own scale, not the others'
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    demos.adapter_figure(net, schedules.cosine(50), 3, 1.0, steps=1)
    with pytest.raises(ValueError):
        demos.adapter_figure(net, schedules.cosine(50), 3, 1.5, steps=1, prediction="nonsense")
    plt.close("all")
    assert [layer.scale for layer in layers] == [0.25, 0.5] + [0.25] * (len(layers) - 2)
    assert layers[0].merged and not any(layer.merged for layer in layers[1:])
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())


def test_prompt_explorer_redraws_and_shows_what_it_cannot_read():
    from pathlib import Path

    from tinydiff.pretrained import load_diffusion_model

    checkpoints = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
    model = load_diffusion_model(checkpoints / "mnist_text")
    widget = widgets.prompt_explorer(model, "a bold seven", guidance=1.0, n=2, steps=2)
    first = bytes(widget.image.value)
    widget.guidance.value = 4.0
    scaled = bytes(widget.image.value)
    assert scaled != first and widget.message.value == ""
    widget.prompt.value = "a purple seven"  # an unknown word: the error (with the vocabulary), the figure kept
    assert "purple" in widget.message.value and "vocabulary" in widget.message.value
    assert bytes(widget.image.value) == scaled
    widget.prompt.value = "a thin two leaning left"
    assert widget.message.value == "" and bytes(widget.image.value) != scaled
    with pytest.raises(ValueError, match="unknown word"):
        widgets.prompt_explorer(model, "a purple seven")
    with pytest.raises(ValueError, match="text-conditioned"):
        widgets.prompt_explorer(load_diffusion_model(checkpoints / "mnist_latent"))


def test_superres_explorer_redraws_for_input_level_and_drawing():
    from tinydiff.models import SuperResUNet

    torch.manual_seed(0)
    net = SuperResUNet(1, noise_levels=True, channels=8, mults=(1, 2), n_res=1, heads=2)
    for name, p in net.named_parameters():  # zero-initialised blocks would ignore the level: wake them up
        if name.endswith(("conv2.weight", "conv_out.weight")):
            torch.nn.init.normal_(p, std=0.1)
    inputs = torch.rand(3, 1, 4, 4) * 2 - 1
    widget = widgets.superres_explorer(net, schedules.cosine(50), inputs, torch.tensor([4, 9, 3]), levels=(0, 20, 40),
                                       n=3, steps=2, factor=2)
    assert widget.choice.options[1] == ("test image 1 (a 9)", 1) and widget.choice.options[-1][1] == -1
    first = bytes(widget.image.value)
    assert first.startswith(b"\x89PNG")
    widget.level.value = 40
    leveled = bytes(widget.image.value)
    assert leveled != first
    widget.choice.value = 2
    assert bytes(widget.image.value) != leveled
    widget.choice.value = -1  # the drawing: input 0 thresholded
    assert widget.drawing.value == tuple((inputs[0, 0] > 0).int().flatten().tolist())
    drawn = bytes(widget.image.value)
    widget.drawing.buttons[5].value = not widget.drawing.buttons[5].value  # one click redraws
    assert widget.drawing.value[5] == int(widget.drawing.buttons[5].value) and bytes(widget.image.value) != drawn
    widget.drawing.buttons[5].value = not widget.drawing.buttons[5].value
    widget.choice.value, widget.level.value = 0, 0  # fixed noise: back to the first picture
    assert bytes(widget.image.value) == first
    with pytest.raises(ValueError, match="square one-channel"):
        widgets.superres_explorer(net, schedules.cosine(50), torch.zeros(2, 3, 4, 4))


def test_prompt_edit_explorer_redraws_and_refuses_a_caption_of_another_length():
    from pathlib import Path

    from tinydiff.data import captions as C
    from tinydiff.pretrained import load_diffusion_model

    model = load_diffusion_model(Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "mnist_text")
    test = C.captioned_digits("test", copies=1, seed=1, hold_out=False)
    captions = [C.caption(int(d), int(t)) for d, t in test.attributes[:2, :2]]
    widget = widgets.prompt_edit_explorer(model, test.images[:2], captions, target=captions[0], strength=0.4, steps=2)
    assert widget.choice.options[1] == (f"1: {captions[1]}", 1)
    first = bytes(widget.image.value)
    assert first.startswith(b"\x89PNG") and widget.message.value == ""
    widget.strength.value = 0.8
    stronger = bytes(widget.image.value)
    assert stronger != first
    widget.target.value = "a bold digit 7 leaning left"  # more words than the source: the error, the figure kept
    assert "number of words" in widget.message.value and bytes(widget.image.value) == stronger
    widget.target.value = "a purple seven"
    assert "purple" in widget.message.value
    widget.target.value, widget.strength.value = captions[0], 0.4  # fixed noise: back to the first picture
    assert widget.message.value == "" and bytes(widget.image.value) == first
    with pytest.raises(ValueError, match="one caption per image"):
        widgets.prompt_edit_explorer(model, test.images[:2], captions[:1])


def test_spoken_digit_explorer_redraws_and_plays_what_it_draws():
    from pathlib import Path

    from tinydiff.data.audio import wav_bytes
    from tinydiff.pretrained import load_diffusion_model

    checkpoints = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
    model = load_diffusion_model(checkpoints / "spoken_digits_ddpm")
    widget = widgets.spoken_digit_explorer(model, digit=3, guidance=1.0, n=1, steps=2)
    first, sound = bytes(widget.image.value), bytes(widget.audio.value)
    assert first.startswith(b"\x89PNG") and sound.startswith(b"RIFF") and sound[8:12] == b"WAVE"
    images, waves = demos.spoken_digits(model, 3, 1.0, n=1, steps=2)
    assert images.shape == (1, 1, 64, 96) and waves.shape == (1, 6080) and sound == wav_bytes(waves)
    widget.guidance.value = 4.0
    assert bytes(widget.image.value) != first and bytes(widget.audio.value) != sound
    widget.digit.value = 7
    assert widget.digit.options[7] == ("seven", 7)
    widget.digit.value, widget.guidance.value = 3, 1.0  # fixed noise: back to the first picture and sound
    assert bytes(widget.image.value) == first and bytes(widget.audio.value) == sound
    with pytest.raises(ValueError, match="spectrogram images"):
        widgets.spoken_digit_explorer(load_diffusion_model(checkpoints / "mnist_ddpm"))
