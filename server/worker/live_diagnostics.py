"""Live convergence diagnostics of the dashboard's chains: per unit (grid column), the split
R-hat and effective sample size of the activation over that unit's chains, and a verdict in
plain words.

`ActivationHistory` keeps the last `HISTORY_STEPS` activations of every chain on the device
(one copy per step, nothing read back); `unit_diagnostics` copies them to the host when the
metrics are due and hands them to `ldam.sampling.diagnostics.unit_diagnostics`, the one
per-unit function, with its one rule for which draws count (after every chain of the unit
burned in, at least `diagnostics.MIN_DRAWS` per chain); this module only adds the verdict and the labels.
The ring and a `restart` (after a checkpoint swap, whose earlier draws came from another
energy) choose which steps it is given.

The verdict of a unit:

- ``not burned in yet``: a chain of the unit is still in burn-in, or fewer than 40
  post-burn-in draws per chain are kept (too few to judge);
- ``mixing``: split R-hat below `RHAT_MIXING` (1.1, the usual limit of Gelman et al.) and an
  ESS of at least `ESS_PER_CHAIN_MIXING` (10) per chain: the chains agree and each has moved;
- ``stuck in separate modes``: anything else. R-hat at or above 1.1 says the chains (or the two
  halves of one chain) sample different regions; an ESS under 10 per chain says the chains
  hardly move, so their agreement, if any, means nothing; a NaN R-hat (no variation at all
  within the chains, as at T = 0) is a chain that stands still.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ldam.sampling import diagnostics

# Steps of activations kept per chain (the sliding window the diagnostics see).
HISTORY_STEPS = 1000
RHAT_MIXING = 1.1
ESS_PER_CHAIN_MIXING = 10.0

MIXING = "mixing"
STUCK = "stuck in separate modes"
NOT_BURNED_IN = "not burned in yet"


def verdict(rhat: float, ess: float, chains: int) -> str:
    """The plain-words state of a unit with `chains` burned-in chains, split R-hat `rhat` and
    effective sample size `ess` (both from enough draws): `MIXING` or `STUCK`."""
    if math.isfinite(rhat) and rhat < RHAT_MIXING and ess >= ESS_PER_CHAIN_MIXING * chains:
        return MIXING
    return STUCK


class ActivationHistory:
    """The activations of `chains` chains over their last `capacity` sampler steps, kept on
    `device` in a ring `[capacity, chains]`.

    `add(step, activation)` takes the activation a sampler step reported (`StepInfo.step` and
    `StepInfo.activation`, the energy of the sample before that step); steps must come one
    after another. `restart(step)` forgets every draw up to `step` (a checkpoint swap changed
    the energy under the chains).
    """

    def __init__(self, chains: int, device: torch.device, capacity: int = HISTORY_STEPS) -> None:
        self.capacity = capacity
        self.ring = torch.zeros(capacity, chains, device=device)
        self.newest = 0  # the step of the newest draw (0: none yet)
        self.oldest = 1  # the first step still counted
        self._host = np.zeros((capacity, chains))
        self._host_at = -1

    def add(self, step: int, activation: torch.Tensor) -> None:
        """Record `activation [chains]` (a device tensor, copied on the device) as `step`."""
        self.ring[step % self.capacity].copy_(activation.detach())
        self.newest = step

    def restart(self, step: int) -> None:
        """Count only draws after `step` from now on."""
        self.oldest = step + 1

    def window(self) -> tuple[np.ndarray, int]:
        """The kept activations `[n, chains]`, oldest first, and the sampler step of the first
        row (the steps since the last `restart` that the ring still holds)."""
        lo = max(self.oldest, self.newest - self.capacity + 1, 1)
        if lo > self.newest:
            return np.zeros((0, self.ring.shape[1])), lo
        if self._host_at != self.newest:  # one host copy per step, however often it is read
            self._host = self.ring.cpu().numpy().astype(np.float64)
            self._host_at = self.newest
        return self._host[np.arange(lo, self.newest + 1) % self.capacity], lo


def unit_diagnostics(
    history: ActivationHistory,
    burn_in_step: Sequence[int],
    units: Sequence[int],
    labels: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """One entry per unit, in column order: ``unit``, ``label``, ``chains`` (how many),
    ``draws`` (per chain), ``rhat``, ``ess`` (None while not judged or undefined) and
    ``state`` (see the module docstring), from `ldam.sampling.diagnostics.unit_diagnostics`
    over the draws `history` holds.

    `burn_in_step [chains]` is the sampler's (-1: still in burn-in); `units [chains]` is the
    unit of each chain in the sampler's (grid) order; `labels` names units (class names).
    """
    activation, first_step = history.window()
    out = []
    for entry in diagnostics.unit_diagnostics(activation, burn_in_step, units, first_step):
        rhat, ess, chains = entry["rhat"], entry["ess"], len(entry["chains"])
        judged = entry["note"] is None
        out.append(
            {
                "unit": entry["unit"],
                "label": (labels or {}).get(entry["unit"], str(entry["unit"])),
                "chains": chains,
                "draws": entry["draws"],
                "rhat": rhat if judged and math.isfinite(rhat) else None,
                "ess": ess if judged and math.isfinite(ess) else None,
                "state": verdict(rhat, ess, chains) if judged else NOT_BURNED_IN,
            }
        )
    return out
