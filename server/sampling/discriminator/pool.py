"""The generated samples D trains on (paper Algorithm 2): chains that fooled D, or old ones.

A chain D already takes for real (`sigmoid(D(x)) > tau`) is what D must learn to reject; a chain
that has run `max_age` steps is kept whatever D says, so D also sees where the chains settle.
"""

from __future__ import annotations

import torch


class SamplePool:
    """The newest `capacity` eligible chains, kept in a ring buffer on D's device."""

    def __init__(
        self,
        capacity: int,
        input_shape: tuple[int, int, int],
        device: torch.device,
        max_age: int,
        tau: float = 0.0,
    ) -> None:
        self.max_age = max_age
        self.tau = tau
        self._device = device
        self._samples = torch.zeros((capacity, *input_shape), device=device)
        self._len = 0
        self._next = 0

    def __len__(self) -> int:
        """How many samples the pool holds (at most its capacity)."""
        return self._len

    def keep(self, x: torch.Tensor, p_real: torch.Tensor, ages: torch.Tensor) -> None:
        """Add the chains of `x [N, C, H, W]` with `p_real [N] > tau` or `ages [N] >= max_age`."""
        eligible = (p_real > self.tau) | (torch.as_tensor(ages).to(self._device) >= self.max_age)
        self._add(x[eligible])

    def draw(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """Up to `k` different samples, picked at random with `generator`."""
        pick = torch.randperm(self._len, generator=generator)[:k]
        return self._samples[pick.to(self._device)]

    def _add(self, samples: torch.Tensor) -> None:
        capacity = self._samples.shape[0]
        samples = samples[-capacity:]  # more than fit: the newest win
        k = samples.shape[0]
        if k == 0:
            return
        slots = (self._next + torch.arange(k)) % capacity
        self._samples[slots.to(self._device)] = samples
        self._next = (self._next + k) % capacity
        self._len = min(capacity, self._len + k)
