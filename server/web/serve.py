"""Serving the dashboard: the start checks, uvicorn's settings, a clean exit on signals.

`run_server` checks what can be checked before anything starts (token rule, free port,
checkpoint folder), starts uvicorn with the app and waits for the start's one outcome
(`Hub.started`): a worker that cannot start ends the start with `ServeError` and the
worker's own sentence.
Ctrl-C and SIGTERM shut down gracefully (exit status 0). No torch here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import signal
import socket
from typing import Any

from fastapi import FastAPI

from ldam.web import security
from ldam.web.app import create_app
from ldam.web.config import ServeConfig, ServeError
from ldam.web.hub import Hub
from ldam.web.watch import watch_folder_error


def check_port(host: str, port: int) -> None:
    """Raise `ServeError` (one sentence) when nothing can listen on `host`:`port` now."""
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


def run_server(config: ServeConfig) -> None:
    """Serve the dashboard for `config` until interrupted (Ctrl-C or SIGTERM: a clean shutdown).

    Raises `ServeError` (one sentence) for a bad token, a busy port, a missing checkpoint
    folder, a missing or unreadable checkpoint, a bad target or a worker that cannot start
    with them (refused, or dead `MAX_DEATHS_BEFORE_READY` times before its first "ready").
    """
    import uvicorn

    try:
        token = security.require_token_for_bind(config.host, config.token)
    except security.SecurityError as err:
        raise ServeError(str(err)) from None
    config = dataclasses.replace(config, token=token)
    host, port = config.host, config.port
    check_port(host, port)
    if config.watch is not None:
        problem = watch_folder_error(config.watch)
        if problem is not None:
            raise ServeError(problem)
    if not config.folder.is_dir():
        shown_folder = config.checkpoints_dir or config.folder
        raise ServeError(f"The checkpoint folder {shown_folder} does not exist.")
    app = create_app(config)
    hub: Hub = app.state.hub
    server = uvicorn.Server(uvicorn_config(app, host, port))

    async def main() -> None:
        serving = asyncio.create_task(server.serve())
        # Fail fast with the worker's own sentence when the model or target cannot be used.
        # With --watch a file that fails is skipped instead (the page says so): only a start
        # that no file can mend (device, target, compare file, crashes) ends it.
        started = asyncio.wrap_future(hub.started)
        try:
            await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()  # a no-op once set; else nothing waits on it any more
        if started.cancelled():
            await serving  # the server stopped (a signal) before the start was settled
            return
        failed = started.result()
        if failed is not None:
            server.should_exit = True
            await serving
            raise ServeError(failed)
        shown = "127.0.0.1" if security.is_wildcard(host) else host
        if token is not None:
            print(f"ldam: open {security.login_url(host, port, token)}", flush=True)
        else:
            print(f"ldam: serving on http://{shown}:{port}", flush=True)
        follower = hub.follower
        if follower is not None:
            waiting = " (waiting for its first complete checkpoint)" if follower.waiting else ""
            print(f"ldam: following {follower.watcher.folder}{waiting}", flush=True)
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
