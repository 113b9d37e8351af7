"""The sampler's chains on their way to D: a one-slot mailbox where the newest offer wins.

The sampler never waits for D: an offer is one copy of the chains, and an offer D has not
taken yet is simply replaced, so D trains at most once per offer, on the freshest chains.

The box also says whether D's thread is resting (its duty cycle; see `thread`): each offer
answers it, so the sampler's thread can use every core until the next offer, and D, when its
rest ends, takes only an offer made after that (whose caller was told D is back).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch

from ldam.sampling.discriminator.errors import DiscriminatorError
from ldam.sampling.discriminator.stream import DiscriminatorStream


@dataclass
class Offer:
    """One offer: copies of the chains and their ages, on D's device."""

    x: torch.Tensor  # [N, C, H, W]
    ages: torch.Tensor  # [N] steps each chain has run
    ready: Any  # a CUDA event recorded after the copy, or None on CPU
    index: int  # 1 for the first offer, then counting up


class OfferBox:
    """The newest offer of chains shaped `input_shape`, for D's thread to take."""

    def __init__(self, input_shape: tuple[int, int, int], stream: DiscriminatorStream) -> None:
        self.input_shape = input_shape
        self._stream = stream
        self._device = stream.device
        self._cond = threading.Condition()
        self._latest: Offer | None = None
        self._count = 0
        self._resting = False

    def offer(self, x: torch.Tensor, ages: torch.Tensor) -> bool:
        """Replace the offer with copies of the chains `x [N, C, H, W]` and their `ages [N]`.
        Returns whether D's thread is resting (so it will not take this offer)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise DiscriminatorError(
                f"Offered chains are {tuple(x.shape[1:])} but the discriminator expects {self.input_shape}."
            )
        # Ages stay on the device: moving them to the host would sync a GPU sampler every step.
        ages = torch.as_tensor(ages).detach().to(self._device, copy=True).reshape(-1)
        if ages.numel() != x.shape[0]:
            raise DiscriminatorError(
                f"Got {ages.numel()} chain ages for {x.shape[0]} chains; give one age per chain."
            )
        # A copy, because the sampler updates its chains in place on the next step.
        snapshot = x.detach().to(self._device, torch.float32, copy=True)
        ready = self._stream.mark_offered(snapshot, ages)
        with self._cond:
            self._count += 1
            self._latest = Offer(snapshot, ages, ready, self._count)
            self._cond.notify()
            return self._resting

    def take(self, taken: int, timeout: float) -> Offer | None:
        """The newest offer if its index is not `taken` (the last one taken); else wait up to
        `timeout` seconds, or until `wake()`, and answer None."""
        with self._cond:
            offer = self._latest
            if offer is None or offer.index == taken:
                self._cond.wait(timeout=timeout)
                return None
            return offer

    def rest(self) -> None:
        """D's thread begins a rest: offers from now on answer True."""
        with self._cond:
            self._resting = True

    def resume(self) -> int:
        """D's thread ends a rest: offers from now on answer False. Returns the index of the
        newest offer, made while D rested, for D to pass over in `take` (under the same lock
        as `offer`, so no offer falls between the two)."""
        with self._cond:
            self._resting = False
            return self._count

    def wake(self) -> None:
        """End every wait in `take` now (so a stopping thread notices at once)."""
        with self._cond:
            self._cond.notify_all()
