"""Display of samples as the paper shows them, pure torch so it runs on the sampler's device.

Each image is scaled symmetrically by its own largest |value| to [-127, 127] and shifted by
128: grey 128 is zero (uncorrelated with the unit), white positively, black negatively
correlated (paper section 5.1). Chains are tiled into one grid, columns = targets.
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torch import Tensor

from ldam.errors import UserError


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


def grid_order(units_per_chain: list[int], units: list[int]) -> list[int]:
    """Chain index per grid cell (row-major, one column per entry of `units`).

    Row r, column c shows the r-th chain whose unit is `units[c]`, whichever way the target
    groups chains by unit (`fc3:0-2` with 6 chains: rows [0, 2, 4] and [1, 3, 5]).
    """
    by_unit: dict[int, list[int]] = {}
    for chain, unit in enumerate(units_per_chain):
        by_unit.setdefault(unit, []).append(chain)
    rows = min(len(by_unit.get(u, [])) for u in units)
    return [by_unit[u][r] for r in range(rows) for u in units]


def to_pil(grid: Tensor) -> Image.Image:
    """uint8 grid `[C, H, W]` (C = 1 or 3) -> a Pillow image ("L" or "RGB"), copied to the host."""
    array = grid.cpu().numpy()
    if array.shape[0] == 1:
        return Image.fromarray(array[0], mode="L")
    return Image.fromarray(array[:3].transpose(1, 2, 0).copy(), mode="RGB")
