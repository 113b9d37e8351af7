"""One browser's websocket, from accept to close: a receiver task and a sender task.

The receiver parses each message (`ldam.wire.messages.parse_client_message`), notes an ``ack``
in the client's frame window and hands every other message to the host; a bad message is
answered with an ``error`` naming the field, and the stream goes on. The sender sends what
`Broadcaster.flush` finds due whenever the client is woken. Either task ending (the socket
closed, or a send timed out because the browser stopped reading) ends the session, which
then cancels the other task, forgets the client and closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Protocol

from pydantic import BaseModel
from starlette.websockets import WebSocket, WebSocketDisconnect

from ldam.errors import UserError
from ldam.web import security
from ldam.web.broadcast import Broadcaster, Client
from ldam.wire.messages import AckMessage, error_payload, parse_client_message

# The close code for a websocket refused because `security.MAX_CLIENTS` are connected.
TRY_AGAIN_LATER = 1013


class SessionHost(Protocol):
    """What a session needs from the server (`ldam.web.hub.Hub` provides it)."""

    broadcaster: Broadcaster

    def welcome(self, client: Client) -> None:
        """Queue the first messages for a client that just joined."""

    def apply(self, message: BaseModel) -> None:
        """Apply one validated browser message; raises `MessageError` naming a bad field."""

    def clients_changed(self) -> None:
        """A client joined or left."""


class Session:
    """Runs one browser's websocket for `host` until it closes (see `run`)."""

    def __init__(self, websocket: WebSocket, host: SessionHost) -> None:
        self.websocket = websocket
        self.host = host

    async def run(self) -> None:
        """Accept the websocket (or refuse it with 1013 when `security.MAX_CLIENTS` are
        connected), serve it until either side ends, then clean up."""
        websocket = self.websocket
        broadcaster = self.host.broadcaster
        if len(broadcaster.clients) >= security.MAX_CLIENTS:
            await websocket.close(code=TRY_AGAIN_LATER)
            return
        await websocket.accept(subprotocol=security.accept_subprotocol(websocket))
        client = Client(websocket)
        broadcaster.add(client)
        self.host.welcome(client)
        receiver = asyncio.create_task(self._receive(client))
        sender = asyncio.create_task(self._send(client))
        try:
            # Either side ending ends the client: a closed socket stops the receiver, a send
            # that timed out (a client that stopped reading) stops the sender.
            await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            client.closed = True
            broadcaster.remove(client)
            for task in (receiver, sender):
                task.cancel()
            for task in (receiver, sender):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.host.clients_changed()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(), 1.0)

    async def _receive(self, client: Client) -> None:
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
                    self.host.apply(message)
            except UserError as err:
                client.post("error", json.dumps(error_payload(err)))

    async def _send(self, client: Client) -> None:
        broadcaster = self.host.broadcaster
        try:
            while not client.closed:
                await client.wake.wait()
                client.wake.clear()
                await broadcaster.flush(client)
        except (WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            pass
