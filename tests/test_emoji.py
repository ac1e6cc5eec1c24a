"""The shipped emoji files (32 and 64 px) and their loader."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tinydiff.data import load_emoji

REPO = Path(__file__).resolve().parents[1]
FILES = {32: REPO / "data" / "emoji.npz", 64: REPO / "data" / "emoji64.npz"}
CLASSES = ("smileys & emotion", "people & body", "animals & nature", "food & drink", "travel & places",
           "activities", "objects", "symbols")
PER_CLASS = {"train": [135, 290, 127, 105, 174, 68, 211, 179], "test": [34, 73, 32, 26, 43, 17, 53, 45]}


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    """Tests see the repository's data/ unless they set TINYDIFF_DATA themselves."""
    monkeypatch.delenv("TINYDIFF_DATA", raising=False)


@pytest.fixture(scope="module")
def raw():
    """The shipped 32 px arrays, read with numpy alone."""
    with np.load(FILES[32], allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_shipped_files_match_readme_checksums():
    section = (REPO / "data" / "README.md").read_text().split("## `emoji.npz`", 1)[1].split("\n## ", 1)[0]
    for size, file in FILES.items():
        match = re.search(rf"`{file.name}`, [\d,]+ bytes, SHA-256 `([0-9a-f]{{64}})`", section)
        assert match, f"data/README.md's emoji section should list the SHA-256 of {file.name}"
        assert hashlib.sha256(file.read_bytes()).hexdigest() == match.group(1)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_shapes_ranges_and_labels(split, size):
    images, labels, classes, captions = load_emoji(split, size)
    counts = PER_CLASS.get(split) or [a + b for a, b in zip(PER_CLASS["train"], PER_CLASS["test"])]
    assert images.shape == (sum(counts), 3, size, size) and images.dtype == torch.float32
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0
    assert float((images[:, :, 0, 0] == 1).all(1).double().mean()) > 0.95  # corners are white background (most)
    assert labels.dtype == torch.long and labels.bincount(minlength=8).tolist() == counts
    assert classes == CLASSES and len(captions) == len(labels) and all(captions)


def test_dtype_and_errors(tmp_path, monkeypatch):
    assert load_emoji("test", dtype=torch.float64).images.dtype == torch.float64
    with pytest.raises(ValueError, match="sizes 32 and 64"):
        load_emoji(size=28)
    with pytest.raises(ValueError, match="unknown emoji split"):
        load_emoji("valid")
    with pytest.raises(FileNotFoundError, match="git checkout -- data/emoji.npz"):
        load_emoji(path=tmp_path)
    (tmp_path / "emoji.npz").write_bytes(b"not a zip")
    monkeypatch.setenv("TINYDIFF_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="corrupt or not an emoji .npz.*make_emoji.py"):
        load_emoji()


def test_splits_are_disjoint_even_up_to_near_copies_and_mirrors(raw):
    train, test = raw["train_images"], raw["test_images"]
    seen = {a.tobytes() for a in train} | {a[:, ::-1].tobytes() for a in train}
    assert not any(a.tobytes() in seen for a in test)
    assert not set(raw["train_codepoints"]) & set(raw["test_codepoints"])
    everything = np.concatenate([train, test])
    assert len({a.tobytes() for a in everything}) == len(everything)

    def flat(x):
        return torch.from_numpy(np.ascontiguousarray(x)).flatten(1).double() / 255

    dim = train[0].size
    nearest = torch.minimum(torch.cdist(flat(test), flat(train)),
                            torch.cdist(flat(test), flat(train[:, :, ::-1]))).min(1).values / dim ** 0.5
    assert float(nearest.min()) >= 0.05                                  # make_emoji.py's GROUP_RMS


def test_no_skin_tones_flags_or_components(raw):
    codes = np.concatenate([raw["train_codepoints"], raw["test_codepoints"]])
    assert not any(re.search("1F3F[B-F]", c) for c in codes)            # Fitzpatrick modifiers
    assert not any(re.fullmatch("1F1[E-F][0-9A-F]-1F1[E-F][0-9A-F]", c) for c in codes)  # regional-indicator flags
    names = load_emoji("all").names
    assert "grinning face" in names and "family" in names and not any(n.endswith("facing right") for n in names)


def test_32_px_is_the_box_mean_of_64_px(raw):
    with np.load(FILES[64], allow_pickle=False) as npz:
        big = npz["test_images"].astype(np.int64)
        assert (npz["test_names"] == raw["test_names"]).all()
    blocks = big.reshape(len(big), 32, 2, 32, 2, 3).sum((2, 4))
    assert np.array_equal((blocks + 2) // 4, raw["test_images"])
