"""Per-step values of a sampler run, kept on the device and copied to the host in blocks.

A headless run (`ldam sample`) needs, for every step t = 0, 1, ... of its loop (sampler step
t + 1): the activation `[N]`, whether each chain is burned in after it, and the sample x every
`sample_every` steps from the first step after which every chain is burned in. Reading any of
that on the host each step makes the host wait for the device each step. A `Recorder` writes
the per-step rows into device buffers `[K, N]` instead (two small device copies a step), copies
each block of K rows to the host without waiting (`ldam.sampling.transfer.HostCopy`, read when
the next block ends) and works the burned-in step and the samples out on the host.

Samples: until the host knows the first step after which every chain is burned in, it cannot
know which x to keep, so x is staged on the device every step (a copy of x per step, during
burn-in only) and the staged rows go to the host with their block, where the ones to keep are
picked; once the step is known only the samples to keep are staged. Staging holds at most
`staging_bytes` of samples; a block ends early when it is full.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ldam.sampling.sampler import StepInfo
from ldam.sampling.transfer import HostCopy

# Steps per block: one host copy (and, with sampling, one staging buffer) per this many steps.
BLOCK_STEPS = 64
# Device memory for staged samples; a block with sampling ends early when this is full.
STAGING_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Recording:
    """What a `Recorder` kept, on the host (CPU tensors).

    Attributes:
        activation: `[T, N]` float32, each step's `StepInfo.activation`.
        burned_in: `[T, N]` bool, each step's `StepInfo.burned_in`.
        record_from: the first step t (0-based) after which every chain was burned in, or None.
        samples: `[S, N, C, H, W]` float32, x after steps `record_from`, `record_from +
            sample_every`, ... (none without `sample_every`, or when `record_from` is None).
    """

    activation: Tensor
    burned_in: Tensor
    record_from: int | None
    samples: Tensor


class Recorder:
    """Records a sampler run's steps on its device and copies them to the host in blocks.

    Call `add(info, x)` after every `Sampler.step()` and `finish()` after the last one. Nothing
    in `add` reads the device on the host; every `block` steps it posts one block copy and
    takes in the one posted before, which the device has normally long finished.
    """

    def __init__(
        self,
        chains: int,
        device: torch.device | str,
        sample_shape: Sequence[int] | None = None,
        sample_every: int | None = None,
        block: int = BLOCK_STEPS,
        staging_bytes: int = STAGING_BYTES,
    ) -> None:
        """A recorder for `chains` chains on `device`.

        Args:
            sample_shape: `(C, H, W)` of one chain's sample; needed with `sample_every`.
            sample_every: keep x every this many steps from the first step after which every
                chain is burned in (that step included); None keeps no samples.
            block: steps per block copy (>= 1).
            staging_bytes: at most this much device memory for staged samples (at least one
                batch is staged whatever this says).
        """
        if chains < 1 or block < 1:
            raise ValueError(f"chains and block must be >= 1, got {chains} and {block}.")
        if sample_every is not None and (sample_every < 1 or sample_shape is None):
            raise ValueError("sample_every must be >= 1 and needs sample_shape.")
        device = torch.device(device)
        self._act = torch.empty((block, chains), dtype=torch.float32, device=device)
        self._burned = torch.empty((block, chains), dtype=torch.bool, device=device)
        self._every = sample_every or 1
        self._shape = (chains, *(sample_shape or ()))
        self._xs: Tensor | None = None
        if sample_every is not None:
            batch_bytes = 4 * math.prod(self._shape)
            slots = max(1, min(block, staging_bytes // batch_bytes))
            self._xs = torch.empty((slots, *self._shape), dtype=torch.float32, device=device)
        self._copy = HostCopy(device)
        self.steps = 0  # steps added
        self._rows = 0  # rows of the block being written
        self._staged: list[int] = []  # the step of each staged sample of that block
        self._pending: tuple[int, list[int]] | None = None  # first step, staged steps: posted
        self._record_from: int | None = None
        self._act_blocks: list[Tensor] = []
        self._burned_blocks: list[Tensor] = []
        self._samples: list[Tensor] = []
        self._finished = False

    @property
    def record_from(self) -> int | None:
        """The first step after which every chain was burned in, as far as the host knows yet
        (up to two blocks late; exact after `finish`)."""
        return self._record_from

    def add(self, info: StepInfo, x: Tensor | None = None) -> None:
        """Record one step: its `info` from `Sampler.step()` and, with `sample_every`, the
        sampler's `x [N, C, H, W]` after it."""
        if self._finished:
            raise RuntimeError("Recorder.add() called after finish().")
        row, step = self._rows, self.steps
        self._act[row].copy_(info.activation)
        self._burned[row].copy_(info.burned_in)
        if self._xs is not None:
            if x is None:
                raise ValueError("A recorder that keeps samples needs x at every step.")
            first = self._record_from
            # Before the first kept step is known, every step might be one to keep.
            if first is None or (step - first) % self._every == 0:
                self._xs[len(self._staged)].copy_(x)
                self._staged.append(step)
        self.steps += 1
        self._rows += 1
        full = self._xs is not None and len(self._staged) == self._xs.shape[0]
        if self._rows == self._act.shape[0] or full:
            self._end_block()

    def _end_block(self) -> None:
        """Take in the block posted before, then post this one's rows and staged samples."""
        if self._rows == 0:
            return
        if self._pending is not None:
            self._take_in(*self._pending)
        rows, staged = self._rows, self._staged
        tensors = [self._act[:rows], self._burned[:rows]]
        if staged and self._xs is not None:
            tensors.append(self._xs[: len(staged)])
        self._copy.post(*tensors)
        self._pending = (self.steps - rows, staged)
        self._rows, self._staged = 0, []

    def _take_in(self, first_step: int, staged: list[int]) -> None:
        """Read the posted block (its first step, the steps of its staged samples) on the host:
        keep its rows, find the first step after which every chain was burned in, and keep
        the staged samples of the steps to keep."""
        self._pending = None
        copies = self._copy.wait()
        act, burned = copies[0], copies[1]
        self._act_blocks.append(act.clone())
        self._burned_blocks.append(burned.clone())
        if self._record_from is None:
            every_chain = burned.all(dim=1).nonzero()
            if every_chain.numel():
                self._record_from = first_step + int(every_chain[0, 0])
        start = self._record_from
        if staged and start is not None:
            every = self._every
            keep = [i for i, t in enumerate(staged) if t >= start and (t - start) % every == 0]
            if keep:
                self._samples.append(copies[2][keep])  # indexing with a list copies

    def finish(self) -> Recording:
        """Copy the rest to the host (this waits for the device) and return the recording."""
        if not self._finished:
            self._end_block()
            if self._pending is not None:
                self._take_in(*self._pending)
            self._finished = True
        chains = self._shape[0]
        activation = torch.cat(self._act_blocks) if self._act_blocks else torch.zeros(0, chains)
        burned_in = (
            torch.cat(self._burned_blocks)
            if self._burned_blocks
            else torch.zeros(0, chains, dtype=torch.bool)
        )
        samples = torch.cat(self._samples) if self._samples else torch.zeros(0, *self._shape)
        return Recording(activation, burned_in, self._record_from, samples)
