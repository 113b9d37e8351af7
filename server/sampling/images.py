"""Display of samples, pure torch so it runs on the sampler's device.

Two views of the same chains (`ldam.wire.views` names them; its ``auto``, the default on every
surface, picks one from the channel count with `resolve_view`: 3 channels show in the input
space, any other count in the symmetric view):

- ``symmetric``, the paper's (section 5.1): each image is scaled by its own largest |value|
  to [-127, 127] and shifted by 128: grey 128 is zero (uncorrelated with the unit), white
  positively, black negatively correlated (`to_display`).
- ``input``: the image as the network's data would hold it, de-normalized
  (`x * std + mean` per channel) and clipped to [0, 1] (`to_input_space`). It shows what
  the network actually sees, with the colours of its data set.

Any channel count displays: 1 channel is grey, 3 are RGB, and any other count (2, 4 or more)
shows every channel as its own grey image, side by side left to right in channel order with
a 1-pixel black line between them (`split_channels`). A fourth channel is not taken for
alpha: inputs with 4 or more channels are RGB plus depth, infrared or other bands, and
transparency would hide the chains' values rather than show them. Chains are then tiled into
one grid, columns = targets (`tile`); `display_grid` does all of it, for the dashboard's
frames and `ldam sample --png` alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor

from ldam.errors import UserError
from ldam.wire.views import resolve_view

# Pixels of black between the channels of an image shown side by side.
CHANNEL_GAP = 1


class ImageError(UserError):
    """Images of the wrong shape or type; the message is one sentence."""


def to_display(x: Tensor) -> Tensor:
    """`x [N, C, H, W]` (any float) -> uint8 `[N, C, H, W]`: `round(127 x / max|x|) + 128` per image.

    An all-zero image is all 128; NaN and Inf show as 128 (grey) rather than spoiling the scale.
    """
    if x.dim() != 4:
        raise ImageError(f"to_display expects images [N, C, H, W], got shape {list(x.shape)}.")
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
    peak = x.abs().amax(dim=(1, 2, 3), keepdim=True)
    scale = torch.where(peak > 0, 127.0 / peak, torch.zeros_like(peak))
    return (x * scale).round_().add_(128.0).clamp_(0, 255).to(torch.uint8)


def to_input_space(
    x: Tensor, normalization: tuple[Sequence[float], Sequence[float]] | None
) -> Tensor:
    """`x [N, C, H, W]` in the network's input space -> uint8 `[N, C, H, W]` as the data had it.

    With `normalization` = (mean, std), one value per channel or one for all: `x * std + mean`
    per channel, clipped to [0, 1], times 255, rounded. Without: `x` clipped to [0, 1], times
    255. NaN shows as the mean (x = 0), +Inf as 255 and -Inf as 0.
    """
    if x.dim() != 4:
        raise ImageError(f"to_input_space expects images [N, C, H, W], got shape {list(x.shape)}.")
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=math.inf, neginf=-math.inf)
    if normalization is not None:
        channels = x.shape[1]
        mean, std = (
            torch.as_tensor([float(v) for v in values], device=x.device) for values in normalization
        )
        for name, values in (("mean", mean), ("std", std)):
            if values.numel() not in (1, channels):
                raise ImageError(
                    f"The normalization has {values.numel()} {name} values for images with "
                    f"{channels} channels; give one per channel or one for all."
                )
        x = x * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
    return x.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)


def split_channels(images: Tensor, gap: int = CHANNEL_GAP, gap_value: int = 0) -> Tensor:
    """uint8 `images [N, C, H, W]` -> `[N, 1, H, C W + (C - 1) gap]`: every channel as its own
    grey image, left to right in channel order, `gap` pixels of `gap_value` between them."""
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ImageError(
            f"split_channels expects uint8 images [N, C, H, W], got {images.dtype} of shape "
            f"{list(images.shape)}."
        )
    n, c, h, w = images.shape
    out = torch.full((n, h, c, w + gap), gap_value, dtype=torch.uint8, device=images.device)
    out[..., :w] = images.permute(0, 2, 1, 3)  # [N, H, C, W]: each row holds every channel
    return out.view(n, 1, h, c * (w + gap))[..., : c * (w + gap) - gap]


def display_images(
    x: Tensor,
    view: str = "symmetric",
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Tensor:
    """`x [N, C, H, W]` -> uint8 `[N, 1 or 3, H, W']` in `view` (one of `ldam.wire.views.VIEWS`; ``auto`` is
    resolved from C by `resolve_view`): grey for one channel, RGB for three, each channel side
    by side (`split_channels`) for any other count. `ViewError` for an unknown view."""
    if x.dim() != 4:
        raise ImageError(f"display_images expects images [N, C, H, W], got shape {list(x.shape)}.")
    if resolve_view(view, x.shape[1]) == "symmetric":
        images = to_display(x)
    else:
        images = to_input_space(x, normalization)
    if images.shape[1] not in (1, 3):
        images = split_channels(images)
    return images


def display_grid(
    x: Tensor,
    columns: int,
    view: str = "symmetric",
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Tensor:
    """Chains `x [N, C, H, W]` in grid order -> one uint8 grid `[1 or 3, H', W']` for `to_pil`:
    `display_images` in `view`, tiled row-major in `columns` columns."""
    return tile(display_images(x, view, normalization), columns=columns)


def tile(images: Tensor, columns: int, pad: int = 2, pad_value: int = 0) -> Tensor:
    """Tile uint8 `images [N, C, H, W]` into one grid `[C, rows (H + pad) + pad, columns (W + pad) + pad]`.

    Image i sits at row i // columns, column i % columns (row-major, chains in order), with
    `pad` pixels of `pad_value` around and between images; empty cells are `pad_value`.
    """
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ImageError(
            f"tile expects uint8 images [N, C, H, W], got {images.dtype} of shape {list(images.shape)}."
        )
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ImageError(f"columns must be an integer >= 1, got {columns!r}.")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ImageError(f"pad must be an integer >= 0, got {pad!r}.")
    if not 0 <= pad_value <= 255:
        raise ImageError(f"pad_value must be in [0, 255], got {pad_value!r}.")
    n, c, h, w = images.shape
    rows = max(1, math.ceil(n / columns))
    cells = torch.full(
        (rows * columns, c, h + pad, w + pad), pad_value, dtype=torch.uint8, device=images.device
    )
    cells[:n, :, :h, :w] = images
    # [rows, columns, C, h+pad, w+pad] -> [C, rows, h+pad, columns, w+pad]: one copy, no loop.
    body = cells.view(rows, columns, c, h + pad, w + pad).permute(2, 0, 3, 1, 4)
    grid = torch.full(
        (c, rows * (h + pad) + pad, columns * (w + pad) + pad),
        pad_value,
        dtype=torch.uint8,
        device=images.device,
    )
    grid[:, pad:, pad:] = body.reshape(c, rows * (h + pad), columns * (w + pad))
    return grid


def to_pil(grid: Tensor) -> Image.Image:
    """uint8 grid `[C, H, W]` (C = 1 or 3) -> a Pillow image ("L" or "RGB"), copied to the host.

    Other channel counts are first laid out by `display_images` (or `display_grid`)."""
    if grid.dim() != 3 or grid.shape[0] not in (1, 3) or grid.dtype != torch.uint8:
        raise ImageError(
            f"to_pil expects a uint8 grid [C, H, W] with 1 or 3 channels, got {grid.dtype} of "
            f"shape {list(grid.shape)}; display_grid lays out any other channel count."
        )
    array = grid.cpu().numpy()
    if array.shape[0] == 1:
        return Image.fromarray(array[0], mode="L")
    return Image.fromarray(array.transpose(1, 2, 0).copy(), mode="RGB")
