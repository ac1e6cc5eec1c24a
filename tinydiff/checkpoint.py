"""Checkpoints as safetensors weights plus a small JSON config -- never pickles.

A checkpoint ``name.safetensors`` has a readable sidecar ``name.json``::

    {"format": "tinydiff-checkpoint", "version": 1,
     "model": "UNet", "config": {...constructor arguments...},
     "sha256": "...of name.safetensors...", "extra": {...anything JSON...}}

:func:`load_checkpoint` rebuilds the model from ``model`` + ``config``
(``tinydiff.models.<model>(**config)``), checks the file's SHA-256, and loads
the weights strictly: a missing name, an unexpected name or a wrong shape is
reported by name. Safetensors files hold only tensors, so loading one cannot
run code (unlike ``torch.load`` on a pickle).

:mod:`tinydiff.train_state` writes a whole training run's state (weights, EMA, AdamW moments, generator,
step) in the same format, with :func:`write_tensors` and :func:`read_tensors`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from . import schedules
from .latent import LatentCodec
from .schedules import Schedule

FORMAT = "tinydiff-checkpoint"
VERSION = 1


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights.safetensors, config.json) for a path given with or without the .safetensors suffix."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (to check downloads and shipped weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_config(model: nn.Module, config: dict | None) -> dict:
    if config is None:
        config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(
            f"give the constructor arguments of {type(model).__name__} as config= "
            "(a JSON-able dict), or give the model a `config` dict attribute"
        )
    return config


def write_tensors(path: Path, tensors: dict[str, Tensor], header: dict) -> None:
    weights, sidecar = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(weights))
    header = {"format": FORMAT, "version": VERSION, **header, "sha256": sha256(weights)}
    sidecar.write_text(json.dumps(header, indent=2, sort_keys=False) + "\n")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model``'s weights to ``path`` (.safetensors) and its config to the .json beside it.

    ``config`` are the keyword arguments that rebuild the model (``type(model)(**config)``;
    default ``model.config``); ``extra`` any JSON-able notes (seed, steps, metrics...).
    Returns the path of the weights file.
    """
    header = {"model": type(model).__name__, "config": model_config(model, config), "extra": extra or {}}
    json.dumps(header)  # fail here, before writing anything, if something is not JSON-able
    write_tensors(Path(path), model.state_dict(), header)
    return checkpoint_paths(path)[0]


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar of a checkpoint (model name, config, sha256, extra)."""
    weights, sidecar = checkpoint_paths(path)
    if not sidecar.is_file():
        raise FileNotFoundError(f"no checkpoint config {sidecar}: a checkpoint is {weights.name} plus {sidecar.name}")
    try:
        header = json.loads(sidecar.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{sidecar} is not valid JSON ({err}); the file is corrupt, restore or re-save it") from err
    if header.get("format") != FORMAT:
        raise ValueError(f"{sidecar} is not a tinydiff checkpoint config (format={header.get('format')!r})")
    return header


def update_extra(path: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Add or replace entries of a checkpoint's ``extra`` (e.g. evaluation results); the weights are untouched."""
    header = read_config(path)
    header["extra"] = {**header.get("extra", {}), **fields}
    json.dumps(header)
    checkpoint_paths(path)[1].write_text(json.dumps(header, indent=2) + "\n")
    return header


def read_tensors(path: str | os.PathLike, header: dict, device: str | torch.device) -> dict[str, Tensor]:
    weights, _ = checkpoint_paths(path)
    if not weights.is_file():
        raise FileNotFoundError(f"no checkpoint weights {weights}")
    if header.get("sha256") and sha256(weights) != header["sha256"]:
        raise ValueError(
            f"{weights} does not match the SHA-256 in its config: the file is truncated, corrupt or from "
            "another run. Restore it (git checkout / re-download) or retrain."
        )
    try:
        return load_file(str(weights), device=str(device))
    except SafetensorError as err:
        raise ValueError(f"{weights} is not a readable safetensors file ({err}); it is truncated or corrupt") from err


def load_state_strict(model: nn.Module, tensors: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Copy ``tensors`` into ``model``; raise a ValueError listing every missing, unexpected or mis-shaped name."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k}: checkpoint {list(tensors[k].shape)} vs model {list(v.shape)}"
              for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or shapes:
        lines = [f"the {source} does not fit {type(model).__name__}:"]
        lines += [f"  missing from the {source}: {', '.join(missing)}"] if missing else []
        lines += [f"  not in the model: {', '.join(unexpected)}"] if unexpected else []
        lines += [f"  wrong shape: {s}" for s in shapes]
        lines += ["Build the model with the config stored in the checkpoint's .json (load_checkpoint does that)."]
        raise ValueError("\n".join(lines))
    model.load_state_dict(tensors, strict=True)


def build_model(name: str, config: dict) -> nn.Module:
    """``tinydiff.models.<name>(**config)``: a model rebuilt from a checkpoint's config."""
    from . import models

    cls = getattr(models, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"unknown model class {name!r}: it must be a network exported by tinydiff.models")
    return cls(**config)


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model from the checkpoint's config (or fill the given ``model``), load its weights, eval mode."""
    header = read_config(path)
    model = model if model is not None else build_model(header["model"], header["config"])
    load_state_strict(model, read_tensors(path, header, device))
    return model.to(device).eval()


@dataclass
class DiffusionModel:
    """A trained diffusion network with what sampling it needs, as recorded in its checkpoint's JSON.

    ``net`` is called ``net(x_t, t[, y])``; ``schedule`` is the noise schedule it was trained
    with (None for a flow-matching model); ``prediction`` its output type (epsilon | x0 | v | velocity);
    ``sampler`` the sampler it must be run with, if its JSON names one (``extra.sampler``: a distilled
    student's step count, a flow model's integrator); ``recommended_guidance`` the
    classifier-free guidance scale its evaluation recommends (1.0 = none; ``None`` if unmeasured);
    ``extra`` the rest of the JSON's ``extra``. A latent diffusion model also has ``codec``
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
    def clip_x0(self) -> float | None:
        """Clamp x0_hat to [-1, 1] for images (their range); not for latents, which have no fixed range."""
        return None if self.codec is not None else 1.0

    @property
    def tokenizer(self):
        """The :class:`tinydiff.tokenizer.Tokenizer` of a text-conditioned model (``extra.tokenizer``), else None."""
        from .tokenizer import Tokenizer

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
        return DiffusionModel(load_checkpoint(path, device=device), None, "velocity",
                              extra.get("recommended_guidance"), extra, codec)
    spec = extra.get("schedule")
    if not isinstance(spec, dict) or "name" not in spec or "T" not in spec:
        raise ValueError(f"{path}: its JSON does not record the noise schedule (extra.schedule = {{'name': ..., 'T': ...}}); "
                         "only checkpoints written by scripts/train_mnist.py (or with that field added) can be sampled")
    prediction = extra.get("train", {}).get("prediction", "epsilon")
    return DiffusionModel(load_checkpoint(path, device=device), schedules.get(spec["name"], T=int(spec["T"])),
                          prediction, extra.get("recommended_guidance"), extra, codec)
