"""The burn-in detector fed known activation sequences: fixed burn-in, the relative-change and
standard-error tests of auto burn-in at the exact step they pass, the threshold and resets."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ldam.sampling.burn_in import BurnIn

CPU = torch.device("cpu")


def feed(detector: BurnIn, rows: Sequence[Sequence[float]], start: int = 0) -> None:
    """Steps `start + 1, start + 2, ...` of chains never reset (age = step), with one
    activation per chain per step from `rows`."""
    for step, row in enumerate(rows, start + 1):
        age = torch.full((len(row),), step, dtype=torch.long)
        detector.update(torch.tensor(row, dtype=torch.float32), age, step)


def auto(
    chains: int = 1,
    window: int = 10,
    epsilon: float = 0.02,
    threshold: float | torch.Tensor | None = None,
) -> BurnIn:
    """An auto burn-in detector on the CPU."""
    return BurnIn(chains, CPU, None, window, epsilon, threshold)


def test_fixed_burn_in_discards_exactly_n_steps() -> None:
    detector = BurnIn(2, CPU, 3, 10, 0.02)
    feed(detector, [[0.0, 1.0]] * 3)
    assert detector.burned.tolist() == [False, False]
    assert detector.steps.tolist() == [-1, -1]
    feed(detector, [[0.0, 1.0]], start=3)
    assert detector.burned.tolist() == [True, True]  # the 4th sample is the first kept one
    assert detector.steps.tolist() == [3, 3]


def test_a_constant_activation_burns_in_once_the_window_is_full() -> None:
    detector = auto(window=10)
    feed(detector, [[5.0]] * 9)
    assert detector.steps.tolist() == [-1]
    feed(detector, [[5.0]], start=9)
    assert detector.steps.tolist() == [9]  # step 10 fills the window: 9 steps discarded


def test_an_odd_window_uses_its_newest_even_part() -> None:
    detector = auto(window=7)  # halves of 3: the ring holds 6 steps
    feed(detector, [[5.0]] * 6)
    assert detector.steps.tolist() == [5]


def test_a_linear_rise_burns_in_when_its_relative_change_falls_under_epsilon() -> None:
    # a_t = t with halves of h = 5: the half means are s - 2 and s - 7 at step s, a change of 5
    # relative to s - 2, below 0.08 from s = 65 on; the standard error is 1 (variance 2.5 per
    # half), so the 2-sigma test never passes for a change of 5.
    detector = auto(window=10, epsilon=0.08)
    feed(detector, [[float(t)] for t in range(1, 65)])
    assert detector.steps.tolist() == [-1]
    feed(detector, [[65.0]], start=64)
    assert detector.steps.tolist() == [64]


def test_a_geometric_rise_never_burns_in() -> None:
    # 1.1^t: the halves differ by a constant 38% of the newest, far above epsilon and above
    # two standard errors (about 16%).
    detector = auto(window=10, epsilon=0.02)
    feed(detector, [[1.1**t] for t in range(1, 151)])
    assert detector.burned.tolist() == [False]


def test_noise_around_zero_burns_in_by_the_standard_error_test() -> None:
    # (-1)^t: the half means +-0.2 differ by 0.4, twice their level, and epsilon = 0 rules the
    # relative test out; the standard error sqrt((1.2 + 1.2) / 5) = 0.69 is over 0.4 / 2.
    detector = auto(window=10, epsilon=0.0)
    feed(detector, [[float((-1) ** t)] for t in range(1, 10)])
    assert detector.steps.tolist() == [-1]
    feed(detector, [[1.0]], start=9)
    assert detector.steps.tolist() == [9]


def test_the_threshold_holds_back_chains_below_it() -> None:
    detector = auto(chains=3, threshold=torch.tensor([2.0, 2.0, 0.0]))
    feed(detector, [[1.0, 3.0, -1.0]] * 30)
    assert detector.burned.tolist() == [False, True, False]
    assert detector.steps.tolist() == [-1, 9, -1]


def test_reset_restarts_only_those_chains_counting_steps_from_the_start() -> None:
    detector = auto(chains=2)
    feed(detector, [[5.0, 5.0]] * 12)
    step = 12
    detector.set_done(bool(detector.burned.all()))
    assert detector.done
    detector.reset(torch.tensor([0]))
    assert not detector.done
    assert detector.steps.tolist() == [-1, 9]
    # Chain 0 restarts at age 0 on step 13; it needs a full window of its own again.
    age = torch.tensor([0, step])
    for t in range(step + 1, step + 11):
        age += 1
        detector.update(torch.tensor([7.0, 5.0]), age, t)
        expected = [t - 1 if t == step + 10 else -1, 9]
        assert detector.steps.tolist() == expected


def test_a_masked_restart_is_an_indexed_one_that_leaves_done_alone() -> None:
    indexed, masked = auto(chains=3), auto(chains=3)
    rows = [[5.0, 5.0, 5.0]] * 12
    feed(indexed, rows)
    feed(masked, rows)
    masked.set_done(True)
    indexed.reset(torch.tensor([1]))
    masked.reset_mask(torch.tensor([False, True, False]))
    assert masked.done  # only the caller knows whether the mask held a chain
    masked.set_done(False)
    age = torch.tensor([12, 0, 12])
    for t in range(13, 30):
        age += 1
        for detector in (indexed, masked):
            detector.update(torch.tensor([5.0, 7.0, 5.0]), age, t)
    assert torch.equal(masked.burned, indexed.burned)
    assert masked.steps.tolist() == indexed.steps.tolist() == [9, 21, 9]


def test_record_while_done_keeps_a_chain_restarted_unseen_exact() -> None:
    # The sampler without host reads learns of a masked restart a few steps late; meanwhile it
    # calls `record`, and once it calls `update` again the chain burns in at the same step as
    # with `update` all along, as long as it learns before the chain's age reaches the window.
    for late in range(1, 10):
        exact, unseen = auto(chains=2), auto(chains=2)
        feed(exact, [[5.0, 5.0]] * 12)
        feed(unseen, [[5.0, 5.0]] * 12)
        unseen.set_done(True)
        for detector in (exact, unseen):
            detector.reset_mask(torch.tensor([True, False]))
        age = torch.tensor([0, 12])
        for t in range(13, 40):
            age += 1
            activation = torch.tensor([float(t % 3), 5.0])
            exact.update(activation, age, t)
            if t == 12 + late:
                unseen.set_done(False)
            (unseen.update if not unseen.done else unseen.record)(activation, age, t)
        assert unseen.steps.tolist() == exact.steps.tolist(), late
        assert exact.steps[0] >= 21  # chain 0 needed a full window of its own


def test_record_runs_fixed_burn_in_in_full() -> None:
    detector = BurnIn(2, CPU, 0, 10, 0.02)
    feed(detector, [[0.0, 0.0]])
    assert detector.steps.tolist() == [0, 0]
    detector.set_done(True)
    detector.reset_mask(torch.tensor([True, False]))
    detector.record(torch.zeros(2), torch.tensor([1, 2]), 2)
    assert detector.steps.tolist() == [1, 0]  # burn-in 0: chain 0 is kept again at once
