"""The websocket message models: what they accept, what they refuse, and the error texts."""

from __future__ import annotations

import json

import pytest

from server.schemas import (
    MAX_MESSAGE_BYTES,
    AckMessage,
    MessageError,
    SamplerParams,
    SetMessage,
    ShakeMessage,
    decode_frame,
    encode_frame,
    parse_client_message,
)


def refused(raw: str | bytes) -> MessageError:
    with pytest.raises(MessageError) as info:
        parse_client_message(raw)
    return info.value


def test_set_message_keeps_only_the_fields_sent() -> None:
    message = parse_client_message('{"type": "set", "temperature": 0.25, "show": "sample"}')
    assert isinstance(message, SetMessage)
    assert message.changes() == {"temperature": 0.25, "show": "sample"}


def test_compare_empty_string_clears_the_compare_view() -> None:
    message = parse_client_message('{"type": "set", "compare": ""}')
    assert isinstance(message, SetMessage)
    assert message.changes() == {"compare": None}


def test_other_kinds_parse() -> None:
    assert parse_client_message(b'{"type": "ack", "seq": 7}') == AckMessage(type="ack", seq=7)
    shake = parse_client_message('{"type": "shake"}')
    assert isinstance(shake, ShakeMessage) and shake.factor == 10.0 and shake.seconds == 1.0


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"type": "set", "temperature": NaN}', "temperature"),
        ('{"type": "set", "temperature": Infinity}', "temperature"),
        ('{"type": "set", "temperature": 1e309}', "temperature"),
        ('{"type": "set", "temperature": "nan"}', "temperature"),
        ('{"type": "set", "temperature": -1}', "temperature"),
        ('{"type": "set", "disc_weight": 1.5}', "disc_weight"),
        ('{"type": "set", "window": 0}', "window"),
        ('{"type": "set", "window": 1001}', "window"),
        ('{"type": "set", "chains": 100000}', "chains"),
        ('{"type": "set", "layer": "fc3; rm -rf /"}', "layer"),
        ('{"type": "set", "checkpoint": "../../etc/passwd"}', "checkpoint"),
        ('{"type": "set", "checkpoint": "/etc/passwd"}', "checkpoint"),
        ('{"type": "set", "compare": "x/../../y"}', "compare"),
        ('{"type": "set", "sweep_values": [0, 1, 2, 3, 4, 5, 6, 7, 8]}', "sweep_values"),
        ('{"type": "set", "sweep_values": [0, 1e400]}', "sweep_values.1"),
        ('{"type": "set", "bogus": 1}', "bogus"),
        ('{"type": "ack", "seq": -1}', "seq"),
        ('{"type": "ack"}', "seq"),
        ('{"type": "fly"}', "type"),
        ('{"seq": 1}', "type"),
        ("[1, 2]", "message"),
        ("not json", "message"),
        (b"\xff\xfe\x00", "message"),
    ],
)
def test_bad_messages_name_the_field(raw: str | bytes, field: str) -> None:
    error = refused(raw)
    assert error.field == field
    assert error.payload()["type"] == "error"
    assert error.payload()["field"] == field


def test_the_error_text_is_one_sentence_naming_the_field() -> None:
    error = refused('{"type": "set", "temperature": -1}')
    assert (
        error.message
        == "The field 'temperature' is invalid: Input should be greater than or equal to 0."
    )
    unknown = refused('{"type": "fly"}')
    assert (
        unknown.message == "The field 'type' must be one of: set, ack, reset, shake, disc_restart."
    )


def test_oversized_messages_are_refused_before_parsing() -> None:
    raw = json.dumps({"type": "set", "layer": "a" * MAX_MESSAGE_BYTES})
    error = refused(raw)
    assert error.field == "message"
    assert (
        error.message == f"The message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES} bytes."
    )


def test_grid_layouts() -> None:
    chains = SamplerParams(layout="chains", unit=3, chains=16)
    assert chains.grid() == ([3] * 16, 4)
    units = SamplerParams(layout="range", unit=0, unit_end=9, chains=20)
    assert units.grid() == (list(range(10)) * 2, 10)
    # The paper's Figure 1: columns are units, rows the discriminator weights.
    sweep = SamplerParams(layout="sweep", unit=2, unit_end=4, sweep_values=[0, 0.5, 1])
    assert sweep.grid() == ([2, 3, 4] * 3, 3)
    assert sweep.sweep_rows() == [0, 0.5, 1]
    assert SamplerParams(layout="range").sweep_rows() is None
    # Reversed bounds still give the ascending range.
    assert SamplerParams(layout="range", unit=5, unit_end=3, chains=3).grid() == ([3, 4, 5], 3)


def test_frames_round_trip() -> None:
    header = {
        "seq": 5,
        "time": 1.5,
        "step": 40,
        "version": 2,
        "panels": [{"label": "a"}, {"label": "b"}],
    }
    message = encode_frame(header, [b"\xff\xd8one", b"\xff\xd8second"])
    decoded, images = decode_frame(message)
    assert images == [b"\xff\xd8one", b"\xff\xd8second"]
    assert decoded["seq"] == 5 and decoded["panels"][1] == {"label": "b", "bytes": 8}
    assert int.from_bytes(message[:4], "big") == len(message) - 4 - 5 - 8
    with pytest.raises(ValueError, match="The header lists 2 panels but 1 images came."):
        encode_frame(header, [b"x"])
