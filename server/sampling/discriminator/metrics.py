"""The figures of D's training that `DiscriminatorTrainer.metrics()` reports."""

from __future__ import annotations

import collections
import math
import time
from typing import Any

# Steps whose end times are kept for the rate, and how far back the rate looks (seconds).
_RECENT_STEPS = 50
_RATE_WINDOW_S = 5.0


class StepStats:
    """D's last batch (loss, accuracies), mean D(x) of the last offer, and step timing.

    Written by whichever thread trains D and read from any other without a lock: each field
    is one float, replaced whole, so a reader sees an old or a new value, never a torn one.
    """

    def __init__(self) -> None:
        self.loss = math.nan
        self.acc_real = math.nan
        self.acc_generated = math.nan
        self.mean_d = math.nan
        self.step_s = math.nan
        self._step_times: collections.deque[float] = collections.deque(maxlen=_RECENT_STEPS)

    def record_batch(self, loss: float, acc_real: float, acc_generated: float) -> None:
        """The figures of the batch a step just trained on."""
        self.acc_generated = acc_generated
        self.acc_real = acc_real
        self.loss = loss

    def record_time(self, start: float) -> None:
        """A step that began at `start` (`time.perf_counter()`) has just ended."""
        elapsed = time.perf_counter() - start
        # A running mean, so one slow step (another process on the core) barely shows.
        self.step_s = elapsed if math.isnan(self.step_s) else 0.9 * self.step_s + 0.1 * elapsed
        self._step_times.append(time.perf_counter())

    def steps_per_s(self) -> float:
        """Steps per second over the last few seconds (0 with fewer than 2 steps there)."""
        times = list(self._step_times)
        now = time.perf_counter()
        recent = [t for t in times if now - t < _RATE_WINDOW_S]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """`loss`, `acc_real`, `acc_generated`, `mean_d`, `steps_per_s` and `step_ms`."""
        return {
            "loss": self.loss,
            "acc_real": self.acc_real,
            "acc_generated": self.acc_generated,
            "mean_d": self.mean_d,
            "steps_per_s": self.steps_per_s(),
            "step_ms": self.step_s * 1e3,
        }
