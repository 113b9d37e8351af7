"""Every websocket message between the browser and the server, as pydantic models.

Browser -> server messages are JSON text with a ``type`` field; each kind is one model with
``extra="forbid"``, no NaN or infinity, and bounds on every number, so that a bad message is
refused with the name of the offending field (see `parse_client_message`). Server -> browser
messages are JSON text (``state``, ``info``, ``metrics``, ``status``, ``error``) or binary
frames (`encode_frame`: a length-prefixed JSON header followed by the JPEG bytes of each
panel).

This module imports no torch: the web server uses it, and so does the worker process.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ldam.errors import UserError

# The limits on a control message live with the app's other limits (see SECURITY.md).
from ldam.web.security import MAX_JSON_DEPTH, MAX_MESSAGE_BYTES

# The most chains one worker runs (rows x columns of the grid).
MAX_CHAINS = 256
# The most values a sweep can take (rows of the sweep layout).
MAX_SWEEP_VALUES = 8
# The most units in one "range" layout (columns).
MAX_RANGE_UNITS = 32

# Strict: no lax coercion ("0.5" or true for a number, "yes" or 1 for a boolean, 2.0 for an
# integer). A JSON integer is still a valid float: JSON has no separate types for 1 and 1.0.
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

Layout = Literal["chains", "range", "sweep"]
Show = Literal["sample", "average"]
SweepParam = Literal["disc_weight", "temperature", "l2_weight", "step_size"]

# A layer name as `named_modules()` prints it: dotted identifiers and indices.
_LAYER_PATTERN = r"^[A-Za-z0-9_.]{1,200}$"
# A checkpoint is a relative name inside the configured folder; `security.resolve_checkpoint`
# does the real confinement (no `..`, no symlinks out), this only keeps the text plain.
_CHECKPOINT_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./\-]{0,254}$"


def _no_parent(name: str) -> str:
    if ".." in name.split("/"):
        raise ValueError("a checkpoint name may not contain '..'")
    return name


CheckpointName = Annotated[str, Field(pattern=_CHECKPOINT_PATTERN), AfterValidator(_no_parent)]


class SamplerParams(BaseModel):
    """The full state the browser controls, with the paper's names and the UI's defaults.

    The server keeps one of these per worker and a version number that grows with each
    change; every frame says which version it was made with.
    """

    model_config = _STRICT

    # Langevin dynamics (paper Algorithm 1): T, beta_t, gamma. The defaults are those of
    # `ldam sample` (`ldam.sampling.sampler.SamplerConfig`), so both show the same chains.
    temperature: float = Field(default=0.01, ge=0.0, le=100.0)
    step_size: float = Field(default=0.05, ge=1e-6, le=100.0)
    momentum: float = Field(default=0.0, ge=0.0, le=0.999)
    # Regularization weights lambda_i (paper section 4).
    l2_weight: float = Field(default=0.1, ge=0.0, le=100.0)
    disc_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    # Moving window of the sample average, in steps.
    window: int = Field(default=200, ge=1, le=1000)
    # Normalized gradients (Algorithm 1 line 6) are a display aid: off samples exactly.
    grad_norm: bool = False
    show: Show = "average"
    disc_training: bool = True
    paused: bool = False
    # What to sample and how the grid is laid out.
    layer: str = Field(default="", max_length=200, pattern=r"^[A-Za-z0-9_.]{0,200}$")
    unit: int = Field(default=0, ge=0, le=1_000_000)
    unit_end: int = Field(default=9, ge=0, le=1_000_000)
    layout: Layout = "range"
    # All chains of a panel; in the "range" layout rows = chains // units.
    chains: int = Field(default=20, ge=1, le=MAX_CHAINS)
    sweep_param: SweepParam = "disc_weight"
    sweep_values: list[Annotated[float, Field(ge=0.0, le=100.0)]] = Field(
        default_factory=lambda: [0.0, 0.2, 0.5, 0.8, 1.0], min_length=1, max_length=MAX_SWEEP_VALUES
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    checkpoint: CheckpointName | None = None
    compare: CheckpointName | None = None

    def grid(self) -> tuple[list[int], int]:
        """The unit of every chain (row-major over the grid) and the number of columns.

        "chains": `chains` chains on one unit in about sqrt(chains) columns; "range": units
        `unit`..`unit_end`, one column each, `chains` // columns rows; "sweep": the same
        columns, one row per value of `sweep_param`.
        """
        if self.layout == "chains":
            columns = max(1, round(self.chains**0.5))
            return [self.unit] * self.chains, columns
        first, last = sorted((self.unit, self.unit_end))
        units = list(range(first, min(last, first + MAX_RANGE_UNITS - 1) + 1))
        if self.layout == "range":
            rows = max(1, self.chains // len(units))
        else:
            rows = len(self.sweep_values)
        return units * rows, len(units)

    def sweep_rows(self) -> list[float] | None:
        """The value of `sweep_param` for each row in the sweep layout, else None."""
        return list(self.sweep_values) if self.layout == "sweep" else None


# Fields that change what is sampled: changing one rebuilds the chains in the worker.
STRUCTURAL_FIELDS = frozenset(
    {
        "layer",
        "unit",
        "unit_end",
        "layout",
        "chains",
        "sweep_param",
        "sweep_values",
        "seed",
        "checkpoint",
        "compare",
    }
)


class SetMessage(BaseModel):
    """``{"type": "set", ...}``: change some parameters; absent fields keep their value."""

    model_config = _STRICT

    type: Literal["set"]
    temperature: float | None = Field(default=None, ge=0.0, le=100.0)
    step_size: float | None = Field(default=None, ge=1e-6, le=100.0)
    momentum: float | None = Field(default=None, ge=0.0, le=0.999)
    l2_weight: float | None = Field(default=None, ge=0.0, le=100.0)
    disc_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    window: int | None = Field(default=None, ge=1, le=1000)
    grad_norm: bool | None = None
    show: Show | None = None
    disc_training: bool | None = None
    paused: bool | None = None
    layer: str | None = Field(default=None, pattern=_LAYER_PATTERN)
    unit: int | None = Field(default=None, ge=0, le=1_000_000)
    unit_end: int | None = Field(default=None, ge=0, le=1_000_000)
    layout: Layout | None = None
    chains: int | None = Field(default=None, ge=1, le=MAX_CHAINS)
    sweep_param: SweepParam | None = None
    sweep_values: list[Annotated[float, Field(ge=0.0, le=100.0)]] | None = Field(
        default=None, min_length=1, max_length=MAX_SWEEP_VALUES
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    # "" goes back to the operator's checkpoint (the one `ldam serve` was started with).
    checkpoint: CheckpointName | Literal[""] | None = None
    # "" clears the compare view (None means "leave as is").
    compare: CheckpointName | Literal[""] | None = None

    def changes(self) -> dict[str, Any]:
        """The fields the message actually sets; "" becomes None: for `checkpoint` the
        operator's checkpoint, for `compare` no compare view."""
        out = self.model_dump(exclude_none=True, exclude={"type"})
        for name in ("checkpoint", "compare"):
            if out.get(name) == "":
                out[name] = None
        return out


class AckMessage(BaseModel):
    """``{"type": "ack", "seq": N}``: the browser has shown frame N (and all before it)."""

    model_config = _STRICT

    type: Literal["ack"]
    seq: int = Field(ge=0, le=2**53)


class ResetMessage(BaseModel):
    """``{"type": "reset"}``: restart every chain from fresh noise."""

    model_config = _STRICT

    type: Literal["reset"]


class ShakeMessage(BaseModel):
    """``{"type": "shake"}``: multiply the temperature by `factor` for `seconds`, then restore.

    The paper's annealing to move chains between modes.
    """

    model_config = _STRICT

    type: Literal["shake"]
    factor: float = Field(default=10.0, ge=1.0, le=1000.0)
    seconds: float = Field(default=1.0, ge=0.05, le=30.0)


class DiscRestartMessage(BaseModel):
    """``{"type": "disc_restart"}``: restart the discriminator trainer after it failed."""

    model_config = _STRICT

    type: Literal["disc_restart"]


ClientMessage = Annotated[
    SetMessage | AckMessage | ResetMessage | ShakeMessage | DiscRestartMessage,
    Field(discriminator="type"),
]
_CLIENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientMessage)


class MessageError(UserError):
    """A browser message that cannot be used; `field` names the offending field."""

    def __init__(self, message: str, field: str = "message") -> None:
        super().__init__(message, field)

    def payload(self) -> dict[str, str]:
        """The ``error`` message sent back to the browser."""
        return {"type": "error", "field": self.field, "message": self.message}


_FIELD_PART = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*|\d+)$")

NESTED_TOO_DEEPLY = (
    f"The message is nested too deeply; the limit is {MAX_JSON_DEPTH} levels of brackets."
)


def _decode_json_bytes(raw: bytes) -> str:
    # The same decoding as `json.loads` on bytes (UTF-8, -16 or -32, found from the first bytes).
    return raw.decode(json.detect_encoding(raw), "surrogatepass")


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True when the brackets (``[`` and ``{``) outside strings nest deeper than `limit`.

    A linear scan that needs no valid JSON: a truncated or malformed text gets the same
    verdict as its well-formed prefix would. Brackets inside strings (backslash escapes
    included) do not count.
    """
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def parse_client_message(raw: str | bytes) -> BaseModel:
    """Parse one browser message (text or bytes) into its model, or raise `MessageError`.

    The error names the first offending field (``type`` when the kind is unknown, ``message``
    when the text is not a JSON object or larger than `MAX_MESSAGE_BYTES`).
    """
    if isinstance(raw, str):
        size = len(raw.encode("utf-8", errors="replace"))
    else:
        size = len(raw)
    if size > MAX_MESSAGE_BYTES:
        raise MessageError(f"The message is {size} bytes; the limit is {MAX_MESSAGE_BYTES} bytes.")
    try:
        text = raw if isinstance(raw, str) else _decode_json_bytes(raw)
    except UnicodeDecodeError:
        raise MessageError("The message is not valid JSON.") from None
    # Checked on the text before parsing, so the verdict never depends on the stack depth.
    if json_depth_exceeds(text, MAX_JSON_DEPTH):
        raise MessageError(NESTED_TOO_DEEPLY)
    try:
        data = json.loads(text)
    except ValueError:
        raise MessageError("The message is not valid JSON.") from None
    if not isinstance(data, dict):
        raise MessageError("The message must be a JSON object with a 'type' field.")
    try:
        return _CLIENT_ADAPTER.validate_python(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(part) for part in first["loc"]]
        # For a tagged union pydantic puts the tag first ("set", "temperature"); drop it, and
        # the names of union members ("function-after[...]", "constrained-str") it adds.
        if len(loc) > 1 and loc[0] == data.get("type"):
            loc = loc[1:]
        loc = [part for part in loc if _FIELD_PART.match(part)]
        field = ".".join(loc) or "type"
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field = "type"
            text = "The field 'type' must be one of: set, ack, reset, shake, disc_restart."
        else:
            text = f"The field '{field}' is invalid: {first['msg']}."
        raise MessageError(text, field) from None


# Binary frames: >I header length, the header as UTF-8 JSON, then the panels' JPEG bytes
# back to back (the header gives each panel's byte count).
_HEADER_LENGTH = struct.Struct(">I")


def encode_frame(header: dict[str, Any], images: list[bytes]) -> bytes:
    """One binary websocket message: 4-byte big-endian header length, JSON header, images.

    `header["panels"]` must hold one dict per image; its ``bytes`` field is filled in here.
    """
    panels = header.get("panels", [])
    if len(panels) != len(images):
        raise ValueError(f"The header lists {len(panels)} panels but {len(images)} images came.")
    for panel, image in zip(panels, images, strict=True):
        panel["bytes"] = len(image)
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_HEADER_LENGTH.pack(len(head)), head, *images])


def decode_frame(message: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Split a binary frame message into its header and the JPEG bytes of each panel."""
    (length,) = _HEADER_LENGTH.unpack_from(message, 0)
    start = _HEADER_LENGTH.size
    header = json.loads(message[start : start + length])
    images = []
    offset = start + length
    for panel in header["panels"]:
        images.append(message[offset : offset + panel["bytes"]])
        offset += panel["bytes"]
    return header, images
