"""Editing (tinydiff.editing): inpainting by replacement and RePaint, SDEdit, checked against exact conditionals."""

import math

import pytest
import torch

from tinydiff import schedules
from tinydiff.data.toy import GaussianMixture
from tinydiff.editing import block_sketch, check_mask, inpaint, repaint_path, sdedit
from tinydiff.metrics import energy_distance
from tinydiff.oracle import MixtureEpsilon
from tinydiff.samplers import ddim_sample

COV = torch.tensor([[0.5, 0.4], [0.4, 0.5]])


def two_correlated() -> GaussianMixture:
    """Two equal components whose coordinates are correlated (0.8): x1 = 0 sits between them, and
    given x1 = 0 the second coordinate is bimodal at +-2.2 -- far from where x1 alone points."""
    return GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-1.5, 1.0], [1.5, -1.0]]), torch.stack([COV, COV]))


@pytest.fixture(scope="module")
def cosine():
    return schedules.get("cosine", T=1000)


# --- the exact conditional of a mixture --------------------------------------------------------


def test_condition_of_one_gaussian_is_the_textbook_formula():
    mean, cov = torch.tensor([1.0, -2.0]), torch.tensor([[2.0, 0.6], [0.6, 1.0]])
    g = GaussianMixture(torch.ones(1), mean[None], cov[None])
    c = g.condition([0], torch.tensor([3.0]))
    # x2 | x1 = a  ~  N(mu2 + s12 / s11 (a - mu1), s22 - s12^2 / s11)
    assert c.means.item() == pytest.approx(-2.0 + 0.6 / 2.0 * (3.0 - 1.0))
    assert c.covs.item() == pytest.approx(1.0 - 0.6**2 / 2.0)


def test_condition_of_a_mixture_is_the_normalised_joint_density_slice():
    mix = two_correlated()
    a = 0.3
    cond = mix.condition([0], torch.tensor([a]))
    x2 = torch.linspace(-6, 6, 4001, dtype=torch.float64)
    joint = mix.log_prob(torch.stack([torch.full_like(x2, a), x2], 1)).exp()
    density = joint / torch.trapezoid(joint, x2)  # p(x2 | x1 = a) = p(a, x2) / p(a), by quadrature
    assert torch.allclose(cond.log_prob(x2[:, None]).exp(), density, atol=1e-6)


def test_condition_rejects_bad_coordinates():
    mix = two_correlated()
    with pytest.raises(ValueError, match="proper subset"):
        mix.condition([0, 1], torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="one per known coordinate"):
        mix.condition([0], torch.tensor([0.0, 1.0]))


# --- RePaint's path ---------------------------------------------------------------------------


def test_repaint_path_without_resampling_is_one_pass_down():
    assert repaint_path(5) == [0, 1, 2, 3, 4, 5]


def test_repaint_path_counts_and_moves():
    path = repaint_path(10, resample=3, jump=2)
    moves = [b - a for a, b in zip(path, path[1:])]
    assert path[0] == 0 and path[-1] == 10 and set(moves) == {-1, 1}
    # jump points 2, 4, 6, 8: each stretch of 2 steps is redone twice more -> 10 + 4 * 2 * 2 steps down
    assert moves.count(1) == 10 + 4 * 2 * 2
    assert moves.count(-1) == 4 * 2 * 2


def test_repaint_path_rejects_bad_knobs():
    with pytest.raises(ValueError, match="resample"):
        repaint_path(10, resample=0)
    with pytest.raises(ValueError, match="smaller than"):
        repaint_path(10, resample=2, jump=10)


# --- inpainting: exact properties ----------------------------------------------------------


def test_known_part_is_reproduced_exactly_and_ones_mask_returns_the_input(cosine):
    oracle = MixtureEpsilon(two_correlated(), cosine)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    mask = (torch.rand(64, 2, generator=g) < 0.5).float()
    out = inpaint(oracle, cosine, x, mask, steps=20, resample=2, jump=2, generator=g, progress=False)
    assert torch.equal(out[mask == 1], x[mask == 1])
    assert not torch.equal(out[mask == 0], x[mask == 0])
    assert torch.equal(inpaint(oracle, cosine, x, torch.ones_like(x), steps=10, generator=g, progress=False), x)


def test_zero_mask_is_ordinary_sampling_with_the_same_seed(cosine):
    oracle = MixtureEpsilon(two_correlated(), cosine)
    x = torch.zeros(32, 2)
    for eta in (0.0, 1.0):
        a = inpaint(oracle, cosine, x, torch.zeros_like(x), steps=25, eta=eta,
                    generator=torch.Generator().manual_seed(3), progress=False)
        b = ddim_sample(oracle, cosine, (32, 2), steps=25, eta=eta, generator=torch.Generator().manual_seed(3), progress=False)
        assert torch.equal(a, b)


def test_a_mask_shared_by_the_batch_broadcasts(cosine):
    oracle = MixtureEpsilon(two_correlated(), cosine)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    out = inpaint(oracle, cosine, x, torch.tensor([[1.0, 0.0]]), steps=10, generator=torch.Generator().manual_seed(1),
                  progress=False)
    assert torch.equal(out[:, 0], x[:, 0])


def test_bad_masks_get_clear_errors():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="mask has shape"):
        check_mask(torch.ones(4, 3), x)
    with pytest.raises(ValueError, match="exactly 0 or 1"):
        check_mask(torch.full((4, 2), 0.5), x)
    with pytest.raises(TypeError, match="tensor"):
        check_mask([[1, 0]] * 4, x)


# --- inpainting: the 2-D exact check --------------------------------------------------------


def test_repaint_matches_the_exact_conditional_where_replacement_fails(cosine):
    """Inpaint x2 given x1 = 0 with the exact epsilon. The exact answer is bimodal at +-2.2
    (two_correlated). Replacement sees the known coordinate only through its noised copies, and
    misses badly; RePaint's resampling (r = 5) brings it to within a small factor of the floor."""
    mix = two_correlated()
    oracle = MixtureEpsilon(mix, cosine)
    cond = mix.condition([0], torch.tensor([0.0]))
    n = 1000
    ref = cond.sample(n, generator=torch.Generator().manual_seed(1))
    floor = sum(energy_distance(cond.sample(n, generator=torch.Generator().manual_seed(10 + s)), ref) for s in range(5)) / 5
    x = torch.zeros(n, 2)
    mask = torch.tensor([[1.0, 0.0]])

    def ed(resample: int) -> float:
        out = inpaint(oracle, cosine, x, mask, steps=50, resample=resample, generator=torch.Generator().manual_seed(0),
                      progress=False)
        return energy_distance(out[:, 1:], ref) / floor

    naive, repaint = ed(1), ed(5)
    assert naive > 30  # measured 86 x the floor
    assert repaint < 10  # measured 5.4 x
    assert repaint < naive / 5


# --- SDEdit ---------------------------------------------------------------------------------


def test_sdedit_with_the_exact_epsilon_keeps_the_data_distribution(cosine):
    """From x ~ data, noising to t0 gives exactly q(x_t0); the exact reverse process brings it back
    to the data distribution, whatever t0 (DDPM steps, eta = 1)."""
    mix = two_correlated()
    oracle = MixtureEpsilon(mix, cosine)
    n = 1000
    x = mix.sample(n, generator=torch.Generator().manual_seed(0))
    ref = mix.sample(n, generator=torch.Generator().manual_seed(1))
    floor = energy_distance(mix.sample(n, generator=torch.Generator().manual_seed(2)), ref)
    out = sdedit(oracle, cosine, x, 600, steps=100, generator=torch.Generator().manual_seed(3), progress=False)
    assert energy_distance(out, ref) < 4 * floor


def test_sdedit_moves_further_from_the_input_as_t0_grows(cosine):
    mix = two_correlated()
    oracle = MixtureEpsilon(mix, cosine)
    x = mix.sample(500, generator=torch.Generator().manual_seed(0))
    moved = [float((sdedit(oracle, cosine, x, t0, steps=min(50, t0 + 1), generator=torch.Generator().manual_seed(1),
                           progress=False) - x).norm(dim=1).mean()) for t0 in (10, 200, 500, 999)]
    assert moved == sorted(moved) and moved[0] < 0.2 and moved[-1] > 1.5


def test_sdedit_rejects_bad_t0_and_steps(cosine):
    oracle = MixtureEpsilon(two_correlated(), cosine)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="t0 must be"):
        sdedit(oracle, cosine, x, 1000)
    with pytest.raises(ValueError, match="t0 must be"):
        sdedit(oracle, cosine, x, -1)
    with pytest.raises(ValueError, match="steps must be"):
        sdedit(oracle, cosine, x, 10, steps=12)
    assert math.isfinite(float(sdedit(oracle, cosine, x, 0, progress=False).sum()))


def test_block_sketch_fills_exactly_the_inked_blocks():
    """A hand-made 8 x 8 image: the top-left 4 x 4 block is mostly ink (mean 0), the others hold a single inked
    pixel (mean -0.875, below the threshold): only the top-left block becomes white."""
    image = -torch.ones(1, 1, 8, 8)
    image[0, 0, :4, :4] = 1.0
    image[0, 0, :2, :4] = -1.0          # half of the block: its mean is 0 > -0.5
    image[0, 0, 5, 6] = 1.0             # one pixel in the bottom-right block: mean -0.875
    sketch = block_sketch(image)
    expected = -torch.ones(1, 1, 8, 8)
    expected[0, 0, :4, :4] = 1.0
    assert torch.equal(sketch, expected)
    with pytest.raises(ValueError, match="divisible by block=3"):
        block_sketch(image, block=3)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        block_sketch(image[0])


def test_editing_samplers_return_a_trajectory_like_every_sampler(cosine):
    oracle = MixtureEpsilon(two_correlated(), cosine)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1.0, 0.0]])
    out, path = inpaint(oracle, cosine, x, mask, steps=10, resample=2, jump=2,
                        generator=torch.Generator().manual_seed(1), progress=False, return_trajectory=True)
    assert torch.equal(out, inpaint(oracle, cosine, x, mask, steps=10, resample=2, jump=2,
                                    generator=torch.Generator().manual_seed(1), progress=False))
    moves = len(repaint_path(10, 2, 2)) - 1  # every move down and every RePaint jump up is one recorded state
    assert path.xs.shape == (moves + 1, 6, 2) and len(path.timesteps) == moves and torch.equal(path.xs[-1], out)
    assert path.timesteps[0] == 900 and path.timesteps[-1] == 0  # leading spacing of 10 steps: 900, 800, ..., 0
    edited, path = sdedit(oracle, cosine, x, 499, steps=5, generator=torch.Generator().manual_seed(2), progress=False,
                          return_trajectory=True)
    assert path.timesteps.tolist() == [499, 399, 299, 199, 99] and torch.equal(path.xs[-1], edited)
