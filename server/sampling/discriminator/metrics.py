"""The figures of D's training that `DiscriminatorTrainer.metrics()` reports."""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Any

# Steps whose end times are kept for the rate, and how far back the rate looks (seconds).
_RECENT_STEPS = 50
_RATE_WINDOW_S = 5.0
# How far back the busy fraction looks (seconds): long enough to hold many D steps and their
# pauses (a step is tens of ms), short enough to follow a live change of the duty cycle.
_BUSY_WINDOW_S = 10.0


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


class BusyClock:
    """The fraction of recent wall time D's thread spent working on offers.

    D's thread calls `started()` / `stopped()` around its life and `working()` / `idle()`
    around each offer it handles; any thread may read `fraction()`. A small lock, because a
    reader walks the list of spans that the writer appends to and prunes.
    """

    def __init__(self, window_s: float = _BUSY_WINDOW_S) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self._spans: collections.deque[tuple[float, float]] = collections.deque()
        self._since = math.nan  # when the thread last started (perf_counter seconds)
        self._until: float | None = None  # when it stopped, None while it runs
        self._working: float | None = None  # start of the offer in hand, if any

    def started(self) -> None:
        """The thread starts (again): forget the spans of an earlier run."""
        with self._lock:
            self._spans.clear()
            self._since = time.perf_counter()
            self._until = None
            self._working = None

    def stopped(self) -> None:
        """The thread ends; `fraction()` then describes the window up to now."""
        with self._lock:
            now = time.perf_counter()
            if self._working is not None:
                self._spans.append((self._working, now))
                self._working = None
            self._until = now

    def working(self) -> float:
        """The thread begins work on an offer; returns the time it began (seconds)."""
        now = time.perf_counter()
        with self._lock:
            self._working = now
        return now

    def idle(self) -> float:
        """The thread has finished the offer begun at `working()`; returns the seconds it took."""
        now = time.perf_counter()
        with self._lock:
            begun = self._working if self._working is not None else now
            self._working = None
            self._spans.append((begun, now))
            # Spans wholly out of the window can never count again.
            while self._spans and self._spans[0][1] < now - self.window_s:
                self._spans.popleft()
        return now - begun

    def fraction(self) -> float:
        """Working time / wall time over the thread's last `window_s` seconds of running
        (up to now, or to when it stopped), in [0, 1]; 0.0 if it never ran."""
        with self._lock:
            if math.isnan(self._since):
                return 0.0
            end = self._until if self._until is not None else time.perf_counter()
            begin = max(self._since, end - self.window_s)
            if end <= begin:
                return 0.0
            spans = list(self._spans)
            if self._working is not None:
                spans.append((self._working, end))
        busy = sum(max(0.0, min(b, end) - max(a, begin)) for a, b in spans)
        return min(1.0, busy / (end - begin))
