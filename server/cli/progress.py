"""A small progress bar on stderr, shown only for runs that last over a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints `label  done/total  rate/s  eta` on one line, redrawn at most 5 times a second.

    Nothing is printed during the first second, so short runs (and tests) stay quiet.
    """

    def __init__(self, total: int, label: str, unit: str = "steps", stream: TextIO | None = None):
        self.total = max(int(total), 1)
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, done: int) -> None:
        """Report that `done` of `total` items are finished."""
        now = time.perf_counter()
        elapsed = now - self.start
        if elapsed < 1.0 or (now - self._last_draw < 0.2 and done < self.total):
            return
        self._last_draw = now
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        width = 30
        filled = int(width * done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {done}/{self.total} {self.unit} {rate:,.1f}/s eta {eta:4.0f}s"
        )
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the line if a bar was drawn."""
        if self._drawn:
            self.update(self.total)
            self.stream.write("\n")
            self.stream.flush()
