"""Convergence diagnostics for chains that share a target (Gelman et al., BDA3; Stan).

Both take `draws [M chains, n draws]` of one scalar (e.g. the activation after burn-in) and
split every chain into halves, so a chain that drifts also shows up as disagreeing halves.
Draws without a defined value, every draw equal or any NaN/Inf (a chain that diverged and was
reset), give NaN rather than an error: a diagnostic should not stop a run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ldam.errors import UserError


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
    activation: np.ndarray, burn_in_step: np.ndarray, units_per_chain: Sequence[int]
) -> list[dict[str, Any]]:
    """Split R-hat and ESS of the activation, per group of chains sharing a unit.

    `activation [T, N]` per step and chain, `burn_in_step [N]` (-1: not burned in). Uses the
    post-burn-in part common to every chain of the group: {"unit", "chains", "rhat", "ess",
    "draws"}, or {"unit", "chains", "note"} when there is too little of it.
    """
    out = []
    units = list(units_per_chain)
    for unit in dict.fromkeys(units):
        idx = [i for i, u in enumerate(units) if u == unit]
        starts = [int(burn_in_step[i]) for i in idx]
        entry: dict[str, Any] = {"unit": unit, "chains": idx}
        if min(starts) < 0:
            entry["note"] = "not every chain of this unit burned in"
            out.append(entry)
            continue
        start = max(starts)
        draws = np.asarray(activation[start:, idx]).T.astype(np.float64)
        if draws.shape[1] < 8:
            entry["note"] = "too few post-burn-in steps for diagnostics"
        else:
            entry["rhat"] = float(split_rhat(draws))
            entry["ess"] = float(effective_sample_size(draws))
            entry["draws"] = int(draws.size)
        out.append(entry)
    return out
