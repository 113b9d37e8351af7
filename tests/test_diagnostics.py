"""Split R-hat and ESS against analytic cases: iid draws, AR(1) chains, disagreeing chains."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ldam.sampling.diagnostics import DiagnosticsError, effective_sample_size, split_rhat


def ar1(rho: float, chains: int, n: int, seed: int) -> np.ndarray:
    """Stationary AR(1) draws x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t, shape [chains, n]."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((chains, n))
    x = np.empty((chains, n))
    x[:, 0] = e[:, 0]
    scale = math.sqrt(1 - rho**2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + scale * e[:, t]
    return x


def test_iid_normal_draws_mix_perfectly() -> None:
    draws = np.random.default_rng(0).standard_normal((4, 2000))
    assert abs(split_rhat(draws) - 1.0) < 0.01
    assert effective_sample_size(draws) == pytest.approx(8000, rel=0.1)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ar1_ess_matches_the_analytic_value(rho: float) -> None:
    chains, n = 8, 4000
    draws = ar1(rho, chains, n, seed=int(rho * 10))
    expected = chains * n * (1 - rho) / (1 + rho)
    assert effective_sample_size(draws) == pytest.approx(expected, rel=0.15)
    assert abs(split_rhat(draws) - 1.0) < 0.02


def test_chains_with_different_means_give_a_large_rhat() -> None:
    draws = np.random.default_rng(1).standard_normal((4, 500))
    draws[3] += 3.0
    assert split_rhat(draws) > 1.1


def test_a_drifting_chain_is_caught_by_splitting() -> None:
    rng = np.random.default_rng(2)
    draws = rng.standard_normal((1, 1000)) + np.linspace(0, 4, 1000)
    assert split_rhat(draws) > 1.1


def test_constant_or_non_finite_draws_have_no_defined_value() -> None:
    for draws in (np.ones((3, 10)), np.array([[np.nan, 1.0, 0.0, 2.0, 3.0]])):
        assert math.isnan(split_rhat(draws))
        assert math.isnan(effective_sample_size(draws))


def test_bad_shapes_are_one_sentence() -> None:
    with pytest.raises(
        DiagnosticsError,
        match=r"^Draws must be a 2-D array \[chains, draws\], got shape \(10,\)\.$",
    ):
        split_rhat(np.zeros(10))
    with pytest.raises(
        DiagnosticsError,
        match=r"^Diagnostics need at least 1 chain of at least 4 draws, got shape \(2, 3\)\.$",
    ):
        effective_sample_size(np.zeros((2, 3)))
