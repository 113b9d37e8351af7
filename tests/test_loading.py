"""Checkpoint loading: the committed LeNets, every format round trip, every bad input."""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from ldam.models.data import load_mnist, split_indices
from ldam.models.lenet import LeNet
from ldam.models.loading import (
    AVERAGED_CHECKPOINT,
    DEFAULT_CHECKPOINT,
    CheckpointError,
    FixedBatchWarning,
    load_checkpoint,
    load_default_pair,
)
from ldam.models.saving import export_checkpoint
from ldam.models.train import accuracy
from ldam.sampling.targets import Target, TargetError, list_layers


class Marker:
    """Unpickling this object creates the file `path`: a stand-in for malicious code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def lenet() -> nn.Module:
    torch.manual_seed(1)
    return LeNet().eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))


def upto(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """LeNet's layer `name` computed directly: its children run in forward order."""
    for child_name, child in model.named_children():
        x = child(x)
        if child_name == name:
            return x
    raise KeyError(name)


def error_of(*args: object, **kwargs: object) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(*args, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# ----------------------------------------------------------------------------- committed files


def test_committed_checkpoints_reach_97_percent() -> None:
    plain, averaged = load_default_pair()
    images, labels = load_mnist()
    _, held_out = split_indices()
    for loaded, variant in [(plain, "plain"), (averaged, "parameter_averaged")]:
        assert loaded.format == "export"
        assert loaded.input_shape == (1, 28, 28)
        assert loaded.normalization == ([0.1307], [0.3081])
        assert loaded.class_names == [str(k) for k in range(10)]
        assert loaded.batch_size is None
        assert loaded.metadata["variant"] == variant
        assert not loaded.module.training
        assert not any(p.requires_grad for p in loaded.module.parameters())
        acc = accuracy(loaded.module, images[held_out], labels[held_out])
        assert acc >= 0.97
        # Another CPU may round a borderline digit the other way: allow 3 of 2,000.
        assert acc == pytest.approx(loaded.metadata["held_out_accuracy"], abs=0.0015)
    assert plain.path == str(DEFAULT_CHECKPOINT) and averaged.path == str(AVERAGED_CHECKPOINT)
    names = [layer.name for layer in list_layers(plain.module, plain.input_shape)]
    assert names[:2] == ["conv1", "relu1"] and names[-2:] == ["fc3", ""]


def test_every_layer_of_an_export_is_listed_from_its_flat_graph(tmp_path: Path) -> None:
    # The loaded export is the flat graph (no unflattened module tree), and still every layer
    # of the eager network, containers and a ReLU called twice included, can be a target.
    torchvision = pytest.importorskip("torchvision")
    for name, model, shape in [
        ("lenet", LeNet().eval(), (1, 28, 28)),
        ("resnet18", torchvision.models.resnet18(weights=None).eval(), (3, 32, 32)),
    ]:
        path = export_checkpoint(model, tmp_path / f"{name}.pt2", shape)
        loaded = load_checkpoint(path)
        assert isinstance(loaded.module, torch.fx.GraphModule)
        listed = {info.name for info in list_layers(loaded.module, shape)} - {""}
        assert listed == {n for n, _ in model.named_modules() if n}


# ----------------------------------------------------------------------------- round trips


def test_export_dynamic_batch_round_trip(tmp_path: Path, lenet: nn.Module, x: torch.Tensor) -> None:
    meta = {"normalization": {"mean": [0.5], "std": [0.25]}, "class_names": list("abcdefghij")}
    path = export_checkpoint(lenet, tmp_path / "m.pt2", (1, 28, 28), meta)
    loaded = load_checkpoint(path)
    assert (loaded.format, loaded.batch_size, loaded.input_shape) == ("export", None, (1, 28, 28))
    assert loaded.normalization == ([0.5], [0.25])
    assert loaded.class_names == list("abcdefghij")
    assert loaded.metadata["input_shape"] == [1, 28, 28]
    torch.testing.assert_close(loaded.module(x), lenet(x))
    xg = x.clone().requires_grad_(True)
    value = Target(loaded.module, "conv2:3@2,2", 5)(xg)
    torch.testing.assert_close(value, upto(lenet, "conv2", x)[:, 3, 2, 2])
    value.sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_export_fixed_batch_runs_in_chunks(
    tmp_path: Path, lenet: nn.Module, x: torch.Tensor
) -> None:
    path = export_checkpoint(lenet, tmp_path / "fixed.pt2", (1, 28, 28), dynamic_batch=False)
    with pytest.warns(FixedBatchWarning) as record:
        loaded = load_checkpoint(path)
    assert str(record[0].message) == (
        f"{path} was exported with a fixed batch of 1, so chains run in chunks of 1; export with "
        "dynamic_shapes=({0: torch.export.Dim('batch')},) to run all chains in one batch."
    )
    assert loaded.batch_size == 1
    target = Target(loaded.module, "fc2:7", 5, batch_size=loaded.batch_size)
    torch.testing.assert_close(target(x), upto(lenet, "fc2", x)[:, 7])
    assert list_layers(loaded.module, loaded.input_shape, loaded.batch_size)[-1].shape == (10,)


def test_torchscript_round_trip(tmp_path: Path, lenet: nn.Module, x: torch.Tensor) -> None:
    path = tmp_path / "m.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        torch.jit.save(torch.jit.trace(lenet, torch.zeros(1, 1, 28, 28)), str(path))
    assert error_of(path) == (
        f"{path} does not say what input it takes; give its shape with --input-shape C,H,W."
    )
    loaded = load_checkpoint(path, input_shape=(1, 28, 28))
    assert loaded.format == "torchscript" and loaded.normalization is None
    torch.testing.assert_close(Target(loaded.module, "output:4", 5)(x), lenet(x)[:, 4])
    with pytest.raises(TargetError):
        Target(loaded.module, "fc1:0", 5)


def test_state_dict_round_trips(tmp_path: Path, lenet: nn.Module, x: torch.Tensor) -> None:
    from safetensors.torch import save_file

    torch.save(lenet.state_dict(), tmp_path / "w.pt")
    torch.save({"epoch": 3, "state_dict": lenet.state_dict()}, tmp_path / "wrapped.pth")
    save_file(lenet.state_dict(), str(tmp_path / "w.safetensors"))
    for name in ["w.pt", "wrapped.pth", "w.safetensors"]:
        loaded = load_checkpoint(tmp_path / name, arch="lenet")
        assert loaded.format == "state_dict"
        assert loaded.input_shape == (1, 28, 28)
        assert loaded.normalization == ([0.1307], [0.3081])
        assert not any(p.requires_grad for p in loaded.module.parameters())
        torch.testing.assert_close(loaded.module(x), lenet(x))
    factory = load_checkpoint(
        tmp_path / "w.pt", arch="ldam.models.lenet:LeNet", input_shape=(1, 28, 28)
    )
    assert factory.normalization is None
    torch.testing.assert_close(factory.module(x), lenet(x))


def test_trusted_full_pickle_loads(tmp_path: Path, lenet: nn.Module, x: torch.Tensor) -> None:
    torch.save(lenet, tmp_path / "full.pt")
    loaded = load_checkpoint(tmp_path / "full.pt", input_shape=(1, 28, 28), trust=True)
    assert loaded.format == "pickle"
    torch.testing.assert_close(loaded.module(x), lenet(x))


def test_resnet18_state_dict_with_inner_target(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    torch.save(model.state_dict(), tmp_path / "r.pth")
    loaded = load_checkpoint(tmp_path / "r.pth", arch="resnet18", input_shape=(3, 64, 64))
    assert loaded.input_shape == (3, 64, 64) and loaded.class_names is not None
    assert len(loaded.class_names) == 1000
    xr = torch.randn(2, 3, 64, 64, requires_grad=True)
    value = Target(loaded.module, "layer1.0.conv1:5", 2)(xr)
    torch.testing.assert_close(
        value,
        model.layer1[0]
        .conv1(model.maxpool(model.relu(model.bn1(model.conv1(xr)))))
        .detach()[:, 5]
        .mean(dim=(1, 2)),
    )
    value.sum().backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0


def test_fine_tuned_torchvision_class_count_is_taken_from_the_weights(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    torch.save(model.state_dict(), tmp_path / "r7.pt")
    loaded = load_checkpoint(tmp_path / "r7.pt", arch="resnet18", input_shape=(3, 32, 32))
    assert loaded.class_names is None
    assert loaded.normalization == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.module(x), model(x))


# ----------------------------------------------------------------------------- bad input


def test_missing_file_and_folder(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.pt2") == f"No such checkpoint file: {tmp_path / 'nope.pt2'}."
    assert error_of(tmp_path) == f"{tmp_path} is a folder, not a checkpoint file."


@pytest.mark.parametrize("name", ["notes.pt2", "notes.pt", "notes.safetensors"])
def test_text_file_is_not_a_checkpoint(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("these are not weights\n")
    assert error_of(path) == (
        f"{path} is not a checkpoint ldam can read (a torch.export .pt2, TorchScript, "
        "a state dict .pt/.pth, or .safetensors)."
    )


def test_broken_export_gives_one_sentence_and_no_log(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "broken.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("broken/archive_format", "pt2")
        archive.writestr("broken/models/model.json", "{")
    assert error_of(path) == (
        f"{path} looks like a torch.export program but could not be read; it may be damaged "
        f"or saved by an incompatible torch version (this is torch {torch.__version__})."
    )
    assert "Traceback" not in capfd.readouterr().err
    assert "Traceback" not in caplog.text


def test_untrusted_pickle_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"weights": Marker(marker)}, path)
    assert not marker.exists()
    assert error_of(path) == (
        f"{path} is a full pickle, which runs code when loaded; if you trust its source, "
        "load it with --trust-checkpoint."
    )
    assert error_of(path, arch="lenet") == error_of(path)
    assert not marker.exists()


def test_state_dict_errors(tmp_path: Path, lenet: nn.Module) -> None:
    path = tmp_path / "w.pt"
    torch.save(lenet.state_dict(), path)
    assert error_of(path) == (
        f"{path} holds weights but not the network; name the architecture with --arch "
        "(lenet, a torchvision model name such as resnet18, or package.module:factory)."
    )
    assert error_of(path, arch="lenet9") == (
        "Unknown architecture 'lenet9'; use lenet, a torchvision model name such as resnet18, "
        "or package.module:factory."
    )
    assert error_of(path, arch="nosuchpackage.mod:make") == (
        "Could not import 'nosuchpackage.mod' for the architecture 'nosuchpackage.mod:make' "
        "(No module named 'nosuchpackage')."
    )
    assert error_of(path, arch="ldam.models.lenet:nothing") == (
        "'ldam.models.lenet' has no callable named 'nothing'."
    )
    assert error_of(path, arch="ldam.models.lenet:MNIST_MEAN") == (
        "'ldam.models.lenet' has no callable named 'MNIST_MEAN'."
    )
    state = {k: v for k, v in lenet.state_dict().items() if k != "conv1.bias"}
    torch.save(state, tmp_path / "partial.pt")
    assert error_of(tmp_path / "partial.pt", arch="lenet") == (
        f"The weights in {tmp_path / 'partial.pt'} do not fit the architecture 'lenet': "
        "missing conv1.bias."
    )
    torch.save({"a": 1}, tmp_path / "odd.pt")
    assert error_of(tmp_path / "odd.pt", arch="lenet") == (
        f"{tmp_path / 'odd.pt'} holds neither a state dict of tensors nor a module."
    )


def test_shape_errors(tmp_path: Path, lenet: nn.Module) -> None:
    path = export_checkpoint(lenet, tmp_path / "m.pt2", (1, 28, 28))
    assert error_of(path, input_shape=(1, 28)) == (
        "The input shape must be three positive integers C,H,W, got (1, 28)."
    )
    assert error_of(path, input_shape=(3, 32, 32)) == (
        f"{path} was exported for input shape 1,28,28, not 3,32,32."
    )
    torch.save(lenet.state_dict(), tmp_path / "w.pt")
    message = error_of(tmp_path / "w.pt", arch="lenet", input_shape=(1, 32, 32))
    assert message.startswith(
        f"The model in {tmp_path / 'w.pt'} does not accept input of shape 1,32,32 ("
    )
    assert message.endswith(").")


def test_bad_metadata_json(tmp_path: Path, lenet: nn.Module) -> None:
    program = torch.export.export(lenet, (torch.zeros(2, 1, 28, 28),))
    path = tmp_path / "m.pt2"
    torch.export.save(program, path, extra_files={"ldam.json": "{not json"})
    assert error_of(path) == f"The metadata ldam.json inside {path} is not valid JSON."
    torch.export.save(program, path, extra_files={"ldam.json": json.dumps([1, 2])})
    assert error_of(path) == f"The metadata ldam.json inside {path} must be a JSON object."


def test_export_made_in_training_mode_is_refused(tmp_path: Path) -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Dropout(), nn.Linear(32, 3)
    )
    program = torch.export.export(model.train(), (torch.zeros(2, 1, 6, 6),))
    torch.export.save(program, tmp_path / "train.pt2")
    assert error_of(tmp_path / "train.pt2") == (
        f"{tmp_path / 'train.pt2'} was exported in training mode (batch norm and dropout active); "
        "call model.eval() before torch.export.export."
    )
    export_checkpoint(model, tmp_path / "eval.pt2", (1, 6, 6))  # export_checkpoint calls eval()
    assert load_checkpoint(tmp_path / "eval.pt2").input_shape == (1, 6, 6)


class _WritesMarker:
    """Unpickling this writes a marker file (and yields a tensor of a conv1 weight's shape)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        code = (
            f"(open({self.marker!r}, 'w').write('ran'), __import__('torch').zeros(6, 1, 5, 5))[1]"
        )
        return (eval, (code,))


def _pt2_with_a_pickled_weight(tmp_path: Path, marker: Path) -> Path:
    """The bundled LeNet export with one weight entry switched to a code-running pickle."""
    import io

    payload = io.BytesIO()
    torch.save(_WritesMarker(str(marker)), payload)
    src = zipfile.ZipFile(DEFAULT_CHECKPOINT)
    out_path = tmp_path / "crafted.pt2"
    config_name = next(n for n in src.namelist() if n.endswith("weights/model_weights_config.json"))
    config = json.loads(src.read(config_name))
    key = next(iter(config["config"]))
    config["config"][key]["use_pickle"] = True
    weight_name = config_name.rsplit("/", 1)[0] + "/" + config["config"][key]["path_name"]
    with zipfile.ZipFile(out_path, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == config_name:
                data = json.dumps(config).encode()
            elif info.filename == weight_name:
                data = payload.getvalue()
            out.writestr(info, data)
    return out_path


def test_export_with_pickled_entries_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = _pt2_with_a_pickled_weight(tmp_path, marker)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"{path} is a torch.export program with pickled entries, which can run code when "
        "loaded; use --trust-checkpoint only if you trust where it came from."
    )
    assert not marker.exists()
    # The bundled, pickle-free programs still load, and the environment is left as it was.
    assert load_checkpoint(DEFAULT_CHECKPOINT).format == "export"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ
