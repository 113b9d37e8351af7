"""The real images D learns to tell the chains from, normalized like the classifier's input."""

from __future__ import annotations

from pathlib import Path

import torch

from ldam.sampling.discriminator.errors import DiscriminatorError


def real_images_for(
    input_shape: tuple[int, int, int],
    normalization: tuple[list[float], list[float]] | None,
    data: str | Path | None,
) -> torch.Tensor:
    """D's real images `[M, C, H, W]`, normalized like the classifier's input.

    `data` (a folder or `.npz`, read by `ldam.models.data.load_images`) when given; else the bundled
    MNIST training split (8,000 digits; the 2,000 held out stay unseen) for 1x28x28 inputs.
    """
    from ldam.models import data as datasets

    input_shape = tuple(int(s) for s in input_shape)  # type: ignore[assignment]
    try:
        if data is not None:
            return datasets.load_images(data, input_shape, normalization)
        if input_shape == (1, 28, 28):
            mean, std = (normalization[0][0], normalization[1][0]) if normalization else (0.0, 1.0)
            images, _ = datasets.load_mnist()
            train, _ = datasets.split_indices()
            return datasets.normalize_mnist(images[train], mean, std)
    except datasets.DataError as exc:
        raise DiscriminatorError(str(exc)) from None
    raise DiscriminatorError(
        f"The discriminator needs real images shaped like the model's input {input_shape}: "
        "pass --disc-data with a folder of images or an .npz."
    )
