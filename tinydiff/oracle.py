"""Exact ("oracle") denoisers for Gaussian-mixture data.

If x_0 follows a :class:`~tinydiff.data.GaussianMixture`, then so does every
x_t (``mixture.noised(alpha_bar_t)``), and the optimal epsilon-prediction is
known in closed form:

    eps*(x_t, t) = -sqrt(1 - alpha_bar_t) * grad log q_t(x_t)     (Song et al. 2021, eq. 7; Vincent 2011)

An oracle plugs into every sampler in place of a trained network. If a sampler
run with the oracle does not reproduce the mixture, the *sampler* is wrong --
the sanity check to run before blaming the training.

For guidance on a mixture labelled by component, :func:`tilted_log_prob` is the density that guidance
at scale s asks for, p_s(x) ∝ p(x) p(y | x)^s, and :func:`sample_tilted` draws exact samples of it:
the reference a guided sampler is measured against (notebook 07).
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


def _check_tilt(mixture: GaussianMixture, y: int, scale: float) -> None:
    if not 0 <= int(y) < mixture.n_components:
        raise ValueError(f"y must be a component index 0..{mixture.n_components - 1}, got {y}")
    if isinstance(scale, bool) or not math.isfinite(float(scale)) or float(scale) < 0:
        raise ValueError(f"the guidance scale must be a finite number >= 0, got {scale!r}")


def tilted_log_prob(mixture: GaussianMixture, y: int, scale: float, x: Tensor) -> Tensor:
    """log p_s(x) up to a constant: the density that guidance at scale s asks for, for a mixture labelled by component.

    With p(x | y) component y, p(y) its weight and p(y | x) its responsibility, Bayes' rule gives three
    forms of one density (each up to its own constant):

        p_s(x)  ∝  p(x) p(y | x)^s  ∝  p(x | y) p(y | x)^(s - 1)  ∝  p(x | y)^s p(x)^(1 - s)

    The first is classifier guidance's target, the unconditional density times the classifier raised to the
    gradient scale s (Dhariwal & Nichol 2021, sec. 4.3); the second is how Ho & Salimans (2022, sec. 3.1) write
    guidance on a conditional model, with w = s - 1; the third is the "gamma-powered" density of classifier-free
    guidance, gamma = s (Bradley & Nakkiran 2024, sec. 3). Returned: the third form,
    s log p(x | y) + (1 - s) log p(x), so that s = 1 is exactly log p(x | y) and s = 0 exactly log p(x); for
    other s it is unnormalised (p_s is normalisable for every s >= 0: for s > 1, p_s <= p(x | y) / p(y)^(s - 1)).

    A guided sampler does *not* sample p_s for s other than 0 and 1, even with exact scores and infinitely many
    steps: it follows the scores of p_t(x) p_t(y | x)^s, and these are not the scores of p_s noised
    (Chidambaram et al. 2024; Bradley & Nakkiran 2024, sec. 3). Notebook 07 measures the gap.
    Shapes: x [N, D] -> [N] in x's dtype and device.
    """
    _check_tilt(mixture, y, scale)
    s = float(scale)
    log_cond = mixture.component(int(y)).log_prob(x)
    return log_cond if s == 1.0 else s * log_cond + (1.0 - s) * mixture.log_prob(x)


def sample_tilted(mixture: GaussianMixture, y: int, scale: float, n: int,
                  generator: torch.Generator | None = None) -> Tensor:
    """Exact samples [n, D] (float32, CPU) of p_s, the tilted density of :func:`tilted_log_prob`, by rejection sampling.

    For s >= 1, p_s ∝ p(x | y) p(y | x)^(s - 1): draw from component y and keep a draw with probability
    p(y | x)^(s - 1) <= 1. For s < 1, p_s ∝ p(x) p(y | x)^s: draw from the mixture and keep a draw with
    probability p(y | x)^s. Either way the kept draws follow p_s exactly. s = 1 keeps every draw of p(x | y),
    s = 0 every draw of p(x). Signature as ``GaussianMixture.sample`` after the first three arguments, so
    ``functools.partial(sample_tilted, mixture, y, s)`` can be given to ``metrics.energy_distance_floor``.
    """
    _check_tilt(mixture, y, scale)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    s, y = float(scale), int(y)
    proposal, power = (mixture.component(y), s - 1.0) if s >= 1.0 else (mixture, s)
    device = generator.device if generator is not None else torch.device("cpu")
    kept, count, drawn = [], 0, 0
    while count < n:
        batch = max(2 * (n - count), 256)
        x = proposal.sample(batch, generator=generator).cpu()
        keep_prob = mixture.responsibilities(x.double())[:, y] ** power
        u = torch.rand(batch, generator=generator, dtype=torch.float64 if device.type == "cpu" else torch.float32,
                       device=device).cpu().double()  # no float64 off the CPU (MPS has none)
        keep = u < keep_prob
        kept.append(x[keep])
        count, drawn = count + int(keep.sum()), drawn + batch
        if drawn > 1000 * n + 100_000 and count < n:
            raise ValueError(f"rejection sampling keeps only {count} of {drawn} draws at s = {s:g}: p_s is too far "
                             "from the proposal for this sampler")
    return torch.cat(kept)[:n]
