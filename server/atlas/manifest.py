"""`atlas.json`: what the atlas holds, rewritten atomically after every finished batch, so that
a stopped run (Ctrl-C, a crash) leaves a valid manifest of the units finished so far."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ldam.atlas.files import atomic_write
from ldam.atlas.plan import Job
from ldam.errors import UserError
from ldam.metadata import normalization_json

MANIFEST = "atlas.json"


class AtlasError(UserError):
    """An atlas cannot be run or resumed; the message is one sentence."""


def new_manifest(
    job: Job,
    sha256: str,
    units_in_layer: int,
    normalization: tuple[list[float], list[float]] | None = None,
    class_names: list[str] | None = None,
    view: str = "symmetric",
) -> dict[str, Any]:
    """The manifest of a run that has finished no unit yet; `normalization` (mean, std) and
    `class_names` are the loaded model's (the file's, or ``--mean``/``--std``/``--class-names``),
    `view` the one the PNGs are drawn in (the settings' view resolved for the network).
    """
    return {
        "checkpoint": {"path": str(Path(job.checkpoint).resolve()), "sha256": sha256},
        "normalization": normalization_json(normalization),
        "view": view,
        "class_names": class_names,
        "layer": job.layer,
        "units_in_layer": units_in_layer,
        "requested_units": list(job.units),
        "settings": job.settings.as_json(),
        "units": [],
    }


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest in `out`, None if there is none; `AtlasError` if it is unreadable."""
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise AtlasError(f"{path} is not a readable atlas manifest ({error}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("units"), list):
        raise AtlasError(f"{path} is not an atlas manifest (it has no list of units).")
    return data


def check_resumable(old: dict[str, Any], new: dict[str, Any], out: Path) -> None:
    """`--resume` continues only the same run: same checkpoint bytes, layer and settings."""
    differs = {
        "checkpoint": old.get("checkpoint", {}).get("sha256") != new["checkpoint"]["sha256"],
        "layer": old.get("layer") != new["layer"],
        "settings": old.get("settings") != new["settings"],
    }
    for what, different in differs.items():
        if different:
            raise AtlasError(
                f"{out / MANIFEST} was made with another {what}; --resume continues only the same "
                "run, so use a new --out folder."
            )


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Write `atlas.json` atomically, units sorted by unit."""
    manifest["units"].sort(key=lambda entry: entry["unit"])
    text = json.dumps(manifest, indent=1)
    atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(text))
