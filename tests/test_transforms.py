"""`ldam.sampling.transforms`: the random affine maps against their closed forms.

The identity hands back the very tensor; a 90-degree turn is `torch.rot90`, an integer shift
is `torch.roll` away from the borders (square and non-square), a zoom of 2 halves a ramp's
slope; the resampling's gradient is its adjoint (dot-product test); draws stay in their ranges,
reach both ends and repeat with the seed; bad shapes get their exact sentence.
"""

from __future__ import annotations

import pytest
import torch

from ldam.sampling.transforms import (
    ROTATION,
    SCALE,
    SHIFT,
    RandomTransforms,
    TransformError,
    check_transforms,
)


def transforms(rows: int, shape: tuple[int, int, int], seed: int = 0) -> RandomTransforms:
    """CPU transforms for `rows` images of `shape`, drawn from a generator seeded `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return RandomTransforms(rows, shape, generator, "cpu", torch.float64)


def images(rows: int, shape: tuple[int, int, int], seed: int = 1) -> torch.Tensor:
    """`[rows, *shape]` float64 Gaussian images."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, *shape, generator=generator, dtype=torch.float64)


def test_identity_returns_the_very_tensor() -> None:
    tau = transforms(3, (2, 8, 8))
    x = images(3, (2, 8, 8))
    assert tau.is_identity
    assert tau(x) is x
    tau.draw()
    assert not tau.is_identity
    assert tau(x) is not x
    tau.identity()
    assert tau.is_identity and tau(x) is x
    assert torch.equal(tau.scale, torch.ones(3, dtype=torch.float64))


def test_ninety_degrees_is_rot90_counter_clockwise() -> None:
    tau = transforms(2, (3, 12, 12))
    x = images(2, (3, 12, 12))
    tau.set(shift=torch.zeros(2, 2), scale=torch.ones(2), angle=torch.full((2,), 90.0))
    turned = tau(x)
    # rot90 with k=1 over (H, W) moves the top-right corner to the top-left: counter-clockwise.
    torch.testing.assert_close(turned, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    assert (turned - torch.rot90(x, -1, dims=(-2, -1))).abs().max() > 0.5


def test_ninety_degrees_on_a_wide_image_turns_its_centre_square() -> None:
    # Rotation works in pixels, not in the normalized [-1, 1] box: on an 8x12 image the centre
    # 8x8 square (columns 2..9) turns onto itself as rot90 of it, without shear.
    tau = transforms(1, (2, 8, 12))
    x = images(1, (2, 8, 12))
    tau.set(shift=torch.zeros(1, 2), scale=torch.ones(1), angle=torch.tensor([90.0]))
    square = x[..., 2:10]
    torch.testing.assert_close(
        tau(x)[..., 2:10], torch.rot90(square, 1, dims=(-2, -1)), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("shape", [(2, 16, 16), (1, 8, 12), (1, 12, 8)])
def test_integer_shift_is_a_roll_away_from_the_borders(shape: tuple[int, int, int]) -> None:
    tau = transforms(2, shape)
    x = images(2, shape)
    # Row 0: 2 px right, 1 px down; row 1: 1 px left, 3 px up.
    tau.set(shift=torch.tensor([[2.0, 1.0], [-1.0, -3.0]]), scale=torch.ones(2), angle=0.0)
    moved = tau(x)
    rolled = torch.stack(
        [torch.roll(x[0], (1, 2), dims=(-2, -1)), torch.roll(x[1], (-3, -1), dims=(-2, -1))]
    )
    torch.testing.assert_close(moved[0, :, 1:, 2:], rolled[0, :, 1:, 2:], atol=1e-5, rtol=0)
    torch.testing.assert_close(moved[1, :, :-3, :-1], rolled[1, :, :-3, :-1], atol=1e-5, rtol=0)
    # The content moved: the pixel at (row 3, col 4) is now at (row 4, col 6).
    assert moved[0, 0, 4, 6] == pytest.approx(x[0, 0, 3, 4].item(), abs=1e-5)
    assert (moved[0] - x[0]).abs().max() > 0.5


def test_zoom_two_halves_a_ramp_about_the_centre() -> None:
    tau = transforms(1, (1, 16, 16))
    columns = torch.arange(16, dtype=torch.float64)
    ramp = (3.0 * columns.view(1, 16) + 0.5 * columns.view(16, 1)).expand(1, 1, 16, 16)
    tau.set(shift=torch.zeros(1, 2), scale=torch.tensor([2.0]), angle=torch.zeros(1))
    # Every output pixel reads at 7.5 + (j - 7.5) / 2, inside the centre 8x8 block: exact.
    centre = 7.5 + (columns - 7.5) / 2.0
    expected = 3.0 * centre.view(1, 16) + 0.5 * centre.view(16, 1)
    torch.testing.assert_close(tau(ramp)[0, 0], expected, atol=1e-5, rtol=0)
    # The whole image shows the centre 8x8 block: corners 3.75 and 11.25 pixels in.
    assert tau(ramp)[0, 0, 0, 0] == pytest.approx(3.5 * 3.75, abs=1e-5)


def test_the_gradient_is_the_adjoint() -> None:
    # float32, as the chains run: <tau(x), y> = <x, tau^T y>, tau^T y the gradient autograd gives.
    generator = torch.Generator().manual_seed(7)
    tau = RandomTransforms(5, (3, 10, 14), generator, "cpu")
    tau.draw()
    x = images(5, (3, 10, 14), seed=2).float().requires_grad_(True)
    # y leans on tau(x) so that the product is far from 0 and a relative check means something.
    y = tau(x).detach() + images(5, (3, 10, 14), seed=3).float()
    forward = (tau(x) * y).sum()
    (gradient,) = torch.autograd.grad(forward, x)
    backward = (x.detach() * gradient).sum()
    assert gradient.dtype == torch.float32
    assert backward.item() == pytest.approx(forward.item(), rel=1e-4)
    assert forward.item() > 100.0
    # tau^T is not tau: the gradient is not y resampled the same way.
    assert (gradient - tau(y)).abs().max() > 0.1


def test_draws_cover_their_ranges() -> None:
    # A small image keeps the grid [rows, H, W, 2] small; the shift limits still differ per axis.
    rows, height, width = 20000, 8, 24
    tau = transforms(rows, (1, height, width), seed=11)
    tau.draw()
    for axis, size in ((0, width), (1, height)):
        limit = SHIFT * size
        shift = tau.shift[:, axis]
        assert shift.abs().max() <= limit
        assert shift.min() < -0.98 * limit and shift.max() > 0.98 * limit
    low, high = SCALE
    assert tau.scale.min() >= low and tau.scale.max() <= high
    assert tau.scale.min() < low + 0.02 * (high - low)
    assert tau.scale.max() > high - 0.02 * (high - low)
    assert tau.angle.abs().max() <= ROTATION
    assert tau.angle.min() < -0.98 * ROTATION and tau.angle.max() > 0.98 * ROTATION
    assert abs(tau.angle.mean().item()) < 0.2
    assert tau.grid is not None and tau.grid.shape == (rows, height, width, 2)


def test_the_seed_repeats_the_draws_and_draws_differ() -> None:
    first, second = transforms(4, (3, 8, 8), seed=5), transforms(4, (3, 8, 8), seed=5)
    first.draw()
    second.draw()
    assert torch.equal(first.theta, second.theta)
    x = images(4, (3, 8, 8))
    assert torch.equal(first(x), second(x))
    theta = first.theta.clone()
    first.draw()
    assert (first.theta - theta).abs().max() > 1e-3


def test_set_reproduces_a_draw() -> None:
    drawn, replayed = transforms(3, (2, 9, 11), seed=4), transforms(3, (2, 9, 11))
    drawn.draw()
    replayed.set(drawn.shift, drawn.scale, drawn.angle)
    x = images(3, (2, 9, 11))
    assert torch.equal(drawn(x), replayed(x))


@pytest.mark.parametrize(
    ("shape", "got"),
    [((3, 4, 6), "4x6"), ((1, 8, 7), "8x7"), ((10,), "input shape [10]")],
)
def test_small_or_flat_inputs_are_refused(shape: tuple[int, ...], got: str) -> None:
    with pytest.raises(TransformError) as caught:
        check_transforms(shape)
    assert str(caught.value) == (
        f"transforms need images of at least 8x8 pixels, got {got}; set transforms off."
    )
    assert caught.value.field == "transforms"
    with pytest.raises(TransformError):
        transforms(2, shape)  # type: ignore[arg-type]
    check_transforms((3, 8, 8))


def test_a_sampler_with_transforms_samples_the_mean_over_transforms() -> None:
    """One random tau per chain and step is an unbiased gradient of f-bar(x) = E f(tau x): for
    a linear unit f = w.x that is w-bar.x with w-bar = E[tau^T w], so under L2 the chains'
    mean is w-bar / lambda (a blurred w), not w / lambda."""
    from ldam.sampling.energy import ActivationTerm, L2Term
    from ldam.sampling.sampler import Sampler, SamplerConfig

    shape, lam = (1, 16, 16), 1.0
    w = torch.zeros(shape)
    w[0, 4:12, 7:9] = 1.0  # a bar: shifts, zooms and turns smear its edges
    cfg = SamplerConfig(
        chains=256, temperature=0.05, step_size=0.1, l2_weight=lam, transforms="on", burn_in=0
    )
    sampler = Sampler([ActivationTerm(lambda x: (x * w).flatten(1).sum(1)), L2Term()], shape, cfg)
    total = torch.zeros(shape, dtype=torch.float64)
    for i in range(300):
        sampler.step()
        if i >= 100:
            total += sampler.x.double().mean(0)
    mean = total / 200
    tau = transforms(20000, shape, seed=5)
    tau.draw()
    leaf = torch.zeros(20000, *shape, dtype=torch.float64, requires_grad=True)
    (tau(leaf) * w.double()).sum().backward()
    w_bar = leaf.grad.mean(0)
    assert float((mean - w_bar / lam).abs().max()) < 0.03
    assert float((w_bar - w.double()).abs().max()) > 0.2
    with pytest.raises(TransformError) as err:
        Sampler([L2Term()], (1, 4, 6), SamplerConfig(transforms="on"))
    assert (
        str(err.value)
        == "transforms need images of at least 8x8 pixels, got 4x6; set transforms off."
    )
    assert err.value.field == "transforms"
