"""The target grammar, shared by the command line, the dashboard and the worker (no torch).

A target string is `LAYER:UNIT`, where UNIT is a unit (channel) or a range of them, with an
optional position:

    fc3:7                unit 7 of a 2-D output [N, K] (the pre-softmax logit of class 7)
    conv1:3              channel 3 of a 4-D output [N, C, H, W], mean over all positions
    conv1:3@12,12        channel 3 at row 12, column 12
    blocks.5.mlp.fc1:7   channel 7 of a token output [N, T, D], mean over all tokens
    blocks.5.mlp.fc1:7@0 channel 7 of token 0 (a ViT's class token)
    fc3:0-9              a range: one grid column per unit, the chains fill the rows in turn
    :7, output:7         the network's output

A position has one number per position axis of the layer: one (a token) for [N, T, D], two
(row, column) for [N, C, H, W] and channels-last [N, H, W, C]. Which axis holds the channels
is the model's business (`ldam.sampling.targets`), not the grammar's.

A layer (or the network) that returns a tuple, list or dict is followed by the element in
brackets: `attn[0]:5` is element 0 of what `attn` returns, `output[logits]:3` the entry
`logits` of a dict output; brackets nest (`head[1][0]:2`). A number indexes a tuple or list, a
name a dict.

LAYER is the dotted path of `named_modules()`. `ldam.sampling.targets` resolves a parsed
target against a model.

A string names units; the sampler needs the unit of every chain. `chain_targets` turns a
parsed string into that, once: the chains are in grid order (row-major, one column per unit,
`ldam.wire.params.grid_columns`), so `fc3:0-2` over 6 chains is units 0, 1, 2, 0, 1, 2. The
dashboard, the atlas and a caller with any other grid build `ChainTargets` from the unit list
itself, in any order and with repeats; no grid travels as text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ldam.errors import UserError

OUTPUT_NAMES = ("", "output")
_UNIT = re.compile(r"^(\d+)(?:-(\d+))?(?:@(\d+(?:,\d+)*))?$")
_ELEMENT = re.compile(r"\[([A-Za-z0-9_\-]{1,100})\]")
_LAYER = re.compile(r"^([^\[\]]*)((?:\[[A-Za-z0-9_\-]{1,100}\])*)$")

Element = tuple[int | str, ...]


class TargetError(UserError):
    """A target cannot be used with this model; the message is one sentence for the user."""


class _OnLayer:
    """What a parsed target and a per-chain target share: a `layer` ("" = the output) and an
    `element` path into its value."""

    layer: str
    element: Element

    @property
    def is_output(self) -> bool:
        """Whether the target is the network's output (no hook needed)."""
        return self.layer == ""

    @property
    def layer_text(self) -> str:
        """The layer with its element, as written: `attn[0]`, `output[logits]`, `fc3`."""
        return (self.layer or "output") + element_text(self.element)


@dataclass(frozen=True)
class TargetSpec(_OnLayer):
    """A parsed target: `layer` ("" = output), units `first..last` (inclusive), an optional
    `position` (one index per position axis: a token, or row and column), and the `element`
    path into a layer that returns a tuple, list or dict (() = the layer's one tensor)."""

    layer: str
    first: int
    last: int
    position: tuple[int, ...] | None = None
    element: Element = ()

    @property
    def units(self) -> list[int]:
        """The unit (or channel) indices in order."""
        return list(range(self.first, self.last + 1))

    def __str__(self) -> str:
        units = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        where = "@" + ",".join(str(p) for p in self.position) if self.position else ""
        return f"{self.layer_text}:{units}{where}"


@dataclass(frozen=True)
class ChainTargets(_OnLayer):
    """What every chain maximizes: the layer (`layer`, `element` as in `TargetSpec`), the unit
    of each chain in grid order (`units`, one per chain, any order, repeats allowed) and one
    `position` for all of them (None: the mean over positions)."""

    layer: str
    units: tuple[int, ...]
    position: tuple[int, ...] | None = None
    element: Element = ()

    @classmethod
    def on_layer(
        cls, layer: str, units: Sequence[int], position: Sequence[int] | None = None
    ) -> ChainTargets:
        """`units` (one per chain, grid order) of the layer written as `layer` (`fc3`,
        `attn[0]`, `output`; `parse_layer`), at `position` (None: mean over positions)."""
        name, element = parse_layer(layer)
        return cls(name, _chain_units(units), _position(position), element)

    @property
    def first(self) -> int:
        """The lowest unit of any chain."""
        return min(self.units)

    @property
    def last(self) -> int:
        """The highest unit of any chain."""
        return max(self.units)


def _chain_units(units: Sequence[int]) -> tuple[int, ...]:
    """`units` as a tuple of whole numbers >= 0, at least one, or `TargetError`."""
    out = tuple(units)
    if not out:
        raise TargetError("The number of chains must be at least 1, got 0.", "chains")
    for unit in out:
        if isinstance(unit, bool) or not isinstance(unit, int) or unit < 0:
            raise TargetError(f"A unit is a whole number >= 0, got {unit!r}.", "unit")
    return out


def _position(position: Sequence[int] | None) -> tuple[int, ...] | None:
    if position is None:
        return None
    out = tuple(position)
    if not out or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in out):
        raise TargetError(
            f"A position is one or more whole numbers >= 0, got {list(out)!r}.", "position"
        )
    return out


def chain_targets(spec: TargetSpec, chains: int) -> ChainTargets:
    """The target string `spec` laid out over `chains` chains in grid order: one column per
    unit `first..last`, row after row (`fc3:0-2`, 6 chains: units 0, 1, 2, 0, 1, 2), or one
    sentence when `chains` is below 1 or not a multiple of the unit count."""
    if chains < 1:
        raise TargetError(f"The number of chains must be at least 1, got {chains}.", "chains")
    units = spec.units
    if chains % len(units):
        raise TargetError(
            f"{chains} chains cannot be split evenly over the {len(units)} units "
            f"{spec.first}-{spec.last}; use a multiple of {len(units)} chains.",
            "chains",
        )
    rows = chains // len(units)
    return ChainTargets(spec.layer, tuple(units * rows), spec.position, spec.element)


def element_text(element: Element) -> str:
    """`(0, "logits")` -> `[0][logits]`."""
    return "".join(f"[{key}]" for key in element)


def parse_layer(text: str) -> tuple[str, Element]:
    """`attn[0]` -> ("attn", (0,)); `output[logits]` -> ("", ("logits",)); `TargetError` if
    the brackets are malformed."""
    match = _LAYER.match(text.strip())
    if match is None:
        raise TargetError(
            f"The layer {text!r} must be a dotted name with optional [element] parts, such as "
            "attn[0] or output[logits]."
        )
    layer = match.group(1).strip()
    element = tuple(int(key) if key.isdigit() else key for key in _ELEMENT.findall(match.group(2)))
    return ("" if layer in OUTPUT_NAMES else layer), element


def parse_target(spec: str) -> TargetSpec:
    """Parse `LAYER:UNIT` (see the module docstring) into a `TargetSpec`; `TargetError` if malformed."""
    if not isinstance(spec, str) or ":" not in spec:
        raise TargetError(f"A target is LAYER:UNIT, such as fc3:7 or conv1:3@12,12; got {spec!r}.")
    layer, _, unit = spec.strip().rpartition(":")
    name, element = parse_layer(layer)
    match = _UNIT.match(unit.strip())
    if match is None:
        raise TargetError(
            f"The unit in {spec!r} must be K, A-B, C@Y,X or A-B@Y,X with whole numbers, such as 7, 0-9 or 3@12,12."
        )
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if last < first:
        raise TargetError(f"The unit range in {spec!r} runs backwards; write it as {last}-{first}.")
    where = match.group(3)
    position = tuple(int(p) for p in where.split(",")) if where is not None else None
    return TargetSpec(name, first, last, position, element)
