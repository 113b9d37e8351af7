"""Live convergence diagnostics of the dashboard's chains: per unit (grid column), the split
R-hat and effective sample size of the activation over that unit's chains, and a verdict in
plain words.

`ActivationHistory` keeps the last `HISTORY_STEPS` activations of every chain on the device
(one copy per step, nothing read back); `unit_diagnostics` copies them to the host when the
metrics are due and hands each unit's post-burn-in draws to `ldam.sampling.diagnostics`.

The verdict of a unit, from its chains' draws after every one of them burned in (and after the
last rebuild or checkpoint swap, whose draws came from another energy):

- ``not burned in yet``: a chain of the unit is still in burn-in, or fewer than `MIN_DRAWS`
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

from ldam.sampling.diagnostics import effective_sample_size, split_rhat

# Steps of activations kept per chain (the sliding window the diagnostics see).
HISTORY_STEPS = 1000
# Post-burn-in draws per chain before a verdict other than "not burned in yet".
MIN_DRAWS = 40
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

    def draws(self, first_step: int) -> np.ndarray:
        """The kept draws of every chain from `first_step` on, oldest first: `[chains, n]`."""
        lo = max(first_step, self.oldest, self.newest - self.capacity + 1, 1)
        if lo > self.newest:
            return np.zeros((self.ring.shape[1], 0))
        if self._host_at != self.newest:  # one host copy per step, however many units read it
            self._host = self.ring.cpu().numpy().astype(np.float64)
            self._host_at = self.newest
        slots = np.arange(lo, self.newest + 1) % self.capacity
        return self._host[slots].T


def unit_diagnostics(
    history: ActivationHistory,
    burn_in_step: Sequence[int],
    units: Sequence[int],
    labels: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """One entry per unit, in column order: ``unit``, ``label``, ``chains``, ``draws`` (per
    chain), ``rhat``, ``ess`` (None while not judged) and ``state`` (see the module docstring).

    `burn_in_step [chains]` is the sampler's (-1: still in burn-in; b: samples after step b are
    kept, so the activation reported at step t counts from t = b + 2 on); `units [chains]` is
    the unit of each chain in the sampler's order; `labels` names units (class names).
    """
    burn = np.asarray(burn_in_step, dtype=np.int64)
    chains_of: dict[int, list[int]] = {}
    for chain, unit in enumerate(units):
        chains_of.setdefault(int(unit), []).append(chain)
    out = []
    for unit in sorted(chains_of):
        idx = chains_of[unit]
        entry: dict[str, Any] = {
            "unit": unit,
            "label": (labels or {}).get(unit, str(unit)),
            "chains": len(idx),
            "draws": 0,
            "rhat": None,
            "ess": None,
            "state": NOT_BURNED_IN,
        }
        out.append(entry)
        if (burn[idx] < 0).any():
            continue
        draws = history.draws(int(burn[idx].max()) + 2)[idx]
        entry["draws"] = int(draws.shape[1])
        if draws.shape[1] < MIN_DRAWS:
            continue
        rhat = split_rhat(draws)
        ess = effective_sample_size(draws)
        entry["rhat"] = rhat if math.isfinite(rhat) else None
        entry["ess"] = ess if math.isfinite(ess) else None
        entry["state"] = verdict(rhat, ess, len(idx))
    return out
