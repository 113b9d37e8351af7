"""Helpers shared by the web test modules: a real `ldam serve` subprocess, websocket clients,
the LeNet checkpoint pair, and worker entries for the fault tests.

`LiveServer` runs ``python -m ldam serve`` on a free loopback port; `Viewer` is a
websocket client with the page's habits; `RawClient` one on a bare socket that can stall or
vanish. `crashing_worker` and `ready_then_crashing_worker` are worker entries
(``"tests.support:crashing_worker"``) run in spawned worker processes, which import this
module: it imports no torch at the top (`lenet_folder` imports it when called).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from ldam.models.bundled import CHECKPOINT_DIR
from ldam.wire.events import Ready
from ldam.wire.messages import decode_frame

REPO = Path(__file__).resolve().parent.parent
BUNDLED = CHECKPOINT_DIR
PAIR = ("lenet_mnist.pt2", "lenet_mnist_avg.pt2")
# Starting the worker imports torch and loads the model: slow on a busy 2-core machine.
START_TIMEOUT_S = 120.0


@cache
def lenet_folder() -> Path:
    """A folder with two LeNet checkpoints named like the bundled pair: the bundled ones when
    they exist, else two exported untrained LeNets (the dashboard needs no trained weights)."""
    if all((BUNDLED / name).is_file() for name in PAIR):
        return BUNDLED
    import torch

    from ldam.models.lenet import LeNet
    from ldam.models.saving import export_checkpoint

    folder = Path(tempfile.mkdtemp(prefix="ldam-test-ckpt-"))
    for seed, name in enumerate(PAIR):
        torch.manual_seed(seed)
        export_checkpoint(LeNet(), folder / name, (1, 28, 28))
    return folder


# ImageNet's normalization, as torchvision's and timm's models expect their input.
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def tiny_rgb_checkpoint(path: Path, height: int, width: int) -> Path:
    """A colour network at its smallest, exported to `path`: one 3x3 conv (3 -> 2 channels) and
    a global average pool, two units `flat:0` and `flat:1`, random weights (seed 0), on
    `3 x height x width` inputs with ImageNet's normalization in its metadata."""
    from collections import OrderedDict

    import torch
    from torch import nn

    from ldam.models.saving import export_checkpoint

    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(conv=nn.Conv2d(3, 2, 3), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten())
    )
    return export_checkpoint(
        net, path, (3, height, width), {"normalization": IMAGENET_NORMALIZATION}
    )


@cache
def rgb224_checkpoint() -> Path:
    """A small conv net on 3x224x224 RGB with ImageNet's normalization in its metadata, random
    weights, exported once per session: the input of today's image networks at little cost.

    Its modules nest like a real network's stages: ``stem`` (``stem.0``: 3->8, 7x7, stride 4;
    ``stem.1``: ReLU) [8, 56, 56], ``stages`` (``stages.0``: 8->8 at 56x56, ``stages.1``:
    8->16, stride 2, to 28x28; each a conv ``.0`` and a ReLU ``.1``), ``pool`` (to 4x4),
    ``flatten`` and ``fc`` (256->10) [10].
    """
    from collections import OrderedDict

    import torch
    from torch import nn

    from ldam.models.saving import export_checkpoint

    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(nn.Conv2d(3, 8, 7, stride=4, padding=3), nn.ReLU()),
            stages=nn.Sequential(
                nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
            ),
            pool=nn.AdaptiveAvgPool2d(4),
            flatten=nn.Flatten(),
            fc=nn.Linear(256, 10),
        )
    )
    folder = Path(tempfile.mkdtemp(prefix="ldam-test-rgb-"))
    return export_checkpoint(
        net, folder / "rgb224.pt2", (3, 224, 224), {"normalization": IMAGENET_NORMALIZATION}
    )


# --- worker entries for the fault tests (they run in the spawned worker process) ------------


def crashing_worker(config: Any, end: Any) -> None:
    """A worker that fails at once, before "ready" (as a broken CUDA setup or import would)."""
    raise RuntimeError("no accelerator found\nfor this test")


def ready_then_crashing_worker(config: Any, end: Any) -> None:
    """A worker that reports ready, then fails: the server keeps restarting it."""
    info = {"device": "cpu", "layers": [], "input_shape": [1, 28, 28], "panels": []}
    end.outbox.put_event(Ready(config.version, config.params, info))
    time.sleep(0.2)
    raise RuntimeError("the sampler blew up")


# --- a real server and its clients -----------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class LiveServer:
    """`ldam serve` in a subprocess on a free loopback port; stdout and stderr go to files."""

    def __init__(self, tmp: Path, *args: str, token: str | None = None) -> None:
        self.port = free_port()
        self.token = token
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.origin = self.base
        tmp.mkdir(parents=True, exist_ok=True)
        self.out_path = tmp / f"server-{self.port}.out"
        self.err_path = tmp / f"server-{self.port}.err"
        cmd = [sys.executable, "-m", "ldam", "serve", "--port", str(self.port), *args]
        if token is not None:
            cmd += ["--token", token]
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base, headers=headers, trust_env=False, timeout=10)

    @property
    def pid(self) -> int:
        """The server process (uvicorn's event loop runs here)."""
        return self.proc.pid

    def output(self) -> str:
        """What the server printed so far (stdout then stderr)."""
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    def state(self) -> dict[str, Any]:
        """``GET /api/state``: parameters, version, worker status, newest frame number."""
        r = self.http.get("/api/state")
        r.raise_for_status()
        return r.json()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Wait until the worker runs and has produced a frame; returns ``/api/state``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the server exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
                )
            try:
                state = self.state()
            except httpx.HTTPError:
                time.sleep(0.3)
                continue
            if state["status"]["worker"] == "running" and state["frame_seq"] >= 0:
                return state
            time.sleep(0.3)
        raise AssertionError(
            f"the server was not ready after {timeout} s:\n{self.output()[-3000:]}"
        )

    def rss_kib(self) -> int:
        """The server process's resident memory in KiB (from /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc")

    def viewer(self, **kwargs: Any) -> Viewer:
        """A websocket client that reads (and by default acknowledges) frames."""
        return Viewer(self, **kwargs)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def running_server(folder: Path, *args: str) -> Iterator[LiveServer]:
    """A started `ldam serve` for a fixture to yield, stopped afterwards."""
    live = LiveServer(folder, *args)
    try:
        live.wait_ready()
        yield live
    finally:
        live.stop()


class Viewer:
    """A real websocket client like the page: keeps the newest state, status and metrics,
    counts frames and (with `ack=True`) acknowledges each one as the page does."""

    def __init__(
        self,
        live: LiveServer,
        ack: bool = True,
        origin: str | None = "default",
        headers: dict[str, str] | None = None,
        subprotocols: list[str] | None = None,
    ) -> None:
        if live.token and headers is None:
            headers = {"authorization": f"Bearer {live.token}"}
        self.ws: ClientConnection = connect(
            live.ws_url,
            origin=live.origin if origin == "default" else origin,  # type: ignore[arg-type]
            additional_headers=headers,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            compression=None,
            proxy=None,
            open_timeout=20,
            # A client that stopped reading never sees the server's close frame: don't wait long.
            close_timeout=2,
            max_size=2**24,
        )
        self.ack = ack
        self.frames: list[dict[str, Any]] = []
        self.texts: list[dict[str, Any]] = []
        self.latest: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        """Close the websocket with a normal close handshake."""
        self.ws.close()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        """Send a control message (a dict is sent as JSON text)."""
        self.ws.send(json.dumps(message) if isinstance(message, dict) else message)

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next message (a frame header gets ``"type": "frame"``), or None on timeout."""
        try:
            raw = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        if isinstance(raw, bytes):
            header, images = decode_frame(raw)
            header = {**header, "type": "frame", "received": time.monotonic(), "size": len(raw)}
            assert images and all(img[:2] == b"\xff\xd8" for img in images), "frames are JPEGs"
            self.frames.append(header)
            if self.ack:
                self.ws.send(json.dumps({"type": "ack", "seq": header["seq"]}))
            return header
        message = json.loads(raw)
        self.texts.append(message)
        self.latest[message.get("type", "?")] = message
        return message

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """Read until a message satisfies `predicate`; fail naming `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(min(left, 1.0))
            if message is not None and predicate(message):
                return message
        raise AssertionError(f"no {what} within {timeout} s; last messages: {self.texts[-5:]}")

    def frames_for(self, seconds: float) -> list[dict[str, Any]]:
        """Read for `seconds`; the frame headers received in that time."""
        start = len(self.frames)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.receive(min(left, 0.5))
        return self.frames[start:]

    def set(self, timeout: float = 30.0, **params: Any) -> int:
        """Send ``set`` and wait for the frames made with it; returns the new version."""
        self.send({"type": "set", **params})
        state = self.wait_for(
            lambda m: (
                m["type"] == "state" and all(m["params"].get(k) == v for k, v in params.items())
            ),
            timeout,
            f"state with {params}",
        )
        version = int(state["version"])
        self.wait_for(
            lambda m: m["type"] == "frame" and m["version"] >= version, timeout, f"frame v{version}"
        )
        return version


class RawClient:
    """A websocket client on a bare socket: it can stop reading while the server writes, or
    vanish without a close frame, which a well-behaved library client never does."""

    def __init__(self, live: LiveServer, rcvbuf: int = 4096) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(20)
        self.sock.connect(("127.0.0.1", live.port))
        key = base64.b64encode(os.urandom(16)).decode()
        auth = f"Authorization: Bearer {live.token}\r\n" if live.token else ""
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: {live.origin}\r\n{auth}\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(1)
            assert chunk, "the server closed during the handshake"
            response += chunk
        assert response.startswith(b"HTTP/1.1 101"), response

    def send_text(self, text: str) -> None:
        """One masked text frame, as RFC 6455 requires of clients."""
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def vanish(self) -> None:
        """Drop the connection with a TCP reset and no websocket close frame."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@contextlib.contextmanager
def in_process_worker(params: Any, checkpoint: Path, folder: Path) -> Iterator[Any]:
    """A `Worker` for `params` (`SamplerParams`) on `checkpoint`, built in the test's own
    process with its pipes open but never read: the test drives `step_all` and `handle`
    itself. Closed when the block ends."""
    import multiprocessing as mp

    from ldam.wire.link import WorkerConfig, WorkerEnd
    from ldam.worker.process import Worker

    ctx = mp.get_context("spawn")
    command_read, command_write = ctx.Pipe(duplex=False)
    event_read, event_write = ctx.Pipe(duplex=False)
    config = WorkerConfig(
        checkpoints_dir=str(folder),
        checkpoint=str(checkpoint),
        device="cpu",
        params=params.model_dump(),
    )
    end = WorkerEnd(command_read, event_write)
    worker = Worker(config, end)
    try:
        worker.build(worker.params, worker.sources)
        worker.apply_live()
        yield worker
    finally:
        worker.close()
        end.outbox.close()
        for pipe in (command_write, event_read):
            pipe.close()
