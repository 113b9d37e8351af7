"""The target grammar, shared by the command line, the dashboard and the worker (no torch).

A target string is `LAYER:UNIT`, where UNIT is a unit (channel) or a range of them, with an
optional position:

    fc3:7                unit 7 of a 2-D output [N, K] (the pre-softmax logit of class 7)
    conv1:3              channel 3 of a 4-D output [N, C, H, W], mean over all positions
    conv1:3@12,12        channel 3 at row 12, column 12
    blocks.5.mlp.fc1:7   channel 7 of a token output [N, T, D], mean over all tokens
    blocks.5.mlp.fc1:7@0 channel 7 of token 0 (a ViT's class token)
    fc3:0-9              a range: the chains split into equal contiguous groups, one per unit
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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ldam.errors import UserError

OUTPUT_NAMES = ("", "output")
_UNIT = re.compile(r"^(\d+)(?:-(\d+))?(?:@(\d+(?:,\d+)*))?$")
_ELEMENT = re.compile(r"\[([A-Za-z0-9_\-]{1,100})\]")
_LAYER = re.compile(r"^([^\[\]]*)((?:\[[A-Za-z0-9_\-]{1,100}\])*)$")

Element = tuple[int | str, ...]


class TargetError(UserError):
    """A target cannot be used with this model; the message is one sentence for the user."""


@dataclass(frozen=True)
class TargetSpec:
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

    @property
    def is_output(self) -> bool:
        """Whether the target is the network's output (no hook needed)."""
        return self.layer == ""

    @property
    def layer_text(self) -> str:
        """The layer with its element, as written: `attn[0]`, `output[logits]`, `fc3`."""
        return (self.layer or "output") + element_text(self.element)

    def __str__(self) -> str:
        units = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        where = "@" + ",".join(str(p) for p in self.position) if self.position else ""
        return f"{self.layer_text}:{units}{where}"


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
