"""Following a training run (``ldam serve --watch DIR``): the newest complete checkpoint in DIR
is the main panel, swapped under the running chains.

`Watcher` is the file side, plain and synchronous: each `scan` lists DIR and says which files
are complete, which is newest and which failed to load. `Follower` runs it on the event loop:
it starts the first worker once a checkpoint is complete, asks the running worker to swap in
each newer one (a warm `SetParams`), learns from the worker's answers which file loaded or
failed, and posts the page's ``timeline`` message. No torch: the worker loads the files.

The rules, each in one place:

- A candidate is a file directly in DIR that the checkpoint picker could name
  (`security.list_checkpoints`: a plain name, a checkpoint suffix, nothing that leads out of
  DIR). Temporary files are never candidates: ``ldam.save_checkpoint`` writes a hidden
  ``.NAME.PID.tmp`` and renames it, and ``*.tmp`` or ``*.part`` names have no checkpoint suffix.
- A candidate is complete once its size and modification time have stayed the same for
  `settle_s` seconds: seen unchanged by scans that far apart, or already that old when first
  seen. A file being written (its size or time still moving) is never loaded.
- Order: by the step number in the name (`step_in_name`) when every complete file's name
  carries one, else by modification time. The newest complete file that has not failed is
  followed when it sorts after the one shown (or is the shown file, rewritten).
- A file that failed to load is skipped, with the worker's sentence on the page, until its
  size or modification time changes; then it is tried again.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ldam.web import security
from ldam.web.store import ParamStore
from ldam.web.supervisor import Supervisor, settle
from ldam.wire.events import Ready, Rejected

# The step in a name: "step" and an optional separator before digits (step_0004.pt2,
# epoch=3-step=1200.ckpt); else the last number in the name (ckpt-1200.pt, epoch3.pt).
_STEP = re.compile(r"step[=_\-]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")
# Defaults of ``ldam serve --watch``: a file is picked up at most poll + settle seconds after
# its last write (2.5 s), well within the 5 s the dashboard promises.
SETTLE_S = 2.0
POLL_S = 0.5


def step_in_name(name: str) -> int | None:
    """The training step a checkpoint's file name carries, or None.

    ``step_0004.pt2`` -> 4, ``epoch=3-step=1200.ckpt`` -> 1200, ``ckpt-1200.pt`` -> 1200,
    ``last.ckpt`` -> None. The suffix is ignored (the 2 of ``.pt2`` is no step).
    """
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix else name
    steps = _STEP.findall(stem)
    if steps:
        return int(steps[-1])
    numbers = _NUMBER.findall(stem)
    return int(numbers[-1]) if numbers else None


Signature = tuple[int, int]  # size in bytes, modification time in ns


@dataclass
class Entry:
    """One candidate file: where it is, what it looks like now, and what became of it.

    `first_seen` is when the current `signature` was first seen (the watcher's clock);
    `error` is the worker's sentence when this signature failed to load (None otherwise).
    """

    name: str
    path: str
    signature: Signature
    mtime: float  # seconds since the epoch
    first_seen: float
    step: int | None
    complete: bool = False
    error: str | None = None


class Watcher:
    """The checkpoints of one run folder; `scan` brings them up to date.

    `clock` (monotonic seconds) and `wall` (seconds since the epoch, as file times are) are
    injectable for tests; `settle_s` is the settle rule's quiet time.
    """

    def __init__(
        self,
        folder: Path,
        settle_s: float = SETTLE_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.settle_s = settle_s
        self.clock = clock
        self.wall = wall
        self.entries: dict[str, Entry] = {}
        # The file the main panel shows because it was followed, and the signature it had.
        self.current: Entry | None = None

    # --- the folder -----------------------------------------------------------------------

    def scan(self) -> bool:
        """List the folder again; True when anything the timeline shows changed."""
        now, wall = self.clock(), self.wall()
        seen: dict[str, Entry] = {}
        changed = False
        for name in security.list_checkpoints(self.folder):
            path = self.folder / name
            try:
                stat = path.stat()
            except OSError:
                continue  # gone between the listing and the stat
            signature = (stat.st_size, stat.st_mtime_ns)
            old = self.entries.get(name)
            if old is not None and old.signature == signature:
                entry = old
            else:
                # New, or written again: it settles afresh, and an old failure no longer holds.
                entry = Entry(name, str(path), signature, stat.st_mtime, now, step_in_name(name))
                changed = True
            if not entry.complete and (
                now - entry.first_seen >= self.settle_s or wall - entry.mtime >= self.settle_s
            ):
                entry.complete = True
                changed = True
            seen[name] = entry
        changed = changed or seen.keys() != self.entries.keys()
        self.entries = seen
        return changed

    def by_step(self) -> bool:
        """Whether the order is by the step in the names (every complete file has one)."""
        complete = [e for e in self.entries.values() if e.complete]
        return bool(complete) and all(e.step is not None for e in complete)

    def _key(self, entry: Entry, by_step: bool) -> tuple[int, ...]:
        if by_step and entry.step is not None:
            return (entry.step, entry.signature[1])
        return (entry.signature[1],)

    def ordered(self) -> list[Entry]:
        """Every candidate, oldest first (files still being written sort by their time)."""
        by_step = self.by_step()
        return sorted(self.entries.values(), key=lambda e: (self._key(e, by_step), e.name))

    def newest(self) -> Entry | None:
        """The newest complete file that has not failed to load, or None."""
        usable = [e for e in self.ordered() if e.complete and e.error is None]
        return usable[-1] if usable else None

    def to_follow(self) -> Entry | None:
        """The file the main panel should move to now, or None: the newest usable file when
        it sorts after the one shown, or is the shown file written again."""
        newest = self.newest()
        current = self.current
        if newest is None or (
            current is not None
            and (newest.name, newest.signature) == (current.name, current.signature)
        ):
            return None
        if current is None or newest.name == current.name:
            return newest
        by_step = self.by_step()
        return newest if self._key(newest, by_step) > self._key(current, by_step) else None

    # --- what became of a file --------------------------------------------------------------

    def entry_for(self, path: str | None) -> Entry | None:
        """The candidate at `path`, if it is one."""
        if path is None:
            return None
        return self.entries.get(Path(path).name) if Path(path).parent == self.folder else None

    def loaded(self, entry: Entry) -> None:
        """`entry` (as it was when asked for) now runs in the main panel."""
        self.current = entry
        entry.error = None

    def failed(self, entry: Entry, message: str) -> None:
        """`entry` could not be loaded: skip it until it changes."""
        entry.error = message

    # --- the page ----------------------------------------------------------------------------

    def timeline(
        self, main: str | None, compare: str | None, following: bool, note: str | None
    ) -> dict[str, Any]:
        """The ``timeline`` message: the folder, how files are ordered, every candidate
        (oldest first: name, step, time, state, error) and which ones the panels show."""
        newest = self.newest()
        items = []
        for entry in self.ordered():
            if entry.error is not None:
                state = "failed"
            elif not entry.complete:
                state = "writing"
            else:
                state = "ready"
            items.append(
                {
                    "name": entry.name,
                    "step": entry.step,
                    "time": entry.mtime,
                    "state": state,
                    "error": entry.error,
                }
            )
        return {
            "type": "timeline",
            "folder": str(self.folder),
            "order": "step" if self.by_step() else "time",
            "following": following,
            "newest": newest.name if newest else None,
            "main": Path(main).name if main else None,
            "compare": Path(compare).name if compare else None,
            "checkpoints": items,
            "note": note,
        }


class FollowHost(Protocol):
    """What the follower needs from the server (`ldam.web.hub.Hub` provides it)."""

    store: ParamStore
    supervisor: Supervisor

    def post_timeline(self, text: str) -> None:
        """Send the ``timeline`` message to every browser (latest wins)."""

    def broadcast_state(self) -> None:
        """Send the parameters to every browser."""

    def broadcast_status(self) -> None:
        """Send the status line to every browser."""


class FollowPhase(enum.Enum):
    """Where the follower is with the run's first worker."""

    WAITING = "waiting"  # no checkpoint is complete yet: no worker was started
    STARTING = "starting"  # a worker loads the run's newest file
    REFUSED = "refused"  # that file was refused: the next complete file starts the next worker
    RUNNING = "running"  # a worker ran: newer files are swapped in
    STOPPED = "stopped"  # the start failed in a way no file can mend (device, target, crashes)


class Follower:
    """Runs a `Watcher` every `poll_s` seconds on the event loop and moves the main panel to
    each newer complete checkpoint (see the module docstring).

    `started` reports the start's outcome once: None when the server may go on (a worker ran,
    a file was refused and the page says so, or no checkpoint is complete yet), else the
    sentence that ended it (`stopped_with`).
    """

    def __init__(self, watcher: Watcher, host: FollowHost, poll_s: float = POLL_S) -> None:
        self.watcher = watcher
        self.host = host
        self.poll_s = poll_s
        self.phase = FollowPhase.WAITING
        self.started: Future[str | None] = Future()
        # Version of each swap asked for -> the file as it was then.
        self.requests: dict[int, Entry] = {}
        # The file a worker starts with, and the start's version (while STARTING).
        self.starting: tuple[int, Entry] | None = None
        # Why the start failed for good (STOPPED), for the page and `run_server`.
        self.stopped_with: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_text: str | None = None

    @property
    def waiting(self) -> bool:
        """True while no worker was started because no checkpoint is complete yet."""
        return self.phase is FollowPhase.WAITING

    def start(self) -> None:
        """Start the scanning task (call from the event loop)."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop scanning."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        first = True
        while True:
            try:
                changed = await asyncio.to_thread(self.watcher.scan)
                await self.step()
                if changed or first:
                    self.post()
                first = False
            except OSError:
                pass  # the folder is unreadable for a moment; the next scan tries again
            await asyncio.sleep(self.poll_s)

    async def step(self) -> None:
        """Act on the newest scan: start the first worker, retry a refused start with another
        file, or ask the running worker to swap in a newer file."""
        supervisor = self.host.supervisor
        entry = self.watcher.to_follow()
        if self.phase is FollowPhase.STOPPED:
            return
        if self.phase is FollowPhase.WAITING:
            if entry is not None:
                self._start_with(entry)
                supervisor.start()
                self._watch_start()
                self.host.broadcast_status()
            else:
                settle(self.started, None)  # nothing to start yet: the page says it waits
                supervisor.prepare_standby()  # so the first checkpoint shows sooner
            return
        if self.phase is FollowPhase.REFUSED:
            if entry is not None:
                self._start_with(entry)
                await supervisor.retry()
                self._watch_start()
                self.host.broadcast_status()
            return
        asked = {(e.name, e.signature) for e in self.requests.values()}
        if self.starting is not None:
            asked.add((self.starting[1].name, self.starting[1].signature))  # loading now
        if entry is None or (entry.name, entry.signature) in asked:
            return  # nothing new, or its swap is on its way
        command = self.host.store.follow(entry.path)
        if command is not None:
            self.requests[command.version] = entry
            supervisor.send(command)
            self.host.broadcast_state()
        self.post()

    def _start_with(self, entry: Entry) -> None:
        store = self.host.store
        store.follow(entry.path)
        self.starting = (store.version, entry)
        self.phase = FollowPhase.STARTING
        self.post()

    def _watch_start(self) -> None:
        # A refusal reaches `on_rejected` first (it knows whether the file was at fault), so a
        # failure still open here is one no file can mend: workers that died before "ready".
        self.host.supervisor.started.add_done_callback(self._start_ended)

    def _start_ended(self, outcome: Future[str | None]) -> None:
        failure = None if outcome.cancelled() else outcome.result()
        if failure is not None and self.phase is FollowPhase.STARTING:
            self._stop(failure)
            self.post()

    def _stop(self, sentence: str) -> None:
        self.phase = FollowPhase.STOPPED
        self.starting = None
        self.stopped_with = sentence
        settle(self.started, sentence)

    # --- what the worker said ------------------------------------------------------------

    def on_ready(self, message: Ready) -> None:
        """A worker runs `message.version`: every swap asked for up to it is done."""
        store = self.host.store
        if self.starting is not None and message.version >= self.starting[0]:
            self.watcher.loaded(self.starting[1])
            self.starting = None
            self.phase = FollowPhase.RUNNING
            settle(self.started, None)
        done = sorted(v for v in self.requests if v <= message.version)
        for version in done:
            entry = self.requests.pop(version)
            if version == done[-1]:
                self.watcher.loaded(entry)
        if message.version == store.version and store.following:
            # Following again after a pin ("" from the page): the run's file is shown.
            entry = self.watcher.entry_for(store.shown()[0])
            if entry is not None and not self.requests:
                self.watcher.loaded(entry)
        self.post()

    def on_rejected(self, message: Rejected) -> None:
        """The worker refused a change or its start; a swap's or start's file is skipped.
        Call it before the supervisor hears of a refused start."""
        if message.params is None:
            self._on_refused_start(message)
        elif message.version in self.requests:
            entry = self.requests.pop(message.version)
            self.watcher.failed(entry, message.message)
            # A later "" (follow again) must not land on the file that failed.
            current = self.watcher.current
            self.host.store.follow_failed(current.path if current is not None else None)
        self.post()

    def _on_refused_start(self, message: Rejected) -> None:
        if self.starting is not None:
            entry: Entry | None = self.starting[1]
        else:  # a restart after a worker ran, with the file the main panel shows
            entry = self.watcher.entry_for(self.host.store.shown()[0])
        self.starting = None
        if message.field == "checkpoint" and entry is not None:
            self.watcher.failed(entry, message.message)
            if self.phase is FollowPhase.STARTING:
                self.phase = FollowPhase.REFUSED  # the next complete file starts a worker
            settle(self.started, None)  # the page names the file
        else:
            self._stop(message.message)  # not the file's fault: no other file would start

    # --- the page ------------------------------------------------------------------------

    def timeline(self) -> dict[str, Any]:
        """The ``timeline`` message as it stands."""
        store = self.host.store
        main, compare = store.shown()
        note = None
        if self.phase is FollowPhase.STOPPED:
            note = self.stopped_with
        elif self.phase is FollowPhase.WAITING:
            note = f"Waiting for the first complete checkpoint in {self.watcher.folder}."
        return self.watcher.timeline(
            None if self.phase is FollowPhase.WAITING else main,
            compare,
            store.following,
            note,
        )

    def post(self) -> None:
        """Send the timeline to every browser when it changed."""
        text = json.dumps(self.timeline())
        if text != self._last_text:
            self._last_text = text
            self.host.post_timeline(text)


def watch_folder_error(folder: str) -> str | None:
    """One sentence when `folder` cannot be watched (missing, not a folder, unreadable)."""
    path = Path(folder).expanduser()
    if not path.exists():
        return f"The folder to watch {folder} does not exist."
    if not path.is_dir():
        return f"The folder to watch {folder} is not a folder."
    if not os.access(path, os.R_OK | os.X_OK):
        return f"The folder to watch {folder} cannot be read."
    return None
