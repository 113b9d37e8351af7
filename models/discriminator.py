"""Discriminators for the discriminator regularizer (paper section 4.2).

`D(x)` sees exactly what the classifier sees (same shape, same normalization) and returns one
logit per image: positive means "looks like a real image". The sampler's energy term is
`log sigmoid(D(x))`, so what matters most is D's gradient with respect to its input; that is why
the networks use LeakyReLU (a dead ReLU has no input gradient, and the sampler would get none).
"""

from __future__ import annotations

import torch
from torch import nn

# 0.2 is the usual GAN-discriminator slope: enough gradient through negative pre-activations.
_SLOPE = 0.2


def _check_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(
            f"The discriminator's input shape must be three positive integers C,H,W, got {shape}."
        )
    return shape  # type: ignore[return-value]


class MnistDiscriminator(nn.Module):
    """The paper's MNIST discriminator: conv 5x5x32, pool, conv 5x5x64, pool, fc, one logit.

    Input `[N, C, 28, 28]` (normalized like the classifier's input), output `[N]` logits.
    Unpadded convolutions (28 -> 24 -> 12 -> 8 -> 4) and a 256-unit fc instead of the paper's
    padded convolutions and 1024 units: about 3x fewer multiply-adds per image (0.31 M parameters),
    which matters because the sampler runs D forward and backward on every chain at every step.
    """

    def __init__(self, channels: int = 1, hidden: int = 256) -> None:
        super().__init__()
        self.input_shape = (channels, 28, 28)
        self.conv1 = nn.Conv2d(channels, 32, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits `[N]` for images `[N, C, 28, 28]`."""
        x = self.pool1(nn.functional.leaky_relu(self.conv1(x), _SLOPE))
        x = self.pool2(nn.functional.leaky_relu(self.conv2(x), _SLOPE))
        x = nn.functional.leaky_relu(self.fc1(x.flatten(1)), _SLOPE)
        return self.fc2(x).squeeze(1)


class ConvDiscriminator(nn.Module):
    """A generic discriminator for any `C x H x W`: stride-2 3x3 convolutions, global average pool.

    Channels start at 32 and double per stage up to 256; stages are added until the feature map
    is at most 4 pixels on its shorter side (at most 6 stages: 224 -> 4, 32 -> 4). Output `[N]`.
    """

    def __init__(self, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.input_shape = _check_shape(input_shape)
        channels, height, width = self.input_shape
        layers: list[nn.Module] = []
        size, width_in, width_out = min(height, width), channels, 32
        while True:
            layers += [nn.Conv2d(width_in, width_out, 3, stride=2, padding=1), nn.LeakyReLU(_SLOPE)]
            size = (size + 1) // 2
            width_in, width_out = width_out, min(2 * width_out, 256)
            if size <= 4 or len(layers) >= 12:
                break
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits `[N]` for images `[N, C, H, W]`."""
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)


def make_discriminator(input_shape: tuple[int, int, int]) -> nn.Module:
    """A fresh discriminator for classifier inputs of `input_shape` = (C, H, W).

    28x28 inputs (MNIST-like) get the paper's small conv net; every other shape gets the generic
    strided conv net. The module maps `[N, C, H, W]` to `[N]` logits and has an `input_shape`
    attribute. Raises ValueError for a shape that is not three positive integers.
    """
    channels, height, width = _check_shape(input_shape)
    if (height, width) == (28, 28):
        return MnistDiscriminator(channels)
    return ConvDiscriminator((channels, height, width))
