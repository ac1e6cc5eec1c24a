"""A trained diffusion model as it ships: the network with what sampling it needs -- its noise schedule, prediction
type, recommended guidance, and for a latent model its autoencoder, for a text model its tokenizer -- read from the
checkpoint's JSON (:mod:`tinydiff.checkpoint` holds the file format; this module, what the files mean together).

``load_diffusion_model("data/checkpoints/mnist_ddpm")`` is the one call the notebooks, scripts and benchmarks use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import schedules
from .checkpoint import checkpoint_paths, load_checkpoint, read_config
from .diffusion import FLOW_PREDICTION
from .latent import LatentCodec
from .schedules import Schedule
from .tokenizer import Tokenizer


@dataclass
class DiffusionModel:
    """A trained diffusion network with what sampling it needs, as recorded in its checkpoint's JSON.

    ``net`` is called ``net(x_t, t[, y])``; ``schedule`` is the noise schedule it was trained
    with (None for a flow-matching model); ``prediction`` its output type (epsilon | x0 | v | velocity);
    ``sampler`` the sampler it must be run with, if its JSON names one (``extra.sampler``: a distilled
    student's step count, a flow model's integrator); ``recommended_guidance`` the
    classifier-free guidance scale its evaluation recommends (1.0 = none; ``None`` if unmeasured);
    ``extra`` the rest of the JSON's ``extra``; ``classes`` a class-conditional model's class names, if it records
    them. A latent diffusion model also has ``codec``
    (:class:`tinydiff.latent.LatentCodec`): it samples latents, and :meth:`to_images` decodes them.
    """

    net: nn.Module
    schedule: Schedule | None
    prediction: str
    recommended_guidance: float | None
    extra: dict
    codec: LatentCodec | None = None

    @property
    def sampler(self) -> str | None:
        """``extra.sampler``, e.g. ``"ddim:4:trailing"`` for a distilled student; None when any sampler will do."""
        return self.extra.get("sampler")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample the sampler draws: a latent for a latent model, else an image (C, 32, 32)."""
        if self.codec is not None:
            return self.codec.latent_shape
        config = self.net.config.get("unet", self.net.config)  # a TextUNet keeps its UNet's arguments under "unet"
        return tuple(self.extra.get("data_shape", (config["in_channels"], 32, 32)))

    @property
    def classes(self) -> tuple[str, ...] | None:
        """The class names of a class-conditional model, label i is ``classes[i]`` (``extra.classes``, which
        scripts/train.py records from its data: the emoji categories, an image folder's subfolders); None when the
        JSON names none (the MNIST models, whose labels are the digits, and unconditional models)."""
        names = self.extra.get("classes")
        return tuple(map(str, names)) if names else None

    @property
    def clip_x0(self) -> float | None:
        """Clamp x0_hat to [-1, 1] for images (their range); not for latents, which have no fixed range."""
        return None if self.codec is not None else 1.0

    @property
    def tokenizer(self):
        """The :class:`tinydiff.tokenizer.Tokenizer` of a text-conditioned model (``extra.tokenizer``), else None."""
        spec = self.extra.get("tokenizer")
        return Tokenizer(**spec) if spec else None

    def to_images(self, x: Tensor) -> Tensor:
        """Samples [B, *sample_shape] -> images [B, C, H, W]: decoded for a latent model, as they are otherwise."""
        return self.codec.decode(x) if self.codec is not None else x


def load_latent_codec(path: str | os.PathLike, device: str | torch.device = "cpu") -> LatentCodec:
    """An autoencoder checkpoint (``scripts/train_autoencoder.py``) as a :class:`~tinydiff.latent.LatentCodec`,
    with the scale factor stored in its JSON (``extra.scale_factor``)."""
    header = read_config(path)
    factor = header.get("extra", {}).get("scale_factor")
    if factor is None:
        raise ValueError(f"{path}: its JSON has no extra.scale_factor (1 / std of its latents); "
                         "measure it with tinydiff.latent.latent_scale_factor and store it with update_extra")
    return LatentCodec(load_checkpoint(path, device=device), float(factor))


def _latent_codec_of(path: str | os.PathLike, spec: dict, device: str | torch.device) -> LatentCodec:
    """The autoencoder a latent checkpoint names (``extra.latent.autoencoder``, relative to its folder), checked by SHA-256."""
    weights, _ = checkpoint_paths(path)
    ae_path = weights.parent / spec["autoencoder"]
    ae_weights, ae_json = checkpoint_paths(ae_path)
    if not (ae_weights.is_file() and ae_json.is_file()):
        raise FileNotFoundError(
            f"{path} is a latent diffusion model: it samples latents of the autoencoder {ae_path} "
            f"(extra.latent.autoencoder), but {ae_weights.name} / {ae_json.name} are not there. Put the autoencoder "
            "checkpoint beside it (it ships in data/checkpoints/) or retrain it with scripts/train_autoencoder.py."
        )
    expected = spec.get("autoencoder_sha256")
    found = read_config(ae_path).get("sha256")
    if expected and found != expected:
        raise ValueError(
            f"{ae_path} is not the autoencoder {path} was trained on (SHA-256 {found[:12]}... vs "
            f"{expected[:12]}... recorded in extra.latent): its latents mean something else. "
            "Restore that autoencoder or retrain the latent model on this one."
        )
    return load_latent_codec(ae_path, device=device)


def load_diffusion_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> DiffusionModel:
    """:func:`load_checkpoint` plus the schedule, prediction type and guidance scale from the JSON (``extra``);
    for a latent model (``extra.latent``) also its autoencoder, as ``codec``. A flow-matching checkpoint
    (``extra.train.objective == "flow matching"``, :mod:`tinydiff.flow`) has no schedule (None) and predicts
    ``"velocity"``; its ``extra.sampler`` names a flow sampler."""
    header = read_config(path)
    extra = header.get("extra", {})
    codec = _latent_codec_of(path, extra["latent"], device) if "latent" in extra else None
    if extra.get("train", {}).get("objective") == "flow matching":  # a velocity model needs no noise schedule
        return DiffusionModel(load_checkpoint(path, device=device), None, FLOW_PREDICTION,
                              extra.get("recommended_guidance"), extra, codec)
    spec = extra.get("schedule")
    if not isinstance(spec, dict) or "name" not in spec or "T" not in spec:
        raise ValueError(f"{path}: its JSON does not record the noise schedule (extra.schedule = {{'name': ..., 'T': ...}}); "
                         "only checkpoints written by scripts/train_mnist.py (or with that field added) can be sampled")
    prediction = extra.get("train", {}).get("prediction", "epsilon")
    return DiffusionModel(load_checkpoint(path, device=device), schedules.get(spec["name"], T=int(spec["T"])),
                          prediction, extra.get("recommended_guidance"), extra, codec)
