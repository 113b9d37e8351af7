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
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ldam.web import security
from ldam.web.store import ParamStore
from ldam.web.supervisor import Supervisor, WorkerState
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


class Follower:
    """Runs a `Watcher` every `poll_s` seconds on the event loop and moves the main panel to
    each newer complete checkpoint (see the module docstring)."""

    def __init__(self, watcher: Watcher, host: FollowHost, poll_s: float = POLL_S) -> None:
        self.watcher = watcher
        self.host = host
        self.poll_s = poll_s
        # Version of each swap asked for -> the file as it was then.
        self.requests: dict[int, Entry] = {}
        # The file of a first start (no worker ran yet) and the start's version.
        self.starting: tuple[int, Entry] | None = None
        self.started = False
        # A refused start that no other file can mend (a bad device or target): stop here.
        self.stopped_with: str | None = None
        # True once a scan ran and either a worker start was settled or nothing can start yet.
        self.settled = False
        self._task: asyncio.Task[None] | None = None
        self._last_text: str | None = None

    @property
    def waiting(self) -> bool:
        """True while no worker was started because no checkpoint is complete yet."""
        return not self.started

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
        if self.stopped_with is not None:
            self.settled = True
            return
        store, supervisor = self.host.store, self.host.supervisor
        entry = self.watcher.to_follow()
        if not self.started:
            if entry is not None:
                self._first_start(entry)
                supervisor.start()
                self.started = True
                self.host.broadcast_status()
            else:
                self.settled = True  # nothing to start yet: the page says it waits
                supervisor.prepare_standby()  # so the first checkpoint shows sooner
            return
        if not supervisor.ever_ready and supervisor.state is WorkerState.FAILED:
            # The first start was refused because of its file: try the next one.
            if entry is not None and self.starting is None:
                self._first_start(entry)
                await supervisor.retry()
                self.host.broadcast_status()
            return
        if supervisor.ever_ready:
            self.settled = True
        asked = {(e.name, e.signature) for e in self.requests.values()}
        if entry is None or (entry.name, entry.signature) in asked:
            return  # nothing new, or its swap is on its way
        command = store.follow(entry.path)
        if command is not None:
            self.requests[command.version] = entry
            supervisor.send(command)
            self.host.broadcast_state()
        self.post()

    def _first_start(self, entry: Entry) -> None:
        self.host.store.follow(entry.path)
        self.starting = (self.host.store.version, entry)
        self.post()

    # --- what the worker said ------------------------------------------------------------

    def on_ready(self, message: Ready) -> None:
        """A worker runs `message.version`: every swap asked for up to it is done."""
        store = self.host.store
        if self.starting is not None and message.version >= self.starting[0]:
            self.watcher.loaded(self.starting[1])
            self.starting = None
            self.settled = True
        done = sorted(v for v in self.requests if v <= message.version)
        for version in done:
            entry = self.requests.pop(version)
            if version == done[-1]:
                self.watcher.loaded(entry)
        if message.version == store.version and store.params.checkpoint is None:
            # Following again after a pin ("" from the page): the run's file is shown.
            entry = self.watcher.entry_for(store.sources.get("checkpoint"))
            if entry is not None and not self.requests:
                self.watcher.loaded(entry)
        self.post()

    def on_rejected(self, message: Rejected) -> None:
        """The worker refused a change or its start; a swap's or start's file is skipped."""
        if message.params is None:
            self._on_refused_start(message)
        elif message.version in self.requests:
            entry = self.requests.pop(message.version)
            self.watcher.failed(entry, message.message)
            # A later "" (follow again) must not land on the file that failed.
            current = self.watcher.current
            self.host.store.newest = current.path if current is not None else None
        self.post()

    def _on_refused_start(self, message: Rejected) -> None:
        starting, self.starting = self.starting, None
        if starting is None:
            entry = self.watcher.entry_for(self.host.store.sources.get("checkpoint"))
        else:
            entry = starting[1]
        if message.field == "checkpoint" and entry is not None:
            self.watcher.failed(entry, message.message)
        else:
            # Not the file's fault (device, target, compare file): no other file would start.
            self.stopped_with = message.message
        self.settled = True

    # --- the page ------------------------------------------------------------------------

    def timeline(self) -> dict[str, Any]:
        """The ``timeline`` message as it stands."""
        store = self.host.store
        note = None
        if self.stopped_with is not None:
            note = self.stopped_with
        elif not self.started:
            note = f"Waiting for the first complete checkpoint in {self.watcher.folder}."
        return self.watcher.timeline(
            store.sources.get("checkpoint") if self.started else None,
            store.sources.get("compare"),
            store.params.checkpoint is None,
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
