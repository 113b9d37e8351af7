"""Fuzzing the websocket's control messages against the real server (issue 6).

At least 2,000 random and malformed messages, text and binary (JSON with the wrong types, NaN,
Infinity, 1e309, extra fields, unknown kinds, truncated, deeply nested, oversized, not UTF-8),
all on ONE websocket: every one is answered in order (a bad one with exactly the error that
`ldam.wire.messages.parse_client_message` gives, naming the field), the connection never closes,
the server logs no error, the worker never restarts, and frames still flow afterwards.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from ldam.web.security import WS_MAX_SIZE
from ldam.wire.limits import MAX_MESSAGE_BYTES
from ldam.wire.messages import NESTED_TOO_DEEPLY, MessageError, parse_client_message
from ldam.wire.params import SamplerParams, SetMessage
from tests.support import LiveServer, Viewer, running_server

FUZZ_MESSAGES = 2000

# A message the server always answers with the same error: sent after each fuzz message, its
# answer proves the fuzz message before it was handled (answers keep their order).
PROBE = '{"type":"probe"}'


def _probe_error() -> dict[str, str]:
    try:
        parse_client_message(PROBE)
    except MessageError as err:
        return err.payload()
    raise AssertionError("the probe must be a message the schema refuses")


PROBE_ERROR = _probe_error()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from running_server(tmp_path_factory.mktemp("fuzz"))


# --- strategies ------------------------------------------------------------------------------

KINDS = ["set", "ack", "reset", "shake", "disc_restart"]
FIELDS = [f for f in SetMessage.model_fields if f != "type"] + ["seq", "factor", "seconds"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
kinds = st.one_of(
    st.sampled_from(KINDS),
    st.sampled_from(KINDS),
    st.sampled_from(["", "SET", "frame", "error"]),
    json_values,
)
field_names = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(FIELDS),
    st.sampled_from(["extra", "__proto__", "type", ""]),
    st.text(max_size=12),
)

# In-bounds values, so that a good share of messages is valid and reaches the worker.
valid_set = st.fixed_dictionaries(
    {"type": st.just("set")},
    optional={
        "temperature": st.floats(0.0, 2.0),
        "step_size": st.floats(1e-4, 1.0),
        "momentum": st.floats(0.0, 0.99),
        "l2_weight": st.floats(0.0, 10.0),
        "disc_weight": st.floats(0.0, 1.0),
        "window": st.integers(1, 1000),
        "normalize": st.sampled_from(["none", "regularizers", "all"]),
        "show": st.sampled_from(["sample", "average"]),
        "view": st.sampled_from(["auto", "symmetric", "input"]),
        "disc_training": st.booleans(),
        "unit": st.integers(0, 9),
        "unit_end": st.integers(0, 9),
        "layout": st.sampled_from(["chains", "range", "sweep"]),
        "chains": st.integers(1, 32),
        "seed": st.integers(0, 2**31 - 1),
    },
)
valid_other = st.one_of(
    st.builds(lambda s: {"type": "ack", "seq": s}, st.integers(0, 2**53)),
    st.just({"type": "reset"}),
    st.builds(
        lambda f, s: {"type": "shake", "factor": f, "seconds": s},
        st.floats(1.0, 5.0),
        st.floats(0.05, 0.5),
    ),
    st.just({"type": "disc_restart"}),
)
# A known kind with random fields and values: wrong types, NaN, extra fields.
wrong_fields = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    kinds,
    st.dictionaries(field_names, json_values, max_size=5),
)
bad_number_literals = st.sampled_from(
    [
        "NaN",
        "-NaN",
        "Infinity",
        "-Infinity",
        "1e309",
        "-1e309",
        "1e-400",
        "0x10",
        "+1",
        ".5",
        '"0.5"',
        "null",
        "true",
        "[]",
        "{}",
        "1" + "0" * 400,
        "01",
        "1_000",
        '"nan"',
        '"inf"',
    ]
)
bad_numbers = st.builds(
    lambda field, literal: f'{{"type":"set","{field}":{literal}}}',
    st.sampled_from(FIELDS),
    bad_number_literals,
)


def _dumps(message: Any) -> str:
    return json.dumps(message, allow_nan=True)


valid_text = st.one_of(valid_set, valid_other).map(_dumps)
as_text = st.one_of(valid_set, valid_other, wrong_fields).map(_dumps)
truncated = st.builds(
    lambda text, cut: text[: max(0, int(len(text) * cut))], as_text, st.floats(0.0, 0.99)
)
nested = st.builds(
    lambda depth, opener: '{"type":"set","layer":' + opener * depth,
    st.integers(1, 4000),
    st.sampled_from(["[", '{"a":']),
).map(lambda text: text[:MAX_MESSAGE_BYTES])
oversized = st.builds(
    lambda message, size: _dumps({**message, "pad": "x" * size}),
    valid_set,
    st.integers(MAX_MESSAGE_BYTES, WS_MAX_SIZE - 2000),
)
random_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300)
text_messages = st.one_of(
    valid_text,
    valid_text,
    wrong_fields.map(_dumps),
    wrong_fields.map(_dumps),
    bad_numbers,
    bad_numbers,
    truncated,
    nested,
    oversized,
    random_text,
)
binary_messages = st.one_of(
    st.binary(max_size=300),
    as_text.map(str.encode),
    st.builds(lambda text: text.encode("utf-16"), as_text),
    st.binary(min_size=MAX_MESSAGE_BYTES + 1, max_size=MAX_MESSAGE_BYTES + 3000),
)
messages = st.one_of(text_messages, text_messages, text_messages, binary_messages)


# --- the checks ------------------------------------------------------------------------------


def expected_error(raw: str | bytes) -> dict[str, str] | None:
    """The error the server must answer `raw` with, or None when its schema accepts it."""
    # The verdict is the same here as in the server, whatever the stack depth: nesting is
    # limited before parsing (`MAX_JSON_DEPTH`), so json's recursion limit is never reached.
    try:
        parse_client_message(raw)
    except MessageError as err:
        return err.payload()
    return None


def answer(v: Viewer, raw: str | bytes) -> dict[str, Any] | None:
    """Send `raw` then the probe; read until the probe's answer. Returns the error answering
    `raw` (None when there was none) and fails if the connection closes."""
    expected = expected_error(raw)
    v.send(raw)
    v.send(PROBE)
    errors: list[dict[str, Any]] = []
    need = 2 if expected is not None and _same(expected, PROBE_ERROR) else 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = v.receive(timeout=5)
        if message is None or message["type"] != "error":
            continue
        errors.append(message)
        if sum(_same(e, PROBE_ERROR) for e in errors) >= need:
            break
    else:
        raise AssertionError(f"no answer within 30 s to {raw[:200]!r}")
    errors.pop()  # the probe's own answer
    if expected is None:
        return errors[0] if errors else None
    assert errors and any(_same(e, expected) for e in errors), (
        f"{raw[:200]!r} should be answered with {expected}, got {errors}"
    )
    return expected


def _same(got: dict[str, Any], want: dict[str, Any]) -> bool:
    return all(got.get(k) == v for k, v in want.items())


@pytest.mark.slow
def test_fuzz_control_messages(server: LiveServer) -> None:
    start_state = server.state()
    counts = {"sent": 0, "text": 0, "binary": 0, "refused": 0, "accepted": 0, "oversized": 0}
    v = server.viewer(ack=False)

    @settings(
        max_examples=FUZZ_MESSAGES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )
    @given(raw=messages)
    def one(raw: str | bytes) -> None:
        try:
            error = answer(v, raw)
        except ConnectionClosed as closed:
            raise AssertionError(
                f"the server closed the websocket after {raw[:200]!r}: {closed}"
            ) from None
        counts["sent"] += 1
        counts["binary" if isinstance(raw, bytes) else "text"] += 1
        counts["refused" if error is not None else "accepted"] += 1
        size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
        counts["oversized"] += size > MAX_MESSAGE_BYTES

    t0 = time.monotonic()
    one()
    elapsed = time.monotonic() - t0
    print(
        f"fuzz: {counts['sent']} messages ({counts['text']} text, {counts['binary']} binary, "
        f"{counts['oversized']} oversized) in {elapsed:.1f} s: {counts['refused']} refused with "
        f"the field named, {counts['accepted']} accepted, 0 connections closed"
    )
    assert counts["sent"] >= FUZZ_MESSAGES
    assert counts["refused"] > 0.3 * counts["sent"] and counts["accepted"] > 0.05 * counts["sent"]
    # The stream still runs: restore sane settings and watch frames on the same socket.
    v.ack = True
    defaults = SamplerParams().model_dump()
    live_fields = ["temperature", "step_size", "momentum", "l2_weight", "disc_weight", "window"]
    live_fields += ["normalize", "show", "view", "disc_training", "paused", "layout", "chains"]
    v.set(**{name: defaults[name] for name in live_fields}, unit=0, unit_end=9)
    frames = v.frames_for(3.0)
    v.close()
    end_state = server.state()
    print(f"after the fuzz: {len(frames)} frames in 3 s, parameter version {end_state['version']}")
    assert len(frames) >= 3 and frames[-1]["seq"] > frames[0]["seq"]
    assert end_state["status"]["worker"] == "running"
    assert end_state["status"]["restarts"] == start_state["status"]["restarts"], server.output()[
        -4000:
    ]
    assert end_state["status"]["pid"] == start_state["status"]["pid"]
    log = server.output()
    assert "Traceback" not in log and "Exception" not in log and " 500" not in log, log[-3000:]


def test_deeply_nested_json_is_answered(server: LiveServer) -> None:
    # 3,000 nested arrays fit in the 4,096-byte limit and blow Python's recursion limit.
    with server.viewer(ack=False) as v:
        error = answer(v, '{"type":"set","layer":' + "[" * 3000)
        assert error == {"type": "error", "field": "message", "message": NESTED_TOO_DEEPLY}
        assert NESTED_TOO_DEEPLY == (
            "The message is nested too deeply; the limit is 8 levels of brackets."
        )
        assert answer(v, '{"type":"set","temperature":NaN}') == {
            "type": "error",
            "field": "temperature",
            "message": "temperature must be a finite number, got nan.",
        }


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e309"])
def test_non_finite_numbers_are_refused(server: LiveServer, literal: str) -> None:
    assert not math.isfinite(float(literal))
    with server.viewer(ack=False) as v:
        before = server.state()
        error = answer(v, f'{{"type":"set","step_size":{literal}}}')
        assert error is not None and error["field"] == "step_size"
        after = server.state()
        assert after["params"]["step_size"] == before["params"]["step_size"]
        assert after["version"] == before["version"]


def test_huge_message_closes_only_that_connection(server: LiveServer) -> None:
    with server.viewer() as bystander, server.viewer(ack=False) as v:
        v.send("x" * (WS_MAX_SIZE + 1))
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(200):
                v.ws.recv(timeout=10)
        code = closed.value.rcvd.code if closed.value.rcvd else None
        print(f"a {WS_MAX_SIZE + 1}-byte message: that websocket closed with code {code}")
        assert code == 1009
        frames = bystander.frames_for(2.0)
        assert len(frames) >= 2
        assert server.state()["status"]["worker"] == "running"
