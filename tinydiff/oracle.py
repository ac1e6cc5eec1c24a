"""Exact ("oracle") denoisers for Gaussian-mixture data.

If x_0 follows a :class:`~tinydiff.data.GaussianMixture`, then so does every
x_t (``mixture.noised(alpha_bar_t)``), and the optimal epsilon-prediction is
known in closed form:

    eps*(x_t, t) = -sqrt(1 - alpha_bar_t) * grad log q_t(x_t)     (Song et al. 2021, eq. 7; Vincent 2011)

An oracle plugs into every sampler in place of a trained network. If a sampler
run with the oracle does not reproduce the mixture, the *sampler* is wrong --
the sanity check to run before blaming the training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .data.toy import GaussianMixture
from .schedules import Schedule
from .tensors import as_timesteps, gather


class MixtureEpsilon:
    """The exact epsilon-prediction model for data drawn from ``mixture``.

    Call it like a network: ``oracle(x_t, t)`` with x_t [B, D] and t a LongTensor [B]
    of 0-based indices; returns eps* [B, D] in x_t's dtype and device.
    """

    def __init__(self, mixture: GaussianMixture, schedule: Schedule) -> None:
        self.mixture = mixture
        self.schedule = schedule
        self._noised = {}

    def noised_mixture(self, t: int) -> GaussianMixture:
        """The mixture that x_t follows at 0-based step ``t`` (cached)."""
        if t not in self._noised:
            self._noised[t] = self.mixture.noised(self.schedule.alpha_bars[t])
        return self._noised[t]

    def score(self, x_t: Tensor, t: Tensor | int) -> Tensor:
        """Exact score grad log q_t(x_t), shape [B, D]."""
        t = as_timesteps(t, x_t.shape[0], self.schedule.T, x_t.device)
        out = torch.empty_like(x_t)
        for step in torch.unique(t).tolist():
            rows = t == step
            out[rows] = self.noised_mixture(step).score(x_t[rows])
        return out

    def __call__(self, x_t: Tensor, t: Tensor | int) -> Tensor:
        t = as_timesteps(t, x_t.shape[0], self.schedule.T, x_t.device)
        return -gather((1.0 - self.schedule.alpha_bars).sqrt(), t, x_t) * self.score(x_t, t)
