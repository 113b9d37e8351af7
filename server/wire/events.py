"""What crosses the pipes between the web server and the worker: one dataclass per message.

Both processes import this module and it imports no torch. Every message is a small frozen
dataclass of plain values (numbers, strings, lists, dicts, bytes), pickled by the pipe.

Server -> worker (commands): `SetParams`, `Reset`, `Shake`, `RestartDiscriminator`,
`Viewers`, `Stop`. Worker -> server (events): `Ready`, `Rejected`, `Notice`, `Frame`,
`Metrics`, `Died`, `Heartbeat`. Parameters travel as `SamplerParams` dumps (dicts), so this
module does not depend on pydantic either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ----------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class SetParams:
    """Run with these parameters (a `SamplerParams` dump) and checkpoint files from now on.

    `sources` maps ``checkpoint`` and ``compare`` to absolute paths (or None). A change of a
    structural field or of the files rebuilds the chains; anything else applies live. `warm`
    (``ldam serve --watch`` found a newer checkpoint): a new main file alone swaps the model
    under the running chains instead of restarting them.
    """

    version: int
    params: dict[str, Any]
    sources: dict[str, str | None]
    warm: bool = False


@dataclass(frozen=True)
class Reset:
    """Restart every chain from fresh noise."""


@dataclass(frozen=True)
class Shake:
    """Multiply the temperature by `factor` for `seconds`, then restore it."""

    factor: float
    seconds: float


@dataclass(frozen=True)
class RestartDiscriminator:
    """Restart the discriminator trainer after it failed."""


@dataclass(frozen=True)
class Viewers:
    """How many browsers watch now (none: frames once a second, and after the idle pause no
    steps at all until one connects)."""

    count: int


@dataclass(frozen=True)
class Stop:
    """Finish the current step and exit."""


Command = SetParams | Reset | Shake | RestartDiscriminator | Viewers | Stop

# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Ready:
    """The chains for `version` run; `params` has what the worker filled in (the layer when
    none was given) and `info` what the page's pickers need (layers, device, panels)."""

    version: int
    params: dict[str, Any]
    info: dict[str, Any]


@dataclass(frozen=True)
class Rejected:
    """The change to `version` was refused; the worker still runs `params` with `sources`.

    `params` is None when the worker could not start at all (bad checkpoint, target or device
    on the command line).
    """

    version: int
    field: str
    message: str
    params: dict[str, Any] | None
    sources: dict[str, str | None] | None = None


@dataclass(frozen=True)
class Notice:
    """A sentence for the browsers about `field` that refuses no change (D could not start)."""

    field: str
    message: str


@dataclass(frozen=True)
class Frame:
    """One tiled JPEG per panel; `header` as in `ldam.wire.messages.encode_frame`."""

    header: dict[str, Any]
    images: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class Metrics:
    """Activations, speed, burn-in, resets and D's figures (the page's ``metrics`` message)."""

    payload: dict[str, Any]


@dataclass(frozen=True)
class Died:
    """The worker's last words: its traceback's last line, before it exits."""

    message: str


@dataclass(frozen=True)
class Heartbeat:
    """Still alive (sent every few seconds, also during a long step or load)."""


Event = Ready | Rejected | Notice | Frame | Metrics | Died | Heartbeat
