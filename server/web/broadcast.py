"""Fanning the worker's frames and the server's texts out to every browser, with flow control.

Each browser is a `Client`: latest-wins slots for the text kinds (a stale state, info, status,
timeline or metrics message is useless), an ordered queue for errors (bounded, so a client that
never reads cannot grow it), and a window of at most `MAX_FRAMES_IN_FLIGHT` frames that await the
browser's ``ack``. The `Broadcaster` keeps only the newest frame; `Broadcaster.flush` sends a
client what is due, so a slow browser skips frames (it always gets the newest one) and never
slows other browsers or the worker. A send that does not finish in `SEND_TIMEOUT_S` raises
`TimeoutError`, which ends that client.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from starlette.websockets import WebSocket

from ldam.web.security import SEND_TIMEOUT_S
from ldam.wire.limits import MAX_FRAMES_IN_FLIGHT
from ldam.wire.messages import encode_frame

# Errors waiting for one client; older ones are dropped first.
MAX_QUEUED_ERRORS = 32
# The order in which one flush sends the latest-wins texts (errors go before all of them).
TEXT_KINDS = ("status", "info", "state", "timeline", "metrics")


class Client:
    """One browser's websocket: what waits to be sent to it, and which frames it has not yet
    acknowledged. Only `Broadcaster.flush` writes to the socket, so frames and text never
    interleave badly."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        # Set whenever something may be due (a post, an ack, a new frame, the close).
        self.wake = asyncio.Event()
        self.unacked: deque[int] = deque()
        self.last_sent_seq = -1
        self.slots: dict[str, str] = {}
        self.errors: deque[str] = deque(maxlen=MAX_QUEUED_ERRORS)
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

    def close(self) -> None:
        """Mark the client closed and wake its sender, which then ends."""
        self.closed = True
        self.wake.set()


class Broadcaster:
    """The connected clients, the newest frame (numbered here) and the newest text per kind."""

    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.frame: bytes | None = None
        # Numbered here, not by the worker, so the numbers keep growing across restarts.
        self.frame_seq = -1
        self.texts: dict[str, str] = {}

    def add(self, client: Client) -> None:
        """Register `client`; it starts with the newest text of each kind (metrics at once)."""
        self.clients.add(client)
        for kind, text in self.texts.items():
            client.post(kind, text)

    def remove(self, client: Client) -> None:
        """Forget `client` (it is closed)."""
        self.clients.discard(client)

    def latest(self, kind: str) -> str | None:
        """The newest text posted of `kind` (not ``error``), or None."""
        return self.texts.get(kind)

    def post_all(self, kind: str, text: str) -> None:
        """Queue a text message for every client (the newest of a kind replaces older ones)."""
        if kind != "error":
            self.texts[kind] = text
        for client in self.clients:
            client.post(kind, text)

    def publish_frame(self, header: dict[str, Any], images: list[bytes]) -> None:
        """Make the worker's frame the newest one, under the next number (the worker's own
        number stays in the header as ``worker_seq``), and wake every client."""
        header = dict(header)
        self.frame_seq += 1
        header["worker_seq"] = header["seq"]
        header["seq"] = self.frame_seq
        self.frame = encode_frame(header, images)
        for client in self.clients:
            client.wake.set()

    def close_all(self) -> None:
        """Close every client (the server is stopping)."""
        for client in list(self.clients):
            client.close()

    async def flush(self, client: Client) -> None:
        """Send `client` what is due: queued errors in order, the newest text of each kind,
        then the newest frame if it has not had it and its window has room.

        Raises what the socket raises; `TimeoutError` when one send takes `SEND_TIMEOUT_S`.
        """
        while client.errors:
            await _send(client.websocket, text=client.errors.popleft())
        for kind in TEXT_KINDS:
            text = client.slots.pop(kind, None)
            if text is not None:
                await _send(client.websocket, text=text)
        frame, seq = self.frame, self.frame_seq
        if (
            frame is not None
            and seq > client.last_sent_seq
            and len(client.unacked) < MAX_FRAMES_IN_FLIGHT
        ):
            client.unacked.append(seq)
            client.last_sent_seq = seq
            await _send(client.websocket, data=frame)


async def _send(websocket: WebSocket, text: str | None = None, data: bytes | None = None) -> None:
    # A client whose socket stays full this long is gone; dropping it frees its memory.
    if text is not None:
        await asyncio.wait_for(websocket.send_text(text), SEND_TIMEOUT_S)
    else:
        assert data is not None
        await asyncio.wait_for(websocket.send_bytes(data), SEND_TIMEOUT_S)
