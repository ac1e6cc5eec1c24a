"""Super-resolution and cascades (Part 13, notebook 15): a diffusion model conditioned on a low-resolution image.

The degradation and its inverse, each a closed form:

- :func:`downsample`: the anti-aliased ("area", box-filter) downsample by an integer factor f: every output pixel
  is the mean of its f x f block. A plain strided subsample ``x[..., ::f, ::f]`` keeps one pixel in f^2 and
  aliases fine detail into false patterns; the block mean removes the frequencies the small grid cannot hold first.
- :func:`upsample`: bicubic interpolation (Keys 1981, a = -0.75 as in PyTorch and OpenCV) -- the classical
  baseline, and what SR3 feeds its network (Saharia et al. 2021, sec. 2.4) -- or nearest-neighbour, which
  is the exact right inverse of :func:`downsample`: ``downsample(upsample(y, f, "nearest"), f) == y``.
- :func:`consistency_error`: how far ``downsample(x_high)`` lies from the low-resolution input it came from, and
  :func:`project`, the nearest image for which that error is 0 (DDNM's range-null space step, Wang et al. 2023).

The models and their training objectives, for :func:`tinydiff.train.train`:

- :class:`SuperResolution`: SR3 (Saharia et al. 2021, eq. 4-5). For a high-resolution x_0 the objective makes
  its own conditioning image, cond = upsample(downsample(x_0)), and minimises L_simple of
  :class:`~tinydiff.models.SuperResUNet` ``(x_t, t, cond)``. With ``max_level`` it adds noise-conditioning
  augmentation (Ho et al. 2022, sec. 4.1): cond is corrupted to level s ~ U{0..max_level} of the same schedule,
  :func:`augment`, and s is an input of the network.
- :class:`Regression`: the same UNet trained with an L2 loss to map the upsampled image straight to x_0. Its
  optimum is the conditional mean E[x_0 | low] -- the best possible PSNR, and a blur wherever the low-resolution
  image admits several answers (Blau & Michaeli 2018: no estimator is best at both distortion and perception).

Sampling: :class:`Upscaler` binds the conditioning image (and its level) so that every sampler of the course
calls it as ``model(x_t, t)``; :func:`upscale` runs DDIM with it, :func:`cascade` draws a class-conditional
low-resolution image first and upscales it (Ho et al. 2022, sec. 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .diffusion import predict_eps, predict_x0, q_sample, training_target
from .guidance import conditional
from .losses import Denoising, Objective, sample_timesteps
from .samplers import ddim_sample
from .schedules import Schedule
from .tensors import randn


def _check_factor(factor: int) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive int (e.g. 4 for 8 x 8 -> 32 x 32), got {factor!r}")
    return factor


def _check_images(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be images [B, C, H, W], got {got}")


def downsample(x: Tensor, factor: int) -> Tensor:
    """The anti-aliased (box-filter) downsample: x [B, C, H, W] -> [B, C, H / f, W / f], f = ``factor``.

        y[i, j] = (1 / f^2) sum_{a, b = 0}^{f - 1} x[f i + a, f j + b]

    Averaging over the block is a low-pass filter applied before keeping one value per block, so detail finer than
    the new grid cannot alias into it (PIL's ``BOX`` and OpenCV's ``INTER_AREA`` resampling). H and W must be
    multiples of f.
    """
    _check_images(x, "x")
    factor = _check_factor(factor)
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"H and W must be multiples of factor {factor}, got {list(x.shape[-2:])}")
    return F.avg_pool2d(x, factor)


UPSAMPLING = ("bicubic", "nearest")


def upsample(x: Tensor, factor: int, mode: str = "bicubic") -> Tensor:
    """Interpolate x [B, C, h, w] to [B, C, f h, f w] (f = ``factor``).

    ``"bicubic"``: Keys' cubic convolution (Keys 1981, eq. 15 with a = -0.75, PyTorch's and OpenCV's choice) on
    pixel centres (``align_corners=False``), clamped at the border; it reproduces constants and linear ramps and
    overshoots a little at sharp edges. ``"nearest"``: each pixel becomes an f x f block -- the exact right
    inverse of :func:`downsample`. Neither adds detail the input does not hold.
    """
    _check_images(x, "x")
    factor = _check_factor(factor)
    if mode not in UPSAMPLING:
        raise ValueError(f"mode must be one of {', '.join(UPSAMPLING)}, got {mode!r}")
    if mode == "nearest":
        return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False)


def consistency_error(x_high: Tensor, low: Tensor, factor: int) -> Tensor:
    """Root-mean-square of downsample(x_high) - low per image: [B, C, H, W] and [B, C, H / f, W / f] -> [B].

    A super-resolved image is *consistent* with its input when shrinking it gives the input back (Saharia et al.
    2021, sec. 5.1 report this as the "consistency" MSE). 0 for an exact inverse; the floor of real data is the
    error of storing each side in 8 bits."""
    _check_images(x_high, "x_high")
    _check_images(low, "low")
    shrunk = downsample(x_high, factor)
    if shrunk.shape != low.shape:
        raise ValueError(f"downsample(x_high, {factor}) has shape {list(shrunk.shape)} but low has {list(low.shape)}")
    return (shrunk.float() - low.float()).pow(2).flatten(1).mean(1).sqrt()


def project(x_high: Tensor, low: Tensor, factor: int, *, bounds: tuple[float, float] | None = None,
            iterations: int = 20) -> Tensor:
    """The closest image to x_high [B, C, H, W] that is exactly consistent with low [B, C, H / f, W / f]:

        x' = A^+ low + (I - A^+ A) x_high = x_high + upsample(low - downsample(x_high), f, "nearest")

    with A = :func:`downsample` and its pseudo-inverse A^+ = nearest upsampling (A A^+ = I). DDNM (Wang et al. 2023,
    eq. 6-7) applies this "range-null space" step to the predicted x0 at every sampling step: the low frequencies
    come from the input, everything A cannot see (the null space: detail inside each block) from the model.

    The step may push pixels out of the image range. With ``bounds = (lo, hi)`` it alternates ``iterations`` times
    with clamping to [lo, hi]: projections onto two convex sets, which converge to an image in both (the convex
    projections of Youla & Webb 1982; the original image is in both, so they meet). It ends clamped: a valid image,
    consistent up to the residual of the last clamp."""
    _check_images(x_high, "x_high")
    _check_images(low, "low")
    low = low.to(x_high.dtype)
    x = x_high + upsample(low - downsample(x_high, factor), factor, "nearest")
    if bounds is None:
        return x
    for _ in range(iterations - 1):
        x = x.clamp(*bounds)
        x = x + upsample(low - downsample(x, factor), factor, "nearest")
    return x.clamp(*bounds)


def augment(schedule: Schedule, cond: Tensor, level: Tensor | int, noise: Tensor) -> Tensor:
    """Noise-conditioning augmentation (Ho et al. 2022, sec. 4.1): the conditioning image at level s of the schedule,

        cond_s = sqrt(alpha_bar_s) cond + sqrt(1 - alpha_bar_s) eps',   eps' ~ N(0, I)

    -- the forward process applied to the conditioning image (:func:`tinydiff.diffusion.q_sample`). Training on
    cond_s at random s teaches the super-resolution model not to trust every pixel of its input, so it tolerates
    the errors of a base model's samples. Shapes: cond, noise [B, C, H, W]; level LongTensor [B] or an int."""
    return q_sample(schedule, cond, level, noise)


def _check_level(level: int | None, schedule: Schedule, name: str) -> None:
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < schedule.T):
        raise ValueError(f"{name} must be a step of the schedule, 0..{schedule.T - 1}, or None, got {level!r}")


class SuperResolution(Objective):
    """SR3's training objective (Saharia et al. 2021, eq. 5, with the course's L_simple): see the module docstring.

    ``draw`` draws t, eps (as :class:`~tinydiff.losses.Denoising`) and, with ``max_level``, the augmentation
    level s ~ U{0..max_level} and its noise eps'; ``loss`` builds cond = augment(upsample(downsample(x_0, f)), s, eps')
    and the loss of ``model(x_t, t, cond=cond, level=s)``. Shapes: x_0 [B, C, H, W] with H, W multiples of f.
    """

    def __init__(self, schedule: Schedule, factor: int, prediction: str = "epsilon", max_level: int | None = None,
                 upsampling: str = "bicubic") -> None:
        _check_level(max_level, schedule, "max_level")
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got {upsampling!r}")
        self.denoising = Denoising(schedule, prediction)
        self.schedule, self.prediction = schedule, prediction
        self.factor, self.max_level, self.upsampling = _check_factor(factor), max_level, upsampling

    def draw(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        t, eps = self.denoising.draw(x0, generator)
        if self.max_level is None:
            return t, eps
        s = sample_timesteps(x0.shape[0], self.max_level + 1, generator=generator, device=x0.device)
        return t, eps, s, randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)

    def condition(self, x0: Tensor) -> Tensor:
        """The clean conditioning image of x_0: upsample(downsample(x_0, f), f), [B, C, H, W]."""
        return upsample(downsample(x0, self.factor), self.factor, self.upsampling)

    def loss(self, model, x0: Tensor, draws: tuple[Tensor, ...]) -> Tensor:
        cond = self.condition(x0)
        if self.max_level is None:
            return self.denoising.loss(model, x0, draws, cond=cond)
        t, eps, s, eps_cond = draws
        return self.denoising.loss(model, x0, (t, eps), cond=augment(self.schedule, cond, s, eps_cond), level=s)


class Regression(Objective):
    """The L2 regression baseline: minimise ||model(upsample(downsample(x_0)), 0) - x_0||^2, mean over pixels.

    The network is a plain :class:`~tinydiff.models.UNet` whose input is the upsampled image (t is always 0: it has
    one task). The minimiser of the expected squared error is E[x_0 | downsample(x_0)] -- sharp where the small image
    decides the answer, an average of the candidates where it does not."""

    schedule = None

    def __init__(self, factor: int, upsampling: str = "bicubic") -> None:
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got {upsampling!r}")
        self.factor, self.upsampling = _check_factor(factor), upsampling

    def draw(self, x0: Tensor, generator: torch.Generator) -> tuple[()]:
        return ()

    def loss(self, model, x0: Tensor, draws: tuple[()]) -> Tensor:
        return (regress(model, downsample(x0, self.factor), self.factor, self.upsampling).float()
                - x0.float()).pow(2).mean()


def regress(model: nn.Module, low: Tensor, factor: int, upsampling: str = "bicubic") -> Tensor:
    """The regression model's answer for low-resolution images low [B, C, h, w]: [B, C, f h, f w]."""
    up = upsample(low, factor, upsampling)
    return model(up, torch.zeros(up.shape[0], dtype=torch.long, device=up.device))


class Upscaler(nn.Module):
    """A :class:`~tinydiff.models.SuperResUNet` with its conditioning image fixed: ``model(x_t, t)`` for every sampler.

    ``low`` [B, C, h, w] is upsampled by ``factor``; with ``level`` s (a model with ``noise_levels``) it is
    augmented to level s once, with ``generator`` (Ho et al. 2022, sec. 4.1: at sampling time the conditioning
    image is corrupted as in training, and s is chosen by the user). With ``consistent=True`` each predicted x0 is
    replaced by :func:`project` ``(x0, low, bounds=(-1, 1))`` before the sampler uses it (DDNM's step, Wang et al.
    2023, kept inside the image range), and the output is re-expressed in the network's ``prediction``: the sample
    then shrinks back to ``low`` up to the residual of the projection's last clamp. Shapes: x_t [B, C, f h, f w], t [B].
    """

    def __init__(self, net: nn.Module, low: Tensor, factor: int, *, schedule: Schedule | None = None,
                 level: int | None = None, generator: torch.Generator | None = None,
                 upsampling: str = "bicubic", consistent: bool = False, prediction: str = "v") -> None:
        super().__init__()
        _check_images(low, "low")
        if low.shape[1] != net.cond_channels:
            raise ValueError(f"low has {low.shape[1]} channels but the model reads {net.cond_channels}")
        if net.noise_levels != (level is not None):
            raise ValueError("give level (0 = clean) exactly when the model reads noise levels (noise_levels=True); "
                             f"this one {'does' if net.noise_levels else 'does not'}")
        cond = upsample(low, factor, upsampling)
        if level is not None:
            if schedule is None:
                raise ValueError("augmenting the conditioning image needs the model's schedule: give schedule=")
            _check_level(level, schedule, "level")
            cond = augment(schedule, cond, level, randn(cond.shape, generator=generator, device=cond.device,
                                                        dtype=cond.dtype))
        if consistent and schedule is None:
            raise ValueError("consistent=True converts the output to x0 and back: give schedule=")
        self.net, self.schedule, self.factor, self.prediction = net, schedule, factor, prediction
        self.register_buffer("cond", cond, persistent=False)
        self.register_buffer("low", low, persistent=False)
        self.level, self.consistent = level, consistent

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        if x_t.shape[0] != self.cond.shape[0]:
            raise ValueError(f"x_t has {x_t.shape[0]} images but {self.cond.shape[0]} conditioning images were given")
        level = None if self.level is None else torch.full_like(t, self.level)
        out = self.net(x_t, t, cond=self.cond.to(x_t.device), level=level)
        if not self.consistent:
            return out
        x0 = project(predict_x0(self.schedule, x_t, t, out, self.prediction), self.low.to(x_t.device), self.factor,
                     bounds=(-1.0, 1.0))
        eps = predict_eps(self.schedule, x_t, t, x0, "x0")
        return training_target(self.schedule, x0, eps, t, self.prediction)


@torch.no_grad()
def upscale(net: nn.Module, schedule: Schedule, low: Tensor, factor: int, *, level: int | None = None,
            steps: int = 50, seed: int = 0, prediction: str = "v", spacing: str = "trailing",
            clip_x0: float | None = 1.0, x_T: Tensor | None = None, consistent: bool = False,
            progress: bool = False) -> Tensor:
    """SR3 sampling: DDIM (``steps``, eta = 0) of ``net`` conditioned on ``low`` [B, C, h, w] -> [B, C, f h, f w].

    ``seed`` draws x_T (unless given) and the augmentation noise; several seeds give several answers for one input.
    ``consistent=True`` adds DDNM's projection of every predicted x0 onto the images that shrink to ``low``
    (:class:`Upscaler`)."""
    device = next(net.parameters()).device
    low = low.to(device)
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same numbers on every device
    model = Upscaler(net, low, factor, schedule=schedule, level=level, generator=generator, consistent=consistent,
                     prediction=prediction)
    shape = (low.shape[0], net.in_channels, low.shape[2] * factor, low.shape[3] * factor)
    return ddim_sample(model, schedule, shape, steps=steps, eta=0.0, spacing=spacing, x_T=x_T, generator=generator,
                       prediction=prediction, clip_x0=clip_x0, progress=progress)


@torch.no_grad()
def cascade(base: nn.Module, base_schedule: Schedule, sr: nn.Module, sr_schedule: Schedule, labels: Tensor,
            size: int, factor: int, *, level: int | None = None, steps: int = 50, base_steps: int = 50, seed: int = 0,
            prediction: str = "v", spacing: str = "trailing", progress: bool = False) -> tuple[Tensor, Tensor]:
    """A cascade (Ho et al. 2022, sec. 3): a class-conditional base model draws low-resolution images for
    ``labels`` [B] at ``size`` x ``size``, the super-resolution model upscales them by ``factor``. Returns (low [B, C, h, w], high [B, C, f h, f w])."""
    device = next(base.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    shape = (labels.shape[0], base.config["in_channels"], size, size)
    low = ddim_sample(conditional(base, labels.to(device)), base_schedule, shape, steps=base_steps, eta=0.0,
                      spacing=spacing, generator=generator, prediction=prediction, clip_x0=1.0, progress=progress)
    return low, upscale(sr, sr_schedule, low, factor, level=level, steps=steps, seed=seed + 1,
                        prediction=prediction, spacing=spacing, progress=progress)

