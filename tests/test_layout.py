"""The layout's rules, checked on the source: which side may import what.

    ldam.sampling  torch, no I/O: knows nothing of the worker, the wire's link, the web or the CLI
    ldam.worker    the worker process: torch, the sampler side, the wire
    ldam.wire      what both processes share: no torch, no web framework
    ldam.web       the web server: no torch, never the sampler or worker side
    ldam.models    networks, loading, data: never the web, worker or command-line code

Every import counts, also one inside a function, so a lazy import cannot slip through.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Source folder -> the import name it has inside the package.
FOLDERS = {
    "sampling": REPO / "server" / "sampling",
    "worker": REPO / "server" / "worker",
    "wire": REPO / "server" / "wire",
    "web": REPO / "server" / "web",
    "cli": REPO / "server" / "cli",
    "atlas": REPO / "server" / "atlas",
    "models": REPO / "models",
}
# What each side may not import (prefixes of module names).
FORBIDDEN = {
    "sampling": (
        "ldam.worker",
        "ldam.web",
        "ldam.cli",
        "ldam.wire.link",
        "fastapi",
        "starlette",
        "uvicorn",
        "websockets",
    ),
    "worker": ("ldam.web", "ldam.cli", "fastapi", "starlette", "uvicorn"),
    "wire": (
        "torch",
        "ldam.sampling",
        "ldam.worker",
        "ldam.web",
        "ldam.cli",
        "ldam.models",
        "fastapi",
        "starlette",
        "uvicorn",
    ),
    "web": (
        "torch",
        "ldam.sampling",
        "ldam.worker",
        "ldam.cli",
        "ldam.atlas.render",
        "ldam.atlas.executors",
        "ldam.models.loading",
        "ldam.models.lenet",
        "ldam.models.data",
        "ldam.models.train",
        "ldam.models.discriminator",
    ),
    "atlas": ("ldam.web", "ldam.worker", "ldam.cli", "fastapi", "starlette", "uvicorn"),
    "models": ("ldam.web", "ldam.cli", "ldam.worker", "ldam.wire", "fastapi", "starlette"),
}


def imports_of(path: Path) -> list[str]:
    """Every module name `path` imports, at any depth of its code."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _breaks(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("side", sorted(FORBIDDEN))
def test_each_side_imports_only_what_it_may(side: str) -> None:
    broken = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted(FOLDERS[side].rglob("*.py"))
        for name in imports_of(path)
        if _breaks(name, FORBIDDEN[side])
    ]
    assert broken == []


def test_no_top_level_server_or_models_package_is_imported() -> None:
    # Code refers to the one import package `ldam`, never to the folder names.
    broken = [
        f"{path.relative_to(REPO)} imports {name}"
        for folder in ("server", "models", "tests", "benchmarks")
        for path in sorted((REPO / folder).rglob("*.py"))
        for name in imports_of(path)
        if _breaks(name, ("server", "models"))
    ]
    assert broken == []


def test_no_test_module_imports_another() -> None:
    broken = [
        f"{path.name} imports {name}"
        for path in sorted((REPO / "tests").glob("test_*.py"))
        for name in imports_of(path)
        if name.startswith("tests.test_") or name == "tests.conftest"
    ]
    assert broken == []


def test_the_web_server_runs_without_torch() -> None:
    # Import the whole web side and the command line's entry in a fresh interpreter: torch
    # must not be loaded (the worker process does all tensor work). `ldam` itself stays
    # torch-free although `ldam.save_checkpoint` is one attribute away (imported on use).
    modules = [
        f"ldam.{side}.{path.stem}"
        for side in ("web", "wire")
        for path in sorted(FOLDERS[side].glob("*.py"))
        if path.stem != "__init__"
    ] + ["ldam", "ldam.errors", "ldam.models.bundled", "ldam.cli.main", "ldam.notebook"]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + ("print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
    assert len(modules) >= 12
