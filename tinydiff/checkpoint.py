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
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

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
