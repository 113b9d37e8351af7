"""Replica exchange (`ldam.sampling.tempering`): the swap rule, the ladder, the round trips,
and two exactness checks of the cold rung against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from ldam.sampling.energy import ActivationTerm, L2Term
from ldam.sampling.sampler import Sampler, SamplerConfig, SamplerError
from ldam.sampling.tempering import ReplicaExchange, respace, swap_log_accept
from ldam.wire.params import SamplerParams, invalid
from tests.chains import assert_gaussian_draws, linear_unit, run, stationary_variance


def _exchange(chains: int, replicas: int, ladder_steps: int = 0) -> ReplicaExchange:
    groups = torch.zeros(chains, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    return ReplicaExchange(
        chains, replicas, 0.25, ladder_steps, groups, 1, gen, torch.device("cpu")
    )


def test_the_swap_favours_the_better_state_on_the_colder_rung() -> None:
    # Cold rung beta 1 holds g = 2, hot rung beta 0.5 holds g = 4, T = 0.5:
    # log a = (1 - 0.5) (4 - 2) / 0.5 = 2 > 0, always accepted; the reverse is -2.
    cold, hot, t = torch.tensor(1.0), torch.tensor(0.5), torch.tensor(0.5)
    assert float(swap_log_accept(cold, hot, torch.tensor(2.0), torch.tensor(4.0), t)) == 2.0
    assert float(swap_log_accept(cold, hot, torch.tensor(4.0), torch.tensor(2.0), t)) == -2.0


def test_the_ladder_starts_uniform_and_equal_rejections_keep_it() -> None:
    ex = _exchange(4, 3)
    assert ex.betas[0].tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25])
    same = respace(ex.betas, torch.full((1, 3), 0.4, dtype=torch.float64))
    assert same[0].tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_respacing_splits_the_cumulative_rejection_equally() -> None:
    # Rungs 1, 0.5, 0: the cold pair rejects 0.59 and the hot pair 0.19 (0.6 and 0.2 with the
    # 0.01 floor). Lambda rises 0.6 over [0.5, 1] and 0.2 over [0, 0.5]; half of its total 0.8
    # is 0.4, reached 0.2 into the cold pair: beta = 1 - 0.5 * 0.4 / 0.6 = 2/3.
    betas = torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)
    new = respace(betas, torch.tensor([[0.59, 0.19]], dtype=torch.float64))
    assert new[0].tolist() == pytest.approx([1.0, 2 / 3, 0.0])


def test_even_odd_swaps_that_always_accept_make_round_trips_like_a_conveyor() -> None:
    # Every swap accepted: replica labels travel one rung per step and turn at the ends, so
    # each of the K + 1 labels completes a round trip every 2 (K + 1) steps.
    k, steps = 3, 80
    ex = _exchange(1, k)
    for _ in range(steps):
        perm = ex.swap(torch.zeros(k + 1), torch.ones(1))
    assert sorted(perm.tolist()) == list(range(k + 1))
    (stats,) = ex.stats()
    assert stats.acceptance == [1.0, 1.0, 1.0]
    # The first trip of every label ends within its first 2 (K + 1) + K steps.
    assert steps // (2 * (k + 1)) * (k + 1) - (k + 1) <= stats.round_trips
    assert stats.round_trips <= steps // (2 * (k + 1)) * (k + 1)


def test_a_swap_moves_states_and_leaves_velocities_in_their_slots() -> None:
    # One chain, two rungs, a constant activation: every swap is accepted (log a = 0).
    term = ActivationTerm(lambda x: x.flatten(1).sum(1) * 0.0)
    config = SamplerConfig(
        chains=1, replicas=1, ladder_steps=0, step_size=0.1, temperature=1.0, momentum=0.5
    )
    sampler = Sampler([term, L2Term()], (1, 1, 2), config)
    before = sampler._x.clone()  # noqa: SLF001 - the hidden replica is what is checked
    v_before = sampler.v.clone()
    sampler.step()
    # Step 1 swapped rungs 0 and 1, then took a Langevin step from the swapped states, with
    # each slot's own velocity (zero here) and the slot's noise.
    assert not torch.equal(sampler._x, before)  # noqa: SLF001
    assert torch.equal(v_before, torch.zeros_like(v_before))


def test_the_cold_rung_of_a_linear_unit_samples_the_exact_gaussian_with_replicas() -> None:
    """f = w.x with L2: rung k samples N(beta_k w / lam, T / (lam (1 - b lam / 2))); the cold
    rung, the one shown, keeps the closed form of plain Langevin while swaps go on."""
    step, lam, temperature, chains, recorded, burn_in = 0.05, 1.0, 0.5, 400, 400, 300
    w = torch.tensor([1.0, -2.0, 0.5, 0.0])
    config = SamplerConfig(
        chains=chains,
        temperature=temperature,
        step_size=step,
        l2_weight=lam,
        replicas=3,
        ladder_end=0.1,
        ladder_steps=100,
        burn_in=burn_in,
        window=1,
        seed=0,
    )
    sampler = Sampler([linear_unit(w, 3.0), L2Term()], (1, 2, 2), config)
    run(sampler, burn_in)
    assert sampler.exchange is not None and not sampler.exchange.adapting
    draws = torch.stack(run(sampler, recorded)).flatten(1).T.numpy()
    draws = draws.reshape(chains, 4, recorded).transpose(1, 0, 2)  # [pixel, chain, n]
    (stats,) = sampler.exchange.stats()
    assert all(a is not None and a > 0.2 for a in stats.acceptance)  # swaps do happen
    var = stationary_variance(step, lam, 0.0, temperature)
    assert_gaussian_draws(draws, [float(v) / lam for v in w], var)


# A double well at T = 1: p(x) ∝ 0.3 N(-3, 0.3^2) + 0.7 N(3, 0.3^2) as exp(f(x) - lam x^2 / 2).
_WEIGHTS, _MODE, _WIDTH, _LAM = (0.3, 0.7), 3.0, 0.3, 1 / 8


def _double_well(x: torch.Tensor) -> torch.Tensor:
    z = x.flatten(1)[:, 0]
    parts = torch.stack(
        [
            math.log(_WEIGHTS[0]) - 0.5 * ((z + _MODE) / _WIDTH) ** 2,
            math.log(_WEIGHTS[1]) - 0.5 * ((z - _MODE) / _WIDTH) ** 2,
        ]
    )
    return torch.logsumexp(parts, 0) + _LAM * z**2 / 2


def _right_share(replicas: int, burn_in: int, steps: int) -> tuple[float, float]:
    """The share of the cold rung's kept draws in the right well, and its standard error,
    from 200 chains all started in the left well."""
    chains = 200
    config = SamplerConfig(
        chains=chains,
        temperature=1.0,
        step_size=0.03,
        l2_weight=_LAM,
        replicas=replicas,
        ladder_end=0.02,
        ladder_steps=400,
        burn_in=burn_in,
        window=1,
        seed=1,
    )
    sampler = Sampler([ActivationTerm(_double_well), L2Term()], (1, 1, 1), config)
    sampler.start_from(torch.full((chains, 1, 1, 1), -_MODE))
    right = torch.zeros(chains)
    for t in range(steps):
        sampler.step()
        if t >= burn_in:
            right += (sampler.x.flatten() > 0).float()
    share = right / (steps - burn_in)
    return float(share.mean()), float(share.std() / math.sqrt(chains))


def test_replicas_recover_both_weights_of_a_double_well_where_plain_langevin_cannot() -> None:
    plain, _ = _right_share(0, 500, 2000)
    assert plain < 0.01  # from the left well, plain Langevin never crosses the barrier
    # With one small step on every rung the hottest relaxes in about 1 / (step lam) = 270
    # steps, and the right well's share reaches the cold rung in about 4000.
    share, error = _right_share(6, 4000, 8000)
    assert abs(share - _WEIGHTS[1]) < 0.05 * _WEIGHTS[1]
    assert error < 0.02  # and the estimate is precise enough for that to mean something


@pytest.mark.parametrize(
    "kwargs, field, message",
    [
        (
            {"chains": 256, "replicas": 40},
            "replicas",
            "256 chains with 40 replicas each make 10496 rows, more than the 8192 one batch "
            "may hold; use fewer replicas or chains.",
        ),
        ({"ladder_end": 0.0}, "ladder_end", "ladder_end must be in (0, 1], got 0."),
        ({"ladder_end": 1.5}, "ladder_end", "ladder_end must be in (0, 1], got 1.5."),
        ({"replicas": 65}, "replicas", "replicas must be in [0, 64], got 65."),
        (
            {"replicas": 2, "temperature": 0.0},
            "replicas",
            "replicas need a temperature above 0 on every chain; set replicas to 0 or raise "
            "the temperature.",
        ),
    ],
)
def test_bad_replica_settings_are_one_sentence(kwargs: dict, field: str, message: str) -> None:
    with pytest.raises(SamplerError) as err:
        SamplerConfig(**kwargs)
    assert str(err.value) == message and err.value.field == field


def test_replicas_that_do_not_fit_the_memory_budget_are_refused() -> None:
    # 3x224x224 images: a window of 10 for 20 chains takes 115 MiB; 64 replicas of 20 chains
    # take 6 images each, 4.4 GiB.
    config = SamplerConfig(chains=20, replicas=64, window=10)
    with pytest.raises(SamplerError) as err:
        Sampler([ActivationTerm(lambda x: x.mean((1, 2, 3))), L2Term()], (3, 224, 224), config)
    assert err.value.field == "replicas"
    assert str(err.value) == (
        "64 replicas of 20 chains of shape (3, 224, 224) need 4410 MiB beside the window's "
        "115 MiB, more than the 1024 MiB limit; use fewer replicas or chains."
    )


def test_the_dashboard_refuses_a_temperature_of_0_with_replicas_in_the_same_words() -> None:
    # The page's parameters check the rule before the worker sees it: a live temperature of 0
    # (or a temperature sweep through 0) with replicas on is refused, never a worker crash.
    sentence = (
        "replicas need a temperature above 0 on every chain; set replicas to 0 or raise the "
        "temperature."
    )
    for bad in (
        {"temperature": 0.0},
        {"layout": "sweep", "sweep_param": "temperature", "sweep_values": [0.1, 0.0]},
    ):
        with pytest.raises(ValidationError) as err:
            SamplerParams(**bad)
        assert invalid(err.value) == (sentence, "replicas")
    assert SamplerParams(temperature=0.0, replicas=0).temperature == 0.0
