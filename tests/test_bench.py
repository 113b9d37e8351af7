"""`ldam bench`: the quick run prints the three-loop table with sane ratios; bad input is one
sentence. No timed assertion (speed is reported, never asserted), and nothing here needs Lucent:
a stand-in package with Lucent's `render_vis` calling convention exercises the Lucent column.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ldam.cli.bench import ALL_CASES, HEADER, import_lucent
from ldam.cli.main import main

ROOT = Path(__file__).resolve().parent.parent

# The parts of Lucent 0.1.8's API the benchmark calls, with the same calling convention:
# render_vis builds the parameter and the optimizer from the factories it is given and steps the
# optimizer with a closure that zeroes, runs the objective and calls backward.
FAKE_LUCENT = {
    "lucent/__init__.py": "",
    "lucent/optvis/__init__.py": "",
    "lucent/modelzoo/__init__.py": "",
    "lucent/modelzoo/util.py": """
        def get_model_layers(model):
            return [name.replace(".", "_") for name, _ in model.named_modules() if name]
    """,
    "lucent/optvis/objectives.py": """
        def channel(layer, n_channel):
            return lambda model, image: -model(image)[:, n_channel].mean()
    """,
    "lucent/optvis/render.py": """
        def render_vis(model, objective_f, param_f=None, optimizer=None, transforms=None,
                       thresholds=(512,), preprocess=True, progress=True, show_image=True,
                       fixed_image_size=None):
            assert transforms == [] and not preprocess and not progress and not show_image
            params, image_f = param_f()
            opt = optimizer(params)
            for _ in range(max(thresholds)):
                def closure():
                    opt.zero_grad()
                    loss = objective_f(model, image_f())
                    loss.backward()
                    return loss
                opt.step(closure)
            return []
    """,
}


def _fake_lucent(folder: Path) -> Path:
    for name, text in FAKE_LUCENT.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_quick_run_prints_the_table_with_positive_finite_ratios(tmp_path: Path) -> None:
    lucent = _fake_lucent(tmp_path / "lucent-deps")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LDAM_BENCH_LUCENT", None)
    done = subprocess.run(
        [sys.executable, "-m", "ldam", "bench", "--quick", "--cases", "lenet-1"]
        + ["--lucent", str(lucent), "--device", "cpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert f"from {lucent}" in lines[0]
    header = _cells(lines[1])
    assert header == _cells(HEADER)
    for column in ("eager steps/s", "ldam steps/s", "Lucent steps/s"):
        assert column in header
    assert lines[-1].startswith("load average ") and lines[-1].endswith(" at end")
    rows = [_cells(line) for line in lines[3:-1]]
    assert len(rows) == 1
    row = dict(zip(header, rows[0], strict=True))
    assert row["case"] == ALL_CASES["lenet-1"].label
    assert row["target"] == "`fc3:3`"
    for column in ("eager steps/s", "ldam steps/s", "Lucent steps/s"):
        assert float(row[column].replace(",", "")) > 0
    for column in ("ldam/eager", "Lucent/eager", "ldam/Lucent"):
        ratio = float(row[column])
        assert ratio > 0 and math.isfinite(ratio)


def test_unknown_case_is_one_sentence_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--cases", "lenet-1,x"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"ldam: Unknown benchmark case 'x'; known cases: {', '.join(ALL_CASES)}.\n"
    )


def test_lucent_that_cannot_be_imported_is_a_note_not_an_error(tmp_path: Path) -> None:
    # An absent folder is reported before anything is added to sys.path or imported.
    missing = import_lucent(str(tmp_path / "nowhere"))
    assert missing.missing.startswith("not installed: ") and missing.render is None
    assert str(tmp_path) not in " ".join(sys.path)
    off = import_lucent("off")
    assert off.missing == "not run (--lucent off)" and off.render is None


def test_a_row_without_lucent_says_why_and_leaves_its_ratios_empty() -> None:
    from ldam.cli.bench import Row, format_row

    row = Row(ALL_CASES["vit-224"], eager=12.0, ldam=11.0, ldam_eager=0.9)
    row.lucent_note = "not installed: No module named 'lucent'"
    cells = dict(zip(_cells(HEADER), _cells(format_row(row)), strict=True))
    assert cells["Lucent steps/s"] == "not installed: No module named 'lucent'"
    assert (cells["ldam/eager"], cells["Lucent/eager"], cells["ldam/Lucent"]) == ("0.90", "-", "-")
