"""The display views (the paper's symmetric scaling, the input space), any channel count, and
the grid, with exact pixel values."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from ldam.sampling.images import (
    ImageError,
    display_grid,
    display_images,
    split_channels,
    tile,
    to_display,
    to_input_space,
    to_pil,
)
from ldam.wire.params import View
from ldam.wire.views import SHOWN_VIEWS, VIEWS, ViewError, resolve_view


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


# --- the input-space view ----------------------------------------------------------------


def test_input_space_undoes_the_normalization_per_channel_and_clips() -> None:
    # mean 0.5, 0.25, 0 and std 0.25, 0.5, 1: x = (v - mean) / std for the bytes we expect.
    normalization = ([0.5, 0.25, 0.0], [0.25, 0.5, 1.0])
    x = torch.tensor(
        [
            [[[-2.0, 0.0, 2.0, 9.0]]],  # 0.5 + 0.25 x = 0, 0.5, 1, 2.75 -> 0, 128, 255, 255
            [[[-0.5, 0.5, 1.5, -9.0]]],  # 0.25 + 0.5 x = 0, 0.5, 1, <0 -> 0, 128, 255, 0
            [[[0.2, 0.4, 1.0, float("nan")]]],  # x itself; NaN is x = 0, the mean: 0
        ]
    ).view(1, 3, 1, 4)
    out = to_input_space(x, normalization)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 1, 4)
    # round(0.5 * 255) = round(127.5) = 128 (half to even); 0.2 * 255 = 51, 0.4 * 255 = 102.
    assert out.view(3, 4).tolist() == [[0, 128, 255, 255], [0, 128, 255, 0], [51, 102, 255, 0]]


def test_input_space_without_normalization_clips_to_the_unit_interval() -> None:
    x = torch.tensor([-1.0, 0.0, 0.2, 1.0, 3.0, float("inf"), -float("inf")]).view(1, 1, 1, 7)
    assert to_input_space(x, None).flatten().tolist() == [0, 0, 51, 255, 255, 255, 0]


def test_input_space_broadcasts_one_value_and_refuses_a_wrong_count() -> None:
    x = torch.zeros(2, 3, 2, 2)
    assert to_input_space(x, ([0.2], [1.0])).unique().tolist() == [51]
    with pytest.raises(
        ImageError,
        match=r"^The normalization has 2 mean values for images with 3 channels; give one per "
        r"channel or one for all\.$",
    ):
        to_input_space(x, ([0.1, 0.2], [1.0]))


def test_the_input_view_does_not_touch_the_chains() -> None:
    x = torch.tensor([[[[3.0, -3.0]]]])
    to_input_space(x, ([0.5], [0.25]))
    display_images(x, "input")
    assert x.flatten().tolist() == [3.0, -3.0]


# --- any channel count ------------------------------------------------------------------


def test_two_or_four_channels_show_side_by_side_in_grey() -> None:
    # 1 image, 4 channels of 2x2 with the values 10c + position: each channel its own tile.
    images = torch.tensor(
        [[[10 * c + 1, 10 * c + 2], [10 * c + 3, 10 * c + 4]] for c in range(4)],
        dtype=torch.uint8,
    ).view(1, 4, 2, 2)
    out = split_channels(images)
    assert out.shape == (1, 1, 2, 4 * 2 + 3)
    assert out[0, 0].tolist() == [
        [1, 2, 0, 11, 12, 0, 21, 22, 0, 31, 32],
        [3, 4, 0, 13, 14, 0, 23, 24, 0, 33, 34],
    ]
    two = split_channels(images[:, :2], gap=2, gap_value=9)
    assert two[0, 0].tolist() == [[1, 2, 9, 9, 11, 12], [3, 4, 9, 9, 13, 14]]


def test_display_keeps_grey_and_rgb_and_splits_the_rest() -> None:
    for channels, expected in [(1, (5, 1, 3, 4)), (3, (5, 3, 3, 4)), (2, (5, 1, 3, 9))]:
        assert display_images(torch.randn(5, channels, 3, 4)).shape == expected
    # The symmetric scale is per image over all channels: the peak 4 is in the last channel
    # (2 -> 128 + round(63.5) = 192, -1 -> 128 - 32 = 96).
    x = torch.tensor([2.0, 0.0, -1.0, 4.0]).view(1, 4, 1, 1)
    assert display_images(x)[0, 0].tolist() == [[192, 0, 128, 0, 96, 0, 255]]
    five = display_grid(torch.randn(6, 5, 3, 4), columns=3)
    assert five.shape == (1, 2 * (3 + 2) + 2, 3 * (5 * 4 + 4 + 2) + 2)
    assert to_pil(five).mode == "L" and to_pil(five).size == (80, 12)


def test_a_non_square_rgb_grid_in_both_views() -> None:
    x = torch.randn(4, 3, 20, 36)
    for view in SHOWN_VIEWS:
        grid = display_grid(x, columns=2, view=view, normalization=([0.5] * 3, [0.25] * 3))
        assert grid.shape == (3, 2 * 22 + 2, 2 * 38 + 2)
        image = to_pil(grid)
        assert image.mode == "RGB" and image.size == (78, 46)
        # Chain 3 sits at row 1, column 1.
        assert torch.equal(
            grid[:, 24:44, 40:76], display_images(x, view, ([0.5] * 3, [0.25] * 3))[3]
        )


def test_the_views_are_the_parameters_views() -> None:
    # The page's toggle, `ldam sample --view` and the frames use the same names.
    assert get_args(View) == VIEWS == ("auto", "symmetric", "input")
    assert SHOWN_VIEWS == ("symmetric", "input")


def test_auto_resolves_by_the_channel_count_and_explicit_views_stay() -> None:
    # MNIST's 1 channel keeps the paper's view, a colour network shows its own colours, and
    # 4 channels (RGB plus a band, drawn channel by channel) are no colour image.
    assert [resolve_view("auto", c) for c in (1, 2, 3, 4)] == [
        "symmetric",
        "symmetric",
        "input",
        "symmetric",
    ]
    for channels in (1, 3, 4):
        assert resolve_view("symmetric", channels) == "symmetric"
        assert resolve_view("input", channels) == "input"
    # The drawing resolves it too: auto is the input view for RGB, symmetric for grey.
    rgb, grey = torch.randn(2, 3, 4, 5), torch.randn(2, 1, 4, 5)
    norm = ([0.5] * 3, [0.25] * 3)
    assert torch.equal(display_images(rgb, "auto", norm), to_input_space(rgb, norm))
    assert torch.equal(display_images(grey, "auto", ([0.5], [0.25])), to_display(grey))


def test_unknown_view_and_bad_grids_are_one_sentence() -> None:
    with pytest.raises(
        ViewError, match=r"^The view must be one of auto, symmetric, input, got 'raw'\.$"
    ) as info:
        display_images(torch.zeros(1, 1, 2, 2), "raw")
    assert info.value.field == "view"
    with pytest.raises(
        ImageError,
        match=r"^to_pil expects a uint8 grid \[C, H, W\] with 1 or 3 channels, got torch\.uint8 "
        r"of shape \[4, 2, 2\]; display_grid lays out any other channel count\.$",
    ):
        to_pil(torch.zeros(4, 2, 2, dtype=torch.uint8))
