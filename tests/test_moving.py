"""Moving digits (notebook 17): the bounces follow the stated physics, and the frames show the digit where it is."""

import pytest
import torch

from tinydiff.data import load_mnist
from tinydiff.data.moving import bounce, moving_digits


def simulate(start, velocity, frames, high):
    """Step by step: move, and where a coordinate leaves [0, high], reflect it and flip that velocity component."""
    p, v, out = start.clone(), velocity.clone(), [start.clone()]
    for _ in range(frames - 1):
        p = p + v
        for i in range(2):
            while p[i] < 0 or p[i] > high:
                if p[i] < 0:
                    p[i], v[i] = -p[i], -v[i]
                if p[i] > high:
                    p[i], v[i] = 2 * high - p[i], -v[i]
        out.append(p.clone())
    return torch.stack(out)


def test_the_closed_form_bounce_is_the_step_by_step_physics():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        start = torch.rand(2, generator=g, dtype=torch.float64) * 16
        velocity = (torch.rand(2, generator=g, dtype=torch.float64) * 2 - 1) * 5
        torch.testing.assert_close(bounce(start, velocity, 20, 16.0), simulate(start, velocity, 20, 16.0))


def test_acceleration_is_zero_except_at_a_bounce():
    clips, labels, positions, velocity = moving_digits(*load_mnist("test", pad_to_32=True), 64, frames=16,
                                                       generator=torch.Generator().manual_seed(1))
    assert clips.shape == (64, 16, 1, 32, 32) and labels.shape == (64, 1) and positions.shape == (64, 1, 16, 2)
    assert float(positions.min()) >= 0 and float(positions.max()) <= 16
    step = positions.diff(dim=2)                                     # [B, D, 15, 2]
    acceleration = step.diff(dim=2)                                  # [B, D, 14, 2]: at frames 1..14
    # where the straight, unfolded line start + k v crosses a wall (a multiple of 16), there is a bounce
    line = positions[:, :, :1] + torch.arange(16, dtype=torch.float64)[:, None] * velocity[:, :, None]
    wall = torch.floor(line / 16)
    crossed = wall.diff(dim=2) != 0                                  # [B, D, 15, 2]: a wall between frames k, k+1
    near_bounce = crossed[:, :, 1:] | crossed[:, :, :-1]             # frame k has a crossing just before or after
    assert float(acceleration[~near_bounce].abs().max()) < 1e-9     # elsewhere the motion is straight
    assert float(acceleration[near_bounce].abs().min()) > 0          # and every bounce turns it
    assert bool(near_bounce.any())
    free = ~crossed[:, :, 0]                                         # no bounce in the first step: it is the velocity
    torch.testing.assert_close(step[:, :, 0][free], velocity[free], atol=1e-9, rtol=0)
    speed = velocity.norm(dim=-1)
    assert float(speed.min()) >= 1.0 and float(speed.max()) <= 3.0


def test_each_frame_shows_the_digit_at_its_position():
    images, labels = load_mnist("test", pad_to_32=True)
    clips, chosen, positions, _ = moving_digits(images, labels, 8, frames=6, generator=torch.Generator().manual_seed(2))
    ink = (clips + 1) / 2                                            # [B, T, 1, 32, 32]
    rows = torch.arange(32, dtype=torch.float64)
    mass = ink.double().sum((-1, -2, -3))
    centre_row = (ink.double().sum(-1).squeeze(2) * rows).sum(-1) / mass   # [B, T]
    # the centre of mass moves exactly as the rounded position does: same shape drawn, shifted by whole pixels
    moved = centre_row - centre_row[:, :1]
    corner = positions[:, 0, :, 0].round()
    torch.testing.assert_close(moved, corner - corner[:, :1], atol=1e-9, rtol=0)
    torch.testing.assert_close(mass, mass[:, :1].expand_as(mass), atol=1e-6, rtol=0)  # the ink is kept in every frame


def test_two_digits_and_bad_input():
    images, labels = load_mnist("test", pad_to_32=True)
    clips, chosen, positions, _ = moving_digits(images, labels, 4, digits=2, generator=torch.Generator().manual_seed(3))
    assert chosen.shape == (4, 2) and positions.shape == (4, 2, 12, 2) and float(clips.max()) <= 1
    with pytest.raises(ValueError, match="digit_size"):
        moving_digits(images, labels, 2, digit_size=32)
    with pytest.raises(ValueError, match="one label each"):
        moving_digits(images[:, 0], labels, 2)
