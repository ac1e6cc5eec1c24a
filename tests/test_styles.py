"""tinydiff.data.styles: stroke styles and their measures against shapes whose answer is known by hand."""

import pytest
import torch

from tinydiff.data import load_mnist
from tinydiff.data.styles import deskew, ink, shear, slant, thicken, thin, thin_half


def blank(size=15):
    return -torch.ones(1, 1, size, size)


def test_thicken_grows_a_pixel_into_a_square_and_thin_shrinks_it_back():
    x = blank()
    x[0, 0, 7, 7] = 1.0
    for r in (1, 2):
        grown = thicken(x, r)
        assert int((grown > 0).sum()) == (2 * r + 1) ** 2
        assert torch.equal(thin(grown, r), x)  # erosion undoes dilation on a convex shape away from the border
    assert float(ink(x)) == pytest.approx(1 / 225) and float(ink(thicken(x))) == pytest.approx(9 / 225)


def test_ink_of_empty_and_full_images():
    assert torch.equal(ink(torch.cat([blank(), -blank()])), torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_slant_of_a_diagonal_line_is_its_shear():
    """Pixels on x - x_c = s (y_c - y), y down: the top leans right by s pixels per pixel, so slant = s exactly."""
    for s in (1, -1, 2):
        x = blank(21)
        for k in range(-4, 5):
            x[0, 0, 10 + k, 10 - s * k] = 1.0
        assert float(slant(x)) == pytest.approx(s, abs=1e-12)
    upright = blank(21)
    upright[0, 0, 4:17, 10] = 1.0
    assert float(slant(upright)) == pytest.approx(0.0, abs=1e-12)


def test_shear_adds_its_amount_to_the_slant():
    bar = blank(32)
    bar[0, 0, 6:26, 15:17] = 1.0
    for s in (-0.4, 0.25, 0.5):
        assert float(slant(shear(bar, s))) == pytest.approx(s, abs=0.03)
    assert torch.equal(shear(bar, 0.0), bar)


def test_bad_input():
    for bad in (torch.zeros(15, 15), torch.zeros(1, 3, 8, 8)):
        with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
            ink(bad)
    for r in (0, 1.5):
        with pytest.raises(ValueError, match="radius"):
            thicken(blank(), r)


def test_thin_half_erodes_by_a_2x2_square():
    x = -torch.ones(1, 1, 8, 8)
    x[..., 2:5, 2:5] = 1.0  # a 3 x 3 square of ink
    expected = -torch.ones(1, 1, 8, 8)
    expected[..., 2:4, 2:4] = 1.0  # minimum over {i, i+1} x {j, j+1}: the square loses its last row and column
    assert torch.equal(thin_half(x), expected)


def test_shear_takes_one_amount_per_image_and_deskew_stands_digits_upright():
    x, _ = load_mnist("test", pad_to_32=True)
    x = x[:16]
    amounts = torch.linspace(-0.5, 0.5, 16)
    per_image = torch.cat([shear(x[i : i + 1], float(a)) for i, a in enumerate(amounts)])
    assert torch.allclose(shear(x, amounts), per_image, atol=1e-6)
    assert float(slant(deskew(x)).abs().max()) < 1e-4
    assert float(slant(x).abs().max()) > 0.1  # they did lean before
