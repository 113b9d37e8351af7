"""Ordering D's CUDA work against the sampler's; on CPU there is nothing to order.

On CUDA, D trains on a stream of its own so that its steps overlap the sampler's, which runs
on the default stream. Three hand-offs between them need ordering: an offered copy of the
chains is complete before D reads it, a published copy of D is complete before the sampler
reads it, and D's next step does not write its weights while they are still being copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class DiscriminatorStream:
    """D's CUDA stream on a CUDA device, and the orderings above; plain calls on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def active(self, after_caller: bool = False) -> contextlib.AbstractContextManager[Any]:
        """D's stream as the current stream (a no-op on CPU); `after_caller` first orders it
        after the work already queued on the caller's stream (for warm-up and load)."""
        if self._stream is None:
            return contextlib.nullcontext()
        if after_caller:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
        return torch.cuda.stream(self._stream)

    def mark_offered(self, *tensors: torch.Tensor) -> Any:
        """An event recorded on the caller's stream once it has made `tensors` (None on CPU),
        for `wait_for` on D's stream before it reads them."""
        if self._stream is None:
            return None
        ready = torch.cuda.Event()
        ready.record()
        for tensor in tensors:
            # D's stream reads these; the allocator must not reuse them before it is done.
            tensor.record_stream(self._stream)
        return ready

    def wait_for(self, ready: Any) -> None:
        """Order the current stream (D's, inside `active()`) after an event from
        `mark_offered`; None (CPU) waits for nothing."""
        if ready is not None:
            torch.cuda.current_stream(self.device).wait_event(ready)

    def for_readers(self, make: Callable[[], T]) -> T:
        """`make()` (the copy of D to publish), run where the sampler reads it.

        On CUDA it runs on the default stream, after D's optimizer step: the sampler's kernels
        are ordered after the copy (never a half-written D), and the copy's memory belongs to
        that stream. D's stream then waits for the copy, so its next step cannot write mid-copy.
        """
        if self._stream is None:
            return make()
        default = torch.cuda.default_stream(self.device)
        default.wait_stream(self._stream)
        with torch.cuda.stream(default):
            result = make()
        self._stream.wait_stream(default)
        return result
