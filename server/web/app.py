"""The dashboard's web server: FastAPI routes, one websocket per browser, the worker's keeper.

The server never runs torch: it holds the parameters the browsers set (with a version number
that grows on every change), forwards them to the worker process through `ldam.wire.link`, and
fans the worker's frames and metrics out to every browser.

Worker faults: a worker that dies is restarted with the last parameters (browsers see a
``status`` message with the reason and keep their connection); one that stays silent for
`HEARTBEAT_TIMEOUT_S` once it has started (hung, or stopped with SIGSTOP) is killed and
restarted the same way. Before the first worker was ever ready, `MAX_DEATHS_BEFORE_READY`
deaths in a row end the start: `run_server` raises `ServeError` with the worker's last error.

Per-client flow control: each websocket has one sender task that sends the newest frame only
while fewer than `MAX_FRAMES_IN_FLIGHT` frames await the browser's ``ack``; a slow browser
therefore skips frames (it always gets the newest one) and never slows other browsers or the
worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.resources
import json
import signal
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import ValidationError
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ldam.errors import UserError
from ldam.models.bundled import CHECKPOINT_DIR, DEFAULT_PAIR
from ldam.web import security
from ldam.wire.events import (
    Died,
    Frame,
    Metrics,
    Notice,
    Ready,
    Rejected,
    Reset,
    RestartDiscriminator,
    SetParams,
    Shake,
    Viewers,
)
from ldam.wire.link import WORKER_ENTRY, Message, Standby, WorkerConfig, WorkerLink
from ldam.wire.messages import (
    AckMessage,
    DiscRestartMessage,
    MessageError,
    ResetMessage,
    ShakeMessage,
    encode_frame,
    parse_client_message,
)
from ldam.wire.params import SamplerParams, SetMessage
from ldam.wire.targets import TargetError, parse_target

# The page: frontend/ in a source checkout, ldam/frontend/ in an installed wheel.
FRONTEND = Path(str(importlib.resources.files("ldam.frontend")))
DEFAULT_CHECKPOINTS = CHECKPOINT_DIR
# The only files served from node_modules: the chart library's built script and styles.
VENDOR_FILES = {
    "uPlot.iife.min.js": FRONTEND / "node_modules" / "uplot" / "dist" / "uPlot.iife.min.js",
    "uPlot.min.css": FRONTEND / "node_modules" / "uplot" / "dist" / "uPlot.min.css",
}
_STATIC_SUFFIXES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
MAX_FRAMES_IN_FLIGHT = security.MAX_FRAMES_IN_FLIGHT
# A worker that dies again this soon after its start is restarted after a growing pause.
_QUICK_DEATH_S = 5.0
_MAX_RESTART_PAUSE_S = 4.0
# A started worker sends metrics 4 times a second, also while paused; silence this long means
# it hangs (or was stopped with SIGSTOP): it is killed and restarted.
HEARTBEAT_TIMEOUT_S = 10.0
# Before its first message a worker imports torch and loads the checkpoint: allow it longer.
WORKER_START_TIMEOUT_S = 120.0
# How often the watchdog looks.
_WATCHDOG_EVERY_S = 0.5
# Until a first worker was ready, this many deaths in a row (each before "ready") end the start.
MAX_DEATHS_BEFORE_READY = 3
_DEFAULTS = SamplerParams().model_dump()


class ServeError(UserError):
    """The dashboard cannot start; the message is one sentence for the user."""


def parse_target_option(target: str | None) -> dict[str, Any]:
    """The parameter fields that ``--target LAYER:UNIT`` or ``LAYER:A-B`` sets.

    The one target grammar (`ldam.wire.targets.parse_target`) reads it. ``LAYER:UNIT`` gives
    the "one unit, many chains" layout, ``LAYER:A-B`` one column per unit. The dashboard shows
    whole units, so a position (``C@Y,X``) is refused with a pointer to ``ldam sample``.
    """
    if target is None:
        return {}
    try:
        spec = parse_target(target)
    except TargetError as err:
        raise ServeError(str(err)) from None
    if spec.position is not None:
        raise ServeError(
            f"The dashboard samples whole units, so the position in {target!r} cannot be shown; "
            f"use --target {spec.layer or 'output'}:{spec.first} here, or ldam sample for a position."
        )
    layer = spec.layer or "output"
    layout = "chains" if spec.first == spec.last else "range"
    return {"layer": layer, "unit": spec.first, "unit_end": spec.last, "layout": layout}


class Client:
    """One browser's websocket: what it has been sent, what it acknowledged, what waits.

    Only `run_sender` writes to the socket, so frames and text never interleave badly.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.wake = asyncio.Event()
        self.unacked: deque[int] = deque()
        self.last_sent_seq = -1
        # Latest-wins slots per text kind (a stale state or metrics message is useless) and an
        # ordered queue for errors, bounded so a client that never reads cannot grow it.
        self.slots: dict[str, str] = {}
        self.errors: deque[str] = deque(maxlen=32)
        self.frames_sent = 0
        self.closed = False

    def post(self, kind: str, text: str) -> None:
        """Queue a text message; for kinds other than ``error`` only the newest is kept."""
        if kind == "error":
            self.errors.append(text)
        else:
            self.slots[kind] = text
        self.wake.set()

    def ack(self, seq: int) -> None:
        """The browser has shown frame `seq` (and so every earlier one)."""
        while self.unacked and self.unacked[0] <= seq:
            self.unacked.popleft()
        self.wake.set()


class Hub:
    """The server's state: parameters and version, the worker, the newest frame, the clients."""

    def __init__(
        self,
        config: WorkerConfig,
        params: SamplerParams,
        checkpoints_dir: Path,
        worker_entry: str = WORKER_ENTRY,
        standby: bool = True,
    ) -> None:
        self.config = config
        # A warm spare worker, so that a dead one is replaced in about a second, not the
        # several seconds that importing torch takes.
        self.use_standby = standby
        self.standby: Standby | None = None
        self.params = params
        self.version = config.version
        self.checkpoints_dir = checkpoints_dir
        # The checkpoint files the worker loads: the operator's paths, or picks in the folder.
        self.sources = {"checkpoint": config.checkpoint, "compare": config.compare}
        self.worker_entry = worker_entry
        self.clients: set[Client] = set()
        self.frame: bytes | None = None
        self.frame_seq = -1
        self.texts: dict[str, str] = {}
        self.info: dict[str, Any] | None = None
        self.worker_state = "starting"
        self.restarts = 0
        self.last_error: str | None = None
        # Why the newest restart happened (kept after the new worker runs, unlike last_error).
        self.restart_reason: str | None = None
        # Set when the first worker is ready, or when the start failed for good ("failed").
        self.ready = asyncio.Event()
        # A worker has been ready at least once: from then on every death is restarted.
        self.served = False
        # The current worker has sent "ready"; deaths in a row of workers that had not.
        self.link_ready = False
        self.deaths_before_ready = 0
        # The current worker's last error line (its "died" message or start refusal).
        self.worker_error: str | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._hung_after = HEARTBEAT_TIMEOUT_S
        self.link: WorkerLink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restart_pause = 0.0
        self._closing = False
        self._told_clients = 0

    # --- worker -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker with the current parameters (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._spawn()
        self._watchdog = asyncio.create_task(self._watch())

    def _spawn(self) -> None:
        config = WorkerConfig(
            **{
                **self.config.__dict__,
                "checkpoint": self.sources["checkpoint"],
                "compare": self.sources["compare"],
                "params": self.params.model_dump(),
                "version": self.version,
                # Only the files the operator named may be loaded as trusted full pickles,
                # never a pick from the folder (the worker compares resolved paths).
                "trusted_paths": tuple(
                    p for p in (self.config.checkpoint, self.config.compare) if p is not None
                ),
            }
        )
        link = WorkerLink(config, self._from_thread, self._exit_from_thread, self.worker_entry)
        self.link = link
        self.link_ready = False
        self.worker_error = None
        standby, self.standby = self.standby, None
        link.start(standby)
        link.send(Viewers(len(self.clients)))

    async def stop(self) -> None:
        """Stop the worker (without restarting it) and close every client."""
        self._closing = True
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        link, self.link = self.link, None
        if link is not None:
            await asyncio.to_thread(link.stop)
        standby, self.standby = self.standby, None
        if standby is not None:
            await asyncio.to_thread(standby.close)
        for client in list(self.clients):
            client.closed = True
            client.wake.set()

    def _from_thread(self, message: Message) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.on_worker_message, message)

    def _exit_from_thread(self, exitcode: int | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.on_worker_exit, exitcode)

    async def _watch(self) -> None:
        """Kill a started worker that has sent nothing (metrics, frames, heartbeats) for
        `HEARTBEAT_TIMEOUT_S`; its exit then restarts it like any other death."""
        while not self._closing:
            await asyncio.sleep(_WATCHDOG_EVERY_S)
            link = self.link
            if link is None or link.hung or not link.alive():
                continue
            limit = HEARTBEAT_TIMEOUT_S if self.link_ready else WORKER_START_TIMEOUT_S
            if time.monotonic() - link.last_message_at > limit:
                self._hung_after = limit
                link.hung = True
                link.kill()

    def on_worker_exit(self, exitcode: int | None) -> None:
        """The worker died: tell the browsers and start a new one with the last parameters.

        Until a worker was ever ready, `MAX_DEATHS_BEFORE_READY` deaths in a row before
        "ready" end the start instead (`worker_state` "failed", `ready` set, no restart).
        """
        if self._closing:
            return
        if self.worker_state == "failed" and not self.served:
            # The worker refused its start (bad checkpoint, target or device): another try
            # would refuse it again; `run_server` reports the refusal.
            return
        link = self.link
        quick = link is not None and time.monotonic() - link.started_at < _QUICK_DEATH_S
        self._restart_pause = (
            min(_MAX_RESTART_PAUSE_S, self._restart_pause * 2 + 0.25) if quick else 0.0
        )
        hung = link is not None and link.hung
        why = (self.worker_error or f"exit code {exitcode}").rstrip(".")
        if not self.link_ready:
            self.deaths_before_ready += 1
        if not self.served and self.deaths_before_ready >= MAX_DEATHS_BEFORE_READY:
            self.worker_state = "failed"
            self.last_error = (
                f"The worker stopped {self.deaths_before_ready} times before it was ready "
                f"(last error: {why})."
            )
            self.ready.set()
            self.broadcast_status()
            return
        self.restarts += 1
        self.worker_state = "restarting"
        if hung:
            self.last_error = (
                f"The worker sent nothing for {self._hung_after:g} s and was stopped; "
                "restarting it."
            )
        else:
            self.last_error = f"The worker stopped ({why}); restarting it."
        self.restart_reason = self.last_error
        self.broadcast_status()
        assert self._loop is not None
        self._loop.call_later(self._restart_pause, self._restart)

    def _restart(self) -> None:
        if self._closing:
            return
        self._spawn()

    def on_worker_message(self, message: Message) -> None:
        """Route one message from the worker (runs on the event loop)."""
        if isinstance(message, Frame):
            header = dict(message.header)
            images = message.images
            # Numbered here, not by the worker, so the numbers keep growing across restarts.
            self.frame_seq += 1
            header["worker_seq"] = header["seq"]
            header["seq"] = self.frame_seq
            self.frame = encode_frame(header, images)
            for client in self.clients:
                client.wake.set()
        elif isinstance(message, Metrics):
            payload = {**message.payload, "type": "metrics"}
            self.post_all("metrics", json.dumps(payload, separators=(",", ":")))
        elif isinstance(message, Ready):
            if message.version == self.version:
                # The worker fills in what was left open (the layer when none was given).
                self.params = SamplerParams.model_validate(message.params)
            self.info = message.info
            if self.use_standby and (self.standby is None or not self.standby.alive()):
                self.standby = Standby(self.worker_entry)
            self.served = True
            self.link_ready = True
            self.deaths_before_ready = 0
            self.worker_state = "running"
            self.last_error = None
            self.ready.set()
            self.post_all("info", self.info_text())
            self.broadcast_state()
            self.broadcast_status()
        elif isinstance(message, Rejected):
            self.post_all(
                "error",
                json.dumps({"type": "error", "field": message.field, "message": message.message}),
            )
            if message.params is None:
                # The worker could not start at all (bad checkpoint or target on the command
                # line): `run_server` reports it; a browser sees the error.
                self.last_error = message.message
                self.worker_error = message.message
                self.worker_state = "failed"
                self.ready.set()
                self.broadcast_status()
                return
            if message.version != self.version:
                # A newer change was sent since: keep it (the worker refuses it too if it is
                # bad, and that refusal, of the current version, rolls back).
                return
            # Go back to what the worker still runs, under a new version so frames match.
            self.params = SamplerParams.model_validate(message.params)
            if message.sources is not None:
                self.sources = dict(message.sources)
            self.version += 1
            self._send(SetParams(self.version, self.params.model_dump(), dict(self.sources)))
            self.broadcast_state()
        elif isinstance(message, Notice):
            self.post_all(
                "error",
                json.dumps({"type": "error", "field": message.field, "message": message.message}),
            )
        elif isinstance(message, Died):
            # The worker's last words (its traceback's last line) before it exits.
            self.worker_error = message.message
        # Heartbeat: nothing to do; the link noted the time (see `_watch`).

    def _send(self, command: Message) -> None:
        if self.link is not None:
            self.link.send(command)

    # --- browsers -----------------------------------------------------------------------

    def state_text(self) -> str:
        """The ``state`` message: the full parameters and their version."""
        return json.dumps(
            {
                "type": "state",
                "version": self.version,
                "params": self.params.model_dump(),
                # The page keeps only settings that differ from these in its URL.
                "defaults": _DEFAULTS,
            }
        )

    def info_text(self) -> str:
        """The ``info`` message: the model's layers, the checkpoints to pick from, the device."""
        return json.dumps(
            {
                "type": "info",
                **(self.info or {}),
                "checkpoints": security.list_checkpoints(self.checkpoints_dir),
                # The picker offers the operator's file (sent as checkpoint "") when it is not
                # one of `checkpoints`.
                "operator_checkpoint": (
                    Path(self.config.checkpoint).name if self.config.checkpoint else None
                ),
            }
        )

    def status_payload(self) -> dict[str, Any]:
        """Worker state, restarts, clients: the page's status line."""
        link = self.link
        worker = self.worker_state
        if worker == "running" and (link is None or not link.alive()):
            worker = "restarting"
        return {
            "type": "status",
            "worker": worker,
            "pid": link.pid if link is not None else None,
            "restarts": self.restarts,
            "restart_reason": self.restart_reason,
            "clients": len(self.clients),
            "error": self.last_error,
        }

    def post_all(self, kind: str, text: str) -> None:
        """Queue a text message for every browser (the newest of a kind replaces older ones)."""
        if kind != "error":
            self.texts[kind] = text
        for client in self.clients:
            client.post(kind, text)

    def broadcast_state(self) -> None:
        """Send the parameters to every browser, so all pages show the same settings."""
        self.post_all("state", self.state_text())

    def broadcast_status(self) -> None:
        """Send the status line to every browser (and the viewer count to the worker)."""
        self.post_all("status", json.dumps(self.status_payload()))
        if len(self.clients) != self._told_clients:
            self._told_clients = len(self.clients)
            self._send(Viewers(self._told_clients))

    def apply(self, message: Any) -> None:
        """Apply one validated browser message; raises `MessageError` naming a bad field."""
        if isinstance(message, AckMessage):
            return
        if isinstance(message, ResetMessage):
            self._send(Reset())
            return
        if isinstance(message, ShakeMessage):
            self._send(Shake(message.factor, message.seconds))
            return
        if isinstance(message, DiscRestartMessage):
            self._send(RestartDiscriminator())
            return
        assert isinstance(message, SetMessage)
        changes = message.changes()
        sources = dict(self.sources)
        for name in ("checkpoint", "compare"):
            if name not in changes:
                continue
            if changes[name] is None:
                if name == "checkpoint":
                    # The picker's "(from the command line)" entry: the operator's own file.
                    sources[name] = self.config.checkpoint
                    changes[name] = _name_in(self.checkpoints_dir, self.config.checkpoint)
                else:
                    sources[name] = None
                continue
            try:
                path = security.resolve_checkpoint(self.checkpoints_dir, changes[name])
            except security.SecurityError as err:
                raise MessageError(str(err), name) from None
            sources[name] = str(path)
        self._check_target(changes)
        try:
            params = SamplerParams.model_validate({**self.params.model_dump(), **changes})
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "message"
            raise MessageError(f"The field '{field}' is invalid: {first['msg']}.", field) from None
        if params == self.params and sources == self.sources:
            return
        self.params = params
        self.sources = sources
        self.version += 1
        self._send(SetParams(self.version, params.model_dump(), dict(sources)))
        self.broadcast_state()

    def _check_target(self, changes: dict[str, Any]) -> None:
        # The worker knows the layers; checking here keeps a bad pick from reaching it.
        if self.info is None or "checkpoint" in changes:
            return
        layers = {layer["name"]: layer for layer in self.info.get("layers", [])}
        layer_name = changes.get("layer", self.params.layer)
        if "layer" in changes and layer_name not in layers:
            raise MessageError(f"The model has no layer named {layer_name!r}.", "layer")
        layer = layers.get(layer_name)
        if layer is None:
            return
        for name in ("unit", "unit_end"):
            if name in changes and changes[name] >= layer["units"]:
                raise MessageError(
                    f"Layer {layer_name!r} has {layer['units']} units; {name} must be below {layer['units']}.",
                    name,
                )

    async def serve_client(self, websocket: WebSocket) -> None:
        """Run one browser's websocket until it closes."""
        if len(self.clients) >= security.MAX_CLIENTS:
            await websocket.close(code=1013)
            return
        await websocket.accept(subprotocol=security.accept_subprotocol(websocket))
        client = Client(websocket)
        self.clients.add(client)
        for kind in ("info", "metrics"):
            if kind in self.texts:
                client.post(kind, self.texts[kind])
        client.post("state", self.state_text())
        if self.info is not None:
            client.post("info", self.info_text())
        self.broadcast_status()
        receiver = asyncio.create_task(self._run_receiver(client))
        sender = asyncio.create_task(self._run_sender(client))
        try:
            # Either side ending ends the client: a closed socket stops the receiver, a send
            # that timed out (a client that stopped reading) stops the sender.
            await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            client.closed = True
            self.clients.discard(client)
            for task in (receiver, sender):
                task.cancel()
            for task in (receiver, sender):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.broadcast_status()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(), 1.0)

    async def _run_receiver(self, client: Client) -> None:
        websocket = client.websocket
        while not client.closed:
            try:
                event = await websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if event["type"] == "websocket.disconnect":
                return
            raw = event.get("text")
            if raw is None:
                raw = event.get("bytes") or b""
            try:
                message = parse_client_message(raw)
                if isinstance(message, AckMessage):
                    client.ack(message.seq)
                else:
                    self.apply(message)
            except MessageError as err:
                client.post("error", json.dumps(err.payload()))

    async def _run_sender(self, client: Client) -> None:
        try:
            while not client.closed:
                await client.wake.wait()
                client.wake.clear()
                while client.errors:
                    await self._send_to(client, text=client.errors.popleft())
                for kind in ("status", "info", "state", "metrics"):
                    text = client.slots.pop(kind, None)
                    if text is not None:
                        await self._send_to(client, text=text)
                frame, seq = self.frame, self.frame_seq
                if (
                    frame is not None
                    and seq > client.last_sent_seq
                    and len(client.unacked) < MAX_FRAMES_IN_FLIGHT
                ):
                    client.unacked.append(seq)
                    client.last_sent_seq = seq
                    client.frames_sent += 1
                    await self._send_to(client, data=frame)
        except (WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            pass

    async def _send_to(
        self, client: Client, text: str | None = None, data: bytes | None = None
    ) -> None:
        # A client whose socket stays full this long is gone; dropping it frees its memory.
        if text is not None:
            await asyncio.wait_for(client.websocket.send_text(text), security.SEND_TIMEOUT_S)
        else:
            assert data is not None
            await asyncio.wait_for(client.websocket.send_bytes(data), security.SEND_TIMEOUT_S)


def _initial_params(
    target: str | None, compare_name: str | None, checkpoint_name: str | None
) -> SamplerParams:
    return SamplerParams.model_validate(
        {**parse_target_option(target), "checkpoint": checkpoint_name, "compare": compare_name}
    )


def _name_in(folder: Path, path: str | None) -> str | None:
    # A file the operator named that lies inside the picker's folder shows under its name.
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None


def _check_file(path: str | None, what: str) -> str | None:
    if path is None:
        return None
    file = Path(path).expanduser()
    if not file.exists():
        raise ServeError(f"The {what} {path} does not exist.")
    if not file.is_file():
        raise ServeError(f"The {what} {path} is not a file.")
    try:
        with file.open("rb"):
            pass
    except OSError as err:
        raise ServeError(f"The {what} {path} cannot be read ({err.strerror}).") from None
    return str(file.resolve())


def create_app(
    checkpoint: str | None = None,
    compare: str | None = None,
    target: str | None = None,
    data: str | None = None,
    checkpoints_dir: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    trust_checkpoint: bool = False,
    token: str | None = None,
    params: dict[str, Any] | None = None,
    frame_rate: float = 30.0,
    worker_entry: str = WORKER_ENTRY,
    extra_hosts: tuple[str, ...] = (),
    default_compare: bool = True,
    standby: bool = True,
) -> FastAPI:
    """The dashboard app; the worker starts with the app's lifespan and stops with it.

    `checkpoint`/`compare`: files to load (None: the bundled LeNet pair); `target`: LAYER:UNIT
    or LAYER:A-B; `data`: real images for the discriminator; `checkpoints_dir`: the folder the
    page's checkpoint picker may reach; `params`: initial `SamplerParams` fields; `token`: the
    access token (None on loopback: no auth); `default_compare`: with no checkpoint named,
    show the averaged LeNet beside the plain one; `standby`: keep a warm spare worker for
    fast restarts. Raises `ServeError` for a bad target or file.
    """
    folder = Path(checkpoints_dir) if checkpoints_dir else DEFAULT_CHECKPOINTS
    if checkpoint is None:
        checkpoint = str(DEFAULT_PAIR[0])
        if compare is None and default_compare and DEFAULT_PAIR[1].is_file():
            compare = str(DEFAULT_PAIR[1])
    checkpoint = _check_file(checkpoint, "checkpoint")
    compare = _check_file(compare, "compare checkpoint")
    if data is not None and not Path(data).exists():
        raise ServeError(f"The data {data} does not exist.")
    try:
        initial = _initial_params(target, _name_in(folder, compare), _name_in(folder, checkpoint))
        if params:
            initial = SamplerParams.model_validate({**initial.model_dump(), **params})
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ServeError(f"The setting {field} is invalid: {first['msg']}.") from None
    config = WorkerConfig(
        checkpoints_dir=str(folder.resolve()),
        checkpoint=checkpoint,
        compare=compare,
        data=str(Path(data).resolve()) if data else None,
        device=device,
        trust_checkpoint=trust_checkpoint,
        frame_rate=frame_rate,
    )
    hub = Hub(config, initial, folder, worker_entry, standby)
    auth = security.TokenAuth(token, port)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.start()
        try:
            yield
        finally:
            await hub.stop()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hub = hub
    app.router.routes.extend(auth.routes())

    @app.get("/")
    async def index() -> Response:
        return FileResponse(FRONTEND / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        file = FRONTEND / name
        suffix = file.suffix
        if (
            "/" in name
            or name.startswith(".")
            or suffix not in _STATIC_SUFFIXES
            or not file.is_file()
        ):
            return Response("Not found.", status_code=404, media_type="text/plain")
        return FileResponse(
            file, media_type=_STATIC_SUFFIXES[suffix], headers={"Cache-Control": "no-cache"}
        )

    @app.get("/vendor/{name}")
    async def vendor(name: str) -> Response:
        file = VENDOR_FILES.get(name)
        if file is None or not file.is_file():
            return Response("Not found.", status_code=404, media_type="text/plain")
        return FileResponse(file)

    @app.get("/api/state")
    async def state() -> JSONResponse:
        return JSONResponse(
            {
                "version": hub.version,
                "params": hub.params.model_dump(),
                "info": hub.info,
                "status": hub.status_payload(),
                "frame_seq": hub.frame_seq,
                "metrics": json.loads(hub.texts["metrics"]) if "metrics" in hub.texts else None,
                # The event loop's task count: the load test checks it returns to where it was.
                "tasks": len(asyncio.all_tasks()),
            }
        )

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await hub.serve_client(websocket)

    app.add_middleware(security.SecurityMiddleware, auth=auth, host=host, port=port)
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=security.allowed_hosts(host, extra_hosts)
    )
    return app


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ServeError(
                    f"Port {port} on {host} is already in use; pick another with --port."
                ) from None
            raise ServeError(f"Cannot listen on {host}:{port} ({err.strerror}).") from None


def uvicorn_config(app: FastAPI, host: str, port: int) -> Any:
    """The uvicorn settings of the dashboard: websockets without per-message deflate (JPEG does
    not compress; deflate cost about 6x the CPU), the size cap, pings that find dead clients."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=security.WS_MAX_SIZE,
        ws_ping_interval=security.WS_PING_INTERVAL_S,
        ws_ping_timeout=security.WS_PING_TIMEOUT_S,
        log_level="warning",
        timeout_graceful_shutdown=3,
    )


def run_server(
    checkpoint: str | None,
    compare: str | None,
    target: str | None,
    data: str | None,
    checkpoints_dir: str,
    host: str,
    port: int,
    device: str,
    trust_checkpoint: bool,
    token: str | None,
    worker_entry: str = WORKER_ENTRY,
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C or SIGTERM: a clean shutdown).

    Raises `ServeError` (one sentence) for a busy port, a missing or unreadable checkpoint, a
    bad target or a worker that cannot start with them (refused, or dead
    `MAX_DEATHS_BEFORE_READY` times before its first "ready"). `worker_entry` is for tests.
    """
    import uvicorn

    try:
        token = security.require_token_for_bind(host, token)
    except security.SecurityError as err:
        raise ServeError(str(err)) from None
    _check_port(host, port)
    if not Path(checkpoints_dir).is_dir():
        raise ServeError(f"The checkpoint folder {checkpoints_dir} does not exist.")
    app = create_app(
        checkpoint,
        compare,
        target,
        data,
        checkpoints_dir,
        host,
        port,
        device,
        trust_checkpoint,
        token,
        worker_entry=worker_entry,
    )
    hub: Hub = app.state.hub
    server = uvicorn.Server(uvicorn_config(app, host, port))

    async def main() -> None:
        serving = asyncio.create_task(server.serve())
        # Fail fast with the worker's own sentence when the model or target cannot be used.
        while not hub.ready.is_set() and not serving.done():
            await asyncio.sleep(0.05)
        if hub.worker_state == "failed":
            server.should_exit = True
            await serving
            raise ServeError(hub.last_error or "The worker could not start.")
        shown = "127.0.0.1" if security.is_wildcard(host) else host
        if token is not None:
            print(f"ldam: open {security.login_url(host, port, token)}", flush=True)
        else:
            print(f"ldam: serving on http://{shown}:{port}", flush=True)
        await serving

    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler
    # that was there before: make that one a clean exit (code 0), not a kill by signal.
    previous = signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_quietly(signum: int, frame: Any) -> None:
    raise SystemExit(0)
