"""The moving window and the running mean over known values: exact means after wrap-around,
masks, a live resize, resets, the window's re-sum cadence and the running mean's float64 fold;
the window's block means in time order, NaN for a chain whose window is not full."""

from __future__ import annotations

import pytest
import torch

from ldam.sampling import averaging
from ldam.sampling.averaging import MovingWindow, RunningMean

CPU = torch.device("cpu")
SHAPE = (2, 1, 1, 2)  # two chains of two pixels


def batch(value: float, second: float | None = None) -> torch.Tensor:
    """Chain 0 filled with `value`, chain 1 with `second` (default `value`), shape `SHAPE`."""
    x = torch.full(SHAPE, float(value))
    x[1] = value if second is None else second
    return x


def per_chain(x: torch.Tensor) -> list[float]:
    """Each chain's value, checking that a chain's pixels are all equal."""
    assert torch.equal(x, x[:, :1, :1, :1].expand_as(x))
    return x[:, 0, 0, 0].tolist()


def test_window_mean_is_exact_after_wrap_around() -> None:
    window = MovingWindow(3, SHAPE, CPU)
    assert window.size == 3
    for value in range(1, 6):  # 1..5: the ring wraps after 3
        window.add(batch(value, 10 * value), None)
    assert window.count.tolist() == [3, 3]
    assert per_chain(window.mean(batch(-1))) == [4.0, 40.0]  # (3 + 4 + 5) / 3


def test_window_counts_only_recording_chains() -> None:
    window = MovingWindow(3, SHAPE, CPU)
    empty = batch(-1)
    window.add(batch(1), torch.tensor([True, False]))
    assert per_chain(window.mean(empty)) == [1.0, -1.0]  # chain 1 has no sample: shows `empty`
    for value in range(2, 6):
        window.add(batch(value), torch.tensor([True, value >= 4]))
    assert window.count.tolist() == [3, 2]
    assert per_chain(window.mean(empty)) == [4.0, 4.5]  # chain 1 kept only 4 and 5


def test_window_resize_restarts_every_chain_with_the_new_size() -> None:
    window = MovingWindow(3, SHAPE, CPU)
    for value in range(1, 5):
        window.add(batch(value), None)
    window.resize(2)
    assert window.size == 2
    assert window.count.tolist() == [0, 0]
    assert per_chain(window.mean(batch(-1))) == [-1.0, -1.0]
    for value in (6, 7, 8):
        window.add(batch(value), None)
    assert window.count.tolist() == [2, 2]
    assert per_chain(window.mean(batch(-1))) == [7.5, 7.5]  # (7 + 8) / 2
    window.resize(5)  # growing: 5 slots, filled by the next adds only
    for value in (1, 2, 3):
        window.add(batch(value), None)
    assert per_chain(window.mean(batch(-1))) == [2.0, 2.0]


def test_window_reset_empties_only_those_chains() -> None:
    window = MovingWindow(2, SHAPE, CPU)
    for value in (1, 2, 3):
        window.add(batch(value), None)
    window.reset(torch.tensor([0]))
    assert window.count.tolist() == [0, 2]
    assert per_chain(window.mean(batch(-1))) == [-1.0, 2.5]
    window.add(batch(9), None)
    assert per_chain(window.mean(batch(-1))) == [9.0, 6.0]  # chain 1: (3 + 9) / 2


def test_window_re_sums_exactly_at_the_rings_last_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    # In float32, 2^24 + 1 rounds to 2^24: the running sum loses the 1 beside the big value and
    # keeps that error after the big value leaves, until the next re-sum from the ring.
    monkeypatch.setattr(averaging, "WINDOW_RESUM_STEPS", 1)
    window = MovingWindow(2, SHAPE, CPU)
    big = 2.0**24
    window.add(batch(big), None)  # slot 0
    window.add(batch(1), None)  # slot 1, the last: re-summed, still 2^24 in float32
    window.add(batch(2), None)  # slot 0: running sum 2^24 - 2^24 + 2 = 2, the 1 is lost
    assert per_chain(window.mean(batch(-1))) == [1.0, 1.0]  # not yet (1 + 2) / 2
    window.add(batch(3), None)  # slot 1: re-summed from the ring, exact again
    assert per_chain(window.mean(batch(-1))) == [2.5, 2.5]


def test_running_mean_of_all_recorded_samples() -> None:
    mean = RunningMean(SHAPE, CPU)
    empty = batch(-1)
    assert per_chain(mean.mean(empty)) == [-1.0, -1.0]
    for value in range(1, 8):
        mean.add(batch(value), torch.tensor([True, value >= 5]))
    assert mean.count.tolist() == [7, 3]
    assert per_chain(mean.mean(empty)) == [4.0, 6.0]  # 1..7 and 5..7
    mean.reset(torch.tensor([1]))
    assert mean.count.tolist() == [7, 0]
    mean.add(batch(8, 20), None)
    assert per_chain(mean.mean(empty)) == [4.5, 20.0]


def test_running_mean_folds_into_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2^24 + 1 + 1 + 2 in a float32 sum is 2^24 + 2 (each 1 rounds away); folded into float64
    # after every add it is exact, and the mean 2^22 + 1 is exact in float32.
    values = [2.0**24, 1.0, 1.0, 2.0]
    for fold, expected in ((1, 2.0**22 + 1), (1024, 2.0**22 + 0.5)):
        monkeypatch.setattr(averaging, "MEAN_FOLD_STEPS", fold)
        mean = RunningMean(SHAPE, CPU)
        for value in values:
            mean.add(batch(value), None)
        result = mean.mean(batch(-1))
        assert result.dtype == torch.float32
        assert per_chain(result) == [expected, expected]


def test_masked_restarts_are_exact_across_re_sums_and_a_nan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A masked restart leaves the chain's ring slots stale rather than zeroing them; the window
    # must still equal the mean of the chain's last K samples since its restart, also across
    # re-sums from the ring and when a stale slot holds the NaN of a chain that diverged.
    monkeypatch.setattr(averaging, "WINDOW_RESUM_STEPS", 2)
    monkeypatch.setattr(averaging, "MEAN_FOLD_STEPS", 3)
    window, mean = MovingWindow(3, SHAPE, CPU), RunningMean(SHAPE, CPU)
    restarts = {4: [False, True], 5: [True, False], 9: [False, True], 13: [True, True]}
    kept: list[list[float]] = [[], []]
    empty = batch(-1)
    for step in range(1, 21):
        values = [float(step), 100.0 + step]
        x = batch(*values)
        if step == 4:
            x[1] = float("nan")  # chain 1 diverged: its NaN goes in, then it restarts
        window.add(x, None)
        mean.add(x, None)
        mask = restarts.get(step, [False, False])
        if any(mask):
            window.reset_mask(torch.tensor(mask))
            mean.reset_mask(torch.tensor(mask))
        for chain in range(2):
            kept[chain] = [] if mask[chain] else [*kept[chain], values[chain]]
        expected_window = [sum(k[-3:]) / len(k[-3:]) if k else -1.0 for k in kept]
        expected_mean = [sum(k) / len(k) if k else -1.0 for k in kept]
        assert per_chain(window.mean(empty)) == pytest.approx(expected_window), step
        assert per_chain(mean.mean(empty)) == pytest.approx(expected_mean), step
        assert window.count.tolist() == [min(3, len(k)) for k in kept]
        assert mean.count.tolist() == [len(k) for k in kept]


def test_a_masked_restart_with_recording_masks_counts_only_kept_samples() -> None:
    window = MovingWindow(2, SHAPE, CPU)
    for value in (1, 2, 3):
        window.add(batch(value), torch.tensor([True, True]))
    window.reset_mask(torch.tensor([True, False]))
    window.add(batch(4), torch.tensor([False, True]))  # chain 0 burning in again
    assert window.count.tolist() == [0, 2]
    assert per_chain(window.mean(batch(-1))) == [-1.0, 3.5]
    window.add(batch(5), torch.tensor([True, True]))
    window.add(batch(6), torch.tensor([True, True]))
    assert per_chain(window.mean(batch(-1))) == [5.5, 5.5]


def block_values(window: MovingWindow, blocks: int) -> list[list[float]]:
    """Per block, oldest first, each chain's value."""
    out = window.block_means(blocks)
    assert out.shape == (blocks, *SHAPE)
    return [per_chain(b) for b in out]


def test_block_means_are_the_windows_blocks_in_time_order_also_after_the_ring_wrapped() -> None:
    window = MovingWindow(8, SHAPE, CPU)
    for t in range(13):  # sample t = t (chain 1: 10 t): the ring wrapped, holds 5..12
        window.add(batch(t, 10 * t), None)
    # Blocks of 2, oldest first: (5 + 6) / 2, (7 + 8) / 2, ...
    assert block_values(window, 4) == [[5.5, 55.0], [7.5, 75.0], [9.5, 95.0], [11.5, 115.0]]
    assert block_values(window, 1) == [[8.5, 85.0]]  # the window mean
    assert torch.equal(window.block_means(1)[0], window.mean(batch(-1)))
    # 8 samples in 3 blocks of 2: the oldest 2 (5 and 6) are left out.
    assert block_values(window, 3) == [[7.5, 75.0], [9.5, 95.0], [11.5, 115.0]]
    assert block_values(window, 8) == [[float(t), 10.0 * t] for t in range(5, 13)]


def test_block_means_are_nan_for_a_chain_whose_window_is_not_full() -> None:
    window = MovingWindow(4, SHAPE, CPU)
    for t in range(1, 4):  # chain 1 still burns in at t = 1 and 2
        window.add(batch(t, 100 + t), torch.tensor([True, t >= 3]))
    assert torch.isnan(window.block_means(2)).all()  # 3 and 1 of 4: no chain is full yet
    window.add(batch(4, 104), None)
    means = window.block_means(2)
    assert per_chain(means[:, 0]) == [1.5, 3.5]  # chain 0: (1 + 2) / 2, (3 + 4) / 2
    assert torch.isnan(means[:, 1]).all()  # chain 1 kept 2 of 4
    for t in (5, 6):
        window.add(batch(t, 100 + t), None)
    assert block_values(window, 2) == [[3.5, 103.5], [5.5, 105.5]]
    window.reset(torch.tensor([1]))  # chain 1 starts again; its old slots are never read
    for t in range(7, 10):
        window.add(batch(t, 200 + t), None)
    means = window.block_means(2)
    assert per_chain(means[:, 0]) == [6.5, 8.5] and torch.isnan(means[:, 1]).all()
    window.add(batch(10, 210), None)
    assert block_values(window, 2) == [[7.5, 207.5], [9.5, 209.5]]
    assert torch.isnan(window.block_means(5)).all()  # blocks of 4 // 5 = 0 samples: none
    with pytest.raises(ValueError, match="blocks must be at least 1, got 0"):
        window.block_means(0)
