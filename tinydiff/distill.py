"""Progressive distillation (Salimans & Ho 2022): a student learns to do in one DDIM step what its teacher does in two.

One round (Salimans & Ho 2022, Algorithm 2), with the deterministic DDIM sampler (eta = 0) on a grid of
2N teacher steps tau_0 > tau_1 > ... > tau_(2N-1), followed by the clean sample:

1. the student starts as a copy of the teacher;
2. for a training example x_0, pick a student step i ~ U{0..N-1}: t = tau_(2i), t' = tau_(2i+1),
   t'' = tau_(2i+2) (or the clean sample after the last one), and noise it: z_t = alpha_t x_0 + sigma_t eps;
3. the teacher takes two DDIM steps, z_t -> z_t' -> z_t'' (:func:`distillation_target`);
4. the target x~ is the clean sample that makes *one* DDIM step from z_t land on z_t'':

       x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)

   (Algorithm 2, line 10), with alpha = sqrt(alpha_bar) and sigma = sqrt(1 - alpha_bar); at the clean end
   (alpha = 1, sigma = 0) simply x~ = z_t'';
5. regress the student on x~, through its own prediction target (``prediction="v"``: the v of (z_t, x~),
   which weights the x-error by 1 + SNR, the paper's "SNR+1" weighting).

Then the student is the teacher of the next round, on the grid of N steps: 2N -> N -> N/2 -> ... The grids
are :func:`tinydiff.samplers.ddim_timesteps` of 2N and N steps, and N's must be every other point of 2N's
(``trailing`` spacing with T / (2N) a power-of-two fraction, e.g. T = 1000 and 2N = 64, 32, 16, 8 ...), so that
the student, sampled as plain DDIM-N, visits exactly the steps it was trained on.

A class-conditional teacher can be distilled *with its guidance* (``guidance=s``): the teacher's two steps use
classifier-free guidance at scale s, and the student learns the guided sampler in one network call per step
(Meng et al. 2023 distil a guided model the same way, with s as a fixed value rather than an input).

Shapes: x_0, z_t [B, *data]; t, t', t'' LongTensor [B] of 0-based steps, T standing for the clean sample.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .diffusion import predict_eps, q_sample, training_target
from .guidance import classifier_free, conditional
from .losses import Objective
from .samplers import Model, ddim_timesteps, denoise
from .schedules import Schedule
from .tensors import gather, randn, to_device


def halving_grids(T: int, teacher_steps: int, spacing: str = "trailing") -> tuple[list[int], list[int]]:
    """The teacher's grid of ``teacher_steps`` DDIM steps and the student's grid of half as many, each a list of
    descending 0-based steps; raises ``ValueError`` unless the student's grid is every other teacher step."""
    if isinstance(teacher_steps, bool) or not isinstance(teacher_steps, int) or teacher_steps < 2 or teacher_steps % 2:
        raise ValueError(f"a distillation round halves the teacher's steps, so teacher_steps must be an even int >= 2, "
                         f"got {teacher_steps!r}")
    teacher = ddim_timesteps(T, teacher_steps, spacing).tolist()
    student = ddim_timesteps(T, teacher_steps // 2, spacing).tolist()
    if teacher[::2] != student:
        raise ValueError(f"with spacing={spacing!r} and T = {T}, the {teacher_steps // 2}-step grid is not every other "
                         f"point of the {teacher_steps}-step grid; use spacing='trailing' and a step count whose "
                         "halvings divide T evenly (T = 1000: 64, 32, 16, 8, 4, 2)")
    return teacher, student


def _alpha_bars_to_clean(schedule: Schedule) -> Tensor:
    """alpha_bar at the 0-based steps 0..T-1, then 1 at index T (the clean sample): float64 [T + 1]."""
    return torch.cat([schedule.alpha_bars, torch.ones(1, dtype=torch.float64)])


def student_target(z_t: Tensor, z_next: Tensor, alpha_bar_t: Tensor | float, alpha_bar_next: Tensor | float) -> Tensor:
    """The clean sample x~ whose one DDIM step (eta = 0) from z_t lands on z_next (Salimans & Ho 2022, Algorithm 2, line 10):

        x~ = (z_next - (sigma_next / sigma_t) z_t) / (alpha_next - (sigma_next / sigma_t) alpha_t),

    alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar). z_t, z_next [B, *data]; the alpha_bars floats or [B, 1, ..., 1]."""
    ratio = ((1 - alpha_bar_next) / (1 - alpha_bar_t)) ** 0.5                    # sigma_next / sigma_t
    return (z_next - ratio * z_t) / (alpha_bar_next**0.5 - ratio * alpha_bar_t**0.5)


@torch.no_grad()
def distillation_target(teacher: Model, schedule: Schedule, z_t: Tensor, t: Tensor, t_mid: Tensor, t_next: Tensor,
                        prediction: str = "epsilon", clip_x0: float | None = None) -> Tensor:
    """The student's target x~ for one step t -> t'' (Salimans & Ho 2022, Algorithm 2, lines 7-10).

    The teacher takes two deterministic DDIM steps (Song, Meng & Ermon 2021, eq. 12 with sigma = 0),
    z_t -> z_t' -> z_t'', and x~ is the clean sample whose single DDIM step from z_t lands on z_t''.
    z_t [B, *data]; t > t_mid > t_next LongTensor [B] (t_next = T: the clean sample). Returns x~ [B, *data].
    """
    T = schedule.T
    for name, steps in (("t", t), ("t_mid", t_mid), ("t_next", t_next)):
        if steps.shape != z_t.shape[:1]:
            raise ValueError(f"{name} must be a LongTensor [B] = [{z_t.shape[0]}], got shape {list(steps.shape)}")
    on_host = t.device.type == "cpu"  # values are read on the host only: reading a GPU tensor waits for the device
    if on_host and not (torch.all((0 <= t_mid) & (t_mid < t) & (t < T)) and torch.all((t_next < t_mid) | (t_next == T))):
        raise ValueError(f"distillation steps must satisfy T > t > t_mid > t_next >= 0 (t_next = T = {T} for the "
                         "clean sample): the teacher goes from t to t_mid, then to t_next")
    alpha_bars = _alpha_bars_to_clean(schedule)

    def ddim(z: Tensor, step: Tensor, to: Tensor) -> Tensor:
        x0_hat, eps_hat = denoise(teacher, schedule, z, step, prediction, clip_x0)
        a_to = gather(alpha_bars, to, z)
        return a_to.sqrt() * x0_hat + (1 - a_to).sqrt() * eps_hat

    z_mid = ddim(z_t, t, t_mid)
    z_next = ddim(z_mid, t_mid, t_next)
    return student_target(z_t, z_next, gather(alpha_bars, t, z_t), gather(alpha_bars, t_next, z_t))


class Distillation(Objective):
    """One round of progressive distillation as a :class:`~tinydiff.losses.Objective` for :func:`tinydiff.train.train`.

    ``teacher`` (an ``nn.Module``, ``teacher(x_t, t)`` or, class-conditional, ``teacher(x_t, t, y)``; a frozen copy
    is kept) samples with DDIM in ``teacher_steps`` steps of ``spacing`` on ``schedule``; the student, trained by
    ``train(student, schedule, data, objective=Distillation(...))``, learns to sample in ``teacher_steps // 2``.
    ``prediction`` is the target both networks predict; ``guidance`` distils classifier-free guidance at that
    scale into the student (labels come from ``train``'s ``labels=``; keep ``p_uncond=0``).
    """

    def __init__(self, teacher: nn.Module, schedule: Schedule, teacher_steps: int, *, spacing: str = "trailing",
                 prediction: str = "epsilon", guidance: float | None = None, clip_x0: float | None = None) -> None:
        self.teacher_grid, self.student_grid = halving_grids(schedule.T, teacher_steps, spacing)
        self.teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
        self.schedule, self.prediction, self.guidance, self.clip_x0 = schedule, prediction, guidance, clip_x0
        self.spacing = spacing
        # for student step i: t = tau_(2i), t' = tau_(2i+1), t'' = tau_(2i+2), the clean sample (index T) last
        grid = torch.tensor(self.teacher_grid + [schedule.T])
        self.t, self.t_mid, self.t_next = grid[0:-1:2], grid[1::2], grid[2::2]

    @property
    def student_steps(self) -> int:
        return len(self.student_grid)

    def draw(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        i = torch.randint(0, self.student_steps, (x0.shape[0],), generator=generator, device=generator.device)
        return i, randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)

    def loss(self, model, x0: Tensor, draws: tuple[Tensor, Tensor], **model_kwargs) -> Tensor:
        i, eps = draws
        # indexed where i was drawn (the host, for a CPU generator), then queued to the device without waiting
        t, t_mid, t_next = (to_device(steps.to(i.device)[i], x0.device)
                            for steps in (self.t, self.t_mid, self.t_next))
        z_t = q_sample(self.schedule, x0, t, eps)
        teacher = self.teacher.to(x0.device)
        if "y" in model_kwargs:
            y = model_kwargs["y"]
            teacher = classifier_free(teacher, y, self.guidance) if self.guidance else conditional(teacher, y)
        x_target = distillation_target(teacher, self.schedule, z_t, t, t_mid, t_next, self.prediction, self.clip_x0)
        eps_target = predict_eps(self.schedule, z_t, t, x_target, "x0")
        target = training_target(self.schedule, x_target, eps_target, t, self.prediction)
        out = model(z_t, t, **model_kwargs)
        if out.shape != x0.shape:
            raise ValueError(f"the student must return a tensor shaped like its input {list(x0.shape)}, "
                             f"got {list(out.shape)}")
        return (out.float() - target.float()).pow(2).mean()
