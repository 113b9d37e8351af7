"""The target grammar, shared by the command line, the dashboard and the worker (no torch).

A target string is `LAYER:UNIT`:

    fc3:7          unit 7 of a 2-D output [N, K] (pre-softmax logit of class 7)
    conv1:3        channel 3 of a 4-D output [N, C, H, W], mean over all positions
    conv1:3@12,12  channel 3 at row 12, column 12
    fc3:0-9        a range: the chains split into equal contiguous groups, one per unit
    :7, output:7   the network's output

LAYER is the dotted path of `named_modules()`. `ldam.sampling.targets` resolves a parsed
target against a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ldam.errors import UserError

OUTPUT_NAMES = ("", "output")
_UNIT = re.compile(r"^(\d+)(?:-(\d+))?(?:@(\d+),(\d+))?$")


class TargetError(UserError):
    """A target cannot be used with this model; the message is one sentence for the user."""


@dataclass(frozen=True)
class TargetSpec:
    """A parsed target: `layer` ("" = output), units `first..last` (inclusive), optional
    spatial `position` (row, column) for a 4-D layer."""

    layer: str
    first: int
    last: int
    position: tuple[int, int] | None = None

    @property
    def units(self) -> list[int]:
        """The unit (or channel) indices in order."""
        return list(range(self.first, self.last + 1))

    @property
    def is_output(self) -> bool:
        """Whether the target is the network's output (no hook needed)."""
        return self.layer == ""

    def __str__(self) -> str:
        units = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        where = f"@{self.position[0]},{self.position[1]}" if self.position else ""
        return f"{self.layer or 'output'}:{units}{where}"


def parse_target(spec: str) -> TargetSpec:
    """Parse `LAYER:UNIT` (see the module docstring) into a `TargetSpec`; `TargetError` if malformed."""
    if not isinstance(spec, str) or ":" not in spec:
        raise TargetError(f"A target is LAYER:UNIT, such as fc3:7 or conv1:3@12,12; got {spec!r}.")
    layer, _, unit = spec.strip().rpartition(":")
    layer = layer.strip()
    match = _UNIT.match(unit.strip())
    if match is None:
        raise TargetError(
            f"The unit in {spec!r} must be K, A-B, C@Y,X or A-B@Y,X with whole numbers, such as 7, 0-9 or 3@12,12."
        )
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if last < first:
        raise TargetError(f"The unit range in {spec!r} runs backwards; write it as {last}-{first}.")
    position = (int(match.group(3)), int(match.group(4))) if match.group(3) is not None else None
    return TargetSpec("" if layer in OUTPUT_NAMES else layer, first, last, position)
