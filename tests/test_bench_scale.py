"""The pure measures of `benchmarks/bench_scale.py` on inputs with known answers (no atlas run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.bench_scale import (
    chain_correlation,
    contiguous,
    direction_correlations,
    high_frequency_share,
    noise_z,
    rhat_summary,
    spaced_units,
    white_noise_share,
)


def noise(*shape: int, seed: int = 0) -> np.ndarray:
    """Standard Gaussian noise of `shape`, the same for the same seed."""
    return np.random.default_rng(seed).standard_normal(shape)


def blob(size: int = 28, sigma: float = 4.0) -> np.ndarray:
    """A smooth Gaussian blob `[1, size, size]` centred in the image."""
    r = np.arange(size) - (size - 1) / 2
    return np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))[None]


def test_the_direction_itself_correlates_one_and_independent_noise_about_zero() -> None:
    direction = noise(1, 28, 28)[0]
    images = np.stack([direction, 2 * direction, -direction])
    np.testing.assert_allclose(direction_correlations(images, direction), [1, 1, -1], atol=1e-12)
    # A cosine: an offset is part of the direction (Pearson would ignore it).
    flat = np.ones_like(direction)
    assert direction_correlations(np.stack([flat + 0.1 * direction]), flat)[0] > 0.99
    independent = direction_correlations(noise(200, 1, 28, 28, seed=1), direction)
    # sd 1/sqrt(784) = 0.036 over independent images.
    assert abs(independent.mean()) < 0.01
    assert 0.03 < independent.std() < 0.042
    assert np.abs(independent).max() < 0.15


def test_the_white_noise_share_beyond_half_nyquist() -> None:
    # 1 - pi/16 = 0.804 in the continuum; the 783 non-zero bins of a 28x28 DFT give 0.811.
    assert white_noise_share(28, 28) == pytest.approx(635 / 783)
    assert white_noise_share(256, 256) == pytest.approx(1 - np.pi / 16, abs=2e-3)


def test_the_high_frequency_share_of_noise_and_of_a_smooth_blob() -> None:
    shares = high_frequency_share(noise(200, 1, 28, 28))
    assert shares.shape == (200,)
    assert shares.mean() == pytest.approx(white_noise_share(28, 28), abs=0.01)
    # An offset changes nothing (the mean is removed); the blob's power is all low.
    smooth = high_frequency_share(np.stack([blob(), blob() + 5.0]))
    np.testing.assert_allclose(smooth[0], smooth[1], rtol=1e-9)
    assert smooth[0] < 1e-3
    # Three channels are summed: noise in one and a blob in the others is in between.
    rgb = np.concatenate([noise(1, 28, 28, seed=2), 10 * blob(), 10 * blob()])[None]
    assert 0.01 < high_frequency_share(rgb)[0] < 0.8


def test_chain_correlation_of_one_picture_and_of_independent_noise() -> None:
    picture = blob() + 0.1 * noise(1, 28, 28)
    assert chain_correlation(np.stack([picture] * 4)) == pytest.approx(1.0)
    assert abs(chain_correlation(noise(8, 1, 28, 28))) < 0.02


def test_drive_z_of_a_linear_unit() -> None:
    w = torch.from_numpy(noise(1, 28, 28)).float()

    def linear(x: torch.Tensor) -> torch.Tensor:
        return (x * w).flatten(1).sum(1) + 3.0

    # Along w: z = sqrt(784) cos = 28 up to the spread of 32 noise draws' std.
    along = noise_z(linear, torch.stack([w, 0.5 * w, -w]))
    assert along.shape == (3,)
    assert 20 < along[0] < 40
    assert along[1] == pytest.approx(along[0], rel=0.3)
    assert -40 < along[2] < -20
    # Noise itself is just another draw: z ~ N(0, 1).
    unrelated = noise_z(
        linear, torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    )
    assert abs(np.median(unrelated)) < 0.5
    assert np.abs(unrelated).max() < 5


def test_rhat_summary_counts_an_undefined_rhat_as_not_mixed() -> None:
    assert rhat_summary([1.0, 1.05, 1.3, None]) == (1.05, 1.3, 0.5)
    median, largest, share = rhat_summary([None, None])
    assert np.isnan(median) and np.isnan(largest) and share == 0.0


def test_units_are_spaced_and_grouped_into_ranges() -> None:
    fc1 = spaced_units(120, 16)
    assert len(fc1) == 16 and fc1[0] == 0 and fc1[-1] == 119
    assert np.diff(fc1).min() >= 7
    assert spaced_units(6, 16) == [0, 1, 2, 3, 4, 5]
    assert contiguous([7, 0, 1, 2, 5, 8]) == [(0, 2), (5, 5), (7, 8)]
