"""Any folder of pictures as a data set: PNG/JPEG files in, float tensors [N, C, size, size] in [-1, 1] out.

    images, labels, classes, names = load_folder("my_pictures", size=32)

Each file is read with Pillow, turned upright by its EXIF orientation (phone photos), laid over
``background`` if it has transparency, converted to RGB (``channels=3``) or to grayscale
(``channels=1``; Pillow's ITU-R 601-2 luma L = 0.299 R + 0.587 G + 0.114 B), centre-cropped to a
square (the largest one, centred) and resized to ``size`` x ``size`` with a Lanczos filter, which
anti-aliases when it shrinks. Pixels p in 0..255 become x = p / 127.5 - 1.

Labels (``labels=True``) follow torchvision's ``ImageFolder``: every image lies in a sub-folder of
``root`` named after its class, the sorted sub-folder names are the classes and a class's index in
that list is its label. Without labels, images are collected from ``root`` and all its sub-folders.

Horizontal flips are data augmentation, drawn afresh for every batch: :func:`random_hflip` flips a
batch, and :func:`flipped_batches` is a data source for :func:`tinydiff.train.train` that draws a
batch and flips it, so the stored tensor is never changed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

EXTENSIONS = (".png", ".jpg", ".jpeg")
# The default UNet (mults=(1, 2, 2)) halves H and W twice, so it takes sizes that are multiples of 4;
# a UNet with other mults reports its own as ``net.size_multiple`` (tests/test_folder.py keeps the two equal).
UNET_MULTIPLE = 4


class ImageSet(NamedTuple):
    """A data set of pictures: unpack it as ``images, labels, classes, names = ...``.

    images: float [N, C, H, W] in [-1, 1]; labels: LongTensor [N] in 0..K-1, or None without labels;
    classes: the K class names, label k being ``classes[k]`` (empty without labels);
    names: one string per image -- its caption (an emoji's name) or its file's path relative to the folder.
    """

    images: Tensor
    labels: Tensor | None
    classes: tuple[str, ...]
    names: tuple[str, ...]


def check_size(size: int, multiple: int = UNET_MULTIPLE) -> None:
    """Raise ``ValueError`` unless ``size`` is a positive multiple of ``multiple`` (what a UNet can halve)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int (the side of the square images), got {size!r}")
    if not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple must be a positive int, got {multiple!r}")
    if size % multiple:
        lower, upper = size - size % multiple, size - size % multiple + multiple
        raise ValueError(
            f"size {size} is not a multiple of {multiple}, and a UNet that halves the image log2({multiple}) times "
            f"needs one; use size={upper}" + (f" or size={lower}" if lower else "")
            + " (or pass multiple=net.size_multiple for a UNet with other mults)"
        )


def check_batch_size(n_images: int, batch_size: int, source: str = "the data set") -> None:
    """Raise ``ValueError`` if a data set of ``n_images`` cannot fill one batch of ``batch_size`` distinct images."""
    if n_images < batch_size:
        raise ValueError(
            f"{source} has {n_images} images, fewer than the batch size {batch_size}: every batch would repeat "
            f"images. Add images, or use batch_size <= {n_images}."
        )


def image_files(root: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """The image files (``EXTENSIONS``, any case) under ``root``, sorted; hidden files (``.*``) skipped."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}; check the path")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file, not a folder of images; pass the folder that holds it")
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in found if p.suffix.lower() in EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def read_image(path: str | os.PathLike, size: int, channels: int = 3,
               background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """One file as uint8 [size, size, channels]: upright, over ``background``, centre-cropped, Lanczos-resized.

    Raises ``ValueError`` naming the file if Pillow cannot read all of it (corrupt or truncated)."""
    try:
        with Image.open(path) as img:
            img.load()  # decodes every pixel, so a truncated file fails here
            img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {type(err).__name__}: {err}. The file is corrupt, truncated "
                         "or not an image; re-save or delete it, or move it out of the folder.") from err
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.new("RGBA", rgba.size, (*background, 255))
        img.alpha_composite(rgba)
    img = img.convert("RGB" if channels == 3 else "L")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))  # cut first, so nothing outside the square bleeds in
    if side != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8).reshape(size, size, channels)


def to_tensor(images: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 images [N, H, W, C] -> float [N, C, H, W] in [-1, 1]: x = p / 127.5 - 1."""
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype such as torch.float32, got {dtype}")
    work = torch.promote_types(dtype, torch.float32)  # half types round once, at the end
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(work).div(127.5).sub(1.0).to(dtype)


def load_folder(
    root: str | os.PathLike,
    size: int = 32,
    *,
    channels: int = 3,
    labels: bool = False,
    background: tuple[int, int, int] = (255, 255, 255),
    multiple: int = UNET_MULTIPLE,
    batch_size: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> ImageSet:
    """Every PNG/JPEG under ``root`` as an :class:`ImageSet` of images [N, channels, size, size] in [-1, 1].

    Args:
        root: the folder.
        size: side of the square images; must be a multiple of ``multiple``.
        channels: 3 for RGB, 1 for grayscale.
        labels: take labels from the sub-folder names (torchvision ``ImageFolder``'s convention).
        background: RGB colour transparent pixels are laid over.
        multiple: what ``size`` must be a multiple of: 2^(number of halvings) of the UNet, ``net.size_multiple``.
        batch_size: if given, fail unless there are at least this many images.
        dtype: floating dtype of the images.

    Raises ``ValueError`` for an empty folder, an unreadable file (named), a bad size or too few
    images for the batch, each saying how to fix it.
    """
    check_size(size, multiple)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 3 (RGB) or 1 (grayscale), got {channels!r}")
    root = Path(root).expanduser()
    files = image_files(root)
    if not files:
        raise ValueError(f"no image files ({', '.join(EXTENSIONS)}) in {root} or its sub-folders; "
                         "put pictures there or pass the folder that holds them")
    classes: tuple[str, ...] = ()
    y = None
    if labels:
        loose = [f.name for f in files if f.parent == root]
        if loose:
            raise ValueError(f"labels=True takes each image's class from its sub-folder, but {len(loose)} images lie "
                             f"directly in {root} (e.g. {loose[0]}); move them into a sub-folder named after "
                             "their class, or pass labels=False")
        classes = tuple(sorted({f.relative_to(root).parts[0] for f in files}))
        y = torch.tensor([classes.index(f.relative_to(root).parts[0]) for f in files], dtype=torch.long)
    if batch_size is not None:
        check_batch_size(len(files), batch_size, f"the folder {root}")
    pixels = np.stack([read_image(f, size, channels, background) for f in files])
    names = tuple(f.relative_to(root).as_posix() for f in files)
    return ImageSet(to_tensor(pixels, dtype), y, classes, names)


def random_hflip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Each image of x [B, C, H, W] mirrored left-right with probability p (drawn on the generator's device)."""
    device = generator.device if generator is not None else x.device
    flip = (torch.rand(x.shape[0], generator=generator, device=device) < p).to(x.device)
    return torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)


def flipped_batches(images: Tensor, labels: Tensor | None = None,
                    p: float = 0.5) -> Callable[..., Tensor | tuple[Tensor, Tensor]]:
    """A data source ``draw(batch_size, generator=g)`` for :func:`tinydiff.train.train`: images drawn with
    replacement (as ``train`` draws from a tensor), each then flipped with probability p; with ``labels``,
    it returns (x_0 [B, C, H, W], y [B])."""
    if labels is not None and labels.shape != images.shape[:1]:
        raise ValueError(f"labels must have shape [{images.shape[0]}], got {list(labels.shape)}")

    def draw(batch_size: int, generator: torch.Generator | None = None) -> Tensor | tuple[Tensor, Tensor]:
        device = generator.device if generator is not None else images.device
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=generator, device=device)
        x = random_hflip(images[idx.to(images.device)], generator, p)
        return x if labels is None else (x, labels[idx.to(labels.device)])

    return draw
