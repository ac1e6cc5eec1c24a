"""Any folder of pictures as a data set, on small images each test writes to tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tinydiff.data import ImageSet, check_batch_size, check_size, flipped_batches, load_folder, random_hflip
from tinydiff.data.folder import UNET_MULTIPLE
from tinydiff.models import UNet


def _save(path, array, mode=None):
    """Write a uint8 array as an image file (format from the suffix); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode).save(path)
    return path


def _solid(h, w, rgb):
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3))


def _pixel(value):
    return value / 127.5 - 1


def test_colour_odd_non_square_is_centre_cropped_and_resized(tmp_path):
    # 21 x 63: red | green | blue thirds; the centre square is the green third
    _save(tmp_path / "stripes.png", np.concatenate([_solid(21, 21, c) for c in
                                                    ((255, 0, 0), (0, 255, 0), (0, 0, 255))], 1))
    data = load_folder(tmp_path, size=8)
    assert isinstance(data, ImageSet) and data.images.shape == (1, 3, 8, 8) and data.images.dtype == torch.float32
    assert data.labels is None and data.classes == () and data.names == ("stripes.png",)
    green = torch.tensor([_pixel(0), _pixel(255), _pixel(0)]).view(3, 1, 1)
    torch.testing.assert_close(data.images[0], green.expand(3, 8, 8), atol=2 / 127.5, rtol=0)


def test_grayscale_file_and_grayscale_output(tmp_path):
    _save(tmp_path / "gray.png", np.full((10, 10), 100), "L")
    _save(tmp_path / "colour.JPG", _solid(12, 12, (200, 40, 40)))  # upper-case suffix counts too
    rgb = load_folder(tmp_path, size=8)
    assert rgb.names == ("colour.JPG", "gray.png") and rgb.images.shape == (2, 3, 8, 8)
    torch.testing.assert_close(rgb.images[1], torch.full((3, 8, 8), _pixel(100)))  # L -> R = G = B
    gray = load_folder(tmp_path, size=4, channels=1, dtype=torch.float64)
    assert gray.images.shape == (2, 1, 4, 4) and gray.images.dtype == torch.float64
    luma = (299 * 200 + 587 * 40 + 114 * 40) / 1000  # Pillow's ITU-R 601-2 conversion
    assert abs(float(gray.images[0].mean()) - _pixel(luma)) < 3 / 127.5  # JPEG is lossy
    assert float(gray.images.min()) >= -1 and float(gray.images.max()) <= 1


def test_rgba_is_laid_over_the_background(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)      # opaque red on the left
    rgba[:, 4:] = (0, 0, 255, 0)        # fully transparent on the right
    _save(tmp_path / "a.png", rgba, "RGBA")
    x = load_folder(tmp_path, size=8).images[0]
    assert torch.equal(x[:, :, 4:], torch.ones(3, 8, 4))                        # white background
    assert torch.equal(x[:, :, :4], torch.tensor([1.0, -1, -1]).view(3, 1, 1).expand(3, 8, 4))
    gray_bg = load_folder(tmp_path, size=8, background=(51, 51, 51)).images[0]
    torch.testing.assert_close(gray_bg[:, :, 4:], torch.full((3, 8, 4), _pixel(51)))
    half = np.zeros((4, 4, 4), dtype=np.uint8)
    half[:] = (0, 0, 0, 128)            # half-transparent black over white -> about 127
    _save(tmp_path / "a.png", half, "RGBA")
    assert abs(float(load_folder(tmp_path, size=4).images.mean()) - _pixel(127)) < 1 / 127.5


def test_labels_from_sub_folders(tmp_path):
    for cls, n in (("dog", 2), ("cat", 3)):
        for i in range(n):
            _save(tmp_path / cls / f"{i}.png", _solid(5, 5, (10 * i, 0, 0)))
    _save(tmp_path / ".hidden" / "x.png", _solid(5, 5, (0, 0, 0)))
    (tmp_path / "cat" / "._0.png").write_bytes(b"macOS metadata, not an image")  # hidden: skipped
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_folder(tmp_path, size=4, labels=True)
    assert data.classes == ("cat", "dog")                           # sorted, as ImageFolder
    assert data.labels.tolist() == [0, 0, 0, 1, 1] and data.labels.dtype == torch.long
    assert data.names[0] == "cat/0.png" and len(data.images) == 5
    assert len(load_folder(tmp_path, size=4).images) == 5          # without labels: all sub-folders, no labels
    _save(tmp_path / "loose.png", _solid(5, 5, (0, 0, 0)))
    with pytest.raises(ValueError, match="loose.png.*sub-folder.*labels=False"):
        load_folder(tmp_path, size=4, labels=True)


def test_corrupt_and_truncated_files_are_named(tmp_path):
    good = _save(tmp_path / "good.png", np.random.default_rng(0).integers(0, 256, (32, 32, 3)))
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ValueError, match=r"cannot read image .*junk\.jpg.*re-save or delete"):
        load_folder(tmp_path)
    (tmp_path / "junk.jpg").unlink()
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:-200])
    with pytest.raises(ValueError, match=r"cut\.png"):
        load_folder(tmp_path)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="no image files .* in .*put pictures there"):
        load_folder(tmp_path)
    (tmp_path / "readme.txt").write_text("no pictures here")
    with pytest.raises(ValueError, match="no image files"):
        load_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_folder(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError):
        load_folder(tmp_path / "readme.txt")


def test_size_must_suit_the_unet(tmp_path):
    assert UNet().size_multiple == UNET_MULTIPLE
    assert UNet(mults=(1, 2, 2, 2)).size_multiple == 8 and UNet(mults=(1,)).size_multiple == 1
    with pytest.raises(ValueError, match="size 30 is not a multiple of 4.*size=32 or size=28"):
        load_folder(tmp_path, size=30)
    with pytest.raises(ValueError, match="size 36 is not a multiple of 8.*size=40 or size=32"):
        check_size(36, UNet(mults=(1, 2, 2, 2)).size_multiple)
    with pytest.raises(ValueError, match="positive int"):
        check_size(0)
    check_size(36)
    _save(tmp_path / "a.png", _solid(9, 9, (1, 2, 3)))
    assert load_folder(tmp_path, size=6, multiple=2).images.shape == (1, 3, 6, 6)
    with pytest.raises(ValueError, match="channels must be 3"):
        load_folder(tmp_path, channels=2)


def test_fewer_images_than_the_batch(tmp_path):
    for i in range(3):
        _save(tmp_path / f"{i}.png", _solid(4, 4, (i, i, i)))
    assert len(load_folder(tmp_path, size=4, batch_size=3).images) == 3
    with pytest.raises(ValueError, match="has 3 images, fewer than the batch size 4.*batch_size <= 3"):
        load_folder(tmp_path, size=4, batch_size=4)
    with pytest.raises(ValueError, match="my set has 2 images"):
        check_batch_size(2, 64, "my set")


def test_flips_are_per_batch_seeded_and_leave_the_data_alone():
    x = torch.arange(6 * 4 * 5, dtype=torch.float32).view(6, 1, 4, 5)  # no image is its own mirror
    keep = x.clone()
    a = random_hflip(x, torch.Generator().manual_seed(1))
    b = random_hflip(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(x, keep)
    flipped = [torch.equal(a[i], x[i].flip(-1)) for i in range(6)]
    assert all(f or torch.equal(a[i], x[i]) for i, f in enumerate(flipped)) and any(flipped) and not all(flipped)
    assert torch.equal(random_hflip(x, p=1.0), x.flip(-1)) and torch.equal(random_hflip(x, p=0.0), x)

    y = torch.arange(6)
    draw = flipped_batches(x, y)
    xb, yb = draw(64, generator=torch.Generator().manual_seed(0))
    assert xb.shape == (64, 1, 4, 5) and yb.shape == (64,)
    for xi, yi in zip(xb, yb):  # each image is its label's image, maybe mirrored
        assert torch.equal(xi, x[yi]) or torch.equal(xi, x[yi].flip(-1))
    assert flipped_batches(x)(5).shape == (5, 1, 4, 5)  # without labels: images only
    with pytest.raises(ValueError, match="labels must have shape"):
        flipped_batches(x, y[:3])


def test_flipped_batches_feed_train_with_labels(tmp_path):
    from tinydiff import schedules
    from tinydiff.train import train

    for cls in ("a", "b"):
        for i in range(3):
            _save(tmp_path / cls / f"{i}.png", np.random.default_rng(i).integers(0, 256, (9, 13, 3)))
    images, labels, classes, _ = load_folder(tmp_path, size=8, labels=True)
    net = UNet(in_channels=3, channels=8, mults=(1, 2), num_classes=len(classes))
    states = list(train(net, schedules.linear(10), flipped_batches(images, labels), steps=2, batch_size=4,
                        p_uncond=0.5, generator=torch.Generator().manual_seed(0), progress=False))
    assert len(states) == 2 and all(np.isfinite(s.loss) for s in states)
