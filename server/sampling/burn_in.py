"""Per-chain burn-in: when a chain's samples start to count (paper section 3.2).

Fixed burn-in discards a chain's first `burn_in` samples. Auto burn-in looks at the chain's
activation over its last `window` steps (rounded down to an even 2h) and declares the chain
burned in once the means of the two halves (h steps each) agree: their relative change is
below `epsilon`, or their difference is within `BURN_IN_Z` standard errors of zero, and, when a
threshold is given, the activation is at least that threshold.

Step numbers follow the sampler: step t (1, 2, ...) evaluates the activation at x_{t-1} and
moves to x_t. A chain marked burned in on step t keeps x_t and every later sample, and its
`steps` entry is t - 1, the number of steps it discarded.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Auto burn-in also accepts a chain whose trend over the burn-in window is within this many
# standard errors of zero (a Geweke-style test): with noise, a relative change below epsilon
# may never happen for an activation that hovers near zero.
BURN_IN_Z = 2.0


class BurnIn:
    """Which chains are burned in, fixed or auto, updated once per step without a host sync.

    Chains restart by index (`reset`) or under a device-side mask (`reset_mask`, which a
    sampler may call every step). `done` is a host-side hint that every chain is burned in,
    set by the caller from a value it read: `update` then does nothing, and `record` does what
    must go on for a caller that may not yet know of a masked restart.

    Attributes:
        burned: `[N]` bool, whether each chain's current sample is a kept one.
        steps: `[N]` int64, the steps each chain discarded (counted from the start of the run,
            also for a chain reset since), -1 while its current sample is not a kept one.
        burn_in, epsilon, threshold: the settings given (see `__init__`).
    """

    def __init__(
        self,
        chains: int,
        device: torch.device,
        burn_in: int | None,
        window: int,
        epsilon: float,
        threshold: float | Tensor | None = None,
    ) -> None:
        """Burn-in for `chains` chains on `device`.

        Args:
            burn_in: steps discarded per chain, or None for auto burn-in.
            window: auto burn-in's number of recent steps (>= 2; an odd one loses its oldest).
            epsilon: auto burn-in's largest relative change between the two half-window means.
            threshold: auto burn-in's least activation, a float or per-chain `[N]`; None = any.
        """
        self.burn_in = burn_in
        self.epsilon = epsilon
        self.threshold = threshold
        self.burned = torch.zeros(chains, dtype=torch.bool, device=device)
        self.steps = torch.full((chains,), -1, dtype=torch.long, device=device)
        self._done = False
        half = window // 2
        # A ring `[2h, N]` of the last 2h activations; slot (t - 1) mod 2h holds step t's.
        self._ring = torch.zeros(2 * half, chains, device=device)
        slots = torch.arange(2 * half, device=device)
        newest = (slots[:, None] - torch.arange(half, device=device)[None, :]) % (2 * half)
        # [2h, 2h]: row s lists the slots of the newest half, then of the older half, once
        # slot s was written, so both halves are one index_select, with no Python loop.
        self._halves = torch.cat((newest, (newest - half) % (2 * half)), dim=1)

    @property
    def done(self) -> bool:
        """Whether every chain is known to be burned in: then `update` does nothing until the
        next `reset`. Host-side; set through `set_done`."""
        return self._done

    def set_done(self, all_burned: bool) -> None:
        """Report a host value of `burned.all()`. The detector never syncs with the device on
        its own: the sampler reads that flag from a copy it makes every few steps."""
        self._done = all_burned

    def update(self, activation: Tensor, age: Tensor, step: int) -> None:
        """Take step `step`'s activations `[N]` (at the state the step started from) and mark
        the chains that are burned in as of that step's new sample.

        `age [N]` int64 is the steps each chain has taken since its (re)initialization, this
        one included. A chain stays burned in until it is `reset`.
        """
        if not self._done:
            self._mark(activation, age, step)

    def _mark(self, activation: Tensor, age: Tensor, step: int) -> None:
        """`update`'s work, whether or not `done`."""
        if self.burn_in is not None:
            newly = ~self.burned & (age > self.burn_in)
        else:
            newly = ~self.burned & self._stable(activation, step) & (age >= self._ring.shape[0])
            if self.threshold is not None:
                newly &= activation >= self.threshold
        self.burned |= newly
        # This step's new sample is the first kept one: the step-1 before it were discarded.
        self.steps.masked_fill_(newly, step - 1)

    def record(self, activation: Tensor, age: Tensor, step: int) -> None:
        """What `update` must still do while `done`, for a caller that learns late (from a copy)
        that a chain was restarted under a mask: arguments as for `update`.

        Auto burn-in only puts the activations into its ring, so a restarted chain's ring is
        full when its age reaches the window (the caller learns of the restart within that
        many steps, and `update` runs again; until then the test could not pass for it anyway).
        Fixed burn-in runs its whole update, a few kernels, since a restarted chain may be
        burned in again at any age.
        """
        if self.burn_in is None:
            self._ring[(step - 1) % self._ring.shape[0]] = activation
        else:
            self._mark(activation, age, step)

    def observe(self, activation: Tensor, step: int) -> None:
        """Take step `step`'s activations `[N]` without marking any chain: the discarded
        steps that adapt the step size (`ldam.sampling.scale`) fill auto burn-in's ring, so
        its test afterwards looks at real activations, never at the zeros of a fresh ring."""
        if self.burn_in is None:
            self._ring[(step - 1) % self._ring.shape[0]] = activation

    def _stable(self, activation: Tensor, step: int) -> Tensor:
        """`[N]` bool: record `activation`, then whether the two half-window means agree."""
        ring = self._ring.shape[0]
        half = ring // 2
        slot = (step - 1) % ring
        self._ring[slot] = activation
        halves = self._ring.index_select(0, self._halves[slot])
        new, old = halves[:half], halves[half:]
        m_new, m_old = new.mean(0), old.mean(0)
        diff = (m_new - m_old).abs()
        level = torch.maximum(m_new.abs(), m_old.abs())
        noise = ((new.var(0) + old.var(0)) / half).sqrt()
        # The ring only holds real activations of a chain once its age reaches 2h; `update`
        # masks younger chains, whose halves still contain zeros from the reset.
        return (diff <= self.epsilon * level) | (diff <= BURN_IN_Z * noise)

    def reset(self, chains: Tensor) -> None:
        """Restart burn-in of the chains with indices `chains [M]` int64."""
        self._ring[:, chains] = 0
        self.burned[chains] = False
        self.steps[chains] = -1
        self._done = False

    def reset_mask(self, chains: Tensor) -> None:
        """Restart burn-in of the chains where `chains [N]` bool is True, a device-side mask
        never read on the host. `done` is left as it is: only the caller knows whether the
        mask held any chain (see `record`)."""
        self._ring.masked_fill_(chains[None, :], 0)
        self.burned.masked_fill_(chains, False)
        self.steps.masked_fill_(chains, -1)
