"""Noise schedules: how much signal survives at each step of the forward process.

=========================================================================
TIMESTEPS ARE 0-BASED INDICES  t = 0, 1, ..., T-1  EVERYWHERE IN TINYDIFF.
Index t is the paper's step t+1 (as in diffusers): ``betas[0]`` is Ho et
al.'s beta_1, ``alpha_bars[T-1]`` is their alpha_bar_T. "Before step 0"
(the clean data x_0) has alpha_bar = 1 by definition.
=========================================================================

A schedule is fully described by ``betas`` [T]; everything else follows
(Ho et al. 2020, sec. 2 and eq. 4):

    alpha_t     = 1 - beta_t
    alpha_bar_t = prod_{s <= t} alpha_s          q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    SNR(t)      = alpha_bar_t / (1 - alpha_bar_t)  (Kingma et al. 2021, eq. 2)

``linear`` and ``scaled_linear`` are the curves diffusers calls so; ``cosine`` is its
``squaredcos_cap_v2``; ``sigmoid`` is Chen 2023's curve, not diffusers' ``sigmoid``
(README, "tinydiff and diffusers", lists every name that differs).

Example::

    >>> from tinydiff import schedules
    >>> s = schedules.get("cosine", T=1000)
    >>> s.alpha_bars.shape
    torch.Size([1000])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

NAMES = ("linear", "cosine", "sigmoid", "scaled_linear")
"""The schedule names that :func:`get` knows."""


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete noise schedule of ``T`` steps (0-based indices, see module docstring).

    All tensors are 1-D of length ``T``, float64, on the CPU; samplers convert
    them to the data's dtype and device when they use them. Each table is computed
    once, on first use, and kept (the schedule is immutable, so it never goes stale):
    a sampler that reads ``alpha_bars`` at every step does not redo the cumulative product.
    """

    name: str
    betas: Tensor

    def __post_init__(self) -> None:
        b = self.betas
        if b.ndim != 1 or b.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {list(b.shape)}")
        if not torch.isfinite(b).all() or (b <= 0).any() or (b >= 1).any():
            raise ValueError("every beta must lie strictly between 0 and 1")

    def __eq__(self, other: object) -> bool:
        """Two schedules are equal when their names and betas are (a dataclass's default == would
        compare the tensors elementwise and fail on the ambiguous truth value)."""
        if not isinstance(other, Schedule):
            return NotImplemented
        return self.name == other.name and self.betas.shape == other.betas.shape and bool(torch.equal(self.betas, other.betas))

    def __hash__(self) -> int:
        return hash((self.name, self.T))

    @property
    def T(self) -> int:
        """Number of diffusion steps; valid indices are 0 .. T-1."""
        return self.betas.numel()

    @cached_property
    def alphas(self) -> Tensor:
        """alpha_t = 1 - beta_t, shape [T]."""
        return 1.0 - self.betas

    @cached_property
    def alpha_bars(self) -> Tensor:
        """alpha_bar_t = prod_{s<=t} alpha_s (Ho et al. 2020, eq. 4), shape [T], strictly decreasing."""
        return torch.cumprod(self.alphas, dim=0)

    @cached_property
    def alpha_bars_prev(self) -> Tensor:
        """alpha_bar of the step before t, with alpha_bar = 1 before index 0 (clean data), shape [T]."""
        ab = self.alpha_bars
        return torch.cat([ab.new_ones(1), ab[:-1]])

    @cached_property
    def sqrt_alpha_bars(self) -> Tensor:
        """sqrt(alpha_bar_t), the signal coefficient of q(x_t | x_0) (Ho et al. 2020, eq. 4), shape [T]."""
        return self.alpha_bars.sqrt()

    @cached_property
    def sqrt_one_minus_alpha_bars(self) -> Tensor:
        """sqrt(1 - alpha_bar_t), the noise coefficient of q(x_t | x_0) (Ho et al. 2020, eq. 4), shape [T]."""
        return (1.0 - self.alpha_bars).sqrt()

    @cached_property
    def posterior_coef_x0(self) -> Tensor:
        """sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t): the weight of x_0 in the mean of q(x_{t-1} | x_t, x_0)
        (Ho et al. 2020, eq. 7), shape [T]. Computed in float64: 1 - alpha_bar_0 is ~1e-4."""
        return self.alpha_bars_prev.sqrt() * self.betas / (1.0 - self.alpha_bars)

    @cached_property
    def posterior_coef_xt(self) -> Tensor:
        """sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t): the weight of x_t in the same mean (eq. 7), shape [T]."""
        return self.alphas.sqrt() * (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars)

    @cached_property
    def posterior_variances(self) -> Tensor:
        """beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t, the variance of q(x_{t-1} | x_t, x_0)
        (Ho et al. 2020, eq. 7), shape [T]; 0 at t = 0, where x_{t-1} is the clean data."""
        return (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars) * self.betas

    @cached_property
    def snr(self) -> Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) (Kingma et al. 2021, eq. 2), shape [T]."""
        ab = self.alpha_bars
        return ab / (1.0 - ab)

    @cached_property
    def log_snr(self) -> Tensor:
        """log SNR = log(alpha_bar) - log(1 - alpha_bar), shape [T]; decreasing in t."""
        ab = self.alpha_bars
        return torch.log(ab) - torch.log1p(-ab)

    @cached_property
    def sigmas(self) -> Tensor:
        """Noise level of the equivalent variance-exploding process, sqrt((1 - alpha_bar) / alpha_bar), shape [T].

        x_t / sqrt(alpha_bar_t) = x_0 + sigma_t * eps (Song et al. 2021, sec. 3.4; Karras et al. 2022, eq. 4).
        """
        return self.snr.rsqrt()

    def __repr__(self) -> str:
        ab = self.alpha_bars
        return f"Schedule({self.name!r}, T={self.T}, alpha_bar[0]={ab[0]:.5f}, alpha_bar[T-1]={ab[-1]:.3g})"


def betas_from_alpha_bar(alpha_bar_fn, T: int, max_beta: float = 0.999) -> Tensor:
    """Discretise a continuous alpha_bar(tau), tau in [0, 1], into T betas.

    beta_t = 1 - alpha_bar((t+1)/T) / alpha_bar(t/T), clipped at ``max_beta``
    (Nichol & Dhariwal 2021, sec. 3.2: "we clip beta_t to be no larger than
    0.999 to prevent singularities at the end of the diffusion process").
    Index t is the paper's step t+1, so alpha_bars[t] = alpha_bar((t+1)/T)
    wherever no clipping happens.
    """
    tau = torch.arange(T + 1, dtype=torch.float64) / T
    ab = alpha_bar_fn(tau)
    betas = 1.0 - ab[1:] / ab[:-1]
    return betas.clamp(min=1e-12, max=max_beta)


def linear(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Linear betas from 1e-4 to 0.02 (Ho et al. 2020, sec. 4: "beta_1 = 1e-4 to beta_T = 0.02")."""
    return Schedule("linear", torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def cosine(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17).

    alpha_bar(t) = f(t) / f(0),  f(t) = cos^2( (t/T + s) / (1 + s) * pi/2 ),  s = 0.008,
    betas from consecutive ratios, clipped at 0.999 (diffusers: ``squaredcos_cap_v2``).
    """

    def f(tau: Tensor) -> Tensor:
        return torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2

    return Schedule("cosine", betas_from_alpha_bar(lambda tau: f(tau) / f(torch.zeros(())), T, max_beta))


def sigmoid(T: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = 0.999) -> Schedule:
    """Sigmoid schedule of Chen 2023, "On the Importance of Noise Scheduling for Diffusion Models", Algorithm 1.

    alpha_bar(u) = (sigmoid(end/tau) - sigmoid((u (end - start) + start)/tau)) / (sigmoid(end/tau) - sigmoid(start/tau)),
    u in [0, 1]; defaults start=-3, end=3, tau=1 (Chen's; larger tau keeps more signal for longer).
    Like the cosine schedule it defines alpha_bar directly, and betas are clipped at 0.999.

    Note: diffusers' ``sigmoid`` is a different curve (sigmoid-shaped *betas* between
    beta_start and beta_end, from GeoDiff); we follow Chen because it is the one
    that is compared with the cosine schedule on images.
    """
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))

    def alpha_bar(u: Tensor) -> Tensor:
        out = (v_end - torch.sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start)
        return out.clamp(min=1e-9, max=1.0)

    return Schedule("sigmoid", betas_from_alpha_bar(alpha_bar, T, max_beta))


def scaled_linear(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Schedule:
    """Latent-diffusion schedule: sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012) (Rombach et al. 2022; diffusers ``scaled_linear``)."""
    return Schedule("scaled_linear", torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2)


def shifted(schedule: Schedule, base: int, size: int, max_beta: float = 0.999) -> Schedule:
    """``schedule`` moved to images of side ``size`` from the side ``base`` it was made for: the shifted schedule of
    Hoogeboom et al. 2023 ("simple diffusion", Sec. 3.1),

        lambda'(t) = lambda(t) + 2 log(base / size),        alpha_bar'(t) = sigmoid(lambda'(t)),

    lambda = log SNR. Why: averaging the noisy image over (size/base) x (size/base) patches leaves the signal and
    divides the noise variance by (size/base)^2, so at the same t a larger image keeps (size/base)^2 times the SNR
    at the coarse scale; the shift takes that back. For size = 2 base (64 px from 32 px) every SNR is divided by 4.
    Betas follow from consecutive ratios of alpha_bar', clipped at ``max_beta`` (as for ``cosine``), so the last
    steps may differ from the formula where a beta is clipped. Returns a Schedule of the same T, named e.g.
    ``"cosine shifted 32->64"``.
    """
    for name, value in (("base", base), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer image side in pixels, got {value!r}")
    log_snr = schedule.log_snr + 2.0 * math.log(base / size)
    alpha_bars = torch.sigmoid(log_snr)
    previous = torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])
    betas = (1.0 - alpha_bars / previous).clamp(min=1e-12, max=max_beta)
    return Schedule(f"{schedule.name} shifted {base}->{size}", betas)


_BUILDERS = {"linear": linear, "cosine": cosine, "sigmoid": sigmoid, "scaled_linear": scaled_linear}


def get(name: str, T: int = 1000, **kw: float) -> Schedule:
    """Build the named schedule with ``T`` steps; ``kw`` goes to the builder (e.g. ``s`` for cosine).

    Raises ``ValueError`` for an unknown name (listing the known ones) or T < 1.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown schedule {name!r}; known schedules are: {', '.join(NAMES)}")
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive integer number of steps, got {T!r}")
    return _BUILDERS[name](T, **kw)
