"""Build ``data/emoji.npz`` (32 x 32) and ``data/emoji64.npz`` (64 x 64) from the Noto Emoji images in an npm package.

Run by hand, once (needs the npm registry; nothing is downloaded when the course runs)::

    npm pack emoji-datasource-google@16.0.0        # writes emoji-datasource-google-16.0.0.tgz
    .venv/bin/python scripts/make_emoji.py emoji-datasource-google-16.0.0.tgz --preview /tmp/emoji_preview.png

The tarball is read in place (not extracted) and checked against a pinned SHA-256. It is the
``emoji-datasource-google`` package of iamcal's emoji-data: ``package/emoji.json`` (one entry per
emoji: name, code points, category, ...) and ``package/img/google/64/*.png`` (Noto Emoji v2.048,
64 x 64 RGBA). Every step, in order:

1. **Select.** Every entry of ``emoji.json`` except the categories ``Flags`` (270 flags: thin stripes
   and small emblems that are illegible at 32 px, from another source and licence than the rest of
   Noto) and ``Component`` (the 5 skin-tone swatches: plain squares, not pictures). Skin-tone
   variants are never taken: ``emoji.json`` lists them under their base emoji's ``skin_variations``,
   and only the base (default yellow) image is read.
2. **Composite.** Each RGBA PNG is laid over a white background in sRGB, as a browser shows it,
   exactly in integers: ``c = round((rgb * a + 255 * (255 - a)) / 255)``, ``a`` the alpha 0..255.
   That is the 64 x 64 image.
3. **Downsample.** The 32 x 32 image is the mean of each 2 x 2 block of the 64 px one, in sRGB,
   rounded half up: an area (box) filter, which is the exact anti-aliased average for a factor of 2.
   (Averaging in linear light instead changes a pixel by 1.1 levels on average and fades thin dark
   strokes such as clock hands and bicycle spokes; sRGB keeps them as legible as at 64 px.)
4. **Duplicates.** Two images are duplicates if the RMS difference of their 32 px arrays (in [0, 1]),
   or of one and the other's mirror image, is below ``DUPLICATE_RMS`` (2/255): below rounding noise.
   Exact copies are found first by hashing the arrays and their mirrors. Of each set of duplicates
   the emoji with the fewest code points is kept (e.g. "kneeling person" over "person kneeling facing
   right", which Noto draws as its mirror image; "family" over "family: man, man, boy"). Mirrors count
   because a training run may flip images horizontally.
5. **Near-duplicate groups.** Images closer than ``GROUP_RMS`` (0.05, mirror included; the median
   nearest-neighbour distance is about 0.17) -- "superhero" and "woman superhero", the 2 o'clock and
   10 o'clock clock faces, left- and right-facing fists -- are joined into groups (connected
   components) that the split keeps whole, so no test image has a near-copy in train.
6. **Split.** Stratified by class, like MNIST's: with ``numpy.random.default_rng(SEED)`` the groups
   are visited in random order and a group goes to ``test`` while its class still has room for it
   (``round(TEST_FRACTION * n)`` test images per class of n), else to ``train``. Both splits are then
   shuffled, so they are not sorted by class.
7. **Save.** Per split: ``{split}_images`` uint8 [N, 32, 32, 3] (``[N, 64, 64, 3]`` in emoji64.npz),
   ``{split}_labels`` uint8 [N] (index into ``classes``), ``{split}_names`` (the emoji's Unicode name in
   lower case, its caption) and ``{split}_codepoints`` (e.g. ``1F600``, ``1F3C3-200D-2640-FE0F``), both
   fixed-width unicode arrays; and ``classes``. No pickles. Both files hold the same emoji in the same
   order, so row i of one is row i of the other. Written with fixed zip timestamps (as
   ``make_mnist.py``), so re-running reproduces the bytes and SHA-256 (given the same zlib); update
   ``data/README.md`` if they ever change.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from make_mnist import save_npz  # the reproducible npz writer (scripts/ is on sys.path when run as a script)

PACKAGE = "emoji-datasource-google"
VERSION = "16.0.0"
TARBALL_SHA256 = "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"
IMAGES = "package/img/google/64/"
DROPPED = ("Flags", "Component")
DUPLICATE_RMS = 2 / 255
GROUP_RMS = 0.05
TEST_FRACTION = 0.2
SEED = 0
DATA = Path(__file__).resolve().parents[1] / "data"


def read_package(tarball: Path) -> tuple[list[dict], dict[str, bytes]]:
    """emoji.json's entries and the 64 px PNGs (file name -> bytes), checked against the pinned SHA-256."""
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != TARBALL_SHA256:
        raise SystemExit(f"{tarball}: SHA-256 {digest}, expected {TARBALL_SHA256} ({PACKAGE}@{VERSION})")
    with tarfile.open(tarball, "r:gz") as tar:
        meta = json.loads(tar.extractfile("package/package.json").read())
        assert (meta["name"], meta["version"]) == (PACKAGE, VERSION), meta
        entries = json.loads(tar.extractfile("package/emoji.json").read())
        pngs = {m.name[len(IMAGES):]: tar.extractfile(m).read()
                for m in tar.getmembers() if m.isfile() and m.name.startswith(IMAGES)}
    return entries, pngs


def composite(png: bytes) -> np.ndarray:
    """A 64 x 64 RGBA PNG over white, in sRGB, rounded exactly: uint8 [64, 64, 3]."""
    rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), dtype=np.int64)
    assert rgba.shape == (64, 64, 4), rgba.shape
    rgb, a = rgba[..., :3], rgba[..., 3:]
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def box_downsample(images: np.ndarray) -> np.ndarray:
    """[N, 2H, 2W, C] uint8 -> [N, H, W, C]: the mean of each 2 x 2 block, rounded half up."""
    n, h, w, c = images.shape
    blocks = images.astype(np.int64).reshape(n, h // 2, 2, w // 2, 2, c).sum((2, 4))
    return ((blocks + 2) // 4).astype(np.uint8)


def mirror_distances(images: np.ndarray) -> np.ndarray:
    """[N, N] RMS distance in [0, 1] units between image i and image j or j's mirror; inf on the diagonal."""
    x = images.reshape(len(images), -1).astype(np.float64) / 255
    flipped = images[:, :, ::-1].reshape(len(images), -1).astype(np.float64) / 255

    def rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.sqrt(np.maximum(sq, 0) / a.shape[1])

    d = np.minimum(rms(x, x), rms(x, flipped))
    np.fill_diagonal(d, np.inf)
    return d


def connected_components(adjacent: np.ndarray) -> np.ndarray:
    """Component index [N] of each node of a symmetric boolean adjacency matrix [N, N] (union-find)."""
    parent = np.arange(len(adjacent))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(adjacent)):
        parent[root(i)] = root(j)
    return np.unique([root(i) for i in range(len(adjacent))], return_inverse=True)[1]


def deduplicate(small: np.ndarray, codepoints: list[str]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Rows to keep and the (dropped, kept) pairs: exact copies by hash, then RMS < DUPLICATE_RMS, mirrors included."""
    exact: dict[bytes, int] = {}
    for i, a in enumerate(small):
        for key in (a.tobytes(), a[:, ::-1].tobytes()):
            exact.setdefault(key, i)
    n_exact = sum(exact[a.tobytes()] != i or exact[a[:, ::-1].tobytes()] != i for i, a in enumerate(small))
    comp = connected_components(mirror_distances(small) < DUPLICATE_RMS)
    keep, dropped = [], []
    for c in np.unique(comp):
        rows = sorted(np.flatnonzero(comp == c), key=lambda r: (codepoints[r].count("-"), r))
        keep.append(rows[0])
        dropped += [(r, rows[0]) for r in rows[1:]]
    print(f"duplicates: {n_exact} images are exact copies (or mirrors) of an earlier one; "
          f"{len(dropped)} dropped at RMS < {DUPLICATE_RMS:.4f}")
    return np.array(sorted(keep)), dropped


def split(labels: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test): whole groups, stratified by class (see step 6), each split shuffled."""
    room = {c: round(TEST_FRACTION * n) for c, n in enumerate(np.bincount(labels))}
    train, test = [], []
    for g in rng.permutation(np.unique(groups)):
        rows = np.flatnonzero(groups == g)
        need = np.bincount(labels[rows], minlength=len(room))
        if all(need[c] <= room[c] for c in room):
            test += list(rows)
            for c in room:
                room[c] -= need[c]
        else:
            train += list(rows)
    return rng.permutation(np.array(train)), rng.permutation(np.array(test))


def save_preview(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    """One row of 12 images per class, at 3x, to check by eye that pictures and labels agree."""
    rows = [np.concatenate([images[r] for r in np.flatnonzero(labels == c)[:12]], 1) for c in range(len(classes))]
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.Resampling.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tarball", type=Path, help=f"{PACKAGE}-{VERSION}.tgz from `npm pack {PACKAGE}@{VERSION}`")
    parser.add_argument("--out", type=Path, default=DATA, help="folder for emoji.npz and emoji64.npz")
    parser.add_argument("--preview", type=Path, help="also save a PNG grid of train images here, a row per class")
    args = parser.parse_args()

    entries, pngs = read_package(args.tarball)
    chosen = sorted((e for e in entries if e["category"] not in DROPPED), key=lambda e: e["sort_order"])
    classes = list(dict.fromkeys(e["category"] for e in chosen))  # in Unicode's (CLDR's) order
    print(f"{len(entries)} emoji in emoji.json; {len(chosen)} outside {', '.join(DROPPED)}")
    big = np.stack([composite(pngs[e["image"]]) for e in chosen])
    small = box_downsample(big)
    codepoints = [e["unified"] for e in chosen]
    keep, dropped = deduplicate(small, codepoints)
    for r, k in dropped:
        print(f"  dropped {chosen[r]['name'].lower()!r:48s} duplicate of {chosen[k]['name'].lower()!r}")
    chosen, big, small = [chosen[r] for r in keep], big[keep], small[keep]

    labels = np.array([classes.index(e["category"]) for e in chosen], dtype=np.uint8)
    names = np.array([e["name"].lower() for e in chosen])
    codes = np.array([e["unified"] for e in chosen])
    groups = connected_components(mirror_distances(small) < GROUP_RMS)
    sizes = np.bincount(groups)
    print(f"near-duplicate groups (RMS < {GROUP_RMS}): {(sizes > 1).sum()} groups holding {sizes[sizes > 1].sum()} "
          f"images, the largest {sizes.max()}")
    train, test = split(labels, groups, np.random.default_rng(SEED))
    assert not set(train) & set(test) and len(train) + len(test) == len(labels)
    assert not set(groups[train]) & set(groups[test])

    print(f"{'class':20s} {'train':>6s} {'test':>5s}")
    for c, name in enumerate(classes):
        print(f"{name:20s} {(labels[train] == c).sum():6d} {(labels[test] == c).sum():5d}")
    print(f"{'all':20s} {len(train):6d} {len(test):5d}")
    args.out.mkdir(parents=True, exist_ok=True)
    for file, images in (("emoji.npz", small), ("emoji64.npz", big)):
        arrays = {"classes": np.array([c.lower() for c in classes])}
        for part, rows in (("train", train), ("test", test)):
            arrays |= {f"{part}_images": images[rows], f"{part}_labels": labels[rows],
                       f"{part}_names": names[rows], f"{part}_codepoints": codes[rows]}
        save_npz(args.out / file, arrays)
        path = args.out / file
        print(f"wrote {path} ({path.stat().st_size:,} bytes), SHA-256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
    if args.preview:
        save_preview(args.preview, small[train], labels[train], classes)
        print(f"preview: {args.preview}")


if __name__ == "__main__":
    main()
