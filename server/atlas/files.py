"""Atlas file names and atomic writes (no torch: the dashboard's server reads atlases too)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def unit_files(unit: int) -> tuple[str, str]:
    """The PNG and npz of `unit`, relative to the atlas folder."""
    return f"units/unit_{unit:05d}.png", f"units/unit_{unit:05d}.npz"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)`, then rename the file into place: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
