"""Noto emoji in colour, shipped with the course in ``data/emoji.npz`` (32 x 32) and ``data/emoji64.npz`` (64 x 64).

1,612 emoji pictures on white, in 8 classes (their Unicode categories: smileys & emotion, people &
body, animals & nature, food & drink, travel & places, activities, objects, symbols), each with its
name as a caption; split 1,289 train / 323 test, stratified by class, with no near-duplicate pair
across the split. ``data/README.md`` gives the source, licence (Apache 2.0) and checksums, and
``scripts/make_emoji.py`` rebuilds both files. The 32 px images are the 2 x 2 block means of the
64 px ones, so the two sizes are a clean pair for super-resolution.

The files are looked for as MNIST's are (:func:`tinydiff.data.mnist.data_dir`): the ``path``
argument, else ``$TINYDIFF_DATA``, else the repository's ``data/`` folder.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .folder import ImageSet, to_tensor
from .mnist import ENV_VAR, find_data_file

SIZES = {32: "emoji.npz", 64: "emoji64.npz"}
SPLITS = ("train", "test", "all")
REGENERATE = ("npm pack emoji-datasource-google@16.0.0 && "
              "python scripts/make_emoji.py emoji-datasource-google-16.0.0.tgz")


def emoji_path(size: int = 32, path: str | os.PathLike | None = None) -> Path:
    """The ``.npz`` file :func:`load_emoji` reads for ``size``; raises ``FileNotFoundError`` saying how to fix it."""
    if size not in SIZES:
        raise ValueError(f"emoji come in sizes {' and '.join(map(str, SIZES))}, got size={size!r}; "
                         "for other sizes resize them, e.g. with torch.nn.functional.interpolate(..., antialias=True)")
    return find_data_file(SIZES[size], path, "emoji", REGENERATE)


def _read(file: Path, size: int, splits: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays of ``splits`` concatenated (keys images, labels, names) and ``classes``; checked."""
    def bad(why: str) -> ValueError:
        return ValueError(f"emoji data file {file} is corrupt or not an emoji .npz ({why}). "
                          f"Regenerate it with `{REGENERATE}`, or point {ENV_VAR} / path= at a good copy.")

    if not zipfile.is_zipfile(file):  # np.load would take it for a pickle and suggest unpickling it
        raise bad("not a zip archive, which every .npz is")
    keys = ["classes"] + [f"{s}_{k}" for s in splits for k in ("images", "labels", "names")]
    try:
        with np.load(file, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            arrays = {k: npz[k] for k in keys} if not missing else None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise bad(f"cannot read it as .npz: {type(err).__name__}: {err}") from err
    if missing:
        raise bad(f"arrays {', '.join(missing)} missing")
    out = {k: np.concatenate([arrays[f"{s}_{k}"] for s in splits]) for k in ("images", "labels", "names")}
    images, labels = out["images"], out["labels"]
    if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
        raise bad(f"images should be uint8 [N, {size}, {size}, 3], got {images.dtype} {list(images.shape)}")
    if labels.dtype.kind not in "iu" or labels.shape != images.shape[:1] or out["names"].shape != labels.shape:
        raise bad(f"labels and names should be [{len(images)}], got {list(labels.shape)} and {list(out['names'].shape)}")
    if labels.size and labels.max() >= len(arrays["classes"]):
        raise bad(f"labels should lie in 0..{len(arrays['classes']) - 1}, got up to {labels.max()}")
    return out | {"classes": arrays["classes"]}


def load_emoji(
    split: str = "train",
    size: int = 32,
    *,
    path: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
) -> ImageSet:
    """Emoji images in [-1, 1] with their class labels, class names and captions, on the CPU.

    x = pixel / 127.5 - 1 maps 0..255 onto [-1, 1]; the white background is +1.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (train then test).
        size: 32 or 64.
        path: the ``.npz`` file or its folder (default: see the module docstring).
        dtype: floating dtype of the images.

    Returns:
        :class:`~tinydiff.data.folder.ImageSet` (images float [N, 3, size, size], labels LongTensor [N]
        in 0..7, classes: the 8 class names, names: each emoji's name, its caption); unpack it as
        ``images, labels, classes, captions = load_emoji()``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown emoji split {split!r}; valid splits are {', '.join(map(repr, SPLITS))}")
    file = emoji_path(size, path)
    arrays = _read(file, size, ("train", "test") if split == "all" else (split,))
    return ImageSet(to_tensor(arrays["images"], dtype), torch.from_numpy(arrays["labels"].astype(np.int64)),
                    tuple(map(str, arrays["classes"])), tuple(map(str, arrays["names"])))
