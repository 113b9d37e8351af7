"""``--mean``, ``--std`` and ``--class-names`` (`ldam.metadata`): parsed once, applied by the
loader over the file's own metadata, and seen in what every command writes: the input-space
PNG and the npz of ``ldam sample``, the ``ldam inspect`` listing, the atlas manifest (the
dashboard's worker and `ldam.notebook.show` are checked in test_worker.py and
test_notebook.py)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldam.cli.main import main
from ldam.errors import UserError
from ldam.metadata import MetadataOverride, parse_metadata
from ldam.models.bundled import DEFAULT_CHECKPOINT
from ldam.models.lenet import LeNet
from ldam.models.loading import load_checkpoint
from ldam.sampling.images import display_grid, to_pil

# A TorchScript file does not say its input shape either.
SHAPE = (1, 28, 28)
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled LeNet's weights as TorchScript: a file that carries no metadata."""
    net = LeNet().eval()
    state = torch.export.load(str(DEFAULT_CHECKPOINT)).state_dict
    net.load_state_dict({k: v for k, v in state.items() if k in net.state_dict()})
    path = tmp_path_factory.mktemp("scripted") / "lenet.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 28, 28)), str(path))
    return path


@pytest.fixture(scope="module")
def names_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("names") / "digits.txt"
    path.write_text("\n".join(DIGITS) + "\n\n")  # a trailing blank line is no name
    return path


def error_of(mean: object = None, std: object = None, names: object = None) -> UserError:
    with pytest.raises(UserError) as err:
        parse_metadata(mean, std, names)  # type: ignore[arg-type]
    return err.value


def test_values_parse_once_into_one_override(names_file: Path) -> None:
    assert parse_metadata("0.5", "0.2,0.3,0.4", "cat,dog") == MetadataOverride(
        (0.5,), (0.2, 0.3, 0.4), ("cat", "dog")
    )
    assert parse_metadata(None, None, str(names_file)).class_names == tuple(DIGITS)
    assert parse_metadata(None, None, None) == MetadataOverride()


def test_bad_values_are_one_sentence_naming_the_flag(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    cases = [
        (error_of(std="0"), "--std must be above 0 for every channel, not '0'.", "std"),
        (
            error_of(mean="0.5,x"),
            "--mean must be one number or one per channel, comma-separated, not '0.5,x'.",
            "mean",
        ),
        (
            error_of(std="nan"),
            "--std must be one number or one per channel, comma-separated, not 'nan'.",
            "std",
        ),
        (
            error_of(names=str(tmp_path / "missing.txt")),
            f"--class-names {tmp_path / 'missing.txt'} is not a file; give a file with one name "
            "per line or a comma list such as cat,dog.",
            "class_names",
        ),
        (
            error_of(names=str(empty)),
            f"--class-names {empty} is empty; write one class name per line.",
            "class_names",
        ),
        (
            error_of(names="cat,,dog"),
            "--class-names has an empty name in 'cat,,dog'; give every class a name.",
            "class_names",
        ),
    ]
    for error, message, field in cases:
        assert (str(error), error.field) == (message, field)


def test_the_loader_puts_them_over_the_files_own(scripted: Path, names_file: Path) -> None:
    bare = load_checkpoint(scripted, input_shape=SHAPE)
    assert bare.normalization is None and bare.class_names is None
    given = load_checkpoint(
        scripted, input_shape=SHAPE, metadata=parse_metadata("0.5", "0.25", str(names_file))
    )
    assert given.normalization == ([0.5], [0.25]) and given.class_names == DIGITS
    # A std alone keeps the file's mean (0 when it has none); a mean alone the file's std.
    assert load_checkpoint(
        scripted, input_shape=SHAPE, metadata=MetadataOverride(std=(2.0,))
    ).normalization == (
        [0.0],
        [2.0],
    )
    bundled = load_checkpoint(DEFAULT_CHECKPOINT, metadata=MetadataOverride(mean=(0.5,)))
    assert bundled.normalization == ([0.5], [0.3081])
    assert bundled.class_names == [str(k) for k in range(10)]  # the .pt2's own


def test_counts_that_do_not_fit_the_model_are_refused(scripted: Path) -> None:
    cases = [
        (
            MetadataOverride(mean=(0.1, 0.2, 0.3)),
            "--mean has 3 values for a model with 1 input channels; give one value or 1.",
            "mean",
        ),
        (
            MetadataOverride(class_names=("cat", "dog", "bird")),
            "--class-names gives 3 names for a model with 10 output units; give one name per "
            "unit, in order.",
            "class_names",
        ),
    ]
    for override, message, field in cases:
        with pytest.raises(UserError) as err:
            load_checkpoint(scripted, input_shape=SHAPE, metadata=override)
        assert (str(err.value), err.value.field) == (message, field)


def test_inspect_lists_the_normalization_and_class_names(
    scripted: Path, names_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(scripted), "--input-shape", "1,28,28"]) == 0
    bare = capsys.readouterr().out.splitlines()
    assert not any(line.startswith(("normalization:", "class names:")) for line in bare)
    argv = ["inspect", str(scripted), "--input-shape", "1,28,28", "--mean", "0.5", "--std", "0.25"]
    assert main([*argv, "--class-names", str(names_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:3] == [
        "normalization: mean 0.5, std 0.25",
        "class names: " + ", ".join(DIGITS),
    ]
    assert lines[3:] == bare[1:]  # the layers as before
    assert (
        main(["inspect", str(scripted), "--input-shape", "1,28,28", "--class-names", "cat,dog"])
        == 2
    )
    assert capsys.readouterr().err == (
        "ldam: --class-names gives 2 names for a model with 10 output units; give one name per "
        "unit, in order.\n"
    )
    assert main(["inspect", str(scripted), "--input-shape", "1,28,28", "--std", "0,1"]) == 2
    assert capsys.readouterr().err == "ldam: --std must be above 0 for every channel, not '0,1'.\n"


def test_sample_shows_and_stores_the_given_normalization(
    scripted: Path, names_file: Path, tmp_path: Path
) -> None:
    pictures = {}
    for name, extra in (
        ("bare", []),
        ("given", ["--mean", "0.5", "--std", "0.25", "--class-names", str(names_file)]),
    ):
        out, png = tmp_path / f"{name}.npz", tmp_path / f"{name}.png"
        argv = ["sample", str(scripted), "--target", "output:0-1", "--chains", "4", "--steps", "8"]
        argv += [
            "--input-shape",
            "1,28,28",
            "--window",
            "4",
            "--burn-in",
            "2",
            "--seed",
            "3",
            "--device",
            "cpu",
        ]
        argv += ["--out", str(out), "--png", str(png), "--view", "input", *extra]
        assert main(argv) == 0
        data = np.load(out)
        params = json.loads(str(data["params"]))
        if name == "given":
            assert params["normalization"] == {"mean": [0.5], "std": [0.25]}
            assert params["class_names"] == DIGITS
            # The chains are in grid order already: the PNG tiles them as they are.
            x = torch.from_numpy(data["window_mean"])
            expected = to_pil(display_grid(x, 2, "input", ([0.5], [0.25])))
            assert np.array_equal(np.asarray(Image.open(png)), np.asarray(expected))
        else:
            assert params["normalization"] is None and params["class_names"] is None
        pictures[name] = np.asarray(Image.open(png))
    # The same chains (same seed): only the de-normalization differs.
    assert not np.array_equal(pictures["bare"], pictures["given"])


def test_atlas_manifest_records_them(scripted: Path, names_file: Path, tmp_path: Path) -> None:
    argv = ["atlas", str(scripted), "--layer", "output", "--units", "0-1", "--chains", "2"]
    argv += [
        "--input-shape",
        "1,28,28",
        "--steps",
        "6",
        "--window",
        "3",
        "--record-every",
        "3",
        "--device",
        "cpu",
    ]
    assert main([*argv, "--out", str(tmp_path / "bare")]) == 0
    bare = json.loads((tmp_path / "bare" / "atlas.json").read_text())
    assert bare["normalization"] is None and bare["class_names"] is None
    given = ["--mean", "0.5", "--std", "0.25", "--class-names", str(names_file)]
    assert main([*argv, "--out", str(tmp_path / "given"), *given]) == 0
    manifest = json.loads((tmp_path / "given" / "atlas.json").read_text())
    assert manifest["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert manifest["class_names"] == DIGITS
    assert [e["unit"] for e in manifest["units"]] == [0, 1]
