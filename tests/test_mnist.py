"""The shipped MNIST file, its loader and the checksummed download (served from 127.0.0.1 only)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tinydiff.data import data_dir, download_mnist, load_mnist

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "mnist.npz"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    """Tests see the repository's data/ unless they set TINYDIFF_DATA themselves."""
    monkeypatch.delenv("TINYDIFF_DATA", raising=False)


@pytest.fixture(scope="module")
def raw():
    """The shipped arrays, read with numpy alone (the reference for the loader)."""
    with np.load(SHIPPED) as npz:
        return {k: npz[k] for k in npz.files}


def _write_mnist(path: Path, n: int = 6, **override) -> Path:
    """A tiny valid MNIST npz; ``override`` replaces arrays (``None`` drops one)."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(n, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "test_labels": np.array([3, 7], dtype=np.uint8),
    }
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


# --- the shipped file -------------------------------------------------------------------


def test_shipped_file_matches_readme_checksum():
    readme = (REPO / "data" / "README.md").read_text()
    match = re.search(r"SHA-256 \| `([0-9a-f]{64})`", readme)
    assert match, "data/README.md should list the SHA-256 of mnist.npz in its table"
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == match.group(1)


@pytest.mark.parametrize("split, n", [("train", 4000), ("test", 1000), ("all", 5000)])
def test_shapes_dtypes_and_class_balance(split, n):
    x, y = load_mnist(split)
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.long
    assert int(y.min()) == 0 and int(y.max()) == 9
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), n // 10))


def test_scaling_is_pixel_over_127_5_minus_1(raw):
    x, y = load_mnist("test", dtype=torch.float64)
    expected = raw["test_images"].astype(np.float64) / 127.5 - 1.0
    np.testing.assert_array_equal(x[:, 0].numpy(), expected)
    np.testing.assert_array_equal(y.numpy(), raw["test_labels"])
    assert x.min().item() == -1.0 and x.max().item() == 1.0  # background 0 and full ink 255 both occur


def test_train_and_test_share_no_image():
    xtr, _ = load_mnist("train")
    xte, _ = load_mnist("test")
    train_bytes = {row.numpy().tobytes() for row in xtr.flatten(1)}
    assert not any(row.numpy().tobytes() in train_bytes for row in xte.flatten(1))
    assert len(train_bytes) == 4000  # and no duplicates inside train either


def test_splits_are_shuffled_not_sorted_by_label():
    _, y = load_mnist("train")
    assert (y[1:] != y[:-1]).float().mean() > 0.8  # sorted labels would change only 9 times


def test_pad_to_32_adds_a_background_border():
    x28, _ = load_mnist("test")
    x32, _ = load_mnist("test", pad_to_32=True)
    assert x32.shape == (1000, 1, 32, 32)
    assert torch.equal(x32[..., 2:30, 2:30], x28)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x32[..., border] == -1.0).all()


def test_dtype_is_respected_and_must_be_floating():
    x, _ = load_mnist("test", dtype=torch.bfloat16)
    assert x.dtype == torch.bfloat16 and x.min() == -1 and x.max() == 1
    with pytest.raises(TypeError, match="floating dtype"):
        load_mnist("test", dtype=torch.uint8)


def test_unknown_split_lists_valid_ones():
    with pytest.raises(ValueError, match="'train', 'test', 'all'"):
        load_mnist("validation")


def test_default_data_dir_is_the_repository_data_folder():
    assert data_dir() == REPO / "data"


# --- locating the file ------------------------------------------------------------------


def test_path_argument_accepts_file_or_folder(tmp_path):
    _write_mnist(tmp_path / "mnist.npz", n=6)
    for where in (tmp_path / "mnist.npz", tmp_path, str(tmp_path)):
        x, y = load_mnist(path=where)
        assert x.shape == (6, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 4, 5]


def test_env_var_overrides_the_default_folder(tmp_path, monkeypatch):
    _write_mnist(tmp_path / "mnist.npz", n=4)
    monkeypatch.setenv("TINYDIFF_DATA", str(tmp_path))
    assert load_mnist("train")[0].shape[0] == 4
    assert load_mnist("all")[1].tolist() == [0, 1, 2, 3, 3, 7]


def test_missing_file_names_it_and_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYDIFF_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as err:
        load_mnist()
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "mnist.npz") in message
    assert "TINYDIFF_DATA" in message and "scripts/make_mnist.py" in message
    with pytest.raises(FileNotFoundError, match="path argument"):
        load_mnist(path=tmp_path / "missing.npz")


def test_full_mnist_keras_layout_is_read(tmp_path):
    """The file download_mnist() fetches names its arrays x_train, y_train, x_test, y_test."""
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "full.npz", x_train=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
             y_train=np.array([1, 2, 3], dtype=np.uint8),
             x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.array([9, 0], dtype=np.uint8))
    x, y = load_mnist("test", path=tmp_path / "full.npz")
    assert y.tolist() == [9, 0] and (x == -1).all()
    assert load_mnist("all", path=tmp_path / "full.npz")[1].tolist() == [1, 2, 3, 9, 0]


# --- corrupt files ----------------------------------------------------------------------


def _truncated(path: Path) -> None:
    path.write_bytes(SHIPPED.read_bytes()[:100_000])


def _damaged(path: Path) -> None:
    """Zeros over part of the compressed data; the zip directory at the end stays intact."""
    data = bytearray(SHIPPED.read_bytes())
    data[100_000:200_000] = bytes(100_000)
    path.write_bytes(bytes(data))


def _not_a_zip(path: Path) -> None:
    path.write_bytes(b"this is not an npz file\n" * 10)


@pytest.mark.parametrize(
    "make, reason",
    [
        (_truncated, "not a zip archive"),
        (_damaged, "cannot read it as .npz"),
        (_not_a_zip, "not a zip archive"),
        (lambda p: _write_mnist(p, train_labels=None), "no arrays train_images/train_labels"),
        (lambda p: _write_mnist(p, train_images=np.zeros((6, 28, 28), np.float32)), "got float32"),
        (lambda p: _write_mnist(p, train_images=np.zeros((6, 32, 32), np.uint8)), r"\[N, 28, 28\]"),
        (lambda p: _write_mnist(p, train_labels=np.arange(5, dtype=np.uint8)), "labels should be integers"),
        (lambda p: _write_mnist(p, train_labels=np.full(6, 12, np.int64)), "0..9"),
        (lambda p: _write_mnist(p, train_labels=np.zeros(6, np.float32)), "labels should be integers"),
    ],
    ids=["truncated", "damaged", "not-a-zip", "missing-key", "float-images", "wrong-size", "label-count",
         "label-range", "float-labels"],
)
def test_corrupt_file_raises_a_clear_error(tmp_path, make, reason):
    bad = tmp_path / "mnist.npz"
    make(bad)
    with pytest.raises(ValueError, match=reason) as err:
        load_mnist("train", path=bad)
    assert str(bad) in str(err.value) and "scripts/make_mnist.py" in str(err.value)


# --- download against a local server ----------------------------------------------------


@pytest.fixture
def local_server(tmp_path):
    """Serve ``tmp_path/served`` over HTTP on 127.0.0.1 (a free port) from a thread."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_checksum_and_writes_dest(local_server, tmp_path):
    root, base = local_server
    payload = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()  # > one 1 MiB chunk
    (root / "mnist.npz").write_bytes(payload)
    dest = tmp_path / "out" / "mnist_full.npz"
    got = download_mnist(f"{base}/mnist.npz", dest, hashlib.sha256(payload).hexdigest().upper())
    assert got == dest and dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["mnist_full.npz"]  # no temporary file left


def test_download_checksum_mismatch_leaves_nothing(local_server, tmp_path):
    root, base = local_server
    (root / "mnist.npz").write_bytes(b"tampered")
    dest = tmp_path / "out" / "mnist_full.npz"
    with pytest.raises(ValueError, match="checksum mismatch") as err:
        download_mnist(f"{base}/mnist.npz", dest, hashlib.sha256(b"original").hexdigest())
    assert hashlib.sha256(b"tampered").hexdigest() in str(err.value)
    assert list(dest.parent.iterdir()) == []


def test_download_http_error_leaves_nothing(local_server, tmp_path):
    _, base = local_server
    dest = tmp_path / "out" / "mnist_full.npz"
    with pytest.raises(OSError, match="404"):
        download_mnist(f"{base}/absent.npz", dest, "0" * 64)
    assert list(dest.parent.iterdir()) == []
