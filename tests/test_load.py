"""Load on loopback against the real server (issue 6), bounded in count and time.

32 websocket clients read and acknowledge frames for 20 s while 8 more connect and never read;
then 500 connect/disconnect cycles (half closed politely, half dropped without a close frame).
Each reading client's frames per second is printed; the speed goal (at least 20) is recorded
in BENCHMARKS.md, the test asserts only a floor that CI noise cannot break. Afterwards the
server's memory (RSS from /proc), its asyncio task count and its open file descriptors return
to within 10% of where they started.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support import LiveServer, running_server

READERS = 32
IDLE = 8
READ_SECONDS = 20.0
CYCLES = 500
# Floors, far below the goal: they catch a starved or stuck client, not a slow machine.
FLOOR_MEDIAN_FPS = 5.0
FLOOR_EACH_FPS = 1.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from running_server(tmp_path_factory.mktemp("load"))


def open_fds(pid: int) -> int:
    """How many file descriptors the process holds (each websocket is one)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def snapshot(live: LiveServer) -> dict[str, Any]:
    """RSS (KiB), asyncio tasks, open fds and websocket clients of the server process."""
    state = live.state()
    return {
        "rss_kib": live.rss_kib(),
        "tasks": state.get("tasks", state["status"].get("tasks")),
        "fds": open_fds(live.pid),
        "clients": state["status"]["clients"],
    }


def _open(live: LiveServer) -> connect:
    return connect(
        live.ws_url,
        origin=live.origin,  # type: ignore[arg-type]
        compression=None,
        proxy=None,
        max_size=2**24,
        open_timeout=60,
        close_timeout=2,
    )


async def _read(ws: ClientConnection, until: float, counts: list[int], i: int) -> None:
    loop = asyncio.get_running_loop()
    while (left := until - loop.time()) > 0:
        try:
            raw = await asyncio.wait_for(ws.recv(), left)
        except TimeoutError:
            return
        if isinstance(raw, bytes):
            (length,) = struct.unpack_from(">I", raw)
            seq = json.loads(raw[4 : 4 + length])["seq"]
            counts[i] += 1
            await ws.send(json.dumps({"type": "ack", "seq": seq}))


async def _load_phase(live: LiveServer) -> tuple[list[float], float]:
    readers = list(await asyncio.gather(*(_open(live) for _ in range(READERS))))
    idle = list(await asyncio.gather(*(_open(live) for _ in range(IDLE))))
    counts = [0] * READERS
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(
        *(_read(ws, start + READ_SECONDS, counts, i) for i, ws in enumerate(readers))
    )
    elapsed = loop.time() - start
    # The idle clients never read a byte; they are still connected (the server kept them).
    idle_open = sum(ws.state.name == "OPEN" for ws in idle)
    # The idle clients' buffers are full, so they may not see the server's close frame: their
    # close gives up after close_timeout. Close everyone at once.
    await asyncio.gather(*(ws.close() for ws in readers + idle))
    assert idle_open == IDLE
    return [c / elapsed for c in counts], elapsed


async def _cycle(live: LiveServer, polite: bool) -> None:
    async with _open(live) as ws:
        await asyncio.wait_for(ws.recv(), 30)  # the server's first message: it was accepted
        if not polite:
            ws.transport.abort()  # gone without a close frame


async def _cycles(live: LiveServer) -> float:
    start = time.monotonic()
    for batch in range(CYCLES // 10):
        await asyncio.gather(
            *(_cycle(live, polite=(batch + k) % 2 == 0) for k in range(10)), return_exceptions=False
        )
    return time.monotonic() - start


def _settle(live: LiveServer, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    snap = snapshot(live)
    while snap["clients"] != 0 and time.monotonic() < deadline:
        time.sleep(0.25)
        snap = snapshot(live)
    time.sleep(1.0)  # let closing handlers finish
    return snapshot(live)


def test_load_32_readers_8_idle_then_500_cycles(server: LiveServer, tmp_path: Path) -> None:
    # Warm up: the first connections import and allocate what every later one reuses.
    asyncio.run(_warm(server))
    start = _settle(server)
    rates, elapsed = asyncio.run(_load_phase(server))
    med = statistics.median(rates)
    print(
        f"load: {READERS} readers + {IDLE} idle for {elapsed:.1f} s: frames/s per reader "
        f"min {min(rates):.1f}, median {med:.1f}, max {max(rates):.1f} (goal >= 20)"
    )
    cycles_s = asyncio.run(_cycles(server))
    end = _settle(server)
    print(f"{CYCLES} connect/disconnect cycles in {cycles_s:.1f} s")
    print(f"server before: {start}; after: {end}")
    assert med >= FLOOR_MEDIAN_FPS and min(rates) >= FLOOR_EACH_FPS, rates
    assert server.state()["status"]["worker"] == "running"
    assert end["clients"] == 0
    assert end["rss_kib"] <= 1.10 * start["rss_kib"], (start, end)
    assert end["fds"] <= start["fds"] + max(2, start["fds"] // 10), (start, end)
    assert start["tasks"] is not None, (
        "GET /api/state must report the event loop's task count as 'tasks'"
    )
    assert end["tasks"] <= 1.10 * start["tasks"] + 1, (start, end)
    log = server.output()
    assert "Traceback" not in log, log[-3000:]


async def _warm(live: LiveServer) -> None:
    for polite in (True, False) * 10:
        await _cycle(live, polite)
    ws = await _open(live)
    counts = [0]
    await _read(ws, asyncio.get_running_loop().time() + 2.0, counts, 0)
    await ws.close()
