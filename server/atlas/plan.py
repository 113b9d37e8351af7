"""What an atlas renders: the units of one layer, in batches, and the seed of each unit.

A unit's result depends only on (checkpoint, layer, unit, settings, seed): its chains draw
from random streams seeded by `unit_seed(seed, unit)` (`SamplerConfig.group_seeds`), the
batches are contiguous slices of the units fixed by the settings, and every worker runs torch
with the same thread count. The executor and the number of workers only decide where a batch
runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

from ldam.metadata import MetadataOverride
from ldam.wire.settings import for_sampler, on
from ldam.wire.views import DEFAULT_VIEW


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


def _settings_class() -> type:
    """`Settings`: one field per setting of the one settings model that `ldam atlas` takes
    (`ldam.wire.settings`, surface ``atlas``, with the atlas's defaults), then the run's own
    options."""
    fields: list[tuple[str, Any, Any]] = [
        (name, Any, field(default=s.default_on("atlas"))) for name, s in on("atlas").items()
    ]
    fields += [
        # Where the channels of 3-D and 4-D layer outputs are (`--layout`).
        ("layout", str, field(default="auto")),
        # How the PNGs show the chains (`ldam.wire.views`: auto is input for a colour network).
        ("view", str, field(default=DEFAULT_VIEW)),
        # Torch's thread count in every worker (pinned: results must not depend on where a
        # batch ran).
        ("threads", int, field(default=1)),
        # Units that share one sampler batch.
        ("batch_units", int, field(default=16)),
    ]

    def as_json(self: Any) -> dict[str, Any]:
        """The settings as the manifest stores them (pairs as lists)."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def sampler_settings(self: Any) -> dict[str, Any]:
        """The settings `SamplerConfig` takes, by the model's names."""
        return for_sampler({name: getattr(self, name) for name in on("atlas")})

    return make_dataclass(
        "Settings",
        fields,
        frozen=True,
        namespace={
            "as_json": as_json,
            "sampler_settings": sampler_settings,
            "__module__": __name__,
        },
    )


# The sampler settings of an atlas run, as `ldam sample` names them; every unit gets `chains`
# chains.
Settings = _settings_class()


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
