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
import struct
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from ldam.errors import UserError
from ldam.wire.limits import MAX_JSON_DEPTH, MAX_MESSAGE_BYTES
from ldam.wire.params import STRICT, SetMessage, invalid


class AckMessage(BaseModel):
    """``{"type": "ack", "seq": N}``: the browser has shown frame N (and all before it)."""

    model_config = STRICT

    type: Literal["ack"]
    seq: int = Field(ge=0, le=2**53)


class ResetMessage(BaseModel):
    """``{"type": "reset"}``: restart every chain from fresh noise."""

    model_config = STRICT

    type: Literal["reset"]


class ShakeMessage(BaseModel):
    """``{"type": "shake"}``: multiply the temperature by `factor` for `seconds`, then restore.

    The paper's annealing to move chains between modes.
    """

    model_config = STRICT

    type: Literal["shake"]
    factor: float = Field(default=10.0, ge=1.0, le=1000.0)
    seconds: float = Field(default=1.0, ge=0.05, le=30.0)


class DiscRestartMessage(BaseModel):
    """``{"type": "disc_restart"}``: restart the discriminator trainer after it failed."""

    model_config = STRICT

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
        return error_payload(self)


def error_payload(err: UserError) -> dict[str, str]:
    """The ``error`` message for any user error: its field (``message`` when it names none)
    and its sentence."""
    return {"type": "error", "field": err.field or "message", "message": err.message}


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
        # For a tagged union pydantic puts the tag first ("set", "temperature"): dropped.
        if err.errors()[0]["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field = "type"
            text = "The field 'type' must be one of: set, ack, reset, shake, disc_restart."
        else:
            text, field = invalid(err, drop=data.get("type"))
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
