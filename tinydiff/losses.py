"""The training losses: denoising score matching in DDPM form (L_simple), the objectives the training loop takes,
and the losses of the latent model's autoencoder and of the tiny CLIP.

For x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, denoising score
matching (Vincent 2011, eq. 9; Song & Ermon 2019, eq. 2) regresses the score
onto -eps / sqrt(1 - alpha_bar_t). Writing the score as
s_theta = -eps_theta / sqrt(1 - alpha_bar_t) turns that objective, up to a
per-t weight, into Ho et al.'s simplified loss (2020, eq. 14):

    L_simple = E_{t, x_0, eps} || eps - eps_theta(x_t, t) ||^2.

The same function trains x_0- or v-predicting networks (``prediction=``);
only the regression target changes (:func:`tinydiff.diffusion.training_target`).

:class:`Objective` is what :func:`tinydiff.train.train` minimises: :class:`Denoising` (L_simple, the
default) here, flow matching and reflow in :mod:`tinydiff.flow`, progressive distillation in
:mod:`tinydiff.distill` -- one training loop for all of them. The networks around a diffusion model train
in the same loop: the autoencoder with :class:`Autoencoding` (:func:`autoencoder_loss`, L1 + KL, notebook 08),
the tiny CLIP with :class:`Contrastive` (:func:`clip_loss`, the symmetric contrastive loss, notebook 13).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.captions import caption_is_true
from .diffusion import q_sample, training_target
from .schedules import Schedule
from .tensors import randn, to_device


def sample_timesteps(batch_size: int, T: int, *, generator: torch.Generator | None = None, device=None) -> Tensor:
    """Uniform 0-based timesteps t ~ U{0, ..., T-1}, LongTensor [B] (Ho et al. 2020, Algorithm 1, line 3)."""
    gen_device = generator.device if generator is not None else device
    t = torch.randint(0, T, (batch_size,), generator=generator, device=gen_device)
    return to_device(t, device) if device is not None else t


def diffusion_loss(
    model: Callable[..., Tensor],
    schedule: Schedule,
    x0: Tensor,
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    prediction: str = "epsilon",
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    **model_kwargs,
) -> Tensor:
    """L_simple (Ho et al. 2020, eq. 14; Algorithm 1) for a batch of clean data x0 [B, *data].

    Draws t ~ U{0..T-1} and eps ~ N(0, I) unless given, forms x_t with
    :func:`~tinydiff.diffusion.q_sample`, and returns the squared error between
    the model output ``model(x_t, t, **model_kwargs)`` and the target for
    ``prediction`` (epsilon | x0 | v).

    ``reduction="mean"`` gives a scalar; ``"none"`` gives the per-example loss [B]
    (mean over data dimensions) -- useful for the loss-per-timestep diagnostic.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape [B, *data], got {list(x0.shape)}")
    B = x0.shape[0]
    if t is None:
        t = sample_timesteps(B, schedule.T, generator=generator, device=x0.device)
    if noise is None:
        noise = randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    output = model(x_t, t, **model_kwargs)
    if output.shape != x0.shape:
        raise ValueError(f"the model must return a tensor shaped like its input {list(x0.shape)}, got {list(output.shape)}")
    target = training_target(schedule, x0, noise, t, prediction)
    per_example = (output.float() - target.float()).pow(2).flatten(1).mean(1)
    return per_example.mean() if reduction == "mean" else per_example


@torch.no_grad()
def loss_per_timestep(
    model: Callable[..., Tensor],
    schedule: Schedule,
    x0: Tensor,
    timesteps: Tensor,
    *,
    prediction: str = "epsilon",
    generator: torch.Generator | None = None,
    **model_kwargs,
) -> Tensor:
    """Mean L_simple at each of the given 0-based ``timesteps`` [S], over the batch x0 [B, *data]; returns [S].

    The diagnostic for "the loss goes down but the samples are noise": a model that
    is good only at large t (easy) and poor at small t shows it here.
    """
    losses = []
    for step in timesteps.tolist():
        t = torch.full((x0.shape[0],), int(step), dtype=torch.long, device=x0.device)
        losses.append(diffusion_loss(model, schedule, x0, t=t, prediction=prediction, generator=generator, **model_kwargs))
    return torch.stack(losses)


# --- what the training loop minimises ----------------------------------------------------


class Objective:
    """A training objective for :func:`tinydiff.train.train`, in two parts.

    ``draw(x0, generator)`` draws the randomness of one *global* batch x0 [B, *data] -- a tuple of
    tensors, each [B, ...] (timesteps, noise, ...) -- so that under torchrun every rank draws the same
    numbers and takes its slice; ``loss(model, x0, draws, **model_kwargs)`` is the scalar loss on
    (a slice of) the batch and its draws, or a pair (loss, {name: 0-d tensor}) that reports more numbers
    of the step (the training loop's state then has them as attributes). ``schedule`` is the noise
    schedule the objective trains for, or None (flow matching needs none).
    """

    schedule: Schedule | None = None

    def draw(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def loss(self, model: Callable[..., Tensor], x0: Tensor, draws: tuple[Tensor, ...], **model_kwargs) -> Tensor:
        raise NotImplementedError


class Denoising(Objective):
    """L_simple for ``prediction`` (epsilon | x0 | v) on ``schedule``: :func:`diffusion_loss` with t ~ U{0..T-1}
    and eps ~ N(0, I) drawn in that order (Ho et al. 2020, Algorithm 1)."""

    def __init__(self, schedule: Schedule, prediction: str = "epsilon") -> None:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"Denoising needs a noise schedule (tinydiff.schedules), got {type(schedule).__name__}")
        self.schedule, self.prediction = schedule, prediction

    def draw(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        t = sample_timesteps(x0.shape[0], self.schedule.T, generator=generator, device=x0.device)
        return t, randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)

    def loss(self, model, x0: Tensor, draws: tuple[Tensor, Tensor], **model_kwargs) -> Tensor:
        t, noise = draws
        return diffusion_loss(model, self.schedule, x0, t=t, noise=noise, prediction=self.prediction, **model_kwargs)


# --- the autoencoder of latent diffusion -------------------------------------------------


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example, summed over the latent dimensions: [B, *z] -> [B].

    Closed form for a diagonal Gaussian against the standard normal (Kingma & Welling 2014,
    appendix B):  KL = 1/2 * sum_j (mean_j^2 + sigma_j^2 - 1 - log sigma_j^2).
    """
    if mean.shape != logvar.shape or mean.ndim < 2:
        raise ValueError(f"mean and logvar must both be [B, *z], got {list(mean.shape)} and {list(logvar.shape)}")
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def autoencoder_loss(
    autoencoder: torch.nn.Module, x: Tensor, *, kl_weight: float, generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The KL-regularised autoencoder loss of latent diffusion, without its perceptual and GAN terms.

    For images x [B, C, H, W], with z ~ q(z | x) by the reparameterisation trick:

        loss = mean_B [ sum_pixels |x - D(z)|  +  kl_weight * KL(q(z | x) || N(0, I)) ]

    (Rombach et al. 2022, sec. 3.1 and app. G: L1 reconstruction plus a "slight KL-penalty",
    kl_weight = 1e-6 there with the same sums). Returns (loss, reconstruction, kl) as 0-d
    tensors; reconstruction is the mean absolute error per pixel, kl the mean KL per image.
    The reparameterisation's eps ~ N(0, I) is ``noise`` [B, *latent] if given, else drawn with ``generator``.
    """
    x_hat, mean, logvar = autoencoder(x, generator=generator, noise=noise)
    l1 = (x_hat.float() - x.float()).abs().flatten(1).sum(1)
    kl = gaussian_kl(mean.float(), logvar.float())
    loss = (l1 + kl_weight * kl).mean()
    return loss, l1.mean() / x[0].numel(), kl.mean()


class Autoencoding(Objective):
    """:func:`autoencoder_loss` as an :class:`Objective`: ``draw`` draws the reparameterisation's eps
    [B, *latent_shape] (for the autoencoder's latents, e.g. ``Autoencoder.latent_shape``); the loss reports
    ``reconstruction`` (mean absolute error per pixel) and ``kl`` (mean KL per image)."""

    def __init__(self, latent_shape: tuple[int, ...], kl_weight: float) -> None:
        self.latent_shape, self.kl_weight = tuple(latent_shape), kl_weight

    def draw(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor]:
        return (randn((x0.shape[0], *self.latent_shape), generator=generator, device=x0.device, dtype=x0.dtype),)

    def loss(self, model, x0: Tensor, draws: tuple[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        loss, reconstruction, kl = autoencoder_loss(model, x0, kl_weight=self.kl_weight, noise=draws[0])
        return loss, {"reconstruction": reconstruction, "kl": kl}


# --- contrastive image-text training (the tiny CLIP of Part 11) ---------------------------


def clip_loss(logits: Tensor, positives: Tensor | None = None) -> Tensor:
    """CLIP's symmetric contrastive loss (Radford et al. 2021, Fig. 3), 0-d.

    logits [N, N] = scale * cos(image i, caption j). Without ``positives`` caption i belongs to image i:

        loss = ( CE(logits, arange N) over rows  +  CE(logits^T, arange N) over rows ) / 2

    In a batch of digits many captions are true of many images ("a seven" of every seven), and the plain loss
    pushes those apart. ``positives`` BoolTensor [N, N] (True where caption j is true of image i, the diagonal
    included; e.g. :func:`tinydiff.data.captions.caption_is_true`) replaces each one-hot target by the uniform
    distribution over the true pairs of that row (images) or column (captions). ``positives = eye`` is the plain loss.
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be a square matrix [N, N] of image-caption scores, got {list(logits.shape)}")
    n = logits.shape[0]
    if positives is None:
        target = torch.arange(n, device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    if positives.shape != logits.shape or positives.dtype != torch.bool or not bool(positives.diagonal().all()):
        raise ValueError("positives must be a BoolTensor [N, N] like logits, True on the diagonal (each caption is "
                         "true of its own image)")
    p = positives.to(logits.dtype)
    rows = -(p / p.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    cols = -(p / p.sum(0, keepdim=True) * logits.log_softmax(0)).sum(0).mean()
    return 0.5 * (rows + cols)


class Contrastive(Objective):
    """:func:`clip_loss` over each minibatch as an :class:`Objective`, for a :class:`~tinydiff.models.TinyCLIP`.

    The training loop's labels are the examples' indices [B] into ``ids``, the prompt ids [N, L] of the N
    images (on the model's device). ``truth = (image attributes [N, 3], stated caption attributes [N, 3])``
    (:mod:`tinydiff.data.captions`) lets every caption in the batch that is true of an image count as a
    positive, not only its own. The loss reports ``accuracy`` (the share of images whose best-scoring caption
    in the batch is a positive) and ``logit_scale`` (the model's scale at this step, before the update).
    """

    def __init__(self, ids: Tensor, truth: tuple[Tensor, Tensor] | None = None) -> None:
        if ids.ndim != 2 or ids.dtype != torch.long:
            raise ValueError(f"ids must be prompt ids [N, L] (LongTensor), got {ids.dtype} {list(ids.shape)}")
        self.ids, self.truth = ids, truth

    def draw(self, x0: Tensor, generator: torch.Generator) -> tuple[()]:
        return ()

    def loss(self, model, x0: Tensor, draws: tuple[()], y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.ids.device != y.device:
            raise ValueError(f"the prompt ids are on {self.ids.device} but the batch on {y.device}: give Contrastive "
                             "its ids (and truth) on the model's device")
        logits = model(x0, self.ids[y])
        positives = None if self.truth is None else caption_is_true(self.truth[1][y], self.truth[0][y])
        loss = clip_loss(logits, positives)
        with torch.no_grad():
            best, own = logits.argmax(1), torch.arange(len(logits), device=logits.device)
            hit = positives[own, best] if positives is not None else best == own
            scale = getattr(model, "module", model).scale()  # the network inside DistributedDataParallel
        return loss, {"accuracy": hit.float().mean(), "logit_scale": scale.detach()}
