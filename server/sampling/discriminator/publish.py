"""Publishing D's weights: the sampler only ever reads a finished copy that nobody writes to.

Copy, then swap a reference under a lock: a reader gets the old copy or the new one, each
complete, and a copy once handed out is never written to again. A D that never trained
(version 0) or whose training thread failed is withheld, so the sampler skips its term.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable

from torch import nn

from ldam.sampling.discriminator.stream import DiscriminatorStream


class Publisher:
    """The newest published copy of a training D, its version, and why it is withheld.

    Publishes version 0 (the initial, untrained weights) when made. `on_publish(version,
    module)`, if given, is called with each new copy just before `current()` can return it.
    """

    def __init__(
        self,
        model: nn.Module,
        stream: DiscriminatorStream,
        on_publish: Callable[[int, nn.Module], None] | None = None,
    ) -> None:
        self.on_publish = on_publish
        self._model = model
        self._stream = stream
        self._lock = threading.Lock()
        self._version = -1
        self._published: nn.Module = model
        self._error: str | None = None
        self.publish()

    def publish(self) -> None:
        """Copy the training model (eval mode, no parameter gradients) as the next version."""
        published = self._stream.for_readers(
            lambda: copy.deepcopy(self._model).eval().requires_grad_(False)
        )
        # Only the training side publishes, one step at a time, so this read needs no lock.
        version = self._version + 1
        published.version = version
        if self.on_publish is not None:
            self.on_publish(version, published)  # before anyone can read it
        with self._lock:
            self._version = version
            self._published = published

    def current(self) -> nn.Module | None:
        """The newest copy; None at version 0 and while an error is reported."""
        with self._lock:
            if self._error is not None or self._version == 0:
                return None
            return self._published

    @property
    def module(self) -> nn.Module:
        """The newest copy, also at version 0 or after an error (for saving)."""
        with self._lock:
            return self._published

    @property
    def version(self) -> int:
        """How many times weights were published (0 = the initial, untrained weights)."""
        with self._lock:
            return self._version

    @property
    def error(self) -> str | None:
        """The sentence that withholds D, or None."""
        return self._error  # one reference read, atomic: metrics() reads it without the lock

    def fail(self, sentence: str) -> None:
        """Withhold D from now on, for the reason `sentence`."""
        with self._lock:
            self._error = sentence

    def clear_error(self) -> None:
        """Hand D out again (after a restart)."""
        with self._lock:
            self._error = None
