"""Guidance: steering a class-conditional diffusion model toward its label.

Two ideas, one formula. With eps(x_t | y) the conditional and eps(x_t) the
unconditional noise prediction (one network trained with label dropout, the
"null" label standing for "no label"):

**Classifier-free guidance** (Ho & Salimans 2022, eq. 6), in the convention of
diffusers' ``guidance_scale`` and of this package:

    eps_s = eps(x_t) + s * (eps(x_t | y) - eps(x_t))          s = 1: plain conditional, s = 0: unconditional

Ho & Salimans write the same thing with w = s - 1:

    eps_w = (1 + w) * eps(x_t | y) - w * eps(x_t)             w = 0: plain conditional

Since eps = -sqrt(1 - alpha_bar_t) * score (Vincent 2011; :mod:`tinydiff.oracle`),
eps_s is the score of p_t(x) p_t(y | x)^s up to that factor:
grad log p(x | y) - grad log p(x) = grad log p(y | x) by Bayes' rule, so s > 1
aims at the tilted density p(x) p(y | x)^s, which puts more weight where the label
is more certain. It does not sample that density, even with exact scores: the
product p_t(x) p_t(y | x)^s is not the noised tilted density, and guided samples
land beyond it, away from the other classes (Chidambaram et al. 2024; measured
against exact samples, :func:`tinydiff.oracle.sample_tilted`, in notebook 07).

**Classifier guidance** (Dhariwal & Nichol 2021, sec. 4.2, Algorithm 2) adds the
gradient of a classifier p(y | x_t) instead:

    eps_hat = eps(x_t) - s * sqrt(1 - alpha_bar_t) * grad log p(y | x_t)

With the *exact* classifier both give the same eps_s (:func:`classifier_guided_epsilon`
and the 2-D check in notebook 07).

**CLIP guidance** (:class:`CLIPGuidance`, notebook 13) steers with a text-image similarity instead of a
class: it moves the predicted clean sample up the gradient of CLIP's cosine with the prompt,
x0_hat <- x0_hat + s grad_{x0_hat} cos(CLIP(D(x0_hat)), CLIP(prompt)), and recomputes eps from x_t so the
two stay consistent -- the *backward* universal guidance of Bansal et al. 2023, sec. 3.2, with one gradient
step, which does not differentiate through the denoiser (their *forward* guidance, sec. 3.1, does).

The wrappers here are ``nn.Module`` s callable as ``model(x_t, t)``, so every sampler
in :mod:`tinydiff.samplers` runs them unchanged and finds their device from the
wrapped network's parameters. :func:`guided_digits` runs classifier-free guidance from seeded noise: digits for
a figure, a script or an evaluation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .diffusion import predict_x0, training_target
from .samplers import ddim_sample
from .schedules import Schedule
from .tensors import gather


def guided_epsilon(eps_cond: Tensor, eps_uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6 with w = scale - 1): eps_u + s (eps_c - eps_u).

    Shapes: eps_cond, eps_uncond [B, *data] -> [B, *data]. Linear in the two outputs, so it
    applies as written to x0- and v-predictions too.
    """
    return eps_uncond + scale * (eps_cond - eps_uncond)


def ho_salimans_w(scale: float) -> float:
    """Ho & Salimans' guidance weight w for our (diffusers') scale s: w = s - 1 (so s = 1 is w = 0, no guidance)."""
    return scale - 1.0


def classifier_guided_epsilon(schedule: Schedule, eps: Tensor, t: Tensor, grad_log_p_y: Tensor, scale: float) -> Tensor:
    """Classifier guidance (Dhariwal & Nichol 2021, Algorithm 2): eps - s sqrt(1 - alpha_bar_t) grad log p(y | x_t).

    Shapes: eps, grad_log_p_y [B, *data], t LongTensor [B] (0-based) -> [B, *data].
    """
    return eps - scale * gather(schedule.sqrt_one_minus_alpha_bars, t, eps) * grad_log_p_y


def _check_labels(model: nn.Module, y: Tensor, allow_null: bool) -> Tensor:
    """The condition y checked against the model: class labels [B], or prompt ids [B, L] for a model that reads
    prompts (one with ``check_condition``, e.g. :class:`tinydiff.models.TextUNet`)."""
    null = getattr(model, "null_class", None)
    if null is None:
        raise ValueError(
            f"{type(model).__name__} has no `null_class`: guidance needs a conditional model trained with a "
            "null condition (e.g. UNet(num_classes=10), trained with p_uncond > 0)"
        )
    if hasattr(model, "check_condition"):
        return model.check_condition(y)
    if not isinstance(y, Tensor) or y.ndim != 1 or y.dtype != torch.long:
        raise ValueError(f"y must be a LongTensor [B] of class labels, got {getattr(y, 'dtype', type(y).__name__)} "
                         f"of shape {list(getattr(y, 'shape', []))}")
    extra = getattr(model, "extra_labels", 0)  # labels added after training (tinydiff.adapt.add_label): null+1 ..
    if y.device.type != "meta" and y.numel():
        ok = ((y >= 0) & (y < null)) | ((y > null) & (y <= null + extra)) | ((y == null) if allow_null else False)
        if not bool(ok.all()):
            allowed = f"0..{null - 1}" + (f" (or {null}, the null class)" if allow_null else "")
            allowed += f", or the added labels {null + 1}..{null + extra}" if extra else ""
            raise ValueError(f"labels must lie in {allowed}, got min {int(y.min())}, max {int(y.max())}")
    return y


def null_condition(model: nn.Module, y: Tensor) -> Tensor:
    """The null condition shaped like y: the null label [B], or the empty prompt's ids [B, L]."""
    return torch.as_tensor(model.null_class, dtype=y.dtype, device=y.device).expand_as(y)


def _check_batch(x_t: Tensor, y: Tensor) -> None:
    if x_t.shape[0] != y.shape[0]:
        raise ValueError(f"the batch of x_t has {x_t.shape[0]} samples but {y.shape[0]} labels were given; "
                         "give one label per sample (e.g. torch.arange(B) % 10)")


class Conditional(nn.Module):
    """``net(x_t, t, y)`` with the labels fixed: callable as ``model(x_t, t)`` by every sampler.

    Use it instead of ``lambda x, t: net(x, t, y)``: a lambda has no parameters, so a
    sampler cannot tell which device the network is on. Shapes: x_t [B, *data], t [B], y [B].
    """

    def __init__(self, net: nn.Module, y: Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("y", _check_labels(net, y, allow_null=True), persistent=False)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        _check_batch(x_t, self.y)
        return self.net(x_t, t, self.y.to(x_t.device))


class ClassifierFreeGuidance(nn.Module):
    """Classifier-free guidance as a model ``(x_t, t) -> guided output`` (Ho & Salimans 2022, eq. 6; :func:`guided_epsilon`).

    The conditional and the unconditional outputs come from *one* forward pass over the
    batch stacked twice ([x_t; x_t] with labels [y; null]), which is faster than two calls.
    ``scale = 1`` is the plain conditional model and ``scale = 0`` the unconditional one;
    both are computed with a single, un-stacked call. Shapes: x_t [B, *data], t [B], y [B].
    """

    def __init__(self, net: nn.Module, y: Tensor, scale: float) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"the guidance scale must be a finite number >= 0 (1 = no guidance, e.g. 3), got {scale!r}")
        self.net = net
        self.scale = float(scale)
        self.register_buffer("y", _check_labels(net, y, allow_null=False), persistent=False)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        _check_batch(x_t, self.y)
        y = self.y.to(x_t.device)
        null = null_condition(self.net, y)
        if self.scale == 1.0:
            return self.net(x_t, t, y)
        if self.scale == 0.0:
            return self.net(x_t, t, null)
        out = self.net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.chunk(2)
        return guided_epsilon(cond, uncond, self.scale)


def conditional(net: nn.Module, y: Tensor) -> Conditional:
    """The class-conditional model for labels y [B], as ``model(x_t, t)``: see :class:`Conditional`."""
    return Conditional(net, y)


def classifier_free(net: nn.Module, y: Tensor, scale: float) -> ClassifierFreeGuidance:
    """Classifier-free guidance at ``scale`` for labels y [B], as ``model(x_t, t)``: see :class:`ClassifierFreeGuidance`."""
    return ClassifierFreeGuidance(net, y, scale)


class CLIPGuidance(nn.Module):
    """CLIP guidance as a model ``(x_t, t) -> output`` in the wrapped model's ``prediction``: see the module docstring.

    For each step: x0_hat from ``model(x_t, t)``; g = grad over x0_hat of cos(clip.encode_image(decode(x0_hat)),
    clip.encode_text(ids)) per sample; x0' = x0_hat + scale * g; eps' = (x_t - sqrt(alpha_bar_t) x0') /
    sqrt(1 - alpha_bar_t); returns the output that implies (x0', eps'). ``scale = 0`` returns the model's output.
    ``model`` may itself be guided (e.g. :class:`ClassifierFreeGuidance`): the two combine.

    Shapes: x_t [B, *data]; ids [B, L]; ``decode`` maps x0_hat to images [B, 1, 32, 32] (for a latent model
    :meth:`tinydiff.latent.LatentCodec.decode_differentiable`; None for a pixel model).
    """

    def __init__(self, model: nn.Module, schedule: Schedule, clip: nn.Module, ids: Tensor, scale: float, *,
                 prediction: str = "epsilon", decode=None) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"the CLIP guidance scale must be a finite number (0 = none), got {scale!r}")
        self.model, self.schedule, self.clip, self.decode = model, schedule, clip.eval(), decode
        self.scale, self.prediction = float(scale), prediction
        with torch.no_grad():
            self.register_buffer("text", clip.encode_text(ids), persistent=False)  # [B, E], unit vectors

    def similarity_gradient(self, x0: Tensor) -> Tensor:
        """grad over x0 of cos(image of x0, prompt), per sample: [B, *data]."""
        with torch.enable_grad():
            x0 = x0.detach().requires_grad_(True)
            images = self.decode(x0) if self.decode is not None else x0
            cos = (self.clip.encode_image(images) * self.text.to(x0.device)).sum()
            (grad,) = torch.autograd.grad(cos, x0)
        return grad

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        output = self.model(x_t, t)
        if self.scale == 0.0:
            return output
        if len(self.text) != x_t.shape[0]:
            raise ValueError(f"the batch of x_t has {x_t.shape[0]} samples but {len(self.text)} prompts were given")
        x0 = predict_x0(self.schedule, x_t, t, output, self.prediction)
        x0_guided = x0 + self.scale * self.similarity_gradient(x0)
        sqrt_ab = gather(self.schedule.sqrt_alpha_bars, t, x_t)
        eps = (x_t - sqrt_ab * x0_guided) / gather(self.schedule.sqrt_one_minus_alpha_bars, t, x_t)
        return training_target(self.schedule, x0_guided, eps, t, self.prediction)


@torch.no_grad()
def guided_digits(net: nn.Module, schedule: Schedule, label: int | Tensor, scale: float, *, n: int | None = None,
                  steps: int = 20, seed: int = 0, prediction: str = "epsilon", spacing: str = "leading",
                  clip_x0: float | None = 1.0, shape: tuple[int, ...] = (1, 32, 32), sampler=None) -> Tensor:
    """Digits under classifier-free guidance at ``scale`` (:func:`classifier_free`), from seeded noise.

    ``label`` is one class (``n`` images of it, default 8) or labels [B] -- a text model's prompt ids [B, L] -- one
    image each (``n``, if given, must be B). The sampler is deterministic DDIM with ``steps`` and ``spacing``
    (Song, Meng & Ermon 2021), or ``sampler``: any callable ``sampler(model, schedule, (B, *shape), generator=,
    prediction=, clip_x0=, progress=)``, such as a :class:`tinydiff.registry.SamplerSpec`. All its noise, x_T
    first, comes from a CPU generator seeded with ``seed``, so the same seed gives the same digits on every device,
    and changing the scale (or an adapter) changes only that. x0_hat is clamped to [-clip_x0, clip_x0] at every
    step (None: never): 1 for images, None for a latent model's latents (``DiffusionModel.clip_x0``). ``shape`` is
    one sample's: C x 32 x 32 for images, ``DiffusionModel.sample_shape`` for latents.

    Returns [B, *shape] on the network's device: images, or latents that the caller decodes.
    """
    device = next(net.parameters()).device
    if isinstance(label, Tensor):
        if label.ndim == 0 or (n is not None and n != len(label)):
            raise ValueError(f"give one label per image, labels [B] (or prompt ids [B, L]); got shape "
                             f"{tuple(label.shape)}" + (f" with n = {n}" if n is not None else ""))
        y = label.to(device)
    else:
        y = torch.full((8 if n is None else n,), int(label), dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(seed)
    model, size = classifier_free(net, y, scale), (len(y), *shape)
    if sampler is None:
        return ddim_sample(model, schedule, size, steps=steps, spacing=spacing, generator=generator,
                           prediction=prediction, clip_x0=clip_x0, progress=False)
    return sampler(model, schedule, size, generator=generator, prediction=prediction, clip_x0=clip_x0, progress=False)
