"""Split R-hat and ESS against analytic cases: iid draws, AR(1) chains, disagreeing chains;
and `unit_diagnostics`' one rule for which draws count."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ldam.sampling.diagnostics import (
    MIN_DRAWS,
    NOT_BURNED_IN_NOTE,
    TOO_FEW_NOTE,
    DiagnosticsError,
    effective_sample_size,
    kept_draws,
    split_rhat,
    unit_diagnostics,
)


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


def test_unit_diagnostics_counts_the_draws_after_every_chain_of_the_unit_burned_in() -> None:
    # Rows are sampler steps 1..200; step t reports the activation of sample t - 1, kept by a
    # chain with burn-in step b once t - 1 > b: rows of steps b + 2 on.
    activation = ar1(0.5, 6, 200, seed=3).T  # [steps, chains]
    burn = [10, 3, 30, 0, 0, 150]
    units = [4, 1, 4, 1, 9, 9]  # grid order, unsorted and repeated
    out = unit_diagnostics(activation, burn, units)
    assert [e["unit"] for e in out] == [4, 1, 9]  # the order of the grid's columns
    four = activation[31:, [0, 2]].T  # from step 32 = 30 + 2: row 31
    assert out[0]["chains"] == [0, 2] and out[0]["draws"] == 200 - 31 == four.shape[1]
    assert out[0]["rhat"] == split_rhat(four) and out[0]["ess"] == effective_sample_size(four)
    assert out[0]["note"] is None
    assert out[1]["draws"] == 200 - 4 and out[1]["rhat"] == split_rhat(activation[4:, [1, 3]].T)
    # Unit 9: chain 5 kept only the rows of steps 152..200, 49 draws; one fewer is too few.
    assert out[2]["draws"] == 49 >= MIN_DRAWS == 40
    late = unit_diagnostics(activation, [0, 0, 0, 0, 0, 200 - MIN_DRAWS], units)[2]
    assert (late["draws"], late["rhat"], late["ess"]) == (MIN_DRAWS - 1, None, None)
    assert late["note"] == TOO_FEW_NOTE == "fewer than 40 post-burn-in draws per chain"
    waiting = unit_diagnostics(activation, [0, 0, 0, 0, -1, 0], units)[2]
    assert waiting == {
        "unit": 9,
        "chains": [4, 5],
        "draws": 0,
        "rhat": None,
        "ess": None,
        "note": NOT_BURNED_IN_NOTE,
    }


def test_a_window_of_later_steps_keeps_the_same_draws() -> None:
    # The dashboard hands a ring of recent steps: rows from step 101 on give the same draws
    # as the whole run wherever the kept part lies inside the window.
    activation = ar1(0.2, 3, 300, seed=4).T
    whole = unit_diagnostics(activation, [150, 140, 120], [0, 0, 0])
    window = unit_diagnostics(activation[100:], [150, 140, 120], [0, 0, 0], first_step=101)
    assert whole == window and whole[0]["draws"] == 300 - 151
    np.testing.assert_array_equal(kept_draws(activation[100:], 5, 101), activation[100:].T)
    with pytest.raises(
        DiagnosticsError,
        match=r"^The activation \[steps, chains\] \[300, 3\], burn-in steps \[2\] and units "
        r"\(3\) must agree on the number of chains\.$",
    ):
        unit_diagnostics(activation, [0, 0], [0, 0, 0])
