"""Convergence diagnostics for chains that share a target (Gelman et al., BDA3; Stan).

Both take `draws [M chains, n draws]` of one scalar (e.g. the activation after burn-in) and
split every chain into halves, so a chain that drifts also shows up as disagreeing halves.
Draws without a defined value, every draw equal or any NaN/Inf (a chain that diverged and was
reset), give NaN rather than an error: a diagnostic should not stop a run.

`unit_diagnostics` applies them per unit of a sampler's chains with the one rule for which
draws count (after burn-in; at least `MIN_DRAWS` per chain): `ldam sample`, the atlas and the
dashboard's live diagnostics (`ldam.worker.live_diagnostics`) all call it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ldam.errors import UserError

# Kept draws per chain before a unit's R-hat and ESS are computed. With fewer the halves of a
# split chain are too short to tell: for a unit of 2 chains of independent draws (they mix by
# construction) split R-hat reaches the usual limit of 1.1 by chance in 20% of cases at 8
# draws per chain, 4% at 20 and 0.2% at 40 (2000 trials each).
MIN_DRAWS = 40
# Why a unit has no R-hat and ESS (`unit_diagnostics`'s ``note``).
NOT_BURNED_IN_NOTE = "not every chain of this unit burned in"
TOO_FEW_NOTE = f"fewer than {MIN_DRAWS} post-burn-in draws per chain"


class DiagnosticsError(UserError):
    """Draws of the wrong shape; the message is one sentence."""


def _split_chains(draws: np.ndarray) -> np.ndarray:
    """`[M, n]` -> `[2M, n // 2]`: first and last halves (the middle draw dropped for odd n)."""
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 2:
        raise DiagnosticsError(
            f"Draws must be a 2-D array [chains, draws], got shape {draws.shape}."
        )
    if draws.shape[0] < 1 or draws.shape[1] < 4:
        raise DiagnosticsError(
            f"Diagnostics need at least 1 chain of at least 4 draws, got shape {draws.shape}."
        )
    half = draws.shape[1] // 2
    return np.concatenate([draws[:, :half], draws[:, -half:]], axis=0)


def _within_and_total(chains: np.ndarray) -> tuple[float, float]:
    """W (mean within-chain variance) and var+ = (n-1)/n W + B/n (BDA3 eq. 11.3)."""
    n = chains.shape[1]
    within = float(chains.var(axis=1, ddof=1).mean())
    between_over_n = float(chains.mean(axis=1).var(ddof=1)) if chains.shape[0] > 1 else 0.0
    return within, (n - 1) / n * within + between_over_n


def split_rhat(draws: np.ndarray) -> float:
    """Split R-hat of `draws [M, n]`: sqrt(var+ / W) over the 2M half-chains.

    About 1 when the chains mix; above 1.01-1.1 when they disagree (different modes, drift).
    """
    chains = _split_chains(draws)
    if not np.all(np.isfinite(chains)):
        return math.nan
    within, total = _within_and_total(chains)
    if within == 0:
        return math.nan
    return math.sqrt(total / within)


def _autocovariance(chains: np.ndarray) -> np.ndarray:
    """Biased autocovariance (divided by n) of each row, lags 0..n-1, by FFT: `[M, n]`."""
    m, n = chains.shape
    centered = chains - chains.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()  # zero-padded so the circular correlation is linear
    spectrum = np.fft.rfft(centered, n=size, axis=1)
    return np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=1)[:, :n] / n


def effective_sample_size(draws: np.ndarray) -> float:
    """Effective sample size of `draws [M, n]` (Stan's basic ESS on split chains).

    Autocorrelations combine all half-chains, rho_t = 1 - (W - mean autocov_t) / var+, and are
    summed with Geyer's initial positive (and monotone) sequence: tau = -1 + 2 sum_k P_k, with
    P_k = rho_2k + rho_2k+1 while positive. ESS = M n / tau, capped at M n log10(M n) like Stan.
    Independent draws give about M n; an AR(1) chain with coefficient rho about
    M n (1 - rho) / (1 + rho).
    """
    chains = _split_chains(draws)
    if not np.all(np.isfinite(chains)):
        return math.nan
    m, n = chains.shape
    within, total = _within_and_total(chains)
    if within == 0:
        return math.nan
    acov = _autocovariance(chains).mean(axis=0)
    rho = 1.0 - (within - acov) / total
    rho[0] = 1.0
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    negative = np.flatnonzero(pairs < 0)
    positive = pairs[: negative[0]] if negative.size else pairs
    positive = np.minimum.accumulate(positive)
    tau = max(-1.0 + 2.0 * float(positive.sum()), 1.0 / math.log10(m * n)) if m * n > 1 else 1.0
    return float(m * n / tau)


def unit_diagnostics(
    activation: np.ndarray,
    burn_in_step: Sequence[int],
    units_per_chain: Sequence[int],
    first_step: int = 1,
) -> list[dict[str, Any]]:
    """Split R-hat and ESS of the activation, per group of chains sharing a unit: the one
    per-unit diagnostics of `ldam sample`, the atlas and the dashboard.

    `activation [T, N]`: row i holds the activation each chain reported at sampler step
    `first_step + i` (`StepInfo.activation`; a run's rows start at step 1, a ring of recent
    steps later); `burn_in_step [N]` is the sampler's (-1: still in burn-in);
    `units_per_chain [N]` is each chain's unit (`Target.units_per_chain`, grid order).

    Which draws count (`kept_draws`): step t reports the activation of sample x_{t-1}, and a
    chain with burn-in step b keeps x_t for t > b, so its kept activations are those reported
    at steps t >= b + 2. A unit's chains are compared over the steps all of them keep (from
    the largest b of the unit on), so every chain gives the same number of draws. R-hat and
    ESS are computed from `MIN_DRAWS` kept draws per chain on; with fewer the unit gets a
    ``note`` instead (see `MIN_DRAWS` for why 40).

    One entry per unit, in the order the units first appear (the grid's columns): ``unit``,
    ``chains`` (the chain indices), ``draws`` (kept draws per chain), ``rhat`` and ``ess``
    (floats, NaN where undefined; None while not computed) and ``note`` (None when computed,
    else why not: a chain still burns in, or too few draws).
    """
    act = np.asarray(activation, dtype=np.float64)
    burn = np.asarray(burn_in_step, dtype=np.int64)
    units = [int(u) for u in units_per_chain]
    if act.ndim != 2 or act.shape[1] != len(units) or burn.shape != (len(units),):
        raise DiagnosticsError(
            f"The activation [steps, chains] {list(act.shape)}, burn-in steps {list(burn.shape)} "
            f"and units ({len(units)}) must agree on the number of chains."
        )
    out = []
    for unit in dict.fromkeys(units):
        idx = [i for i, u in enumerate(units) if u == unit]
        entry: dict[str, Any] = {
            "unit": unit,
            "chains": idx,
            "draws": 0,
            "rhat": None,
            "ess": None,
            "note": NOT_BURNED_IN_NOTE,
        }
        out.append(entry)
        if (burn[idx] < 0).any():
            continue
        draws = kept_draws(act[:, idx], int(burn[idx].max()), first_step)
        entry["draws"] = int(draws.shape[1])
        if draws.shape[1] < MIN_DRAWS:
            entry["note"] = TOO_FEW_NOTE
            continue
        entry["rhat"] = split_rhat(draws)
        entry["ess"] = effective_sample_size(draws)
        entry["note"] = None
    return out


def kept_draws(activation: np.ndarray, burn_in_step: int, first_step: int = 1) -> np.ndarray:
    """The kept draws `[M, n]` of chains whose rows of `activation [T, M]` start at sampler
    step `first_step` and which all keep samples after step `burn_in_step` (>= 0): the rows
    reported at steps `burn_in_step + 2` on (see `unit_diagnostics`)."""
    start = max(0, burn_in_step + 2 - first_step)
    return np.asarray(activation[start:], dtype=np.float64).T
