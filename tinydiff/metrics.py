"""Sample-quality metrics: measure, do not eyeball.

``energy_distance`` compares two point clouds (2-D toys). Always report it
beside its *noise floor*: the same statistic between two independent draws
of the true distribution of the same size, which is what a perfect sampler
would score.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_points(x: Tensor, name: str) -> None:
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape [N, D] with N >= 2, got {list(x.shape)}")


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Squared energy distance between the empirical laws of x [N, D] and y [M, D] (Szekely & Rizzo 2013, eq. 2).

    D^2(X, Y) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|

    estimated with V-statistics (all pairs, including i = j), so the value is
    always >= 0 and is 0 only for identical samples. It is 0 in the population
    iff the two laws are equal. Computed in float64 on the CPU; returns a float.
    """
    _check_points(x, "x")
    _check_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    x = x.detach().to("cpu", torch.float64)
    y = y.detach().to("cpu", torch.float64)
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return float(2 * xy - xx - yy)
