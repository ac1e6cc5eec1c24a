"""Flow matching on the straight path: x_t = (1 - t) x_0 + t eps, learn the velocity u = eps - x_0.

Conventions, in one place (mixing two of them is the most reported flow-matching bug):

- **Time** t is continuous in [0, 1]; **t = 0 is data, t = 1 is noise**, the direction of tinydiff's integer
  steps (step 0 nearly clean, step T-1 nearly noise), of rectified flow's code for Stable Diffusion 3 (Esser et al.
  2024) and of minRF. facebookresearch/flow_matching and torchcfm run the other way (noise at t = 0, data x_1 at
  t = 1, target x_1 - x_0): their velocity is minus ours at time 1 - t.
- **The path** is the straight line x_t = (1 - t) x_0 + t eps (Liu et al. 2023; Lipman et al. 2023 with
  sigma_min = 0), one of the Gaussian paths x_t = a_t x_0 + b_t eps; DDPM's is a_t = sqrt(alpha_bar),
  b_t = sqrt(1 - alpha_bar).
- **The target** is the path's velocity u = d x_t / d t = eps - x_0, the same for every t. The equivalent form
  (x_t - x_0) / t, or the data-at-1 form (x_1 - x_t) / (1 - t), divides by a time that goes to 0 at one end.
- **What the network sees:** ``model(x_t, network_time(t))`` with network_time(t) = 999 t, so t = 1 enters the
  time embedding like tinydiff's integer step T - 1 = 999 of a 1,000-step schedule and t = 0 like step 0: the MLP
  and the UNet work unchanged.
- **Sampling** integrates dx/dt = u from t = 1 down to t = 0 on ``steps`` equal steps; the number of steps is
  always given explicitly.

Shapes: ``x`` [B, *data]; ``t`` a float or a tensor [B] of times in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

from .data.toy import GaussianMixture
from .losses import Objective
from .samplers import Model, Trajectory, run, start
from .tensors import randn, to_device

VelocityModel = Model
"""A flow-matching network, called as every model is, ``model(x_t, t)`` -> [B, *data], but with ``t`` a float
tensor [B] of network times 999 t (:func:`network_time`) and the velocity u as its output -- where a diffusion
model (:data:`tinydiff.samplers.Model`) gets 0-based integer steps and predicts epsilon, x_0 or v. The call is the
same so that one MLP or UNet serves both; the name says which one a function expects."""

TIME_SCALE = 999.0
"""network_time(t) = TIME_SCALE * t: the flow time as the network's time embedding sees it (t = 1 <-> step 999)."""


def check_times(t: Tensor | float, batch: int | None = None) -> Tensor | float:
    """Check that flow times lie in [0, 1] (and, for a tensor, that it has shape [B]); returns t unchanged."""
    if isinstance(t, Tensor):
        if t.ndim != 1 or (batch is not None and t.shape[0] != batch):
            raise ValueError(f"t must be a float or a tensor of shape [B] = [{batch}], got shape {list(t.shape)}")
        if t.device.type != "cpu":
            return t  # values are checked on the host only: reading a GPU tensor would make the host wait for it
        bad = (t < 0) | (t > 1) | torch.isnan(t)
        if bad.any():
            raise ValueError(f"flow times must lie in [0, 1] (0 = data, 1 = noise), got {float(t[bad][0])}")
        return t
    if not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"flow times must lie in [0, 1] (0 = data, 1 = noise), got {t}")
    return float(t)


def _column(t: Tensor | float, like: Tensor) -> Tensor | float:
    """t as a number, or as a [B, 1, ..., 1] tensor in like's dtype and device, to broadcast over [B, *data]."""
    if isinstance(t, Tensor):
        return t.to(dtype=like.dtype, device=like.device).reshape(-1, *[1] * (like.ndim - 1))
    return t


def network_time(t: Tensor | float, batch: int, device: torch.device | None = None) -> Tensor:
    """The time fed to the network, TIME_SCALE * t, as a float tensor [B]."""
    t = check_times(t, batch)
    if isinstance(t, Tensor):
        return TIME_SCALE * t.to(device=device, dtype=torch.float32)
    return torch.full((batch,), TIME_SCALE * t, device=device)


def path_sample(x0: Tensor, t: Tensor | float, eps: Tensor) -> Tensor:
    """x_t = (1 - t) x_0 + t eps, the straight path (Liu et al. 2023, eq. 1; Lipman et al. 2023, eq. 20 with
    sigma_min = 0). x0, eps [B, *data]; t a float or [B]. Returns [B, *data]."""
    if x0.shape != eps.shape:
        raise ValueError(f"x0 and eps must have the same shape, got {list(x0.shape)} and {list(eps.shape)}")
    tc = _column(check_times(t, x0.shape[0]), x0)
    return (1 - tc) * x0 + tc * eps


def velocity_target(x0: Tensor, eps: Tensor) -> Tensor:
    """The straight path's velocity u = d x_t / dt = eps - x_0 (Liu et al. 2023, eq. 1), [B, *data]."""
    if x0.shape != eps.shape:
        raise ValueError(f"x0 and eps must have the same shape, got {list(x0.shape)} and {list(eps.shape)}")
    return eps - x0


def x0_from_velocity(x_t: Tensor, t: Tensor | float, u: Tensor) -> Tensor:
    """x_0 = x_t - t u: where the path through x_t with velocity u started (exact for the straight path)."""
    return x_t - _column(check_times(t, x_t.shape[0]), x_t) * u


def eps_from_velocity(x_t: Tensor, t: Tensor | float, u: Tensor) -> Tensor:
    """eps = x_t + (1 - t) u: where the path through x_t with velocity u ends at t = 1."""
    return x_t + (1 - _column(check_times(t, x_t.shape[0]), x_t)) * u


def velocity_from_x0(x_t: Tensor, t: Tensor | float, x0_hat: Tensor) -> Tensor:
    """u = (x_t - x0_hat) / t: the velocity of the straight path through x_t that starts at x0_hat (t > 0).
    Divides by t, so it blows up at the data end; the flow samplers never evaluate at t = 0."""
    t = check_times(t, x_t.shape[0])
    if not isinstance(t, Tensor) or t.device.type == "cpu":  # host values only: nothing waits for the device
        if bool(torch.as_tensor(t == 0).any()):
            raise ValueError("velocity_from_x0 divides by t: at t = 0 (data) the velocity is not determined by x0")
    return (x_t - x0_hat) / _column(t, x_t)


def velocity(model: VelocityModel, x_t: Tensor, t: float) -> Tensor:
    """Run a velocity model once at one time t for the whole batch: ``model(x_t, network_time(t))`` [B, *data]."""
    out = model(x_t, network_time(t, x_t.shape[0], x_t.device))
    if not isinstance(out, Tensor) or out.shape != x_t.shape:
        got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the model must return a velocity shaped like x_t {list(x_t.shape)}, got {got}")
    return out


def flow_matching_loss(model: VelocityModel, x0: Tensor, t: Tensor | None = None, eps: Tensor | None = None, *,
                       generator: torch.Generator | None = None, **model_kwargs) -> Tensor:
    """The conditional flow-matching loss E_{t, x_0, eps} |u_theta(x_t, t) - (eps - x_0)|^2 (Lipman et al. 2023,
    eq. 9 on the straight path; Liu et al. 2023, eq. 1), averaged over elements.

    x0 [B, *data]; t [B] ~ U[0, 1] and eps ~ N(0, I) [B, *data] are drawn (through ``generator``) unless given --
    reflow gives eps, paired with x0 by the ODE. Returns a scalar. Its minimum over all functions is
    E|eps - x_0 - E[eps - x_0 | x_t]|^2, not 0: the same x_t lies on many straight lines.
    """
    if t is None:
        on = generator.device if generator is not None else x0.device  # a generator draws on its own device only
        t = to_device(torch.rand(x0.shape[0], generator=generator, device=on, dtype=x0.dtype), x0.device)
    if eps is None:
        eps = randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = path_sample(x0, t, eps)
    out = model(x_t, network_time(t, x0.shape[0], x0.device), **model_kwargs)
    if out.shape != x0.shape:
        raise ValueError(f"the model must return a velocity shaped like x_t {list(x0.shape)}, got {list(out.shape)}")
    return (out.float() - velocity_target(x0, eps).float()).pow(2).mean()


class FlowMatching(Objective):
    """Flow matching as a :class:`~tinydiff.losses.Objective` for :func:`tinydiff.train.train`:
    per batch, t ~ U[0, 1] [B] and eps ~ N(0, I), then :func:`flow_matching_loss`. Needs no schedule:
    ``train(model, None, data, objective=FlowMatching())``."""

    def draw(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        t = torch.rand(x0.shape[0], generator=generator, device=generator.device).to(device=x0.device, dtype=x0.dtype)
        return t, randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)

    def loss(self, model, x0: Tensor, draws: tuple[Tensor, Tensor], **model_kwargs) -> Tensor:
        t, eps = draws
        return flow_matching_loss(model, x0, t, eps, **model_kwargs)


class Reflow(FlowMatching):
    """Reflow (Liu et al. 2023, "reflow"): flow matching on a *fixed coupling* of (sample, noise) pairs.

    The data are the pairs [N, 2, *data] from :func:`reflow_pairs` -- ``pairs[:, 0]`` the ODE's output x_0,
    ``pairs[:, 1]`` the noise x_1 it started from. Only t is drawn; the straight line joins the two ends of
    one ODE path, so the new flow's paths cross less and are straighter.
    """

    def draw(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor]:
        if x0.ndim < 3 or x0.shape[1] != 2:
            raise ValueError(f"Reflow trains on pairs [B, 2, *data] (tinydiff.flow.reflow_pairs), got {list(x0.shape)}")
        t = torch.rand(x0.shape[0], generator=generator, device=generator.device).to(device=x0.device, dtype=x0.dtype)
        return (t,)

    def loss(self, model, x0: Tensor, draws: tuple[Tensor], **model_kwargs) -> Tensor:
        return flow_matching_loss(model, x0[:, 0], draws[0], x0[:, 1], **model_kwargs)


FLOW_METHODS = ("euler", "heun")


@torch.no_grad()
def flow_sample(model: VelocityModel, shape, *, steps: int, method: str = "euler", x_T: Tensor | None = None,
                generator: torch.Generator | None = None, progress: bool = True,
                return_trajectory: bool = False) -> Tensor | tuple[Tensor, Trajectory]:
    """Integrate dx/dt = u(x, t) from t = 1 (noise x_1 ~ N(0, I)) to t = 0 on ``steps`` equal steps.

    The starting noise is called ``x_T`` as in every sampler (the state at the last time, here T = 1): pass it to
    fix the start, or leave it None to draw it through ``generator``.

    ``euler``: x_s = x_t + (s - t) u(x_t, t), one network call a step (first order).
    ``heun``: the Euler step, then the average of the velocities at both ends (Karras et al. 2022, Alg. 1;
    second order, two calls a step). Returns x_0 [B, *data]; with ``return_trajectory`` also a
    :class:`~tinydiff.samplers.Trajectory` whose ``timesteps`` are the flow times visited (floats) and whose
    ``x0_preds`` are x_t - t u.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int (the number of ODE steps from t = 1 to 0), got {steps!r}")
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(FLOW_METHODS)}")
    x, _ = start(model, shape, x_T, generator)
    times = [1.0 - i / steps for i in range(steps)] + [0.0]

    def update(i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        t, s = times[i], times[i + 1]
        u = velocity(model, x, t)
        x_next = x + (s - t) * u
        if method == "heun":
            x_next = x + (s - t) * 0.5 * (u + velocity(model, x_next, s))
        return x_next, x - t * u

    return run(update, x, times[:-1], desc=f"flow {method}-{steps}", progress=progress,
               return_trajectory=return_trajectory)


@torch.no_grad()
def reflow_pairs(model: VelocityModel, shape, *, steps: int, method: str = "heun", generator: torch.Generator | None = None,
                 batch_size: int = 10_000, progress: bool = True) -> Tensor:
    """The coupling reflow trains on: draw noise x_1 ~ N(0, I) and integrate the ODE to x_0 (Liu et al. 2023,
    "reflow": the pairs (Z_0, Z_1) of the flow just trained). ``shape`` [N, *data]; returns pairs [N, 2, *data] with ``[:, 0]`` = x_0 and
    ``[:, 1]`` = the x_1 it came from, on the model's device. Drawn in batches of ``batch_size``."""
    pairs = []
    for lo in range(0, shape[0], batch_size):
        part = (min(batch_size, shape[0] - lo), *shape[1:])
        x_1, _ = start(model, part, None, generator)
        x_0 = flow_sample(model, part, steps=steps, method=method, x_T=x_1, progress=progress)
        pairs.append(torch.stack([x_0, x_1], dim=1))
    return torch.cat(pairs)


def straightness(trajectory: Trajectory) -> Tensor:
    """How far an ODE's paths are from straight lines: the straightness S(Z) of Liu et al. 2023,

        S = int_0^1 E || (x_1 - x_0) - u(x_t, t) ||^2 dt
          ~ sum_i (t_i - t_(i+1)) * E || (x_1 - x_0) - (x_(t_i) - x_(t_(i+1))) / (t_i - t_(i+1)) ||^2

    (x_1 - x_0 is the velocity of the straight segment, dx/dt = u along the path) from a sampler's
    trajectory: ``xs`` [S+1, B, *data] at times t_0 = 1 > ... > t_S = 0, as :func:`flow_sample` records
    them (``timesteps`` holds t_0 .. t_(S-1); the last state is at 0). It is the squared gap between each step's velocity and the
    velocity of the straight segment from the path's start to its end, summed over data dimensions and
    averaged over the batch. 0 exactly when every path is a straight line travelled at constant speed.
    Returns a 0-d float64 tensor.
    """
    xs = trajectory.xs.to(torch.float64).flatten(2)                            # [S+1, B, D]
    times = torch.cat([trajectory.timesteps.to(torch.float64), torch.zeros(1, dtype=torch.float64)])
    if times.shape[0] != xs.shape[0] or not torch.all(times[:-1] > times[1:]):
        raise ValueError("straightness needs a flow trajectory: decreasing times from 1 to 0, one per state")
    dt = times[:-1] - times[1:]                                                # [S]
    chord = xs[0] - xs[-1]                                                     # x_1 - x_0: [B, D]
    step_velocity = (xs[:-1] - xs[1:]) / dt[:, None, None]                     # [S, B, D]
    gap = (chord[None] - step_velocity).pow(2).sum(-1).mean(-1)                # [S]
    return (dt * gap).sum()


class MixtureVelocity:
    """The exact velocity E[eps - x_0 | x_t] of the straight path when x_0 follows ``mixture``.

    Component k maps to x_t | k ~ N((1 - t) mu_k, C_k) with C_k = (1 - t)^2 Sigma_k + t^2 I, and
    (x_0, eps, x_t) are jointly Gaussian given k, so (Bishop 2006, eq. 2.81)

        E[x_0 | x_t, k] = mu_k + (1 - t) Sigma_k C_k^-1 (x_t - (1 - t) mu_k),
        E[eps | x_t, k] = t C_k^-1 (x_t - (1 - t) mu_k),

    averaged with the responsibilities p(k | x_t) of the noised mixture. Call it like a network,
    ``oracle(x_t, network_time(t))``, with x_t [B, D]; returns [B, D] in x_t's dtype and device.
    """

    def __init__(self, mixture: GaussianMixture) -> None:
        self.mixture = mixture

    def noised_mixture(self, t: float) -> GaussianMixture:
        """The law of x_t at flow time t: the mixture with means (1 - t) mu_k and covariances C_k."""
        t = check_times(t)
        m = self.mixture
        eye = torch.eye(m.dim, dtype=torch.float64)
        return GaussianMixture(m.weights, (1 - t) * m.means, (1 - t) ** 2 * m.covs + t**2 * eye)

    def at(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        """The exact velocity at flow time t (one float, or one time per row [B]), [B, D]."""
        t = check_times(t, x_t.shape[0])
        m = self.mixture
        xd = x_t.detach().cpu().to(torch.float64)
        tt = (t.detach().cpu().to(torch.float64) if isinstance(t, Tensor) else torch.full((xd.shape[0],), t,
              dtype=torch.float64)).reshape(-1, 1, 1)                               # [B, 1, 1]
        a = 1 - tt
        eye = torch.eye(m.dim, dtype=torch.float64)
        covs = a[..., None] ** 2 * m.covs[None] + tt[..., None] ** 2 * eye          # C_k per row: [B, K, D, D]
        diff = xd[:, None, :] - a * m.means[None]                                   # x_t - (1 - t) mu_k: [B, K, D]
        chol = torch.linalg.cholesky(covs)
        white = torch.cholesky_solve(diff.unsqueeze(-1), chol)                      # C_k^-1 diff: [B, K, D, 1]
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)     # [B, K]
        maha = (diff.unsqueeze(-1) * white).sum((-1, -2))
        log_p = torch.log(m.weights)[None] - 0.5 * (log_det + maha)                 # + const: cancels in softmax
        r = torch.softmax(log_p, dim=1)                                             # p(k | x_t): [B, K]
        e_eps = tt * white.squeeze(-1)
        e_x0 = m.means[None] + a * (m.covs[None] @ white).squeeze(-1)
        u = (r.unsqueeze(-1) * (e_eps - e_x0)).sum(1)
        return u.to(device=x_t.device, dtype=x_t.dtype)

    def __call__(self, x_t: Tensor, time: Tensor) -> Tensor:
        """``oracle(x_t, network_time(t))``: undo the network-time scaling and return the exact velocity."""
        return self.at(x_t, (time.detach().cpu().to(torch.float64) / TIME_SCALE).clamp(0.0, 1.0))
