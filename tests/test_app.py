"""The web app and its protocol through FastAPI's TestClient, with the real worker process.

Frames arrive with headers, a control changes the parameters and the frames made after it
carry the new version, the ack window holds back a third frame, bad messages are answered
with the field named while the stream goes on, a killed worker comes back, the layer picker
and the compare view work, and `run_server` refuses bad starts with one sentence. Worker
faults: a worker that dies before it is ever ready ends the start with its last error, one that
dies after keeps being restarted with the error shown, and a hung one (SIGSTOP) is replaced.

The worker entries of the fault tests (`tests.support.crashing_worker`, ...) run in spawned
worker processes.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from ldam.web.app import create_app
from ldam.web.broadcast import Client
from ldam.web.config import ServeConfig, ServeError, parse_target_option
from ldam.web.hub import Hub
from ldam.web.serve import run_server
from ldam.web.store import ParamStore
from ldam.web.supervisor import HEARTBEAT_TIMEOUT_S
from ldam.wire.events import Rejected, SetParams
from ldam.wire.link import WorkerConfig
from ldam.wire.messages import decode_frame
from ldam.wire.params import SamplerParams, SetMessage
from tests.support import PAIR, REPO, free_port, lenet_folder, proc_alive

ORIGIN = "http://127.0.0.1:8000"
WS_URL = "ws://127.0.0.1:8000/ws"  # TestClient sends the Host of the URL it is given


class Socket:
    """A TestClient websocket with the page's habits: decode frames, keep the newest texts."""

    def __init__(self, client: TestClient) -> None:
        self.context = client.websocket_connect(
            WS_URL, headers={"origin": ORIGIN}, subprotocols=["ldam"]
        )
        self.ws = self.context.__enter__()
        self.latest: dict[str, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []

    def close(self) -> None:
        self.context.__exit__(None, None, None)

    def next(self) -> dict[str, Any]:
        """The next message; a frame becomes {"type": "frame", "header": ..., "images": ...}."""
        message = self.ws.receive()
        if message.get("bytes") is not None:
            header, images = decode_frame(message["bytes"])
            return {"type": "frame", "header": header, "images": images}
        data = json.loads(message["text"])
        self.latest[data["type"]] = data
        if data["type"] == "error":
            self.errors.append(data)
        return data

    def until(self, predicate: Any, limit: int = 400) -> dict[str, Any]:
        """Read (acknowledging frames) until `predicate(message)`; at most `limit` messages
        (metrics alone come 4 times a second, so the limit is also a time bound)."""
        for _ in range(limit):
            message = self.next()
            if message["type"] == "frame":
                self.ack(message["header"]["seq"])
            if predicate(message):
                return message
        raise AssertionError(f"not seen in {limit} messages; newest: {self.latest}")

    def frame(self, min_version: int = 0) -> dict[str, Any]:
        return self.until(lambda m: m["type"] == "frame" and m["header"]["version"] >= min_version)

    def ack(self, seq: int) -> None:
        self.ws.send_text(json.dumps({"type": "ack", "seq": seq}))

    def send(self, message: dict[str, Any] | str) -> None:
        self.ws.send_text(message if isinstance(message, str) else json.dumps(message))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    folder = lenet_folder()
    app = create_app(
        ServeConfig(
            checkpoint=str(folder / PAIR[0]),
            checkpoints_dir=str(folder),
            device="cpu",
            params={"layout": "chains", "unit": 1, "chains": 4},
        )
    )
    with TestClient(app, base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


@pytest.fixture
def sock(client: TestClient) -> Iterator[Socket]:
    s = Socket(client)
    yield s
    s.close()


def test_frames_arrive_with_headers(sock: Socket) -> None:
    message = sock.frame()
    header = message["header"]
    assert set(header) >= {"seq", "time", "step", "version", "panels"}
    panel = header["panels"][0]
    assert panel["label"] == PAIR[0] and panel["target"] == "fc3:1"
    image = Image.open(io.BytesIO(message["images"][0]))
    assert image.format == "JPEG" and image.size == (panel["width"], panel["height"]) == (62, 62)
    later = sock.frame()
    assert later["header"]["seq"] > header["seq"] and later["header"]["step"] > header["step"]
    assert later["images"][0] != message["images"][0]


def test_control_changes_parameters_and_later_frames_carry_the_version(
    client: TestClient, sock: Socket
) -> None:
    old = sock.until(lambda m: m["type"] == "state")["version"]
    sock.send({"type": "set", "temperature": 0.37})
    state = sock.until(lambda m: m["type"] == "state" and m["params"]["temperature"] == 0.37)
    assert state["version"] == old + 1
    frame = sock.frame(min_version=old + 1)
    assert frame["header"]["version"] == old + 1
    served = client.get("/api/state").json()
    assert served["params"]["temperature"] == 0.37 and served["version"] == old + 1


def test_ack_window_holds_back_the_third_frame(client: TestClient, sock: Socket) -> None:
    frames = []
    metrics_after = 0
    hub: Hub = client.app.state.hub  # type: ignore[attr-defined]
    # Read without acknowledging: two frames, then only text, however many frames are made.
    while metrics_after < 8:
        message = sock.next()
        if message["type"] == "frame":
            frames.append(message["header"]["seq"])
        elif message["type"] == "metrics" and len(frames) == 2:
            metrics_after += 1
    assert len(frames) == 2
    assert hub.broadcaster.frame_seq > frames[-1] + 5  # the worker went on making frames meanwhile
    sock.ack(frames[0])
    third = sock.until(lambda m: m["type"] == "frame")
    # Latest wins: the frame sent after the ack is the newest, not the next in line.
    assert third["header"]["seq"] > frames[-1] + 5


def test_bad_messages_get_an_error_naming_the_field_and_the_stream_goes_on(sock: Socket) -> None:
    sock.frame()
    bad = [
        ('{"type": "set", "temperature": NaN}', "temperature"),
        ('{"type": "set", "window": 100001}', "window"),
        ('{"type": "set", "extra": 1}', "extra"),
        ('{"type": "jump"}', "type"),
        ("{not json", "message"),
        (json.dumps({"type": "set", "layer": "x" * 5000}), "message"),
        ('{"type": "set", "layer": "conv9"}', "layer"),
        ('{"type": "set", "unit": 10}', "unit"),
        ('{"type": "set", "checkpoint": "../../etc/passwd"}', "checkpoint"),
        ('{"type": "set", "checkpoint": "missing.pt2"}', "checkpoint"),
    ]
    for raw, field in bad:
        sock.send(raw)
        error = sock.until(lambda m: m["type"] == "error")
        assert error["field"] == field, (raw, error)
    assert (
        sock.errors[-1]["message"]
        == "Checkpoint 'missing.pt2' does not exist in the checkpoint folder."
    )
    assert sock.errors[-3]["message"] == "Layer 'fc3' has 10 units; unit must be below 10."
    assert sock.errors[-4]["message"] == "The model has no layer named 'conv9'."
    before = sock.frame()["header"]["seq"]
    assert sock.frame()["header"]["seq"] > before


def test_layer_picker_switches_units(sock: Socket) -> None:
    info = sock.until(lambda m: m["type"] == "info")
    layers = {layer["name"]: layer for layer in info["layers"]}
    assert layers["fc3"]["units"] == 10 and layers["fc1"]["units"] == 120
    assert set(info["checkpoints"]) >= set(PAIR)
    sock.send({"type": "set", "layer": "fc1", "unit": 17})
    version = sock.until(lambda m: m["type"] == "state" and m["params"]["layer"] == "fc1")[
        "version"
    ]
    frame = sock.frame(min_version=version)
    assert frame["header"]["panels"][0]["target"] == "fc1:17"
    sock.send({"type": "set", "layer": "fc3", "unit": 1})
    sock.until(lambda m: m["type"] == "state" and m["params"]["layer"] == "fc3")


def test_compare_view_shows_two_panels(sock: Socket) -> None:
    sock.send({"type": "set", "compare": PAIR[1]})
    version = sock.until(lambda m: m["type"] == "state" and m["params"]["compare"] == PAIR[1])[
        "version"
    ]
    frame = sock.frame(min_version=version)
    assert [p["label"] for p in frame["header"]["panels"]] == list(PAIR)
    assert len(frame["images"]) == 2
    sock.send({"type": "set", "compare": ""})
    version = sock.until(lambda m: m["type"] == "state" and m["params"]["compare"] is None)[
        "version"
    ]
    assert len(sock.frame(min_version=version)["images"]) == 1


class _WritesMarker:
    """Unpickling this calls `Path.write_text` on the marker: code run from a data file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path, str]]:
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture(scope="module")
def picker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    """A server started with `--trust-checkpoint` on a checkpoint outside its picker folder;
    the folder holds the averaged LeNet and a full pickle that would write a marker file."""
    import shutil

    import torch

    source = lenet_folder()
    folder = tmp_path_factory.mktemp("picker")
    shutil.copy(source / PAIR[1], folder / PAIR[1])
    marker = tmp_path_factory.mktemp("marker") / "marker.txt"
    torch.save({"state_dict": _WritesMarker(marker)}, folder / "evil.pt", pickle_protocol=2)
    assert not marker.exists()
    app = create_app(
        ServeConfig(
            checkpoint=str(source / PAIR[0]),
            checkpoints_dir=str(folder),
            device="cpu",
            trust_checkpoint=True,
            params={"layout": "chains", "unit": 1, "chains": 4},
            standby=False,
        )
    )
    with TestClient(app, base_url="http://127.0.0.1:8000") as test_client:
        yield test_client, marker


def test_operator_checkpoint_can_be_picked_again(picker: tuple[TestClient, Path]) -> None:
    s = Socket(picker[0])
    try:
        info = s.until(lambda m: m["type"] == "info" and m.get("panels"))
        assert info["operator_checkpoint"] == PAIR[0] and PAIR[0] not in info["checkpoints"]
        s.until(lambda m: m["type"] == "state" and m["params"]["checkpoint"] is None)
        s.send({"type": "set", "checkpoint": PAIR[1]})
        s.until(lambda m: m["type"] == "state" and m["params"]["checkpoint"] == PAIR[1])
        info = s.until(
            lambda m: m["type"] == "info" and m.get("panels", [{}])[0].get("label") == PAIR[1]
        )
        assert info["operator_checkpoint"] == PAIR[0]  # still offered by the picker
        # The picker's "(from the command line)" entry sends "": the operator's file again.
        s.send({"type": "set", "checkpoint": ""})
        state = s.until(lambda m: m["type"] == "state" and m["params"]["checkpoint"] is None)
        frame = s.frame(min_version=state["version"])
        assert frame["header"]["panels"][0]["label"] == PAIR[0]
        served = picker[0].get("/api/state").json()
        assert served["params"]["checkpoint"] is None
        assert served["info"]["panels"][0]["label"] == PAIR[0]
    finally:
        s.close()


def test_trust_checkpoint_does_not_cover_picks_from_the_folder(
    picker: tuple[TestClient, Path],
) -> None:
    client, marker = picker
    s = Socket(client)
    try:
        s.until(lambda m: m["type"] == "state")
        s.send({"type": "set", "checkpoint": "evil.pt"})
        error = s.until(lambda m: m["type"] == "error")
        # The loader's refusal (a full pickle needs --trust-checkpoint), not a trusted load.
        assert error["field"] == "checkpoint" and "evil.pt" in error["message"], error
        s.until(lambda m: m["type"] == "state" and m["params"]["checkpoint"] != "evil.pt")
        assert not marker.exists()
        s.frame()  # the operator's chains go on
    finally:
        s.close()
    assert not marker.exists()


def _refusal(version: int, params: dict[str, Any], sources: dict[str, Any]) -> Rejected:
    # The worker's refusal of the change to `version`: it still runs `params` with `sources`.
    message = "The model has no layer named 'nope'."
    return Rejected(version, "layer", message, params, dict(sources))


def test_an_out_of_date_refusal_keeps_the_newer_change() -> None:
    store = ParamStore(WorkerConfig(checkpoints_dir="/nonexistent"), SamplerParams())
    old = store.params.model_dump()
    start = store.version
    sent = [
        store.apply(SetMessage(type="set", layer="nope")),  # A: the worker will refuse it
        store.apply(SetMessage(type="set", temperature=0.5)),  # B, sent before A's refusal
    ]
    assert store.version == start + 2
    assert [command.version for command in sent if command is not None] == [start + 1, start + 2]
    # A's refusal is out of date: B stays, nothing is re-sent.
    assert store.on_rejected(_refusal(start + 1, old, store.sources)) is None
    assert store.version == start + 2
    assert store.params.temperature == 0.5 and store.params.layer == "nope"
    # The worker refuses B too (it still holds A's layer): that refusal is current and rolls
    # back to what the worker runs, under a new version that is sent to the worker.
    command = store.on_rejected(_refusal(start + 2, old, store.sources))
    assert store.version == start + 3 and store.params.model_dump() == old
    assert command == SetParams(start + 3, old, dict(store.sources))


def test_every_refusal_is_shown_to_the_browsers() -> None:
    hub = Hub(WorkerConfig(checkpoints_dir="/nonexistent"), SamplerParams(), standby=False)
    watcher = Client(None)  # type: ignore[arg-type]
    hub.broadcaster.add(watcher)
    old = hub.store.params.model_dump()
    start = hub.store.version
    hub.apply(SetMessage(type="set", layer="nope"))
    hub.apply(SetMessage(type="set", temperature=0.5))
    hub.on_worker_message(_refusal(start + 1, old, hub.store.sources))
    # Out of date, so B stays; the error is shown all the same.
    assert hub.store.version == start + 2 and hub.store.params.temperature == 0.5
    error = json.loads(watcher.errors[-1])
    assert error == {
        "type": "error",
        "field": "layer",
        "message": "The model has no layer named 'nope'.",
    }
    hub.on_worker_message(_refusal(start + 2, old, hub.store.sources))
    assert len(watcher.errors) == 2 and hub.store.params.model_dump() == old
    # Every browser sees the rolled-back parameters.
    state = json.loads(watcher.slots["state"])
    assert state["version"] == start + 3 and state["params"] == old


def test_killed_worker_is_restarted_with_the_last_parameters(
    client: TestClient, sock: Socket
) -> None:
    sock.send({"type": "set", "l2_weight": 0.33})
    version = sock.until(lambda m: m["type"] == "state" and m["params"]["l2_weight"] == 0.33)[
        "version"
    ]
    before = sock.frame(min_version=version)["header"]
    pid = client.get("/api/state").json()["status"]["pid"]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    sock.until(lambda m: m["type"] == "status" and m["worker"] == "restarting")
    status = sock.until(
        lambda m: m["type"] == "status" and m["worker"] == "running" and m["pid"] != pid
    )
    assert status["restarts"] >= 1
    frame = sock.frame(min_version=version)
    print(
        f"worker SIGKILL -> first frame of its replacement after {time.monotonic() - killed:.2f} s"
    )
    header = frame["header"]
    assert header["version"] == version and header["seq"] > before["seq"]
    assert header["worker_seq"] <= before["worker_seq"]  # numbered afresh by the new worker
    assert client.get("/api/state").json()["params"]["l2_weight"] == 0.33


@pytest.mark.slow
def test_hung_worker_is_killed_and_replaced(client: TestClient, sock: Socket) -> None:
    before = client.get("/api/state").json()
    pid = before["status"]["pid"]
    last = sock.frame()["header"]["seq"]
    os.kill(pid, signal.SIGSTOP)  # alive, but silent: no metrics, no frames
    stopped = time.monotonic()
    try:
        status = sock.until(
            lambda m: m["type"] == "status" and m["worker"] == "running" and m["pid"] != pid
        )
        noticed = time.monotonic() - stopped
        frame = sock.until(lambda m: m["type"] == "frame" and m["header"]["seq"] > last)
        print(f"worker SIGSTOP -> replaced after {noticed:.1f} s, frames resume")
        assert HEARTBEAT_TIMEOUT_S == 10.0
        assert HEARTBEAT_TIMEOUT_S - 1 <= noticed <= HEARTBEAT_TIMEOUT_S + 8
        assert frame["header"]["seq"] > last
        state = client.get("/api/state").json()["status"]
        assert state["pid"] == status["pid"] != pid and state["worker"] == "running"
        assert state["restarts"] == before["status"]["restarts"] + 1
        assert (
            state["restart_reason"]
            == "The worker sent nothing for 10 s and was stopped; restarting it."
        )
        assert not proc_alive(pid)
    finally:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def serve_lenet(**overrides: Any) -> None:
    """`run_server` on the bundled plain LeNet, on a free loopback port."""
    folder = lenet_folder()
    options: dict[str, Any] = dict(
        checkpoint=str(folder / PAIR[0]),
        compare=None,
        target=None,
        data=None,
        checkpoints_dir=str(folder),
        host="127.0.0.1",
        port=free_port(),
        device="cpu",
        trust_checkpoint=False,
        token=None,
    )
    run_server(ServeConfig(**{**options, **overrides}))


def test_worker_that_never_gets_ready_ends_the_start_with_its_error() -> None:
    t0 = time.monotonic()
    with pytest.raises(ServeError) as err:
        serve_lenet(worker_entry="tests.support:crashing_worker")
    print(f"a worker failing at start: ServeError after {time.monotonic() - t0:.1f} s")
    assert str(err.value) == (
        "The worker stopped 3 times before it was ready "
        "(last error: RuntimeError: no accelerator found for this test)."
    )


def test_worker_failing_after_ready_is_restarted_and_its_error_shown() -> None:
    folder = lenet_folder()
    app = create_app(
        ServeConfig(
            checkpoint=str(folder / PAIR[0]),
            checkpoints_dir=str(folder),
            device="cpu",
            worker_entry="tests.support:ready_then_crashing_worker",
            standby=False,
        )
    )
    with TestClient(app, base_url="http://127.0.0.1:8000") as test_client:
        s = Socket(test_client)
        try:
            status = s.until(lambda m: m["type"] == "status" and m["restarts"] >= 2, limit=50)
            assert status["worker"] == "restarting"
            assert status["error"] == (
                "The worker stopped (RuntimeError: the sampler blew up); restarting it."
            )
            state = test_client.get("/api/state").json()["status"]
            assert state["restarts"] >= 2 and state["worker"] in ("restarting", "running")
            assert state["restart_reason"] == status["error"]
        finally:
            s.close()


@pytest.mark.skipif(
    Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()),
    reason="this machine has a CUDA device",
)
def test_cuda_on_a_machine_without_cuda_is_refused_at_the_first_try() -> None:
    t0 = time.monotonic()
    with pytest.raises(ServeError) as err:
        serve_lenet(device="cuda")
    took = time.monotonic() - t0
    print(f"--device cuda without CUDA: ServeError after {took:.1f} s")
    assert str(err.value) == (
        "--device cuda was asked for, but this machine has no CUDA device; use --device cpu."
    )
    assert took < 60


def test_pages_and_libraries_are_served_but_nothing_else(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<label for="temperature">' in page.text
    assert client.get("/static/main.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/vendor/uPlot.iife.min.js").status_code == 200
    assert client.get("/vendor/uPlot.min.css").status_code == 200
    for path in [
        "/static/package.json",
        "/static/..%2Fserver%2Fapp.py",
        "/vendor/uPlot.cjs.js",
        "/static/node_modules",
    ]:
        assert client.get(path).status_code == 404, path


def test_cross_origin_websocket_is_refused(client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect(WS_URL, headers={"origin": "https://evil.example"}) as ws,
    ):
        ws.receive()


def test_target_option() -> None:
    assert parse_target_option("fc3:4") == {
        "layer": "fc3",
        "unit": 4,
        "unit_end": 4,
        "layout": "chains",
    }
    assert parse_target_option("fc1:0-9")["layout"] == "range"
    # The one target grammar of `ldam sample` reads it, with the same sentences.
    with pytest.raises(ServeError) as info:
        parse_target_option("fc3")
    assert str(info.value) == "A target is LAYER:UNIT, such as fc3:7 or conv1:3@12,12; got 'fc3'."
    with pytest.raises(ServeError) as info:
        parse_target_option("fc3:9-2")
    assert str(info.value) == "The unit range in 'fc3:9-2' runs backwards; write it as 2-9."
    # A position parses, but the dashboard samples whole units: one sentence says so.
    with pytest.raises(ServeError) as info:
        parse_target_option("conv1:2@10,12")
    assert str(info.value) == (
        "The dashboard samples whole units, so the position in 'conv1:2@10,12' cannot be shown; "
        "use --target conv1:2 here, or ldam sample for a position."
    )


def test_run_server_refuses_bad_starts(tmp_path: Any) -> None:
    folder = str(lenet_folder())
    base: dict[str, Any] = dict(
        compare=None,
        target=None,
        data=None,
        checkpoints_dir=folder,
        host="127.0.0.1",
        device="cpu",
        trust_checkpoint=False,
        token=None,
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(
            ServeError,
            match=rf"^Port {port} on 127.0.0.1 is already in use; pick another with --port\.$",
        ):
            run_server(ServeConfig(checkpoint=None, port=port, **base))
    with pytest.raises(ServeError, match=r"^The checkpoint .*nothing.pt2 does not exist\.$"):
        run_server(ServeConfig(checkpoint=str(tmp_path / "nothing.pt2"), port=0, **base))
    bad = tmp_path / "garbage.pt2"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ServeError) as err:
        run_server(ServeConfig(checkpoint=str(bad), port=free_port(), **base))
    assert "garbage.pt2" in str(err.value) and "\n" not in str(err.value)


def test_the_web_server_never_imports_torch() -> None:
    code = "import sys, ldam.web.app, ldam.web.serve; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
