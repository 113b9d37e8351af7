"""What an atlas renders: the units of one layer, in batches, and the seed of each unit.

A unit's result depends only on (checkpoint, layer, unit, settings, seed): its chains draw
from random streams seeded by `unit_seed(seed, unit)` (`SamplerConfig.group_seeds`), the
batches are contiguous slices of the units fixed by the settings, and every worker runs torch
with the same thread count. The executor and the number of workers only decide where a batch
runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ldam.metadata import MetadataOverride


def unit_seed(seed: int, unit: int) -> int:
    """The seed of unit `unit`'s chains in a run seeded `seed` (stable across machines)."""
    digest = hashlib.sha256(f"ldam-atlas:{seed}:{unit}".encode()).digest()
    # 31 bits: the dashboard's seed field takes it, and a dashboard sampler of the unit's
    # chains alone with this seed continues exactly the chains the atlas shows.
    return int.from_bytes(digest[:4], "little") >> 1


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Settings:
    """The sampler settings of an atlas run, as `ldam sample` names them; every unit gets
    `chains` chains. `threads` is torch's thread count in every worker (pinned: results must
    not depend on where a batch ran). `batch_units` units share one sampler batch."""

    chains: int = 8
    steps: int = 500
    temperature: float = 0.01
    step_size: float = 0.05
    momentum: float = 0.0
    l2_weight: float = 0.1
    normalize: str = "none"
    window: int = 100
    init_std: float = 1.0
    clamp: tuple[float, float] | None = None
    burn_in: int | None = None
    record_every: int = 10
    seed: int = 0
    layout: str = "auto"
    threads: int = 1
    batch_units: int = 16

    def as_json(self) -> dict[str, Any]:
        """The settings as the manifest stores them."""
        out = asdict(self)
        out["clamp"] = list(self.clamp) if self.clamp is not None else None
        return out


@dataclass(frozen=True)
class Job:
    """One checkpoint, one layer, the units to render and the settings; `arch`, `input_shape`,
    `trust` and `metadata` (``--mean``, ``--std``, ``--class-names``) say how to load it."""

    checkpoint: str
    layer: str
    units: list[int]
    settings: Settings
    arch: str | None = None
    input_shape: tuple[int, int, int] | None = None
    trust: bool = False
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)
    metadata: MetadataOverride | None = None

    def batches(self) -> list[list[int]]:
        """The units in consecutive runs of at most `batch_units`, each a contiguous range
        (a gap in the units starts a new batch); the same for every executor."""
        out: list[list[int]] = []
        for unit in self.units:
            last = out[-1] if out else None
            if last is not None and len(last) < self.settings.batch_units and unit == last[-1] + 1:
                last.append(unit)
            else:
                out.append([unit])
        return out
