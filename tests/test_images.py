"""The paper's display scaling and the grid, with exact pixel values."""

from __future__ import annotations

import pytest
import torch

from ldam.sampling.images import ImageError, tile, to_display


def test_each_image_is_scaled_symmetrically_by_its_own_peak() -> None:
    x = torch.tensor([[-1.0, 0.0, 0.5, 1.0], [-10.0, 0.0, 5.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    out = to_display(x.view(3, 1, 1, 4))
    assert out.dtype == torch.uint8
    assert out.view(3, 4).tolist() == [[1, 128, 192, 255], [1, 128, 192, 255], [128] * 4]


def test_the_peak_is_over_all_channels_and_sign_matters() -> None:
    x = torch.tensor([[[[2.0]], [[-4.0]], [[1.0]]]])  # [1, 3, 1, 1]
    assert to_display(x).flatten().tolist() == [
        128 + 64,
        1,
        128 + 32,
    ]  # round(127/2)=64 (half-even 63.5)


def test_nan_and_inf_show_as_grey() -> None:
    x = torch.tensor([[[[float("nan"), float("inf"), -2.0, 1.0]]]])
    assert to_display(x).flatten().tolist() == [128, 128, 1, 192]


def test_tile_places_images_row_major_with_padding() -> None:
    images = torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    grid = tile(images.contiguous(), columns=2, pad=1, pad_value=7)
    expected = torch.tensor(
        [
            [7, 7, 7, 7, 7, 7, 7],
            [7, 10, 10, 7, 20, 20, 7],
            [7, 10, 10, 7, 20, 20, 7],
            [7, 7, 7, 7, 7, 7, 7],
            [7, 30, 30, 7, 7, 7, 7],
            [7, 30, 30, 7, 7, 7, 7],
            [7, 7, 7, 7, 7, 7, 7],
        ],
        dtype=torch.uint8,
    )
    assert torch.equal(grid, expected[None])


def test_tile_keeps_channels_and_default_padding() -> None:
    images = torch.arange(4 * 3 * 2 * 5, dtype=torch.uint8).view(4, 3, 2, 5)
    grid = tile(images, columns=4)
    assert grid.shape == (3, 2 + 2 + 2, 4 * 7 + 2)
    assert torch.equal(grid[:, 2:4, 2 + 7 * 3 : 2 + 7 * 3 + 5], images[3])
    assert int(grid[:, :2].max()) == 0


def test_bad_input_is_one_sentence() -> None:
    with pytest.raises(
        ImageError, match=r"^to_display expects images \[N, C, H, W\], got shape \[2, 2\]\.$"
    ):
        to_display(torch.zeros(2, 2))
    with pytest.raises(
        ImageError,
        match=r"^tile expects uint8 images \[N, C, H, W\], got torch\.float32 of shape \[1, 1, 2, 2\]\.$",
    ):
        tile(torch.zeros(1, 1, 2, 2), columns=1)
    with pytest.raises(ImageError, match=r"^columns must be an integer >= 1, got 0\.$"):
        tile(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), columns=0)
