"""The `ldam` command end to end on the committed LeNet: files written, keys, shapes, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ldam.cli.main import main
from ldam.cli.sample import print_summary
from ldam.models.bundled import DEFAULT_CHECKPOINT
from ldam.models.loading import load_checkpoint
from ldam.models.saving import export_checkpoint
from ldam.sampling.diagnostics import unit_diagnostics
from ldam.sampling.diversity import BLOCKS
from ldam.sampling.energy import ActivationTerm, L2Term
from ldam.sampling.images import display_grid, to_display, to_input_space, to_pil
from ldam.sampling.sampler import Sampler, SamplerConfig
from ldam.sampling.targets import Target
from ldam.wire.params import SamplerParams
from ldam.wire.settings import defaults, for_sampler
from ldam.worker.models import ModelCache
from ldam.worker.panels import PanelBuilder
from tests.support import IMAGENET_NORMALIZATION, tiny_rgb_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ldam", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("sample")
    npz, png = out / "run.npz", out / "grid.png"
    code = main(
        [
            "sample",
            str(DEFAULT_CHECKPOINT),
            "--target",
            "fc3:0-9",
            "--chains",
            "20",
            "--steps",
            "120",
            "--burn-in",
            "20",
            "--temperature",
            "0.01",
            "--step-size",
            "0.05",
            "--l2",
            "0.1",
            "--window",
            "50",
            "--replicas",
            "0",
            "--record-every",
            "10",
            "--seed",
            "0",
            "--device",
            "cpu",
            "--out",
            str(npz),
            "--png",
            str(png),
        ]
    )
    assert code == 0
    return npz, png


def test_sample_writes_exactly_the_documented_keys(sampled: tuple[Path, Path]) -> None:
    data = np.load(sampled[0])
    assert sorted(data.files) == sorted(
        [
            "samples",
            "final",
            "mean",
            "window_mean",
            "activation",
            "burn_in_step",
            "resets",
            "params",
        ]
    )
    # 120 steps, burn-in 20: recorded at steps 20, 30, ..., 110 -> 10 records.
    assert data["samples"].shape == (10, 20, 1, 28, 28)
    assert data["samples"].dtype == np.float32
    for key in ["final", "mean", "window_mean"]:
        assert data[key].shape == (20, 1, 28, 28)
    assert data["activation"].shape == (120, 20)
    assert data["burn_in_step"].tolist() == [20] * 20
    assert data["resets"].tolist() == [0] * 20
    params = json.loads(str(data["params"]))
    assert params["checkpoint"] == str(DEFAULT_CHECKPOINT.resolve())
    # Grid order: one column per unit, the rows in turn.
    assert params["units_per_chain"] == list(range(10)) * 2
    assert params["steps_per_second"] > 0
    assert params["temperature"] == 0.01 and params["l2_weight"] == 0.1 and params["window"] == 50
    # The final state is the last recorded sample's successor, and the chains moved.
    assert not np.allclose(data["final"], data["samples"][0])


def test_sample_diagnostics_are_the_one_per_unit_functions(sampled: tuple[Path, Path]) -> None:
    data = np.load(sampled[0])
    params = json.loads(str(data["params"]))
    expected = unit_diagnostics(data["activation"], data["burn_in_step"], list(range(10)) * 2)
    # Beside R-hat and ESS, each unit's modes and Vendi score over its 2 chains' window blocks
    # (the window of 50 filled: 100 kept samples per chain).
    diverse = [(d.pop("modes"), d.pop("vendi")) for d in params["diagnostics"]]
    assert params["diagnostics"] == json.loads(json.dumps(expected))
    for modes, vendi in diverse:
        assert isinstance(modes, int) and 1 <= modes <= 2 * BLOCKS
        assert isinstance(vendi, float) and 1.0 <= vendi <= 2 * BLOCKS
    # Burn-in 20 of 120 steps: samples after step 20 count, reported at steps 22..120.
    assert [d["draws"] for d in params["diagnostics"]] == [99] * 10
    assert (
        params["diagnostics"][3]["chains"] == [3, 13] and params["diagnostics"][3]["note"] is None
    )


def test_sample_summary_has_each_units_mixing_and_diversity(
    capsys: pytest.CaptureFixture[str],
) -> None:
    diagnostics = [
        {"unit": 3, "chains": [0, 1], "draws": 99, "rhat": 1.2345, "ess": 41.6, "note": None}
        | {"modes": 2, "vendi": 3.44},
        {"unit": 4, "chains": [2, 3], "draws": 0, "rhat": None, "ess": None}
        | {"note": "not every chain of this unit burned in", "modes": None, "vendi": None},
    ]
    params = {"steps": 120, "chains": 4, "steps_per_second": 50.0, "diagnostics": diagnostics}
    print_summary(params, [20, 20, -1, 20], [0, 0, 0, 0], Path("run.npz"), None)
    assert capsys.readouterr().err.splitlines()[2:] == [
        "unit 3: split R-hat 1.234, ESS 42 of 2 x 99 draws; 2 modes, Vendi 3.4",
        "unit 4: not every chain of this unit burned in; modes and Vendi: the window never filled",
    ]


def test_sample_raises_the_target_activation(sampled: tuple[Path, Path]) -> None:
    act = np.load(sampled[0])["activation"]
    assert act[-10:].mean() > act[:5].mean() + 1.0


def test_png_is_the_papers_grid(sampled: tuple[Path, Path]) -> None:
    image = Image.open(sampled[1])
    # 10 columns (one per unit) x 2 rows of 28x28 with 2 px padding between and around.
    assert image.mode == "L"
    assert image.size == (10 * 28 + 11 * 2, 2 * 28 + 3 * 2)
    pixels = np.asarray(image)
    assert pixels.min() < 100 and pixels.max() > 156  # signed scaling uses both sides of grey


def test_png_tiling_is_the_dashboards_for_the_same_grid(sampled: tuple[Path, Path]) -> None:
    # The dashboard's panel for the grid `fc3:0-9` over 20 chains describes: the range layout.
    params = SamplerParams(layer="fc3", layout="range", unit=0, unit_end=9, chains=20)
    cpu = torch.device("cpu")
    builder = PanelBuilder(ModelCache(cpu, False, ()), cpu, lambda shape: None)
    [panel] = builder.build(params, {"checkpoint": str(DEFAULT_CHECKPOINT), "compare": None}).panels
    data = np.load(sampled[0])
    units = json.loads(str(data["params"]))["units_per_chain"]
    assert units == panel.target.units_per_chain == params.grid()[0]
    # The publisher's tiling (`display_grid` in `panel.columns`) of the run's window means is
    # the PNG, pixel for pixel: no reordering on either side.
    # The run gave no --view: auto keeps the 1-channel LeNet in the paper's symmetric view.
    x = torch.from_numpy(data["window_mean"])
    dashboard = to_pil(display_grid(x, panel.columns, "symmetric", panel.loaded.normalization))
    png = np.asarray(Image.open(sampled[1]))
    assert panel.columns == 10 and png.shape == (2 * 30 + 2, 10 * 30 + 2)
    assert np.array_equal(png, np.asarray(dashboard))
    # Cell r * 10 + c is chain r * 10 + c: its window mean, scaled on its own, in place.
    cell = png[2 + 30 : 2 + 30 + 28, 2 + 3 * 30 : 2 + 3 * 30 + 28]
    own = to_pil(display_grid(x[13:14], 1))
    assert np.array_equal(cell, np.asarray(own)[2:30, 2:30])


def test_inspect_lists_layers() -> None:
    result = run_cli("inspect", str(DEFAULT_CHECKPOINT))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The metadata the .pt2 carries, then the layers.
    assert lines[1:3] == [
        "normalization: mean 0.1307, std 0.3081",
        "class names: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9",
    ]
    assert lines[3].split() == ["layer", "output", "shape", "units", "kind"]
    assert any(line.split() == ["fc3", "10", "10", "vector"] for line in lines)
    assert any(line.split() == ["conv1", "6x24x24", "6", "channels"] for line in lines)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "/nonexistent/model.pt2"], None),
        (
            ["sample", str(DEFAULT_CHECKPOINT), "--temperature", "hot"],
            "ldam: temperature must be a number or a comma list, one per chain, got 'hot'.\n",
        ),
        (
            ["sample", str(DEFAULT_CHECKPOINT), "--burn-in", "-3"],
            "ldam: burn_in must be in [0, 10000000], got -3.\n",
        ),
        (
            ["sample", str(DEFAULT_CHECKPOINT), "--out", "/nonexistent/dir/run.npz"],
            "ldam: The folder for --out does not exist: /nonexistent/dir.\n",
        ),
        (["sample", str(DEFAULT_CHECKPOINT), "--target", "nolayer:3"], None),
        (
            ["sample", str(DEFAULT_CHECKPOINT), "--chains", "256", "--replicas", "40"],
            "ldam: 256 chains with 40 replicas each make 10496 rows, more than the 8192 one "
            "batch may hold; use fewer replicas or chains.\n",
        ),
        (
            ["sample", str(DEFAULT_CHECKPOINT), "--ladder-end", "0"],
            "ldam: ladder_end must be in (0, 1], got 0.\n",
        ),
        (["inspect", str(ROOT / "README.md")], None),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(argv: list[str], message: str | None) -> None:
    result = run_cli(*argv)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ldam: ") and lines[0].endswith(".")
    if message is not None:
        assert result.stderr == message


def test_sample_with_discriminator_trains_saves_and_reloads(tmp_path: Path) -> None:
    common = [
        "sample",
        str(DEFAULT_CHECKPOINT),
        "--target",
        "fc3:3",
        "--chains",
        "4",
        "--steps",
        "30",
    ]
    common += ["--burn-in", "5", "--device", "cpu", "--disc-weight", "0.5"]
    saved = tmp_path / "d.pt"
    assert (
        main(
            [
                *common,
                "--disc-steps",
                "20",
                "--out",
                str(tmp_path / "a.npz"),
                "--save-disc",
                str(saved),
            ]
        )
        == 0
    )
    first = json.loads(str(np.load(tmp_path / "a.npz")["params"]))
    assert first["disc_steps"] == 20 and first["disc_weight"] == 0.5
    assert saved.stat().st_size > 0
    # A loaded discriminator is used frozen by default.
    assert main([*common, "--disc-checkpoint", str(saved), "--out", str(tmp_path / "b.npz")]) == 0
    second = np.load(tmp_path / "b.npz")
    assert json.loads(str(second["params"]))["disc_steps"] == 0
    # D as saved after the first run, never offered chains so never trained further.
    d_first, d_second = (
        json.loads(str(f["params"]))["disc"] for f in (np.load(tmp_path / "a.npz"), second)
    )
    assert d_first["steps"] >= 20
    assert (d_second["steps"], d_second["offers"]) == (d_first["steps"], 0)
    assert np.isfinite(second["final"]).all() and second["resets"].tolist() == [0, 0, 0, 0]


def test_disc_weight_without_a_trained_discriminator_is_refused() -> None:
    result = run_cli("sample", str(DEFAULT_CHECKPOINT), "--disc-weight", "0.5", "--disc-steps", "0")
    assert result.returncode == 2
    assert result.stderr == (
        "ldam: --disc-weight above 0 needs a trained discriminator: "
        "give --disc-steps N or --disc-checkpoint FILE.\n"
    )


def per_step_reference(
    target_spec: str, config: SamplerConfig, steps: int, record_every: int
) -> tuple[dict[str, np.ndarray], int | None]:
    """What `ldam sample` wrote before its recorder, for the bundled LeNet, `target_spec` and
    `config`: the same sampler, read on the host every step (the activation, whether every
    chain is burned in) and each recorded sample copied at once. Returns the arrays by npz key
    and the first all-burned-in step."""
    loaded = load_checkpoint(str(DEFAULT_CHECKPOINT))
    chains = config.chains
    target = Target(loaded.module, target_spec, chains, batch_size=loaded.batch_size)
    sampler = Sampler([ActivationTerm(target), L2Term()], loaded.input_shape, config)
    activation = np.zeros((steps, chains), dtype=np.float32)
    recorded: list[np.ndarray] = []
    record_from: int | None = None
    for t in range(steps):
        info = sampler.step()
        activation[t] = info.activation.detach().float().cpu().numpy()
        if record_from is None and bool((sampler.burn_in_step >= 0).all()):
            record_from = t
        if record_from is not None and (t - record_from) % record_every == 0:
            recorded.append(sampler.x.detach().float().cpu().numpy().copy())
    with torch.no_grad():
        arrays = {
            "samples": np.stack(recorded),
            "final": sampler.x.numpy(),
            "mean": sampler.mean().numpy(),
            "window_mean": sampler.window_mean().numpy(),
            "activation": activation,
            "burn_in_step": sampler.burn_in_step.numpy(),
            "resets": sampler.resets.numpy(),
        }
    return arrays, record_from


def test_sample_npz_is_the_per_step_loops_for_a_fixed_seed(tmp_path: Path) -> None:
    # At the defaults (6 replicas per chain; with this fixed step the ladder adapts in the
    # first 400 steps, and nothing is kept meanwhile) auto burn-in ends inside a recorder block,
    # so the samples come from its staging; the npz must be what the per-step loop wrote, bit
    # for bit.
    out = tmp_path / "run.npz"
    argv = ["--target", "fc3:1", "--chains", "4", "--steps", "800", "--temperature", "1.0"]
    argv += ["--step-size", "0.1", "--window", "50", "--record-every", "7", "--seed", "3"]
    assert (
        main(["sample", str(DEFAULT_CHECKPOINT), *argv, "--device", "cpu", "--out", str(out)]) == 0
    )
    data = np.load(out)
    # The CLI's defaults for everything else (`ldam sample`'s in the settings model: the
    # unit's own scale, L2 0.1, momentum 0, auto burn-in, no clamp, 6 replicas).
    sample = for_sampler(defaults("sample"))
    sample.update(temperature=1.0, step_size=0.1, window=50, seed=3)
    config = SamplerConfig(chains=4, device="cpu", **sample)
    expected, record_from = per_step_reference("fc3:1", config, 800, 7)
    assert config.replicas == 6 and record_from is not None and 390 < record_from < 790
    assert json.loads(str(data["params"]))["record_from_step"] == record_from
    assert data["samples"].shape[0] == len(range(record_from, 800, 7))
    for key, value in expected.items():
        assert data[key].dtype == value.dtype, key
        assert np.array_equal(data[key], value), key


def test_view_input_png_is_the_denormalized_grid_for_four_channels(tmp_path: Path) -> None:
    # A 4-channel, non-square input with its normalization in the checkpoint: the PNG is the
    # window means in the chosen view, each channel its own grey image (images.py's rule).
    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(4, 3, 3),
            relu=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
        )
    )
    normalization = ([0.5, 0.4, 0.3, 0.2], [0.2, 0.25, 0.3, 0.35])
    mean, std = normalization
    checkpoint = export_checkpoint(
        net, tmp_path / "four.pt2", (4, 20, 36), {"normalization": {"mean": mean, "std": std}}
    )
    pixels = {}
    for view in ("symmetric", "input", "auto"):
        out, png = tmp_path / f"{view}.npz", tmp_path / f"{view}.png"
        argv = ["sample", str(checkpoint), "--target", "flat:0-2", "--chains", "6"]
        argv += ["--steps", "10", "--window", "5", "--burn-in", "2", "--seed", "1"]
        argv += ["--device", "cpu", "--out", str(out), "--png", str(png)]
        # auto is the default: 4 channels are no colour image, so it is the symmetric view.
        assert main(argv if view == "auto" else [*argv, "--view", view]) == 0
        data = np.load(out)
        units = json.loads(str(data["params"]))["units_per_chain"]
        assert units == [0, 1, 2, 0, 1, 2]  # grid order: the PNG shows the chains as they are
        x = torch.from_numpy(data["window_mean"])
        expected = to_pil(display_grid(x, 3, view, normalization))
        image = Image.open(png)
        # 3 columns x 2 rows of 4 side-by-side channels (4 * 36 + 3 px) x 20 px, 2 px padding.
        assert image.mode == "L" and image.size == (3 * (4 * 36 + 3 + 2) + 2, 2 * 22 + 2)
        pixels[view] = np.asarray(image)
        assert np.array_equal(pixels[view], np.asarray(expected)), view
    # The same chains (same seed), shown two ways.
    assert not np.array_equal(pixels["symmetric"], pixels["input"])
    assert np.array_equal(pixels["auto"], pixels["symmetric"])
    assert (
        run_cli("sample", "--view", "raw")
        .stderr.strip()
        .endswith(
            "argument --view: invalid choice: 'raw' (choose from 'auto', 'symmetric', 'input')"
        )
    )


def test_png_of_a_colour_network_is_in_its_input_space_by_default(tmp_path: Path) -> None:
    # 3 channels: --view auto (the default) draws the de-normalized image, in colour.
    normalization = (IMAGENET_NORMALIZATION["mean"], IMAGENET_NORMALIZATION["std"])
    checkpoint = tiny_rgb_checkpoint(tmp_path / "rgb.pt2", 8, 10)
    out, png = tmp_path / "run.npz", tmp_path / "run.png"
    argv = ["sample", str(checkpoint), "--target", "flat:0-1", "--chains", "2", "--steps", "6"]
    argv += ["--window", "3", "--burn-in", "2", "--seed", "1", "--device", "cpu"]
    assert main([*argv, "--out", str(out), "--png", str(png)]) == 0
    x = torch.from_numpy(np.load(out)["window_mean"])
    image = Image.open(png)
    # 2 columns x 1 row of 10 x 8 px, 2 px padding: chain k's cell is its input-space image.
    assert image.mode == "RGB" and image.size == (2 * 12 + 2, 12)
    pixels = np.asarray(image)
    for k in range(2):
        cell = pixels[2:10, 2 + 12 * k : 12 + 12 * k]
        expected = to_input_space(x[k : k + 1], normalization)[0].permute(1, 2, 0).numpy()
        assert np.array_equal(cell, expected), k
    symmetric = to_display(x[:1])[0].permute(1, 2, 0).numpy()
    assert not np.array_equal(pixels[2:10, 2:12], symmetric)
