"""The worker's keeper: starts the worker process, watches it, restarts it when it dies.

One `WorkerState` says where the worker is:

- STARTING --"ready"--> RUNNING --death--> RESTARTING --"ready"--> RUNNING.
- A death before "ready" (in STARTING or RESTARTING) --> RESTARTING; but while no worker was
  ever ready, the `MAX_DEATHS_BEFORE_READY`-th such death in a row --> FAILED.
- A refused start (bad checkpoint, target or device) --> FAILED; its exit ends the start while
  no worker was ever ready (another try would be refused again), else --> RESTARTING.
- Any state --`Supervisor.stop`--> STOPPED; nothing restarts any more.

A worker that dies is restarted with the last parameters (after a pause that grows while
workers die within `_QUICK_DEATH_S` of their start); one that stays silent for
`HEARTBEAT_TIMEOUT_S` once it has started (`WORKER_START_TIMEOUT_S` before its first
"ready"), hung or stopped with SIGSTOP, is killed and restarted the same way. Until a first
worker was ready, `MAX_DEATHS_BEFORE_READY` deaths in a row, or one refused start, end the
start instead (FAILED). The start reports its outcome once, through the future `started`
(None once a worker is ready, else the sentence that ended it): `run_server` waits on it. A warm
`Standby` process replaces a dead worker in about a second, not the seconds importing torch
takes. No torch here.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ldam.wire.events import Viewers
from ldam.wire.link import WORKER_ENTRY, Message, Standby, WorkerConfig, WorkerLink

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


class WorkerState(enum.Enum):
    """Where the supervised worker is; the value is the page's word for it (STOPPED aside)."""

    STARTING = "starting"  # the first worker loads; none has been ready yet
    RUNNING = "running"  # the current worker has sent "ready"
    RESTARTING = "restarting"  # a worker died; its replacement waits or loads
    FAILED = "failed"  # the worker refused its start, or the start ended (too many deaths)
    STOPPED = "stopped"  # `stop` was called: nothing restarts any more


class Supervisor:
    """Runs one worker at a time through `WorkerLink` and keeps one running.

    `configure()` gives the configuration for each (re)start (the current parameters);
    `on_message(message)` gets every message of the worker on the event loop; `on_change()`
    is called when a death changed the state (the caller shows the new status).
    """

    def __init__(
        self,
        configure: Callable[[], WorkerConfig],
        on_message: Callable[[Message], None],
        on_change: Callable[[], None],
        entry: str = WORKER_ENTRY,
        standby: bool = True,
    ) -> None:
        self._configure = configure
        self._on_message = on_message
        self._on_change = on_change
        self.entry = entry
        self.use_standby = standby
        self.state = WorkerState.STARTING
        # The start's outcome, set once: None when its first worker is ready, or the sentence
        # that ended it (a refusal, or too many deaths before "ready"). A thread-safe future:
        # it is made before the event loop runs and may be awaited from another loop.
        self.started: Future[str | None] = Future()
        # A worker has been ready at least once: from then on every death is restarted.
        self.ever_ready = False
        # Deaths in a row of workers that died before "ready".
        self.deaths_before_ready = 0
        self.restarts = 0
        # The sentence for the page (None while a worker runs), and why the newest restart
        # happened (kept after the new worker runs).
        self.last_error: str | None = None
        self.restart_reason: str | None = None
        # How many browsers watch, as last told to the worker.
        self.viewers = 0
        self.link: WorkerLink | None = None
        self.standby: Standby | None = None
        # The current worker's last error line (its "died" message or start refusal).
        self._last_words: str | None = None
        # The silence after which the watchdog killed the current worker.
        self._silence_limit_s = HEARTBEAT_TIMEOUT_S
        self._restart_pause_s = 0.0
        self._restart_timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start the first worker and the watchdog (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._spawn()
        self._watchdog = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        """Stop the worker and the standby for good (nothing restarts afterwards)."""
        self.state = WorkerState.STOPPED
        if self._restart_timer is not None:
            self._restart_timer.cancel()
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

    def prepare_standby(self) -> None:
        """Start the standby now, ahead of the first worker (``--watch`` while it waits for
        the run's first checkpoint): that worker then starts in about a second, not the
        seconds importing torch takes. Call from the event loop."""
        if self.use_standby and self.standby is None and self.state is not WorkerState.STOPPED:
            self.standby = Standby(self.entry)

    async def retry(self) -> None:
        """Start a fresh worker from `configure()` after the start failed before any worker
        was ready (``ldam serve --watch`` then tries the run's next checkpoint); nothing
        happens in any other state. The new start reports its outcome through a new
        `started` future."""
        if self.state is not WorkerState.FAILED or self.ever_ready:
            return
        link, self.link = self.link, None
        if link is not None:
            # Stopped, not left to exit: its exit must not count against the new worker.
            await asyncio.to_thread(link.stop)
        if self.state is not WorkerState.FAILED:
            return  # stopped meanwhile
        self.state = WorkerState.STARTING
        self.started = Future()
        self.deaths_before_ready = 0
        self.last_error = None
        self._spawn()

    def send(self, command: Message) -> None:
        """Queue a command (`ldam.wire.events`) for the current worker; dropped when none runs
        (the next worker starts from `configure()`, which already has every change)."""
        if self.link is not None:
            self.link.send(command)

    def set_viewers(self, count: int) -> None:
        """Tell the worker how many browsers watch, when that changed."""
        if count != self.viewers:
            self.viewers = count
            self.send(Viewers(count))

    # --- what the worker said (the caller routes these messages here) ----------------------

    def note_ready(self) -> None:
        """The current worker sent "ready": it runs; prepare a standby for its successor."""
        if self.state is WorkerState.STOPPED:
            return
        if self.use_standby and (self.standby is None or not self.standby.alive()):
            self.standby = Standby(self.entry)
        self.ever_ready = True
        self.deaths_before_ready = 0
        self.state = WorkerState.RUNNING
        self.last_error = None
        settle(self.started, None)

    def note_refused_start(self, message: str) -> None:
        """The current worker could not start (bad checkpoint, target or device): FAILED.

        Before any worker was ready this ends the start (another try would be refused
        again; `started` gets `message`); afterwards the worker's exit restarts it like any
        death.
        """
        if self.state is WorkerState.STOPPED:
            return
        self.last_error = message
        self._last_words = message
        self.state = WorkerState.FAILED
        if not self.ever_ready:
            settle(self.started, message)

    def note_last_words(self, message: str) -> None:
        """The worker's last error line before it exits (the reason its exit reports)."""
        self._last_words = message

    # --- the process ------------------------------------------------------------------------

    def _spawn(self) -> None:
        link = WorkerLink(
            self._configure(),
            functools.partial(self._from_thread, self._deliver),
            functools.partial(self._from_thread, self.on_exit),
            self.entry,
        )
        self.link = link
        self._last_words = None
        standby, self.standby = self.standby, None
        link.start(standby)
        link.send(Viewers(self.viewers))

    def _from_thread(self, callback: Callable[[Any], None], value: Any) -> None:
        # The link's reader thread calls in; the state is only touched on the event loop.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, value)

    def _deliver(self, message: Message) -> None:
        if self.state is not WorkerState.STOPPED:
            self._on_message(message)

    async def _watch(self) -> None:
        """Kill a started worker that has sent nothing (metrics, frames, heartbeats) for
        `HEARTBEAT_TIMEOUT_S`; its exit then restarts it like any other death."""
        while self.state is not WorkerState.STOPPED:
            await asyncio.sleep(_WATCHDOG_EVERY_S)
            link = self.link
            if link is None or link.hung or not link.alive():
                continue
            ready = self.state is WorkerState.RUNNING
            limit = HEARTBEAT_TIMEOUT_S if ready else WORKER_START_TIMEOUT_S
            if time.monotonic() - link.last_message_at > limit:
                self._silence_limit_s = limit
                link.hung = True
                link.kill()

    def on_exit(self, exitcode: int | None) -> None:
        """The worker died (`exitcode` None when unknown): restart it after the back-off
        pause, or end the start (FAILED) after `MAX_DEATHS_BEFORE_READY` deaths before any
        worker was ready. Calls `on_change` unless nothing changed."""
        if self.state is WorkerState.STOPPED:
            return
        if self.state is WorkerState.FAILED and not self.ever_ready:
            # The worker refused its start: another try would refuse it again.
            return
        link = self.link
        quick = link is not None and time.monotonic() - link.started_at < _QUICK_DEATH_S
        self._restart_pause_s = (
            min(_MAX_RESTART_PAUSE_S, self._restart_pause_s * 2 + 0.25) if quick else 0.0
        )
        why = (self._last_words or f"exit code {exitcode}").rstrip(".")
        if self.state is not WorkerState.RUNNING:
            self.deaths_before_ready += 1
        if not self.ever_ready and self.deaths_before_ready >= MAX_DEATHS_BEFORE_READY:
            self.state = WorkerState.FAILED
            self.last_error = (
                f"The worker stopped {self.deaths_before_ready} times before it was ready "
                f"(last error: {why})."
            )
            settle(self.started, self.last_error)
            self._on_change()
            return
        self.restarts += 1
        self.state = WorkerState.RESTARTING
        if link is not None and link.hung:
            self.last_error = (
                f"The worker sent nothing for {self._silence_limit_s:g} s and was stopped; "
                "restarting it."
            )
        else:
            self.last_error = f"The worker stopped ({why}); restarting it."
        self.restart_reason = self.last_error
        self._on_change()
        assert self._loop is not None
        self._restart_timer = self._loop.call_later(self._restart_pause_s, self._restart)

    def _restart(self) -> None:
        self._restart_timer = None
        if self.state is not WorkerState.STOPPED:
            self._spawn()

    def describe(self) -> dict[str, Any]:
        """The worker's part of the status line: its word (starting, running, restarting or
        failed), pid, restarts and errors."""
        link = self.link
        state = self.state
        if state is WorkerState.STOPPED or (
            state is WorkerState.RUNNING and (link is None or not link.alive())
        ):
            # Dead with its exit not yet handled, or the server stops: no worker runs.
            state = WorkerState.RESTARTING
        return {
            "worker": state.value,
            "pid": link.pid if link is not None else None,
            "restarts": self.restarts,
            "restart_reason": self.restart_reason,
            "error": self.last_error,
        }


def settle(future: Future[str | None], outcome: str | None) -> None:
    """Give a start's `future` its `outcome` (None: it succeeded; else the sentence that ended
    it) unless it has one: the first outcome stands, and one given up on (cancelled) takes none.
    Call from the event loop."""
    if not future.done():
        future.set_result(outcome)
