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

import math

import torch
from torch import Tensor, nn

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
        return -gather(self.schedule.sqrt_one_minus_alpha_bars, t, x_t) * self.score(x_t, t)


class MixtureClassEpsilon(nn.Module):
    """The exact *class-conditional* epsilon for mixture data, labelled by component.

    ``oracle(x_t, t, y)``: for y = k in 0..K-1 the exact eps of p(x_t | y = k) (component k,
    noised), and for y = K (``oracle.null_class``) the exact eps of the whole mixture --
    what a class-conditional network trained with label dropout learns at its optimum.
    Shapes: x_t [B, D], t and y LongTensor [B] -> [B, D]. Plugs into
    :func:`tinydiff.guidance.classifier_free` like a trained network.
    """

    def __init__(self, mixture: GaussianMixture, schedule: Schedule) -> None:
        super().__init__()
        self.num_classes = mixture.n_components
        self.null_class = mixture.n_components
        self.schedule = schedule
        self.per_label = [MixtureEpsilon(mixture.component(k), schedule) for k in range(self.num_classes)]
        self.per_label.append(MixtureEpsilon(mixture, schedule))

    def forward(self, x_t: Tensor, t: Tensor | int, y: Tensor) -> Tensor:
        t = as_timesteps(t, x_t.shape[0], self.schedule.T, x_t.device)
        if y.shape != (x_t.shape[0],):
            raise ValueError(f"y must have shape [B] = [{x_t.shape[0]}], got {list(y.shape)}")
        out = torch.empty_like(x_t)
        for label in torch.unique(y).tolist():
            if not 0 <= label <= self.null_class:
                raise ValueError(f"labels must lie in 0..{self.null_class} ({self.null_class} = no label), got {label}")
            rows = y == label
            out[rows] = self.per_label[label](x_t[rows], t[rows])
        return out

    def class_log_prob_grad(self, x_t: Tensor, t: Tensor | int, y: Tensor) -> Tensor:
        """The exact classifier's gradient grad log p_t(y | x_t) = grad log p_t(x_t | y) - grad log p_t(x_t) (Bayes), [B, D]."""
        t = as_timesteps(t, x_t.shape[0], self.schedule.T, x_t.device)
        scale = gather(self.schedule.sqrt_one_minus_alpha_bars, t, x_t)
        null = torch.full_like(y, self.null_class)
        return -(self(x_t, t, y) - self(x_t, t, null)) / scale


def gaussian_ode_solution(mean: Tensor, cov: Tensor, x: Tensor, alpha_bar_from: float, alpha_bar_to: float) -> Tensor:
    """The exact probability-flow ODE map between two noise levels, for Gaussian data x_0 ~ N(mean, cov).

    In DDIM's variables x_bar = x / sqrt(alpha_bar), sigma_bar = sqrt((1 - alpha_bar) / alpha_bar), x_bar
    follows N(mean, cov + sigma_bar^2 I) and the ODE d x_bar / d sigma_bar = eps = sigma_bar (cov + sigma_bar^2 I)^{-1}
    (x_bar - mean) (Song, Meng & Ermon 2021, eq. 14; Karras et al. 2022, eq. 4) is linear. In the eigenbasis
    of cov (variances v) each coordinate scales as sqrt(v + sigma_bar^2), so

        x_bar_to = mean + (cov + sigma_bar_to^2 I)^{1/2} (cov + sigma_bar_from^2 I)^{-1/2} (x_bar_from - mean).

    ``alpha_bar_to = 1`` gives the ODE's end point x_0. The reference every ODE solver's error is measured
    against (notebook 09). Shapes: mean [D], cov [D, D], x [B, D] -> [B, D] (x's dtype and device).
    """
    mean = torch.as_tensor(mean, dtype=torch.float64)
    cov = torch.as_tensor(cov, dtype=torch.float64)
    if x.ndim != 2 or mean.shape != (x.shape[1],) or cov.shape != (x.shape[1], x.shape[1]):
        raise ValueError(f"need x [B, D], mean [D] and cov [D, D]; got {list(x.shape)}, {list(mean.shape)}, {list(cov.shape)}")
    for name, ab in (("alpha_bar_from", alpha_bar_from), ("alpha_bar_to", alpha_bar_to)):
        if not 0.0 < float(ab) <= 1.0:
            raise ValueError(f"{name} must lie in (0, 1], got {float(ab)}")
    var_from = (1.0 - float(alpha_bar_from)) / float(alpha_bar_from)
    var_to = (1.0 - float(alpha_bar_to)) / float(alpha_bar_to)
    v, U = torch.linalg.eigh(cov)
    factor = U @ torch.diag(((v + var_to) / (v + var_from)).sqrt()) @ U.T
    x_bar = x.to(torch.float64).cpu() / math.sqrt(float(alpha_bar_from))
    x_bar_to = mean + (x_bar - mean) @ factor.T
    return (math.sqrt(float(alpha_bar_to)) * x_bar_to).to(dtype=x.dtype, device=x.device)
