"""The websocket message models: what they accept, what they refuse, and the error texts."""

from __future__ import annotations

import json
import sys

import pytest
from pydantic import ValidationError

from ldam.errors import UserError
from ldam.web import security
from ldam.wire import limits
from ldam.wire.limits import MAX_JSON_DEPTH, MAX_MESSAGE_BYTES
from ldam.wire.messages import (
    NESTED_TOO_DEEPLY,
    AckMessage,
    MessageError,
    ShakeMessage,
    decode_frame,
    encode_frame,
    json_depth_exceeds,
    parse_client_message,
)
from ldam.wire.params import (
    STRUCTURAL_FIELDS,
    SamplerParams,
    SetMessage,
    check_layer_and_units,
    grid_columns,
    grid_rows,
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
        ('{"type": "set", "window": 100001}', "window"),
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
    # A setting's refusal is the settings model's own sentence, as on the command line.
    error = refused('{"type": "set", "temperature": -1}')
    assert (error.field, error.message) == (
        "temperature",
        "temperature must be in [0, 100], got -1.",
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


# --- strict types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (
            '{"type": "set", "temperature": "0.5"}',
            "temperature",
            "temperature must be a number, got '0.5'.",
        ),
        (
            '{"type": "set", "temperature": true}',
            "temperature",
            "temperature must be a number, got True.",
        ),
        (
            '{"type": "set", "normalize": "yes"}',
            "normalize",
            "normalize must be one of none, regularizers, all, got 'yes'.",
        ),
        (
            '{"type": "set", "paused": 1}',
            "paused",
            "The field 'paused' is invalid: Input should be a valid boolean.",
        ),
        (
            '{"type": "set", "window": 20.0}',
            "window",
            "window must be a whole number, got 20.0.",
        ),
        (
            '{"type": "set", "sweep_values": [0, "1"]}',
            "sweep_values.1",
            "The field 'sweep_values.1' is invalid: Input should be a valid number.",
        ),
        (
            '{"type": "ack", "seq": "3"}',
            "seq",
            "The field 'seq' is invalid: Input should be a valid integer.",
        ),
        (
            '{"type": "shake", "factor": "2"}',
            "factor",
            "The field 'factor' is invalid: Input should be a valid number.",
        ),
    ],
)
def test_no_lax_coercion(raw: str, field: str, message: str) -> None:
    error = refused(raw)
    assert (error.field, error.message) == (field, message)


def test_json_integers_are_valid_floats() -> None:
    # JSON has no separate 1 and 1.0: a user typing 1 means the float 1.0.
    message = parse_client_message('{"type": "set", "temperature": 1, "sweep_values": [0, 1]}')
    assert isinstance(message, SetMessage)
    assert message.changes() == {"temperature": 1.0, "sweep_values": [0.0, 1.0]}
    assert isinstance(message.temperature, float)
    shake = parse_client_message('{"type": "shake", "factor": 2, "seconds": 1}')
    assert isinstance(shake, ShakeMessage) and shake.factor == 2.0
    assert SamplerParams.model_validate({"temperature": 1}).temperature == 1.0


def test_the_parameter_model_is_strict_too() -> None:
    with pytest.raises(ValidationError, match="temperature must be a number, got '0.5'."):
        SamplerParams.model_validate({"temperature": "0.5"})
    with pytest.raises(ValidationError, match="Input should be a valid boolean"):
        SamplerParams.model_validate({"paused": "yes"})


# --- nesting depth ---------------------------------------------------------------------------


def _nested(depth: int) -> str:
    return '{"type": "set", "layer": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def test_nesting_deeper_than_the_limit_is_refused_before_parsing() -> None:
    assert MAX_JSON_DEPTH == 8
    deep = refused(_nested(9))
    assert (deep.field, deep.message) == ("message", NESTED_TOO_DEEPLY)
    assert NESTED_TOO_DEEPLY == (
        "The message is nested too deeply; the limit is 8 levels of brackets."
    )
    # 8 levels are parsed: the answer is about the field, not the nesting.
    assert refused(_nested(8)).field == "layer"
    # Brackets inside strings do not count, escaped quotes included.
    inside = refused('{"type": "set", "layer": "[[[[[[[[[[\\"[[[[[[[[[["}')
    assert inside.field == "layer"
    # Unclosed (truncated) nesting gets the same verdict.
    assert refused('{"type":"set","layer":' + "[" * 4000).message == NESTED_TOO_DEEPLY
    assert refused(b'{"a":' * 9).message == NESTED_TOO_DEEPLY


def test_depth_5000_is_refused_whatever_the_stack_depth() -> None:
    text = '{"type":"set","layer":' + "[" * 5000
    assert json_depth_exceeds(text, MAX_JSON_DEPTH)
    assert not json_depth_exceeds(_nested(8), MAX_JSON_DEPTH)
    # 5,000 brackets are over the size limit, which is checked first.
    assert refused(text).message == (
        f"The message is {len(text)} bytes; the limit is {MAX_MESSAGE_BYTES} bytes."
    )
    # A 4,000-deep message within the size limit: the same answer near the top of the stack
    # and near the recursion limit (json's own RecursionError would depend on that).
    fits = text[:MAX_MESSAGE_BYTES]
    answers = [refused(fits).payload()]

    def deep_call(n: int) -> None:
        if n:
            deep_call(n - 1)
        else:
            answers.append(refused(fits).payload())

    deep_call(sys.getrecursionlimit() - 200)
    assert answers == [{"type": "error", "field": "message", "message": NESTED_TOO_DEEPLY}] * 2


def test_the_parser_enforces_the_limits_of_ldam_wire_limits_to_the_byte() -> None:
    # The limits SECURITY.md promises are those of `ldam.wire.limits`: a message of exactly
    # MAX_MESSAGE_BYTES bytes is read (its answer is about a field), one byte more is refused
    # with a sentence naming that limit, counted in UTF-8 bytes for text and for bytes alike.
    def with_size(size: int, filler: str) -> str:
        head = '{"type": "set", "layer": "'
        room = size - len(head.encode()) - len(b'"}')
        return head + filler * (room // len(filler.encode())) + '"}'

    limit = limits.MAX_MESSAGE_BYTES
    for filler in ("a", "\u00e9"):  # 1 and 2 bytes a character
        fits = with_size(limit, filler)
        assert len(fits.encode()) == limit
        assert refused(fits).field == "layer"
        assert refused(fits.encode()).field == "layer"
        over = fits[:-2] + filler + '"}'
        size = len(over.encode())
        assert size in (limit + 1, limit + 2)
        for raw in (over, over.encode()):
            error = refused(raw)
            assert (error.field, error.message) == (
                "message",
                f"The message is {size} bytes; the limit is {limit} bytes.",
            )
    # Nesting: exactly MAX_JSON_DEPTH levels are read, one more is refused.
    assert refused(_nested(limits.MAX_JSON_DEPTH)).field == "layer"
    assert refused(_nested(limits.MAX_JSON_DEPTH + 1)).message == NESTED_TOO_DEEPLY
    assert str(limits.MAX_JSON_DEPTH) in NESTED_TOO_DEEPLY
    # Every message the parser answers reaches it: the websocket's own cap, which closes the
    # connection instead of answering, lies well above the message limit.
    assert security.WS_MAX_SIZE > limits.MAX_MESSAGE_BYTES


def test_set_message_has_every_parameter_with_the_same_bounds() -> None:
    # SetMessage is made from SamplerParams: the same fields, each optional, the same bounds.
    assert set(SetMessage.model_fields) == {"type", *SamplerParams.model_fields}
    for name, low, high in [
        ("temperature", 0.0, 100.0),
        ("momentum", 0.0, 0.999),
        ("disc_weight", 0.0, 1.0),
        ("window", 1, 100_000),
        ("chains", 1, 256),
    ]:
        SetMessage.model_validate({"type": "set", name: high})
        SamplerParams.model_validate({name: low, "replicas": 0})  # T 0 needs no replicas
        for bad in (type(high)(high * 2 + 1), -1):
            with pytest.raises(ValidationError):
                SetMessage.model_validate({"type": "set", name: bad})
            with pytest.raises(ValidationError):
                SamplerParams.model_validate({name: bad})


def test_grid_columns_is_one_rule_for_the_page_and_the_png() -> None:
    # 20 chains on one unit: 5 columns of 4 rows, in the dashboard and in `ldam sample --png`.
    assert grid_columns(20, 1) == 5 and grid_rows(20, 5) == 4
    assert SamplerParams(layout="chains", chains=20).grid()[1] == 5
    assert [grid_columns(n, 1) for n in (1, 2, 4, 10, 16, 17)] == [1, 2, 2, 4, 4, 5]
    assert grid_columns(20, 10) == 10 and grid_rows(10, 4) == 3


def test_layer_and_unit_rule_names_the_field_and_the_limit() -> None:
    layers = {"fc3": 10, "conv1": 6}
    check_layer_and_units(layers, "fc3", {"unit": 0, "unit_end": 9})
    with pytest.raises(UserError) as info:
        check_layer_and_units(layers, "fc9", {})
    assert (info.value.field, str(info.value)) == ("layer", "The model has no layer named 'fc9'.")
    with pytest.raises(UserError) as info:
        check_layer_and_units(layers, "conv1", {"unit": 2, "unit_end": 6})
    assert (info.value.field, str(info.value)) == (
        "unit_end",
        "Layer 'conv1' has 6 units; unit_end must be below 6.",
    )


def test_view_is_a_display_setting_with_the_images_names() -> None:
    # Switching the view redraws the same chains, it rebuilds nothing (test_images checks
    # that the names are those of `ldam.sampling.images.VIEWS`).
    # auto is the default (resolved per panel by the worker: `ldam.wire.views.resolve_view`).
    assert SamplerParams().view == "auto" and "view" not in STRUCTURAL_FIELDS
    for view in ("auto", "symmetric", "input"):
        message = parse_client_message(f'{{"type": "set", "view": "{view}"}}')
        assert isinstance(message, SetMessage) and message.changes() == {"view": view}
    error = refused('{"type": "set", "view": "sideways"}')
    assert (error.field, error.message) == (
        "view",
        "The field 'view' is invalid: Input should be 'auto', 'symmetric' or 'input'.",
    )
    with pytest.raises(ValidationError):
        SetMessage.model_validate({"type": "set", "view": "raw"})
