"""The package as a user installs it: `pip wheel .`, then a fresh environment, then `ldam serve`.

The wheel is built from this checkout (npm puts the chart library in it), installed with no
dependencies into a new virtual environment whose only other packages are those of the
project's environment, reached through a `.pth` line. That line adds the project's
site-packages as a plain path, not a site directory, so the project's editable install of
`ldam` (a `.pth` hook there) is not loaded: only the wheel's `ldam` can be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.support import free_port

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools copies into build/ without clearing it: a module deleted since an earlier
    # build would otherwise still ship.
    shutil.rmtree(REPO / "build", ignore_errors=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        cwd=out,
        capture_output=True,
    )
    (built,) = out.glob("ldam-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies (torch, fastapi, ...) come from the project's environment.
    Path(site, "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return env


def test_the_wheel_holds_one_import_package_with_the_page_and_the_bundled_files(
    wheel: Path,
) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"ldam", "ldam-0.1.0.dist-info"}
    for path in [
        "ldam/__init__.py",
        "ldam/__main__.py",
        "ldam/frontend/index.html",
        "ldam/frontend/main.js",
        "ldam/frontend/style.css",
        "ldam/frontend/node_modules/uplot/dist/uPlot.iife.min.js",
        "ldam/frontend/node_modules/uplot/dist/uPlot.min.css",
        "ldam/models/checkpoints/lenet_mnist.pt2",
        "ldam/models/checkpoints/lenet_mnist_avg.pt2",
        "ldam/models/data/mnist.npz",
    ]:
        assert path in names, path
    # Only the chart library's two built files come from node_modules, no package.json.
    assert sorted(n for n in names if "node_modules" in n) == [
        "ldam/frontend/node_modules/uplot/dist/uPlot.iife.min.js",
        "ldam/frontend/node_modules/uplot/dist/uPlot.min.css",
    ]
    entry = zipfile.ZipFile(wheel).read("ldam-0.1.0.dist-info/entry_points.txt").decode()
    assert "ldam = ldam.cli.main:main" in entry


def test_the_installed_package_imports_from_the_fresh_environment_only(
    fresh_env: Path, tmp_path: Path
) -> None:
    python = fresh_env / "bin" / "python"
    probe = (
        "import importlib.util, json, ldam, ldam.models.bundled as b;"
        "print(json.dumps({'ldam': ldam.__file__, 'ckpt': str(b.DEFAULT_CHECKPOINT),"
        " 'exists': b.DEFAULT_CHECKPOINT.is_file(),"
        " 'server': importlib.util.find_spec('server') is not None,"
        " 'models': importlib.util.find_spec('models') is not None}))"
    )
    out = json.loads(
        subprocess.run(
            [str(python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
        ).stdout
    )
    assert out["ldam"].startswith(str(fresh_env)), out
    assert out["ckpt"].startswith(str(fresh_env)) and out["exists"], out
    assert not out["server"] and not out["models"], out
    # `python -m ldam` and the console script are the same command.
    for command in (
        [str(python), "-m", "ldam", "--help"],
        [str(fresh_env / "bin" / "ldam"), "--help"],
    ):
        help_text = subprocess.run(
            command, check=True, capture_output=True, text=True, cwd=tmp_path
        ).stdout
        assert help_text.startswith("usage: ldam ") and "serve" in help_text


def _get(url: str) -> tuple[int, bytes, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read(), response.headers.get("content-type", "")


def test_ldam_serve_from_the_wheel_serves_the_whole_page(fresh_env: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [str(fresh_env / "bin" / "ldam"), "serve", "--port", str(port)],
        cwd=tmp_path,  # an unrelated folder: nothing is found through the working directory
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        state = None
        while time.monotonic() < deadline:
            try:
                state = json.loads(_get(f"{base}/api/state")[1])
                if state["info"] is not None:
                    break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        assert state is not None and state["info"] is not None, (tmp_path / "serve.log").read_text()
        assert [p["label"] for p in state["info"]["panels"]] == [
            "lenet_mnist.pt2",
            "lenet_mnist_avg.pt2",
        ]
        status, page, kind = _get(f"{base}/")
        assert status == 200 and kind.startswith("text/html") and b"<html" in page
        for script in ("main.js", "controls.js", "charts.js", "stream.js", "style.css"):
            status, body, _ = _get(f"{base}/static/{script}")
            assert status == 200 and len(body) > 100, script
        status, chart, kind = _get(f"{base}/vendor/uPlot.iife.min.js")
        assert status == 200 and b"uPlot" in chart and "javascript" in kind
        assert _get(f"{base}/vendor/uPlot.min.css")[0] == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)
        log.close()
