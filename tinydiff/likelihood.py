"""Exact log-likelihoods from the probability-flow ODE: the instantaneous change of variables.

The probability-flow ODE (Song et al. 2021, eq. 13) is a deterministic, invertible map from data to
noise, so it carries densities along: for dx/dtau = F(x, tau),

    d log p_tau(x(tau)) / d tau = - div F(x(tau), tau)          (Chen et al. 2018, Theorem 1; Song et al. 2021, app. D.2)

In DDIM's variables x_bar = x / a, sigma_bar = s / a (a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar)) the ODE
is d x_bar / d sigma_bar = eps(a x_bar, t), whose divergence in x_bar is a * div_x eps. Integrating from the
data's level t_0 = 0 up to T-1, where x ~ N(0, I), and changing variables back from x_bar to x at both ends:

    log q_0(x_0) = log N(x_{T-1}; 0, I) + D log(a_{T-1} / a_0) + int a(sigma_bar) div_x eps(x, t) d sigma_bar

(D = data dimensions). :func:`ode_log_likelihood` solves the ODE upwards with Heun's method over the
visited steps and integrates the divergence with the trapezoidal rule in log sigma_bar on the same grid. The divergence is
exact (one backward pass per dimension, :func:`divergence`) in low dimension and Hutchinson's estimator
E_z[z^T (d eps / dx) z] (Hutchinson 1989; Grathwohl et al. 2019) otherwise, with one probe z per sample
kept for the whole solve.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .samplers import Model, _check_prediction, ddim_timesteps, denoise
from .schedules import Schedule
from .tensors import randn

EXACT_UP_TO = 16
"""Data dimensions up to which :func:`divergence` computes the trace exactly (one backward pass each)."""


def divergence(fn, x: Tensor, probe: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(fn(x), div fn(x)) for a map fn: [B, *data] -> [B, *data] that acts on each sample separately.

    Without ``probe``: the exact trace sum_i d fn_i / d x_i, one vector-Jacobian product per data
    dimension. With ``probe`` z [B, *data] (entries +-1, or z ~ N(0, I)): Hutchinson's unbiased estimate
    z^T (d fn / dx) z, one product in all (Hutchinson 1989). Shapes: -> [B, *data] and [B].
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        if probe is not None:
            (grad,) = torch.autograd.grad(out, x, grad_outputs=probe)
            return out.detach(), (grad * probe).flatten(1).sum(1).detach()
        dims = x[0].numel()
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        flat = out.flatten(1)
        for i in range(dims):
            (grad,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i + 1 < dims)
            div = div + grad.flatten(1)[:, i]
    return out.detach(), div.detach()


def ode_log_likelihood(
    model: Model,
    schedule: Schedule,
    x0: Tensor,
    *,
    steps: int | None = None,
    prediction: str = "epsilon",
    exact: bool | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> Tensor:
    """log q_0(x_0) per sample, in nats, from the probability-flow ODE of ``model`` (module docstring).

    ``x0`` [B, *data] is taken as the state at step 0 (alpha_bar_0 = 1 - beta_0, almost clean). The ODE
    is solved from step 0 up to T-1 over ``steps`` steps (default: all T), spaced as
    ``ddim_timesteps(T, steps, "linspace")``, by Heun's method in (sigma_bar, x_bar), and the divergence term
    by the trapezoidal rule in log sigma_bar on the same grid. ``exact`` picks the exact trace or Hutchinson's
    estimator (default: exact up to 16 dimensions); ``generator`` draws Hutchinson's probe.
    Returns [B] (float64, on the CPU). For bits per dimension of 8-bit data scaled to [-1, 1], see :func:`bits_per_dim`.
    """
    _check_prediction(prediction)
    if not isinstance(x0, Tensor) or x0.ndim < 2:
        raise ValueError("x0 must be a batch of data, shape [B, *data]")
    timesteps = ddim_timesteps(schedule.T, steps or schedule.T, "linspace").flip(0).tolist()  # ascending: 0 .. T-1
    exact = x0[0].numel() <= EXACT_UP_TO if exact is None else exact
    # Hutchinson: one probe per sample, the same at every level (as FFJORD does): the estimate of the
    # whole integral stays unbiased and its variance is far smaller than with a fresh probe per level
    # Rademacher entries (+-1), as Hutchinson's: z^T A z is then exact for the diagonal of A, and the
    # variance comes from the off-diagonal entries only (2 sum_{i != j} A_ij^2, vs 2 ||A||_F^2 for Gaussian z)
    probe = None if exact else randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype).sign()
    ab = schedule.alpha_bars.tolist()
    a = [math.sqrt(ab[t]) for t in timesteps]
    sb = [math.sqrt((1.0 - ab[t]) / ab[t]) for t in timesteps]

    def eps(x_bar: Tensor, i: int) -> Tensor:
        """d x_bar / d sigma_bar = eps(a x_bar, t) at level i."""
        return denoise(model, schedule, a[i] * x_bar, timesteps[i], prediction)[1]

    def slope(x_bar: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """eps at level i and its divergence in x_bar (a * div_x eps = div_x_bar of eps(a x_bar))."""
        return divergence(lambda v: eps(v, i), x_bar, probe)

    x_bar = x0.detach() / a[0]
    d, div = slope(x_bar, 0)
    integral = torch.zeros(x0.shape[0], dtype=torch.float64)  # summed in float64 on the CPU (MPS has no float64)
    for i in tqdm(range(len(timesteps) - 1), desc="likelihood ODE", disable=not progress, leave=False):
        h = sb[i + 1] - sb[i]
        with torch.no_grad():
            d_euler = eps(x_bar + h * d, i + 1)
        x_bar = x_bar + h * 0.5 * (d + d_euler)  # Heun (Karras et al. 2022, Algorithm 1), going up
        d, div_new = slope(x_bar, i + 1)
        # trapezoid in log sigma_bar: at high noise the integrand is ~ D / sigma_bar, and the cosine schedule's
        # last step (sigma_bar 642 -> 20,291) would make a trapezoid in sigma_bar itself off by D * 12 nats
        dlog = math.log(sb[i + 1] / sb[i])
        integral = integral + dlog * 0.5 * (sb[i] * div + sb[i + 1] * div_new).cpu().double()
        div = div_new
    x_top = (a[-1] * x_bar).flatten(1).cpu().double()
    D = x_top.shape[1]
    prior = -0.5 * (x_top**2).sum(1) - 0.5 * D * math.log(2 * math.pi)
    return prior + D * math.log(a[-1] / a[0]) + integral


def bits_per_dim(log_likelihood: Tensor, dims: int, bin_width: float = 2 / 255) -> Tensor:
    """Bits per dimension of discrete data from the log-density (nats) of its continuous version.

    Under uniform dequantisation (Theis et al. 2016) a discrete value's probability is the density times
    the volume of its bin, so bpd = -(log p(x) + D log(bin_width)) / (D ln 2). The default bin width is that
    of 8-bit images mapped to [-1, 1] as tinydiff does (pixel / 127.5 - 1: levels 2/255 apart).
    Shapes: [B] -> [B].
    """
    return -(log_likelihood + dims * math.log(bin_width)) / (dims * math.log(2.0))
