"""The checkpoints a training loop writes for ldam: ``ldam.save_checkpoint`` (a ``torch.export``
program with a dynamic batch and the metadata, written atomically) and PyTorch Lightning's
``.ckpt`` files (`tests/data/epoch=0-step=4.ckpt`, written by Lightning 2.6.6's
``ModelCheckpoint`` for a LightningModule holding the LeNet as ``self.model``), read with
``--arch``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import ldam
from ldam.models.lenet import LeNet
from ldam.models.loading import CheckpointError, load_checkpoint
from tests.support import REPO

LIGHTNING = REPO / "tests" / "data" / "epoch=0-step=4.ckpt"


def test_save_checkpoint_writes_a_program_with_a_dynamic_batch_and_metadata(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    model = LeNet().train()
    images = torch.randn(8, 1, 28, 28)
    names = [f"digit {k}" for k in range(10)]
    path = ldam.save_checkpoint(
        model,
        images,
        tmp_path / "run" / "step_000120.pt2",
        class_names=names,
        normalization=([0.1307], [0.3081]),
        step=120,
    )
    assert path == tmp_path / "run" / "step_000120.pt2"
    assert model.training  # the training loop's model is left in its mode
    assert os.listdir(tmp_path / "run") == ["step_000120.pt2"]  # no temporary file left
    loaded = load_checkpoint(path)
    assert loaded.format == "export" and loaded.batch_size is None
    assert loaded.metadata == {
        "input_shape": [1, 28, 28],
        "class_names": names,
        "normalization": {"mean": [0.1307], "std": [0.3081]},
        "step": 120,
    }
    assert loaded.class_names == names and loaded.normalization == ([0.1307], [0.3081])
    with torch.no_grad():
        expected = model.eval()(images[:5])
        assert torch.allclose(loaded.module(images[:5]), expected, atol=1e-5)  # any batch


def test_save_checkpoint_replaces_a_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "latest.pt2"
    torch.manual_seed(1)
    ldam.save_checkpoint(LeNet(), torch.zeros(1, 28, 28), path, step=1)
    reader = path.open("rb")  # a reader of the old file keeps a whole old file
    old = reader.read()
    reader.seek(0)
    inode = path.stat().st_ino
    torch.manual_seed(2)
    ldam.save_checkpoint(LeNet(), torch.zeros(1, 28, 28), path, step=2)
    assert path.stat().st_ino != inode  # renamed onto the name, never written in place
    assert reader.read() == old
    reader.close()
    assert load_checkpoint(path).metadata["step"] == 2


def test_save_checkpoint_refuses_bad_arguments_in_one_sentence(tmp_path: Path) -> None:
    model, x = LeNet(), torch.zeros(2, 1, 28, 28)
    cases = [
        (
            dict(path=tmp_path / "model.pt"),
            "save_checkpoint writes torch.export programs; name the file *.pt2, not model.pt.",
        ),
        (
            dict(step=-1),
            "step must be a whole number of at least 0, not -1.",
        ),
        (
            dict(example_input=torch.zeros(28, 28)),
            "example_input must be images [N, C, H, W] (or one image [C, H, W]), got shape [28, 28].",
        ),
        (
            dict(normalization=([0.1], [0.0])),
            "normalization needs as many means as standard deviations, all deviations positive, "
            "not ([0.1], [0.0]).",
        ),
    ]
    for overrides, message in cases:
        args = {"model": model, "example_input": x, "path": tmp_path / "a.pt2", **overrides}
        with pytest.raises(CheckpointError) as err:
            ldam.save_checkpoint(**args)
        assert str(err.value) == message
    assert os.listdir(tmp_path) == []


def test_a_lightning_checkpoint_loads_with_arch() -> None:
    raw = torch.load(LIGHTNING, map_location="cpu", weights_only=True)
    assert raw["pytorch-lightning_version"] == "2.6.6" and raw["global_step"] == 4
    assert next(iter(raw["state_dict"])) == "model.conv1.weight"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(LIGHTNING)
    assert "name the architecture with --arch" in str(err.value)
    loaded = load_checkpoint(LIGHTNING, arch="lenet")
    assert loaded.format == "state_dict" and loaded.input_shape == (1, 28, 28)
    weights = loaded.module.state_dict()
    assert weights.keys() == {k.removeprefix("model.") for k in raw["state_dict"]}
    for key, value in raw["state_dict"].items():
        assert torch.equal(weights[key.removeprefix("model.")], value)


def test_save_checkpoint_exports_an_exported_lenet_again(tmp_path: Path) -> None:
    # `torch.export.load(...).module()` refuses eval(); its mode is in the graph, so it is
    # exported again as it is, batch still dynamic, and computes what the original computes.
    from ldam.models.bundled import DEFAULT_CHECKPOINT

    exported = torch.export.load(str(DEFAULT_CHECKPOINT)).module()
    images = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    path = ldam.save_checkpoint(exported, images, tmp_path / "again.pt2", step=3)
    loaded = load_checkpoint(path)
    assert loaded.batch_size is None and loaded.metadata["step"] == 3
    with torch.no_grad():
        assert torch.allclose(loaded.module(images), exported(images), atol=1e-6)


def test_save_checkpoint_refuses_exported_modules_it_cannot_export_again(tmp_path: Path) -> None:
    from torch import nn

    fixed = torch.export.export(LeNet().eval(), (torch.zeros(3, 1, 28, 28),)).module()
    training = torch.export.export(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train(),
        (torch.zeros(2, 1, 6, 6),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    cases = [
        (
            fixed,
            torch.zeros(2, 1, 28, 28),
            "model was made by torch.export for a fixed batch of 3, so it cannot be exported "
            "with a dynamic batch; pass the original torch.nn.Module instead.",
        ),
        (
            training.module(),
            torch.zeros(2, 1, 6, 6),
            "model was made by torch.export in training mode (batch norm active); export the "
            "original torch.nn.Module, which is exported in eval mode.",
        ),
        (
            training,
            torch.zeros(2, 1, 6, 6),
            "model is an ExportedProgram; pass program.module() instead.",
        ),
    ]
    for model, example, message in cases:
        with pytest.raises(CheckpointError) as err:
            ldam.save_checkpoint(model, example, tmp_path / "m.pt2")
        assert str(err.value) == message
    assert os.listdir(tmp_path) == []
