"""The server's four parts wired together: parameters, worker, broadcasts and browser sessions.

`Hub` routes each worker event to the part it concerns (`ParamStore`, `Broadcaster`,
`Supervisor`, and with ``--watch`` the `Follower`) and each browser message to the store or
the worker; it holds no state of its own. No torch here.
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from typing import Any

from pydantic import BaseModel
from starlette.websockets import WebSocket

from ldam.web.broadcast import Broadcaster, Client
from ldam.web.session import Session
from ldam.web.store import ParamStore
from ldam.web.supervisor import Supervisor
from ldam.web.watch import Follower, Watcher
from ldam.wire.events import (
    Died,
    Frame,
    Metrics,
    Notice,
    Ready,
    Rejected,
    Reset,
    RestartDiscriminator,
    Shake,
)
from ldam.wire.link import WORKER_ENTRY, Message, WorkerConfig
from ldam.wire.messages import DiscRestartMessage, ResetMessage, ShakeMessage
from ldam.wire.params import SamplerParams, SetMessage


def _error_text(field: str, message: str) -> str:
    return json.dumps({"type": "error", "field": field, "message": message})


class Hub:
    """The dashboard's parts: `store` (parameters), `supervisor` (the worker process),
    `broadcaster` (the browsers). `base` is the worker's start configuration from the
    command line, `params` the first parameters; `worker_entry` and `standby` as for
    `Supervisor`. With `watch` (``--watch``) the `follower` starts the worker once the run's
    first checkpoint is complete and swaps in each newer one, scanning every `poll_s` s."""

    def __init__(
        self,
        base: WorkerConfig,
        params: SamplerParams,
        worker_entry: str = WORKER_ENTRY,
        standby: bool = True,
        watch: Watcher | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.store = ParamStore(base, params, str(watch.folder) if watch is not None else None)
        self.broadcaster = Broadcaster()
        self.supervisor = Supervisor(
            self.store.worker_config,
            self.on_worker_message,
            self.broadcast_status,
            worker_entry,
            standby,
        )
        self.follower = Follower(watch, self, poll_s) if watch is not None else None

    @property
    def started(self) -> Future[str | None]:
        """The start's outcome, set once: None when the server may go on (its first worker
        is ready; with ``--watch`` also while it waits for a checkpoint, or after a refused
        file), else the one sentence that ended the start."""
        if self.follower is not None:
            return self.follower.started
        return self.supervisor.started

    def start(self) -> None:
        """Start the worker, or with ``--watch`` the follower that starts it (call from the
        event loop)."""
        if self.follower is not None:
            self.follower.start()
        else:
            self.supervisor.start()

    async def stop(self) -> None:
        """Stop the worker (without restarting it) and close every browser's session."""
        if self.follower is not None:
            await self.follower.stop()
        await self.supervisor.stop()
        self.broadcaster.close_all()

    async def serve(self, websocket: WebSocket) -> None:
        """Run one browser's websocket until it closes."""
        await Session(websocket, self).run()

    def on_worker_message(self, message: Message) -> None:
        """Route one event of the worker (`ldam.wire.events`; runs on the event loop)."""
        if isinstance(message, Frame):
            self.broadcaster.publish_frame(message.header, message.images)
        elif isinstance(message, Metrics):
            payload = {**message.payload, "type": "metrics"}
            self.broadcaster.post_all("metrics", json.dumps(payload, separators=(",", ":")))
        elif isinstance(message, Ready):
            self.store.on_ready(message)
            self.supervisor.note_ready()
            if self.follower is not None:
                self.follower.on_ready(message)
            self.broadcaster.post_all("info", json.dumps(self.store.info_message()))
            self.broadcast_state()
            self.broadcast_status()
        elif isinstance(message, Rejected):
            self.broadcaster.post_all("error", _error_text(message.field, message.message))
            if message.params is None:
                # The worker could not start at all (bad checkpoint or target on the command
                # line): `run_server` reports it; a browser sees the error. With --watch the
                # follower tries the run's next file when this one was at fault: it hears
                # first, so that a refused file does not end the start.
                if self.follower is not None:
                    self.follower.on_rejected(message)
                self.supervisor.note_refused_start(message.message)
                self.broadcast_status()
                return
            command = self.store.on_rejected(message)
            if command is not None:
                self.supervisor.send(command)
                self.broadcast_state()
            if self.follower is not None:
                self.follower.on_rejected(message)
        elif isinstance(message, Notice):
            self.broadcaster.post_all("error", _error_text(message.field, message.message))
        elif isinstance(message, Died):
            self.supervisor.note_last_words(message.message)
        # Heartbeat: nothing to do; the link noted the time (see `Supervisor._watch`).

    def apply(self, message: BaseModel) -> None:
        """Apply one validated browser message; raises `MessageError` naming a bad field."""
        if isinstance(message, ResetMessage):
            self.supervisor.send(Reset())
        elif isinstance(message, ShakeMessage):
            self.supervisor.send(Shake(message.factor, message.seconds))
        elif isinstance(message, DiscRestartMessage):
            self.supervisor.send(RestartDiscriminator())
        elif isinstance(message, SetMessage):
            command = self.store.apply(message)
            if command is not None:
                self.supervisor.send(command)
                self.broadcast_state()
        # An ack concerns the session's frame window only (`Session` handles it).

    def welcome(self, client: Client) -> None:
        """Queue the parameters, the model's description and the status for a new client."""
        client.post("state", json.dumps(self.store.state_message()))
        if self.store.info is not None:
            client.post("info", json.dumps(self.store.info_message()))
        self.broadcast_status()

    def clients_changed(self) -> None:
        """A browser joined or left: every page shows the new count, the worker learns it."""
        self.broadcast_status()

    def status_payload(self) -> dict[str, Any]:
        """The ``status`` message: worker state, pid, restarts and errors, clients."""
        worker = self.supervisor.describe()
        if self.follower is not None and self.follower.waiting:
            worker["worker"] = "waiting"  # for the run's first complete checkpoint
        return {
            "type": "status",
            "worker": worker["worker"],
            "pid": worker["pid"],
            "restarts": worker["restarts"],
            "restart_reason": worker["restart_reason"],
            "clients": len(self.broadcaster.clients),
            "error": worker["error"],
        }

    def broadcast_state(self) -> None:
        """Send the parameters to every browser, so all pages show the same settings (and
        with ``--watch`` the timeline, which shows what is pinned)."""
        self.broadcaster.post_all("state", json.dumps(self.store.state_message()))
        if self.follower is not None:
            self.follower.post()

    def post_timeline(self, text: str) -> None:
        """Send the ``timeline`` message (``--watch``) to every browser."""
        self.broadcaster.post_all("timeline", text)

    def broadcast_status(self) -> None:
        """Send the status line to every browser (and the viewer count to the worker)."""
        self.broadcaster.post_all("status", json.dumps(self.status_payload()))
        self.supervisor.set_viewers(len(self.broadcaster.clients))
