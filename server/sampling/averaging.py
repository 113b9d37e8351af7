"""Averages of each chain's kept (post-burn-in) samples: a moving window and a running mean.

Both take one batch of samples `x [N, C, H, W]` per step, `add(x, recording)`, where
`recording [N]` bool says which chains' samples count (None: every chain's, the common case
once all are burned in, which skips the masking). Both are O(1) per step in the number of
samples kept, allocate their buffers once, and never sync with the device: chains are
restarted by index (`reset`) or under a device-side mask (`reset_mask`), which a sampler may
call every step without knowing whether any chain is in it.

- `MovingWindow`: the mean of each chain's last K kept samples, from a ring of K batches and a
  running sum (add the new, subtract the one it overwrites), re-summed exactly from the ring
  every `WINDOW_RESUM_STEPS` adds or so, so rounding never accumulates. A restart leaves the
  chain's ring slots as they are and marks them stale, so it costs one pass over the chain's
  sum instead of K passes over its ring.
- `RunningMean`: the mean of all of a chain's kept samples, as a float32 partial sum folded into
  a float64 total every `MEAN_FOLD_STEPS` adds, so a long run keeps full precision at one
  float32 add per step.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The running mean adds samples into a float32 partial sum that is folded into a float64 total
# this often, so a long run keeps full precision at one add per step.
MEAN_FOLD_STEPS = 1024
# The window's running sum (add new, subtract old) is re-summed exactly from the ring after at
# least this many steps, so rounding never accumulates; amortized well under one pass per step.
WINDOW_RESUM_STEPS = 4096


def _per_chain(values: Tensor, like: Tensor) -> Tensor:
    """A per-chain `[N]` tensor viewed as `[N, 1, 1, 1]` so it broadcasts over a chain's pixels."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _keep(x: Tensor, recording: Tensor | None, zero: Tensor, out: Tensor | None = None) -> Tensor:
    """`x` where `recording [N]` is True and `zero` (a 0-dim 0) elsewhere, into `out` if given;
    `x` itself (copied into `out`) when `recording` is None."""
    if recording is None:
        return x if out is None else out.copy_(x)
    return torch.where(_per_chain(recording, x), x, zero, out=out)


class MovingWindow:
    """The mean of each chain's last `size` kept samples, O(1) per step.

    A ring `[K, N, C, H, W]` holds the last K batches (0 for a chain that was not recording),
    beside their running sum `[N, C, H, W]` and a per-chain count of kept samples, at most K.
    Ring slot `i % K` takes the i-th add (i = 0, 1, ...), counted over the object's life, so a
    resize keeps the slot cadence of the run.

    A restarted chain's ring slots keep their old values: `_start [N]` (the index of the
    chain's first add since its restart) marks them stale, and an add subtracts the value it
    overwrites only where that value is not stale. The sum is then exactly what zeroing the
    slots would have given, and so is the periodic re-sum, which zeroes the stale slots first.
    """

    def __init__(self, size: int, shape: tuple[int, ...], device: torch.device) -> None:
        """An empty window of `size` >= 1 samples for chains `shape = (N, C, H, W)`. The caller
        checks the memory it takes first (`check_window_memory`)."""
        self._shape = shape
        self._device = device
        self._zero = torch.zeros((), device=device)
        self._adds = 0
        self.resize(size)

    @property
    def size(self) -> int:
        """K, the number of samples the window keeps per chain."""
        return self._ring.shape[0]

    @property
    def count(self) -> Tensor:
        """`[N]` int64: each chain's kept samples now in the window, at most `size`."""
        return self._count

    def resize(self, size: int) -> None:
        """Re-allocate for `size` samples and restart every chain with an empty window."""
        self._ring = torch.zeros((size, *self._shape), device=self._device)
        self._sum = torch.zeros(self._shape, device=self._device)
        self._count = torch.zeros(self._shape[0], dtype=torch.long, device=self._device)
        # A fresh ring holds zeros, which are never stale: no chain needs masking.
        self._start = torch.zeros(self._shape[0], dtype=torch.long, device=self._device)
        # Host-side: the add index of the latest restart (None: none since the resize). While
        # it is less than K adds ago some slots may be stale and adds mask them; after that,
        # every slot was written since, and an add is the plain subtract.
        self._restarted_at: int | None = None
        # Consecutive adds with every chain recording, up to K: at K every count is K and
        # stays K while all keep recording, so the count kernels can be skipped.
        self._full_adds = 0
        self._since_resum = 0

    def _may_be_stale(self, add: int) -> bool:
        """Whether the slot add `add` overwrites may hold a value from before a restart."""
        return self._restarted_at is not None and add - self._restarted_at < self._ring.shape[0]

    def add(self, x: Tensor, recording: Tensor | None) -> None:
        """Put `x [N, C, H, W]` of the chains where `recording [N]` bool is True (None: every
        chain) into the window, replacing each chain's oldest slot; others get a 0 there."""
        k = self._ring.shape[0]
        add = self._adds
        slot = add % k
        self._adds += 1
        old = self._ring.select(0, slot)
        if recording is None:
            # Every chain records: the counts change only until they reach K.
            if self._full_adds < k:
                self._count.add_(1).clamp_(max=k)
                self._full_adds += 1
        else:
            self._count.add_(recording).clamp_(max=k)
            self._full_adds = 0
        # sum - old + new, the new batch written straight into the slot it takes. A stale old
        # value counts as the 0 a restart would have written (where, not a product: a stale
        # value may be the NaN of a chain that diverged).
        if self._may_be_stale(add):
            fresh = _per_chain(self._start <= add - k, x)
            self._sum.sub_(torch.where(fresh, old, self._zero))
        else:
            self._sum.sub_(old)
        self._sum.add_(_keep(x, recording, self._zero, out=old))
        self._since_resum += 1
        # Re-sum at the ring's last slot, so the exact sum is taken in one fixed slot order.
        if slot == k - 1 and self._since_resum >= WINDOW_RESUM_STEPS:
            # Slot s now holds add `add + 1 - k + s`; zero those from before a chain's restart
            # (the oldest slot is stale exactly when the next add would find it so).
            if self._may_be_stale(add + 1):
                written = torch.arange(add + 1 - k, add + 1, device=self._device)
                stale = written[:, None] < self._start[None, :]
                self._ring.masked_fill_(stale.view(k, -1, *([1] * (x.dim() - 1))), 0)
            torch.sum(self._ring, dim=0, out=self._sum)
            self._since_resum = 0

    def reset(self, chains: Tensor) -> None:
        """Empty the window of the chains with indices `chains [M]` int64."""
        mask = torch.zeros(self._shape[0], dtype=torch.bool, device=self._device)
        mask[chains.to(self._device)] = True
        self.reset_mask(mask)

    def reset_mask(self, chains: Tensor) -> None:
        """Empty the window of the chains where `chains [N]` bool is True; a device-side mask,
        never read on the host, so this may run every step."""
        self._sum.masked_fill_(_per_chain(chains, self._sum), 0)
        self._count.masked_fill_(chains, 0)
        self._start.masked_fill_(chains, self._adds)
        self._restarted_at = self._adds
        self._full_adds = 0

    def mean(self, empty: Tensor) -> Tensor:
        """`[N, C, H, W]` each chain's mean over its window; `empty [N, C, H, W]` gives the
        value of a chain with no kept sample yet."""
        count = _per_chain(self._count, empty)
        return torch.where(count > 0, self._sum / count.clamp(min=1), empty)

    def block_means(self, blocks: int) -> Tensor:
        """`[blocks, N, C, H, W]`: each chain's window cut into `blocks` consecutive blocks of
        L = size // blocks samples, oldest first, and the mean of each block (the oldest
        `size mod blocks` samples are left out, so the blocks are equally long).

        Only a chain whose window is full (`count` = `size`) has blocks; the others' are NaN,
        so every block of every chain is the mean of the same number of samples (a young
        chain's shorter blocks would be noisier, and look more diverse, than the rest). A
        chain keeps every sample from its burn-in to its next restart (`BurnIn`), so a full
        chain's kept samples are exactly the last `size` adds, and no slot from before a
        restart is read. All NaN when `size` < `blocks`. Reads the ring once, with one host
        read of the counts.
        """
        if blocks < 1:
            raise ValueError(f"blocks must be at least 1, got {blocks}")
        k = self._ring.shape[0]
        length = k // blocks
        out = torch.full(
            (blocks, *self._shape), torch.nan, dtype=self._ring.dtype, device=self._device
        )
        full = self._count == k
        if length == 0 or not bool(full.any()):
            return out
        for b in range(blocks):
            # Adds first .. first + length - 1, in slots first % k on: one or two runs of the
            # ring (it wraps at most once, since blocks * length <= k).
            first = self._adds - (blocks - b) * length
            start = first % k
            run = min(length, k - start)
            total = self._ring[start : start + run].sum(dim=0)
            if run < length:
                total += self._ring[: length - run].sum(dim=0)
            out[b] = torch.where(_per_chain(full, total), total / length, out[b])
        return out


class RunningMean:
    """The mean of all of each chain's kept samples since its last reset.

    Samples go into a float32 partial sum `[N, C, H, W]` that is folded into a float64 total
    every `MEAN_FOLD_STEPS` adds, so the float32 sum never holds more than that many samples.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        """An empty mean for chains `shape = (N, C, H, W)`."""
        self._partial = torch.zeros(shape, device=device)
        self._total = torch.zeros(shape, dtype=torch.float64, device=device)
        self._count = torch.zeros(shape[0], dtype=torch.long, device=device)
        self._zero = torch.zeros((), device=device)
        self._adds = 0
        # Adds with every chain recording not yet added into `_count`: one host integer per
        # step instead of one kernel, folded in whenever the counts are read or masked.
        self._uncounted = 0

    def _fold_counts(self) -> None:
        if self._uncounted:
            self._count.add_(self._uncounted)
            self._uncounted = 0

    @property
    def count(self) -> Tensor:
        """`[N]` int64: each chain's kept samples since its last reset."""
        self._fold_counts()
        return self._count

    def add(self, x: Tensor, recording: Tensor | None) -> None:
        """Add `x [N, C, H, W]` of the chains where `recording [N]` bool is True (None: every
        chain)."""
        if recording is None:
            self._uncounted += 1
        else:
            self._fold_counts()
            self._count.add_(recording)
        self._partial.add_(_keep(x, recording, self._zero))
        self._adds += 1
        if self._adds % MEAN_FOLD_STEPS == 0:
            self._total.add_(self._partial)
            self._partial.zero_()

    def reset(self, chains: Tensor) -> None:
        """Forget every sample of the chains with indices `chains [M]` int64."""
        self._fold_counts()
        self._partial[chains] = 0
        self._total[chains] = 0
        self._count[chains] = 0

    def reset_mask(self, chains: Tensor) -> None:
        """Forget every sample of the chains where `chains [N]` bool is True; a device-side
        mask, never read on the host, so this may run every step."""
        self._fold_counts()
        mask = _per_chain(chains, self._partial)
        self._partial.masked_fill_(mask, 0)
        self._total.masked_fill_(mask, 0)
        self._count.masked_fill_(chains, 0)

    def mean(self, empty: Tensor) -> Tensor:
        """`[N, C, H, W]` each chain's mean, in `empty`'s dtype; `empty [N, C, H, W]` gives the
        value of a chain with no kept sample yet."""
        count = _per_chain(self.count, empty)
        total = (self._total + self._partial).div_(count.clamp(min=1)).to(empty.dtype)
        return torch.where(count > 0, total, empty)
