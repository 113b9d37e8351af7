"""The number of modes and the Vendi score against closed forms: identical rows are 1 image,
orthonormal rows n, orthogonal clusters with shares p exp(H(p)); average linkage on a hand-made
distance matrix; synthetic clusters with a stray row; zero rows; per unit over a sampler's
window blocks; bad shapes in one sentence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldam.errors import UserError
from ldam.sampling import diversity
from ldam.sampling.diversity import (
    BLOCKS,
    MAX_ITEMS,
    DiversityError,
    average_linkage,
    cosine_kernel,
    count_modes,
    unit_diversity,
    vendi_score,
)
from ldam.sampling.energy import L2Term
from ldam.sampling.sampler import Sampler, SamplerConfig
from tests.chains import linear_unit


def orthonormal(k: int, d: int, seed: int = 0) -> np.ndarray:
    """`k` orthonormal rows of length `d`, rotated at random so no pixel lines up."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, k)))
    return q.T


def test_identical_rows_are_one_image_and_one_mode() -> None:
    rows = np.tile(np.random.default_rng(1).normal(size=(1, 50)), (12, 1))
    assert vendi_score(rows) == pytest.approx(1.0, abs=1e-9)
    assert count_modes(rows) == 1
    # A scaled copy points the same way: cosine similarity ignores the norm.
    assert vendi_score(np.concatenate([rows, 3 * rows])) == pytest.approx(1.0, abs=1e-9)


def test_orthonormal_rows_are_n_images() -> None:
    for n in (1, 2, 7, 20):
        rows = orthonormal(n, 40)
        assert vendi_score(rows) == pytest.approx(n, rel=1e-9)
        assert vendi_score(torch.from_numpy(rows).float()) == pytest.approx(n, rel=1e-5)
    # 7 singletons of 7 rows: each holds 1/7 >= 10%, so each is a mode.
    assert count_modes(orthonormal(7, 40)) == 7


def test_orthogonal_clusters_give_the_exponential_of_the_entropy_of_their_shares() -> None:
    looks = orthonormal(3, 30, seed=2)
    counts = [6, 3, 1]
    rows = np.concatenate(
        [
            np.tile(look, (c, 1)) * (1 + i)
            for i, (look, c) in enumerate(zip(looks, counts, strict=True))
        ]
    )
    p = np.array(counts) / sum(counts)
    assert vendi_score(rows) == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=1e-9)
    # The 1-row cluster holds 10%, the least share of a mode; above it, it is a stray.
    assert count_modes(rows) == 3
    assert count_modes(rows, min_share=0.11) == 2


def test_zero_rows_are_one_item_of_their_own() -> None:
    zeros = np.zeros((5, 10))
    assert vendi_score(zeros) == pytest.approx(1.0) and count_modes(zeros) == 1
    rows = np.concatenate([orthonormal(2, 10), zeros[:2]])  # 2 looks, and 2 zero rows
    kernel = cosine_kernel(rows)
    expected = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    np.testing.assert_allclose(kernel, expected, atol=1e-12)
    p = np.array([0.25, 0.25, 0.5])
    assert vendi_score(rows) == pytest.approx(math.exp(-np.sum(p * np.log(p))))


def test_centring_would_read_two_different_looks_as_one() -> None:
    # Why the kernel is of the raw snapshots: centred, two orthogonal looks become x and -x.
    rows = np.repeat(orthonormal(2, 16), 4, axis=0)
    assert vendi_score(rows) == pytest.approx(2.0)
    centred = cosine_kernel(rows, centre=True)
    assert centred[0, 4] == pytest.approx(-1.0)
    assert diversity.vendi_from_kernel(centred) == pytest.approx(1.0)


def test_average_linkage_merges_by_the_mean_distance_between_clusters() -> None:
    # Points 0, 4, 8 on a line: 0 and 4 merge (4 < 5); {0, 4} to 8 is (8 + 4) / 2 = 6 on
    # average, so 8 stays apart (single linkage, at 4, would chain all three).
    points = np.array([0.0, 4.0, 8.0, 30.0, 31.0])
    distance = np.abs(points[:, None] - points[None, :])
    assert average_linkage(distance, 5.0) == [[0, 1], [3, 4], [2]]
    assert average_linkage(distance, 6.5) == [[0, 1, 2], [3, 4]]
    assert average_linkage(distance, 1.0) == [[0], [1], [2], [3], [4]]  # 1 is not below 1


def test_count_modes_finds_synthetic_clusters_and_not_a_stray_row() -> None:
    rng = np.random.default_rng(3)
    centres = orthonormal(3, 200, seed=4)
    # 10 noisy copies of each of 3 orthogonal looks (about 0.85 between copies), one stray row.
    rows = [c + 0.03 * rng.normal(size=(10, 200)) for c in centres]
    stray = rng.normal(size=(1, 200))
    features = np.concatenate([*rows, stray])
    kernel = cosine_kernel(features)
    assert 0.8 < kernel[0, 1] < 0.95 and abs(kernel[0, 10]) < 0.2
    assert count_modes(features) == 3
    assert count_modes(features, min_share=0.0) == 4  # every cluster counts: the stray too
    assert count_modes(features, threshold=1.5) == 1  # a cut past orthogonal merges the looks


def test_unit_diversity_per_unit_in_grid_order() -> None:
    looks = orthonormal(4, 12, seed=5).reshape(4, 1, 3, 4)
    draws = np.zeros((BLOCKS, 5, 1, 3, 4))
    # Unit 7: chains 0 and 2 hold look 0, chain 4 holds look 1 but for one stray block of
    # look 2. Unit 3: chain 1 in look 3, chain 3 in look 0 (each chain its own mode).
    draws[:, 0] = draws[:, 2] = looks[0]
    draws[:, 4] = looks[1]
    draws[5, 4] = looks[2]
    draws[:, 1] = looks[3]
    draws[:, 3] = 2 * looks[0]
    out = unit_diversity(draws, [7, 3, 7, 3, 7])
    assert [e["unit"] for e in out] == [7, 3]
    p = np.array([16, 7, 1]) / 24
    assert out[0]["modes"] == 2  # the stray block (1 of 24) is no mode
    assert out[0]["vendi"] == pytest.approx(math.exp(-np.sum(p * np.log(p))))
    assert out[1]["modes"] == 2 and out[1]["vendi"] == pytest.approx(2.0)
    assert isinstance(out[0]["modes"], int) and isinstance(out[0]["vendi"], float)
    # A chain without snapshots (NaN: its window is not full) leaves its unit undecided.
    draws[:, 3] = np.nan
    out = unit_diversity(torch.from_numpy(draws), [7, 3, 7, 3, 7])
    assert out[1] == {"unit": 3, "modes": None, "vendi": None} and out[0]["modes"] == 2


def test_unit_diversity_judges_at_most_max_items_snapshots_per_unit() -> None:
    chains = MAX_ITEMS // 2 + 3  # with 2 snapshots each: more than MAX_ITEMS
    draws = np.zeros((2, chains, 1, 1, MAX_ITEMS))
    draws[:, :, 0, 0, :] = np.eye(chains, MAX_ITEMS)[None]  # every chain its own look
    [entry] = unit_diversity(draws, [0] * chains)
    assert entry["vendi"] == pytest.approx(MAX_ITEMS // 2)  # the first MAX_ITEMS // 2 chains
    assert entry["modes"] == MAX_ITEMS // 2


def test_bad_shapes_are_one_sentence() -> None:
    with pytest.raises(DiversityError) as err:
        vendi_score(np.zeros(5))
    assert str(err.value) == (
        "Features must be a 2-D array [items, features] with at least 1 item, got shape [5]."
    )
    assert isinstance(err.value, UserError)
    with pytest.raises(DiversityError, match=r"got shape \[0, 3\]\.$"):
        count_modes(np.zeros((0, 3)))
    with pytest.raises(DiversityError) as err:
        unit_diversity(np.zeros((8, 4, 28, 28)), [0, 0, 1, 1])
    assert str(err.value) == (
        "Draws must be [snapshots, chains, C, H, W] with 4 chains, got shape [8, 4, 28, 28]."
    )
    with pytest.raises(DiversityError, match="with 3 chains, got shape"):
        unit_diversity(np.zeros((8, 4, 1, 28, 28)), [0, 0, 1])


def test_a_samplers_window_blocks_average_to_its_window_mean() -> None:
    # A linear unit with L2 on 4 chains of 1x2x2: the window of 16 in BLOCKS blocks of 2.
    config = SamplerConfig(chains=4, temperature=0.1, step_size=0.1, window=16, burn_in=3, seed=1)
    sampler = Sampler([linear_unit(torch.ones(4), 0.0), L2Term()], (1, 2, 2), config)
    kept = []
    for t in range(1, 25):
        sampler.step()
        assert sampler.window_blocks(BLOCKS).isnan().all() == (t < 3 + 16)
        kept.append(sampler.x.clone())
    blocks = sampler.window_blocks(BLOCKS)
    assert blocks.shape == (BLOCKS, 4, 1, 2, 2)
    expected = torch.stack(kept[-16:]).reshape(BLOCKS, 2, 4, 1, 2, 2).mean(dim=1)
    torch.testing.assert_close(blocks, expected)
    torch.testing.assert_close(blocks.mean(dim=0), sampler.window_mean())
    [entry] = unit_diversity(blocks, [0] * 4)
    assert entry["modes"] >= 1 and 1.0 <= entry["vendi"] <= 4 * BLOCKS
