"""Device -> host copies that do not stall the device's queue.

`HostCopy.post(*tensors)` enqueues copies of a few device tensors into host buffers and marks
that point of the stream; `wait()` hands back the host copies, waiting only if the device has
not yet reached the mark. The sampler and the recorder read a copy one period (some steps)
after posting it, by which time the device is normally long past it, so the host does not wait
for work it has just enqueued, and the queue stays full.

On CUDA the host buffers are pinned and the copies asynchronous, marked by a CUDA event. On the
CPU there is no queue: the copy is made at `post`. Any other device copies at `post` too,
which waits for the device there (correct, just not overlapped).

`to_device` is the other direction: a small host tensor sent without waiting for the queue.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_device(host: Tensor, device: torch.device) -> Tensor:
    """`host` (a CPU tensor) on `device`, copied without waiting for the device's queue.

    A plain `.to(device)` waits for the queue to drain after a CUDA copy; from pinned memory
    with `non_blocking` it does not, and the caching host allocator keeps the pinned block
    until the copy is done, so `host` may be dropped at once.
    """
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


class HostCopy:
    """Host copies of device tensors, made without waiting for the device.

    One post is in flight at a time: `post` first waits for the previous one (normally done
    long before) so its host buffers can be reused. A buffer is re-allocated only when a tensor
    does not fit it (other trailing shape or dtype, or a longer first dimension); a shorter one
    goes into its leading rows. The tensors `wait` returns are views of the reused buffers:
    clone what must outlive the next `post`.
    """

    def __init__(self, device: torch.device | str) -> None:
        """Copies from `device` (the CPU, CUDA or another torch device)."""
        self.device = torch.device(device)
        self._async = self.device.type == "cuda"
        self._buffers: list[Tensor] = []
        self._views: list[Tensor] = []
        self._event: torch.cuda.Event | None = None
        self._posted = False

    @property
    def posted(self) -> bool:
        """Whether a post is waiting to be read by `wait`."""
        return self._posted

    def _buffer(self, i: int, tensor: Tensor) -> Tensor:
        """Host buffer `i`, re-allocated if `tensor` does not fit it; the view it goes into."""
        fits = False
        if i < len(self._buffers):
            held = self._buffers[i]
            fits = held.dtype == tensor.dtype and held.dim() == tensor.dim()
            if fits and tensor.dim():
                fits = held.shape[1:] == tensor.shape[1:] and held.shape[0] >= tensor.shape[0]
        if not fits:
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=self._async)
            if i < len(self._buffers):
                self._buffers[i] = buffer
            else:
                self._buffers.append(buffer)
        buffer = self._buffers[i]
        return buffer[: tensor.shape[0]] if tensor.dim() else buffer

    def post(self, *tensors: Tensor) -> None:
        """Enqueue host copies of `tensors` (any shapes and dtypes, on this device)."""
        if self._event is not None:
            self._event.synchronize()  # the previous copy must land before its buffers are reused
            self._event = None
        self._views = [self._buffer(i, t) for i, t in enumerate(tensors)]
        for view, tensor in zip(self._views, tensors, strict=True):
            view.copy_(tensor.detach(), non_blocking=self._async)
        if self._async:
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(self.device))
        self._posted = True

    def wait(self) -> list[Tensor]:
        """The host copies of the last `post`, once the device has made them; raises
        `RuntimeError` when nothing was posted since the last `wait`."""
        if not self._posted:
            raise RuntimeError("HostCopy.wait() called with nothing posted.")
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        self._posted = False
        return self._views
