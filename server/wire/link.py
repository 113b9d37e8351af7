"""The process link between the web server and the worker process (stdlib multiprocessing).

Two one-way pipes, each with a thread at both ends so that neither side ever blocks on the
other:

- server -> worker: commands (`ldam.wire.events.SetParams`, `Reset`, ...). The server
  queues them (`WorkerLink.send` never blocks the event loop); a thread writes them to the
  pipe in order, so no control is ever lost or reordered. The worker drains the pipe at every
  sampler step (`WorkerEnd.poll_commands`).
- worker -> server: frames, metrics and events. The worker's sampler loop drops them into an
  `Outbox` and goes on; its sender thread writes events first (never dropped), then the newest
  metrics, then the newest frame: a frame or metrics that were not yet sent when a newer one
  came are replaced (latest wins), so a slow server never slows the sampler. The server's reader
  thread hands every message to a callback.

A dead worker is noticed two ways: the pipe reaches EOF (the process is gone, also after
SIGKILL, because the server closes its copy of the worker's pipe end right after the start),
and the reader thread checks ``Process.is_alive()`` whenever the pipe is quiet. A worker that
raises sends `Died("RuntimeError: ...")` (the traceback's last line) as its
last message, so the server can say why it stopped. A worker that is alive but silent (hung,
or stopped with SIGSTOP) is found by the server's watchdog through `WorkerLink.last_message_at`
and ended with `WorkerLink.kill`.

Why not pyzmq: the "conflate" behaviour needed here is a one-slot buffer and a thread, which the
standard library gives without a new dependency; the pipes also carry the spawn context's
pickles of the worker's start configuration.

This module imports no torch: the worker function is named by a string and imported only in
the child process.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ldam.metadata import MetadataOverride
from ldam.wire.events import Died, Stop

# The worker's start function, imported in the child only (it imports torch).
WORKER_ENTRY = "ldam.worker.process:run_worker"


@dataclass
class WorkerConfig:
    """Everything the worker process needs to start; picklable, no torch objects.

    Paths are absolute. `params` is a `ldam.wire.messages.SamplerParams` dump and `version` the
    parameter version the first frames carry.
    """

    checkpoints_dir: str
    checkpoint: str | None = None
    compare: str | None = None
    data: str | None = None
    device: str = "auto"
    trust_checkpoint: bool = False
    # The operator's own files, the only ones `trust_checkpoint` covers (never a pick from the
    # folder); None means `checkpoint` and `compare` as first given.
    trusted_paths: tuple[str, ...] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    # Frames per second the worker encodes at most; metrics messages per second.
    frame_rate: float = 30.0
    metrics_rate: float = 4.0
    jpeg_quality: int = 90
    # Torch CPU threads in the worker; None keeps torch's default.
    threads: int | None = None
    # For state-dict files: the network (``--arch``) and C,H,W when the file does not say.
    arch: str | None = None
    input_shape: tuple[int, int, int] | None = None
    # The operator's normalization and class names (``--mean``, ``--std``, ``--class-names``),
    # over every file's own.
    metadata: MetadataOverride | None = None
    # Seconds with no browser connected after which the worker stops stepping (0: never).
    idle_pause_s: float = 60.0


# A command or an event of `ldam.wire.events` (the outbox itself carries any picklable value).
Message = Any


class Outbox:
    """The worker's side of the worker -> server pipe: events in order, frames latest-wins.

    `put_event` (info, errors, rejected commands) never drops; `put_metrics` and `put_frame`
    keep only the newest unsent one. A daemon thread does the (possibly blocking) pipe writes.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Condition()
        self._events: list[Message] = []
        self._metrics: Message | None = None
        self._frame: Message | None = None
        self._closed = False
        # Set (under the lock) when the sender thread has sent its last message.
        self._finished = False
        self.frames_dropped = 0
        self._thread = threading.Thread(target=self._run, name="ldam-outbox", daemon=True)
        self._thread.start()

    def put_event(self, message: Message) -> None:
        """Queue a message that must arrive (in order)."""
        with self._lock:
            self._events.append(message)
            self._lock.notify()

    def put_metrics(self, message: Message) -> None:
        """Offer the newest metrics; replaces unsent older metrics."""
        with self._lock:
            self._metrics = message
            self._lock.notify()

    def put_frame(self, message: Message) -> None:
        """Offer the newest frame; replaces an unsent older frame."""
        with self._lock:
            if self._frame is not None:
                self.frames_dropped += 1
            self._frame = message
            self._lock.notify()

    def close(self, timeout: float = 1.0) -> None:
        """Send what is queued (for at most `timeout` seconds) and stop the thread."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout)

    def send_last(self, message: Message, timeout: float = 1.0) -> None:
        """Send `message` after everything queued, also after `close`, then stop (used for the
        worker's dying words: the sender thread may already have stopped)."""
        with self._lock:
            finished = self._finished
            if not finished:
                self._events.append(message)
                self._closed = True
                self._lock.notify()
        if finished:
            # The thread is gone (or about to return without touching the pipe again).
            try:
                self._conn.send(message)
            except (OSError, EOFError, ValueError):
                pass
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._events or self._metrics or self._frame or self._closed):
                    self._lock.wait()
                if self._events:
                    message: Message | None = self._events.pop(0)
                elif self._metrics is not None:
                    message, self._metrics = self._metrics, None
                elif self._frame is not None:
                    message, self._frame = self._frame, None
                else:
                    self._finished = True
                    return  # closed and drained
            try:
                self._conn.send(message)
            except (OSError, EOFError, ValueError):
                with self._lock:
                    self._finished = True
                return  # the server is gone; the worker notices through its command pipe


class WorkerEnd:
    """What the worker process holds: its command pipe and its outbox."""

    def __init__(self, commands: Connection, events: Connection) -> None:
        self._commands = commands
        self.outbox = Outbox(events)

    def poll_commands(self, timeout: float = 0.0) -> list[Message]:
        """Every command waiting now (waiting up to `timeout` seconds for the first one).

        Raises EOFError when the server has gone away.
        """
        out: list[Message] = []
        if not self._commands.poll(timeout):
            return out
        while True:
            out.append(self._commands.recv())
            if not self._commands.poll(0):
                return out


def _child_main(
    entry: str,
    config: WorkerConfig | None,
    commands: Connection,
    events: Connection,
    config_conn: Connection | None,
) -> None:
    end: WorkerEnd | None = None
    try:
        module_name, _, function = entry.partition(":")
        module = importlib.import_module(module_name)
        if config is None:
            # A standby: import and warm up now, then wait until the server hands over a config.
            assert config_conn is not None
            warm_up = getattr(module, "warm_up", None)
            if warm_up is not None:
                warm_up()
            try:
                config = config_conn.recv()
            except (EOFError, OSError):
                config = None  # the server went away or no longer needs a standby
            if config is None:
                # Nothing to finish: skip the interpreter's shutdown, which takes seconds with
                # torch imported (the server would wait, then kill the standby).
                os._exit(0)
        end = WorkerEnd(commands, events)
        getattr(module, function)(config, end)
    except Exception as err:
        # The traceback still goes to stderr (the process exits with status 1); the server
        # gets the last line, to say why the worker stopped.
        died = Died(error_line(err))
        if end is not None:
            end.outbox.send_last(died)
        else:
            try:
                events.send(died)
            except (OSError, EOFError, ValueError):
                pass
        raise


def error_line(err: BaseException) -> str:
    """An exception as the last line of its traceback (``RuntimeError: text``), on one line
    and at most 300 characters."""
    text = " ".join(str(err).split())
    line = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return line if len(line) <= 300 else line[:299] + "…"


class Standby:
    """A worker process started ahead of need: torch imported, waiting for its configuration.

    Importing torch and its export machinery takes seconds; a worker that dies is replaced
    by the standby, which only has to load the checkpoint.
    """

    def __init__(self, entry: str = WORKER_ENTRY) -> None:
        ctx = mp.get_context("spawn")
        self.command_read, self.command_write = ctx.Pipe(duplex=False)
        self.event_read, self.event_write = ctx.Pipe(duplex=False)
        config_read, self.config_write = ctx.Pipe(duplex=False)
        self.entry = entry
        self.process = ctx.Process(
            target=_child_main,
            args=(entry, None, self.command_read, self.event_write, config_read),
            name="ldam-worker-standby",
            daemon=True,
        )
        self.process.start()
        config_read.close()

    def alive(self) -> bool:
        """True while the standby process waits (or warms up)."""
        return self.process.is_alive()

    def close(self, timeout: float = 2.0) -> None:
        """Dismiss the standby: it exits when its configuration pipe closes."""
        try:
            self.config_write.close()
        except OSError:
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)
        for conn in (self.command_read, self.command_write, self.event_read, self.event_write):
            conn.close()


class WorkerLink:
    """The server's handle on one worker process.

    `on_message(message)` is called from the link's reader thread for every message the worker
    sends; `on_exit(exitcode)` once, when the worker is found dead (not after `stop`).
    """

    def __init__(
        self,
        config: WorkerConfig,
        on_message: Callable[[Message], None],
        on_exit: Callable[[int | None], None],
        entry: str = WORKER_ENTRY,
    ) -> None:
        self.config = config
        self._on_message = on_message
        self._on_exit = on_exit
        self._entry = entry
        self._commands: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._process: Any = None
        self._command_conn: Connection | None = None
        self._event_conn: Connection | None = None
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0
        # time.monotonic() of the newest message from the worker (the start time until one
        # comes): the server's watchdog restarts a worker that stays silent too long.
        self.last_message_at = 0.0
        # Set by the server when it killed the worker for silence, so the exit says why.
        self.hung = False

    @property
    def pid(self) -> int | None:
        """The worker's process id, once started."""
        return None if self._process is None else self._process.pid

    def alive(self) -> bool:
        """True while the worker process runs."""
        return self._process is not None and self._process.is_alive()

    def start(self, standby: Standby | None = None) -> None:
        """Start the worker: hand the configuration to `standby` when it is alive, else spawn
        a fresh interpreter (spawn: no forked torch or event-loop state)."""
        if standby is not None and standby.alive() and standby.entry == self._entry:
            try:
                standby.config_write.send(self.config)
                standby.config_write.close()
            except OSError:
                standby = None
        else:
            standby = None
        if standby is not None:
            self._process = standby.process
            command_read, command_write = standby.command_read, standby.command_write
            event_read, event_write = standby.event_read, standby.event_write
        else:
            ctx = mp.get_context("spawn")
            command_read, command_write = ctx.Pipe(duplex=False)
            event_read, event_write = ctx.Pipe(duplex=False)
            self._process = ctx.Process(
                target=_child_main,
                args=(self._entry, self.config, command_read, event_write, None),
                name="ldam-worker",
                daemon=True,
            )
            self._process.start()
        # Close our copies of the child's ends: the worker's death then shows as EOF here.
        command_read.close()
        event_write.close()
        self._command_conn = command_write
        self._event_conn = event_read
        self.started_at = time.monotonic()
        self.last_message_at = self.started_at
        self._threads = [
            threading.Thread(target=self._write_commands, name="ldam-link-send", daemon=True),
            threading.Thread(target=self._read_events, name="ldam-link-recv", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def send(self, command: Message) -> None:
        """Queue a command for the worker; never blocks, never drops while the worker lives."""
        self._commands.put(command)

    def kill(self) -> None:
        """Kill the worker at once (SIGKILL, which also ends a stopped process); the reader
        thread then sees the pipe close and reports the exit as for any other death."""
        process = self._process
        if process is not None and process.is_alive():
            process.kill()

    def stop(self, timeout: float = 3.0) -> None:
        """Ask the worker to stop, wait up to `timeout` seconds, then kill it."""
        self._stopping.set()
        self._commands.put(Stop())
        self._commands.put(None)
        process = self._process
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(1.0)
        for conn in (self._command_conn, self._event_conn):
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass
        for thread in self._threads:
            thread.join(1.0)

    def _write_commands(self) -> None:
        assert self._command_conn is not None
        while True:
            command = self._commands.get()
            if command is None:
                return
            try:
                self._command_conn.send(command)
            except (OSError, EOFError, ValueError):
                return  # the reader thread reports the death

    def _read_events(self) -> None:
        assert self._event_conn is not None and self._process is not None
        conn = self._event_conn
        while not self._stopping.is_set():
            try:
                if not conn.poll(0.5):
                    if not self._process.is_alive():
                        break
                    continue
                message = conn.recv()
            except (EOFError, OSError, ValueError):
                break
            self.last_message_at = time.monotonic()
            self._on_message(message)
        if self._stopping.is_set():
            return
        self._process.join(1.0)
        self._commands.put(None)
        self._on_exit(self._process.exitcode)
