"""Replica exchange (parallel tempering) of the activation term, with the prior untempered.

Each shown chain i gets K hidden replicas. Rung k = 0..K of chain i targets

    p_k(x) ∝ exp((beta_k g(x) + R(x)) / T),    1 = beta_0 > beta_1 > ... > beta_K = end > 0,

where g = f / sigma is the tempered part (the activation over the unit's scale,
`ldam.sampling.scale`) and R the regularizers (L2, the prior), which every rung keeps whole. Rung
0 is the chain shown. A hot rung is close to the prior, a Gaussian that the Langevin step
crosses in a few dozen steps, so states found there reach the cold rung by swaps.

**Why only g is tempered.** Tempering the whole energy over d pixels needs rungs about
sqrt(2 / d) apart in beta, hundreds of them at 28x28 (the energy's fluctuation grows like d).
The prior's part of the energy then has the same value on every rung and cancels from the swap
test below, so the rungs are spaced by the fluctuation of g alone, a few dozen nats, as in
replica exchange with solute tempering (REST).

**The swap.** Swapping the states of rungs k and k+1 of one chain is a Metropolis move on the
product of the rungs' laws, accepted with probability

    min(1, exp((beta_k - beta_{k+1}) (g(x_{k+1}) - g(x_k)) / T)),

which favours moving the state of higher g (more activating) to the colder rung. Swaps are
deterministic even-odd (step t tries the pairs (k, k+1) with k = t mod 2, k + 2, ...), which
lets a replica travel the ladder in O(K) steps rather than O(K^2) (Syed et al. 2019, non-
reversible parallel tempering). Velocities stay in their rung's slot: only x moves.

**The ladder.** It starts uniform in beta from 1 to `end` and is adapted during burn-in, in
rounds (`LADDER_ROUNDS` shares of `ladder_steps`): after each round, the rungs of every group of
chains (a unit and its settings) are moved so that every neighbouring pair rejects the same
share of swaps (Syed et al.'s schedule update: the cumulative rejection, piecewise linear in
beta, is split into K equal parts, which is the ladder that makes round trips fastest for K
rungs). The rejection estimates are the mean swap probability, not the accept indicator (less
noisy). Then the ladder is frozen, so the chains are a fixed Markov chain from there on, and the
samples kept are drawn after it. The acceptance the equalized ladder reaches is reported; about
25% or more means K is enough, far less means the unit needs more replicas (or a colder end).

**Round trips.** A replica's round trip is a journey from the hottest rung to the coldest and
back; counted per group since the ladder was frozen. A sampler whose replicas make no round
trips is not exchanging information between the prior and the cold rung.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# The shares of `ladder_steps` that make up the adaptation rounds: short early rounds move the
# rungs from the uniform start quickly, the long last one sets the frozen ladder.
LADDER_ROUNDS = (1, 1, 2, 4)
# Rejection added to every pair before the ladder is re-spaced: a pair that never rejects then
# still gets a width, and the cumulative rejection is strictly increasing in beta.
MIN_REJECTION = 0.01


def swap_log_accept(
    beta_cold: Tensor, beta_hot: Tensor, g_cold: Tensor, g_hot: Tensor, temperature: Tensor
) -> Tensor:
    """The log acceptance of swapping the states of a colder rung (`beta_cold`, state with
    tempered energy `g_cold`) and a hotter one: `(beta_cold - beta_hot) (g_hot - g_cold) / T`,
    every argument broadcast elementwise. Positive when the hotter rung holds the better state."""
    return (beta_cold - beta_hot) * (g_hot - g_cold) / temperature


def respace(betas: Tensor, rejection: Tensor) -> Tensor:
    """The ladder `[G, K + 1]` (descending, ends kept) whose neighbouring pairs reject equally,
    given each pair's measured rejection `[G, K]` on `betas [G, K + 1]` (Syed et al. 2019).

    The cumulative rejection Lambda(beta), 0 at beta_0 = 1 and piecewise linear through the
    rungs, is inverted at K equal fractions of its total.
    """
    rej = rejection.double().clamp(min=0.0) + MIN_REJECTION
    cum = torch.cat([torch.zeros_like(rej[:, :1]), rej.cumsum(1)], dim=1)  # [G, K + 1]
    k = betas.shape[1] - 1
    b = betas.double()
    out = b.clone()
    for g in range(b.shape[0]):
        targets = cum[g, -1] * torch.arange(1, k, dtype=torch.float64) / k
        # The pair j that holds each target: cum[j] <= target < cum[j + 1].
        j = torch.searchsorted(cum[g], targets, right=True).sub_(1).clamp_(0, k - 1)
        lo, hi = cum[g, j], cum[g, j + 1]
        frac = (targets - lo) / (hi - lo)
        out[g, 1:k] = b[g, j] + frac * (b[g, j + 1] - b[g, j])
    return out.to(betas.dtype)


@dataclass
class SwapStats:
    """Swap figures of one group of chains: `acceptance` per neighbouring pair (the mean swap
    probability since the ladder froze, cold pair first), `round_trips` (completed hot-cold-hot
    journeys of its replicas since then), `betas` (its ladder, cold first), `adapting`."""

    betas: list[float]
    acceptance: list[float | None]
    round_trips: int
    adapting: bool


class ReplicaExchange:
    """The ladder, the swaps and their statistics for `chains` shown chains with `replicas` K
    hidden replicas each.

    Rows are chain-major: row `i (K + 1) + k` is rung k of chain i, so every per-row tensor
    views as `[chains, K + 1]` and rung 0 is `rows[:: K + 1]`. `groups [chains]` (int64) says
    which ladder each chain follows (chains of one unit and settings share one), `count` how
    many ladders there are.
    """

    def __init__(
        self,
        chains: int,
        replicas: int,
        end: float,
        ladder_steps: int,
        groups: Tensor,
        count: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        self.chains, self.replicas, self.end = chains, replicas, end
        self.device = device
        self.groups = groups.to(device)
        self.count = count
        self._gen = generator
        ladder = torch.linspace(1.0, end, replicas + 1, dtype=torch.float64)
        self.betas = ladder.expand(count, -1).clone().to(device)  # [G, K + 1]
        # Adaptation rounds: the step (counted in swap attempts) at which each one ends.
        total = sum(LADDER_ROUNDS)
        ends, done = [], 0
        for share in LADDER_ROUNDS:
            done += max(1, round(ladder_steps * share / total))
            ends.append(done)
        self._round_ends = ends if ladder_steps > 0 else []
        self.attempts = 0  # swap attempts (steps that swapped) so far
        self._pairs = torch.arange(replicas, device=device)
        self._reset_counts()
        # Which replica (label) sits in each slot, and where each label last turned: 0 none,
        # 1 left the hottest rung, 2 then reached the coldest.
        self._labels = torch.arange(replicas + 1, device=device).repeat(chains, 1)
        self._state = torch.zeros(chains, replicas + 1, dtype=torch.long, device=device)
        self._trips = torch.zeros(count, dtype=torch.long, device=device)
        self._uniform = torch.empty(chains, replicas, device=device)
        # The identity order of a chain's rungs, and each chain's first row: a swap's
        # permutation is built from them every step.
        self._identity = torch.arange(replicas + 1, device=device).repeat(chains, 1)
        self._first_row = torch.arange(chains, device=device).view(chains, 1) * (replicas + 1)

    @property
    def adapting(self) -> bool:
        """Whether the ladder still moves (burn-in: no sample is kept meanwhile)."""
        return bool(self._round_ends) and self.attempts < self._round_ends[-1]

    def _reset_counts(self) -> None:
        self._acc_sum = torch.zeros(
            self.count, self.replicas, dtype=torch.float64, device=self.device
        )
        self._acc_n = torch.zeros(
            self.count, self.replicas, dtype=torch.float64, device=self.device
        )

    def row_betas(self) -> Tensor:
        """`[chains (K + 1)]` each row's beta, chain-major (float64)."""
        return self.betas[self.groups].reshape(-1)

    def swap(self, g: Tensor, temperature: Tensor) -> Tensor:
        """One even-odd round of swap attempts on the rows' tempered energies `g [rows]` at
        the chains' temperatures `temperature [chains]`; returns the row permutation `[rows]`
        (int64) to apply to the states (new row r takes the state of row perm[r]), and counts
        the swap probabilities for the ladder and the statistics."""
        n, k = self.chains, self.replicas
        parity = self.attempts % 2
        self.attempts += 1
        order = self._identity.clone()
        if k - parity >= 1:
            pairs = self._pairs[parity::2]
            gv = g.view(n, k + 1).double()
            b = self.betas[self.groups]  # [n, K + 1]
            log_a = swap_log_accept(
                b[:, pairs],
                b[:, pairs + 1],
                gv[:, pairs],
                gv[:, pairs + 1],
                temperature.double().view(n, 1),
            )
            prob = torch.exp(log_a.clamp(max=0.0))
            # NaN (a diverged chain) never swaps and counts as a rejection.
            prob = torch.nan_to_num(prob, nan=0.0)
            self._acc_sum[:, pairs] += _group_sum(prob, self.groups, self.count)
            self._acc_n[:, pairs] += _group_sum(torch.ones_like(prob), self.groups, self.count)
            u = self._uniform[:, : pairs.numel()].uniform_(generator=self._gen)
            accept = u.double() < prob  # [n, P]
            lo = order[:, pairs]
            hi = order[:, pairs + 1]
            order[:, pairs] = torch.where(accept, hi, lo)
            order[:, pairs + 1] = torch.where(accept, lo, hi)
            self._track(order)
        if self._round_ends and self.attempts in self._round_ends:
            self._respace()
        return (self._first_row + order).reshape(-1)

    def _track(self, order: Tensor) -> None:
        """Move the replica labels with the swap and count finished round trips."""
        self._labels = self._labels.gather(1, order)
        if self.adapting:
            return
        k = self.replicas
        hot, cold = self._labels[:, k : k + 1], self._labels[:, :1]
        state_hot = self._state.gather(1, hot)
        done = (state_hot == 2).squeeze(1)
        self._trips.index_add_(0, self.groups, done.long())
        self._state.scatter_(1, hot, 1)
        state_cold = self._state.gather(1, cold)
        self._state.scatter_(1, cold, torch.where(state_cold == 1, 2, state_cold))

    def _respace(self) -> None:
        rejection = 1.0 - self._acc_sum / self._acc_n.clamp(min=1.0)
        self.betas = respace(self.betas, rejection)
        self._reset_counts()
        if not self.adapting:  # frozen: statistics count from here
            self._state.zero_()
            self._trips.zero_()

    def stats(self) -> list[SwapStats]:
        """Per group: its ladder, the per-pair acceptance (since the ladder froze; while it
        adapts, in the current round) and the round trips since it froze."""
        acc = (self._acc_sum / self._acc_n.clamp(min=1.0)).tolist()
        seen = (self._acc_n > 0).tolist()
        out = []
        for g in range(self.count):
            out.append(
                SwapStats(
                    betas=[float(b) for b in self.betas[g].tolist()],
                    acceptance=[a if s else None for a, s in zip(acc[g], seen[g], strict=True)],
                    round_trips=int(self._trips[g]),
                    adapting=self.adapting,
                )
            )
        return out


def _group_sum(values: Tensor, groups: Tensor, count: int) -> Tensor:
    """`[count, P]` the sums of `values [n, P]` over the chains of each group."""
    out = torch.zeros(count, values.shape[1], dtype=values.dtype, device=values.device)
    return out.index_add_(0, groups, values)
