"""models/discriminator.py: shapes, sizes and input gradients of the discriminators."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ldam.models.discriminator import ConvDiscriminator, MnistDiscriminator, make_discriminator


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_mnist_shape_gets_the_papers_small_conv_net() -> None:
    torch.manual_seed(0)
    d = make_discriminator((1, 28, 28))
    assert isinstance(d, MnistDiscriminator)
    assert d.input_shape == (1, 28, 28)
    assert (d.conv1.out_channels, d.conv1.kernel_size) == (32, (5, 5))
    assert (d.conv2.out_channels, d.conv2.kernel_size) == (64, (5, 5))
    # conv1 1*32*25+32, conv2 32*64*25+64, fc1 (64*4*4)*256+256, fc2 256+1
    assert _count(d) == 832 + 51264 + 262400 + 257
    assert d(torch.randn(5, 1, 28, 28)).shape == (5,)


@pytest.mark.parametrize(
    ("shape", "convs", "width"),
    [((3, 32, 32), 3, 128), ((3, 224, 224), 6, 256), ((1, 8, 8), 1, 32), ((3, 28, 28), None, None)],
)
def test_other_shapes_get_the_generic_strided_net(shape, convs, width) -> None:
    torch.manual_seed(0)
    d = make_discriminator(shape)
    out = d(torch.randn(2, *shape))
    assert out.shape == (2,)
    assert torch.isfinite(out).all()
    if convs is None:  # any channel count at 28x28 keeps the MNIST layout
        assert isinstance(d, MnistDiscriminator) and d.conv1.in_channels == 3
        return
    assert isinstance(d, ConvDiscriminator)
    conv_layers = [m for m in d.features if isinstance(m, nn.Conv2d)]
    assert len(conv_layers) == convs
    assert conv_layers[-1].out_channels == width
    assert d.head.in_features == width


def test_input_gradient_reaches_every_pixel() -> None:
    # The sampler uses grad_x log sigmoid(D(x)); LeakyReLU keeps it nonzero almost everywhere.
    torch.manual_seed(0)
    d = make_discriminator((1, 28, 28))
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    (grad,) = torch.autograd.grad(nn.functional.logsigmoid(d(x)).sum(), x)
    assert grad.shape == x.shape
    assert (grad != 0).float().mean() > 0.99


@pytest.mark.parametrize("shape", [(28, 28), (1, 0, 28), (1, 28, 28.0)])
def test_bad_shape_is_one_sentence(shape) -> None:
    with pytest.raises(ValueError) as info:
        make_discriminator(shape)
    assert str(info.value) == (
        f"The discriminator's input shape must be three positive integers C,H,W, got {tuple(shape)}."
    )
