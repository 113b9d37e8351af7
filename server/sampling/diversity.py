"""How many different images a unit's chains show: the number of modes and the Vendi score.

Both look at the unit's *snapshots*: every chain's moving window cut into `BLOCKS`
consecutive blocks, each replaced by its mean (`MovingWindow.block_means`). A single Langevin
draw at temperature T carries white noise of per-pixel std about sqrt(T / lambda) (0.45 at
T = 0.01, lambda = 0.05), which would make every draw look distinct from every other; the
mean of a block of consecutive kept samples averages much of that noise away and keeps what
the chain holds on to.

- `vendi_score` (Friedman & Dieng 2022): exp of the entropy of the eigenvalues of K / n, with
  K the cosine-similarity kernel of the snapshots (K_ii = 1): the effective number of
  distinct images, from 1 (all alike) to n (all orthogonal). Shares p of mutually orthogonal
  looks give exp(H(p)); k equally likely ones give k.
- `count_modes`: agglomerative clustering (average linkage) on the cosine distance 1 - K,
  merged while the closest two clusters are nearer than `MODE_DISTANCE`, counting the
  clusters that hold at least a minimum share of the snapshots. The largest cluster always
  counts, so there is at least 1 mode; snapshots that all differ (noise-dominated blocks)
  read as 1 diffuse mode and a high Vendi.

Choices, and why (measured on the bundled LeNet, fc3:0-9, 4 chains per unit, 1500 steps, the
window of 200 in 8 blocks):

- Raw images, not centred. The kernel compares the snapshots as they are, not minus the
  unit's mean. Centring maps k mutually orthogonal looks onto a simplex (pairwise cosine
  -1/(k-1)), which reads as k - 1 distinct images, and two different looks as x and -x:
  Vendi 1. On the LeNet, too, it took the look away: at T = 0.001, lambda = 1, unit 1's four
  chains all draw the same diagonal stroke (raw cosines 0.27-0.74 between their window means;
  the common mean holds 63% of their energy); raw gives 2 modes (one busier chain apart),
  centred 4 modes with cosines of -0.3 to -0.6 between them. The common mean does not
  swamp the raw cosine either: at the default settings it holds 30-36% of the energy and
  chains of one unit sit at raw cosines of 0.0-0.3 (each its own mode).
- `MODE_DISTANCE` = 0.5 (cosine 0.5, 60 degrees: for images of equal norm, a difference as
  large as the image). Snapshots of one chain sit at cosine 0.95-0.99 at the cold default
  (T 0.01, lambda 0.05) and 0.73-0.77 at T = 1, and different chains of a unit at 0.0-0.3
  (0.4-0.7 for chains sharing a look), so 0.5 lies in the gap: it counted 4 modes for every
  unit's 4 chains at T 0.01 and T 1 alike, where cuts at 0.2-0.3 split single chains at
  T = 1 (2 to 7 modes) and 0.7 merged distinct chains at T 0.01 (3 modes). Where the
  blocks are mostly noise (lambda = 1, T = 0.01: one chain's snapshots at cosine 0.4-0.9)
  Vendi reads 5-19 of 32 and the modes 1-4: the noise is counted, as it is there.
- Minimum share: `count_modes` counts a cluster with at least `MODE_MIN_SHARE` (10%) of the
  items; `unit_diversity` asks for `MODE_CHAIN_SHARE` (half) of one chain's share, i.e. at
  least BLOCKS / 2 = 4 snapshots: a look one chain held for half its window, or one that
  several chains visited. A single stray block is never a mode, and a unit of many chains,
  each in its own look, still counts each one (10% would hide them past 10 chains).
- Zero rows (a zero image: a dead unit's chain at T = 0 decays to 0): a zero vector has no
  direction, so all zero rows count as one item of their own, alike to each other
  (similarity 1) and unlike every other row (0). K is then still the Gram matrix of unit
  vectors (the zero rows mapped onto one extra axis), positive semi-definite, and n zero
  rows read as 1 image, 1 mode.
- At most `MAX_ITEMS` snapshots per unit (the clustering is O(n^3)): a unit with more chains
  is judged on its first MAX_ITEMS // B chains, in grid order (the chains are alike by
  construction, so the first ones are a fair sample).

No I/O; numpy for the n x n work, torch for the Gram of the images, on their own device in
float64 (the CPU for MPS, which has no float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ldam.errors import UserError

# Snapshots per chain: its window cut into this many blocks, each averaged (25 samples each in
# the default window of 200; a window shorter than this gives no snapshots).
BLOCKS = 8
# Average-linkage clusters closer than this cosine distance are one mode (see the docstring).
MODE_DISTANCE = 0.5
# `count_modes`: a cluster is a mode when it holds at least this share of the items.
MODE_MIN_SHARE = 0.1
# `unit_diversity`: a cluster is a mode when it holds at least this share of one chain's
# snapshots (half: BLOCKS / 2 of them).
MODE_CHAIN_SHARE = 0.5
# Snapshots per unit at most (64 chains of 8 blocks: about 60 ms on this machine's CPU).
MAX_ITEMS = 512


class DiversityError(UserError):
    """Features or draws of the wrong shape; the message is one sentence."""


def _features(features: np.ndarray | Tensor) -> Tensor:
    """`features` as a 2-D float64 tensor `[n, d]` with n >= 1, on a device with float64."""
    x = torch.as_tensor(features)
    if x.dim() != 2 or x.shape[0] < 1:
        raise DiversityError(
            "Features must be a 2-D array [items, features] with at least 1 item, "
            f"got shape {list(x.shape)}."
        )
    if x.device.type == "mps":
        x = x.cpu()
    return x.to(torch.float64)


def cosine_kernel(features: np.ndarray | Tensor, centre: bool = False) -> np.ndarray:
    """The cosine-similarity kernel `[n, n]` float64 of the rows of `features [n, d]` (numpy,
    or a tensor on any device): K_ij = <x_i, x_j> / (|x_i| |x_j|), K_ii = 1; with `centre`,
    of the rows minus their mean (not used by ldam: see the module docstring). Zero rows are
    alike to each other and unlike the rest. Computed from the n x n Gram matrix."""
    x = _features(features)
    if centre:
        x = x - x.mean(dim=0, keepdim=True)
    gram = (x @ x.T).cpu().numpy()
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    zero = norms == 0
    safe = np.where(zero, 1.0, norms)
    kernel = gram / safe[:, None] / safe[None, :]
    kernel[zero, :] = 0.0
    kernel[:, zero] = 0.0
    kernel[np.ix_(zero, zero)] = 1.0
    np.fill_diagonal(kernel, 1.0)
    return np.clip(kernel, -1.0, 1.0)


def vendi_from_kernel(kernel: np.ndarray) -> float:
    """exp(-sum lambda log lambda) over the eigenvalues lambda of `kernel / n`, for a
    similarity `kernel [n, n]` with ones on its diagonal (0 log 0 = 0)."""
    eig = np.linalg.eigvalsh(kernel / kernel.shape[0])
    eig = eig[eig > 0]  # rounding leaves tiny negative ones; 0 log 0 = 0
    return float(np.exp(-np.sum(eig * np.log(eig))))


def vendi_score(features: np.ndarray | Tensor) -> float:
    """The Vendi score of the rows of `features [n, d]` under the cosine kernel: the
    effective number of distinct rows, from 1 (all alike) to n (all orthogonal)."""
    return vendi_from_kernel(cosine_kernel(features))


def average_linkage(distance: np.ndarray, threshold: float) -> list[list[int]]:
    """Agglomerative clustering with average linkage of `distance [n, n]` (symmetric): the
    two clusters with the smallest mean pairwise distance are merged while it is below
    `threshold`. Returns the clusters as lists of row indices, largest first."""
    n = distance.shape[0]
    d = np.array(distance, dtype=np.float64)
    np.fill_diagonal(d, np.inf)
    members: list[list[int]] = [[i] for i in range(n)]
    for _ in range(n - 1):
        i, j = divmod(int(np.argmin(d)), n)
        if not d[i, j] < threshold:
            break
        # Lance-Williams for average linkage: d(k, i+j) = (|i| d(k, i) + |j| d(k, j)) / (|i| + |j|).
        ni, nj = len(members[i]), len(members[j])
        merged = (ni * d[i] + nj * d[j]) / (ni + nj)
        d[i, :], d[:, i] = merged, merged
        d[i, i] = np.inf
        d[j, :], d[:, j] = np.inf, np.inf
        members[i] += members[j]
        members[j] = []
    return sorted((m for m in members if m), key=len, reverse=True)


def modes_from_kernel(
    kernel: np.ndarray, threshold: float = MODE_DISTANCE, min_share: float = MODE_MIN_SHARE
) -> int:
    """The modes of the items of a similarity `kernel [n, n]`: average-linkage clusters at
    cosine distance 1 - K below `threshold`, counted when they hold at least `min_share` of
    the items; the largest always counts, so at least 1."""
    clusters = average_linkage(1.0 - kernel, threshold)
    least = min_share * kernel.shape[0]
    return max(1, sum(1 for c in clusters if len(c) >= least))


def count_modes(
    features: np.ndarray | Tensor,
    threshold: float = MODE_DISTANCE,
    min_share: float = MODE_MIN_SHARE,
) -> int:
    """The number of modes of the rows of `features [n, d]`: clusters of average linkage on
    the cosine distance, cut at `threshold`, that hold at least `min_share` of the rows (a
    stray row is no mode); at least 1."""
    return modes_from_kernel(cosine_kernel(features), threshold, min_share)


def unit_diversity(
    draws: np.ndarray | Tensor, units_per_chain: Sequence[int]
) -> list[dict[str, Any]]:
    """Per unit, in the order the units first appear (the grid's columns): ``unit``,
    ``modes`` (int) and ``vendi`` (float) of its snapshots, or None for both while a chain of
    the unit has none (a NaN: its window is not full yet, `MovingWindow.block_means`).

    `draws [B, N, C, H, W]`: B snapshots of each of N chains (`Sampler.window_blocks`);
    `units_per_chain [N]`: each chain's unit. A unit's items are all B snapshots of its
    chains (of its first `MAX_ITEMS` // B chains), flattened to vectors; a cluster is a mode
    when it holds at least `MODE_CHAIN_SHARE` of one chain's snapshots.
    """
    x = torch.as_tensor(draws)
    units = [int(u) for u in units_per_chain]
    if x.dim() != 5 or x.shape[1] != len(units) or x.shape[0] < 1:
        raise DiversityError(
            f"Draws must be [snapshots, chains, C, H, W] with {len(units)} chains, "
            f"got shape {list(x.shape)}."
        )
    blocks = x.shape[0]
    out = []
    for unit in dict.fromkeys(units):
        idx = [i for i, u in enumerate(units) if u == unit][: max(1, MAX_ITEMS // blocks)]
        items = x[:, idx].reshape(blocks * len(idx), -1)
        entry: dict[str, Any] = {"unit": unit, "modes": None, "vendi": None}
        out.append(entry)
        if not bool(torch.isfinite(items).all()):
            continue
        kernel = cosine_kernel(items)
        entry["modes"] = modes_from_kernel(kernel, min_share=MODE_CHAIN_SHARE / len(idx))
        entry["vendi"] = vendi_from_kernel(kernel)
    return out
