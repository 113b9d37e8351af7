"""Training: a short run learns and writes two loadable checkpoints; the shift augmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ldam.models.data import DataError
from ldam.models.loading import load_checkpoint
from ldam.models.train import TrainConfig, random_shift, train_mnist


def test_short_training_run_learns(tmp_path: Path) -> None:
    result = train_mnist(tmp_path, steps=300, seed=0, progress=None, config=TrainConfig(shift=0))
    assert result["steps"] == 300
    history = result["loss_history"]
    assert len(history) == 20
    assert history[0] > 1.0  # chance level is ln 10 = 2.3
    assert history[-1] < 0.5 * history[0]
    for key in ("plain", "averaged", "prediction_averaged"):
        assert result[key] > 0.8, key  # chance is 0.1
    plain = load_checkpoint(tmp_path / "lenet_mnist.pt2")
    averaged = load_checkpoint(tmp_path / "lenet_mnist_avg.pt2")
    assert plain.metadata["training"]["steps"] == 300
    assert plain.metadata["training"]["averaging_from_step"] == 150
    assert plain.metadata["held_out_accuracy"] == result["plain"]
    assert averaged.metadata["held_out_accuracy"] == result["averaged"]
    assert averaged.metadata["variant"] == "parameter_averaged"
    x = torch.randn(3, 1, 28, 28)
    assert not torch.allclose(plain.module(x), averaged.module(x))


def test_training_is_reproducible(tmp_path: Path) -> None:
    config = TrainConfig(batch_size=16)
    first = train_mnist(tmp_path / "a", steps=20, seed=3, progress=None, config=config)
    second = train_mnist(tmp_path / "b", steps=20, seed=3, progress=None, config=config)
    assert first["loss_history"] == second["loss_history"]
    assert first["plain"] == second["plain"]


def test_training_needs_two_steps(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="^Training needs at least 2 steps, got 1.$"):
        train_mnist(tmp_path, steps=1, progress=None)


def test_random_shift_moves_each_image_by_at_most_the_shift() -> None:
    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape
    assert torch.all(
        shifted.sum(dim=(1, 2, 3)) == 1.0
    )  # the dot stays inside, nothing else appears
    rows, cols = shifted[:, 0].nonzero()[:, 1], shifted[:, 0].nonzero()[:, 2]
    assert rows.min() == 2 and rows.max() == 6 and cols.min() == 2 and cols.max() == 6
    assert len({(int(r), int(c)) for r, c in zip(rows, cols, strict=True)}) > 10
