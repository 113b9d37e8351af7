"""The dashboard's web app: FastAPI routes for the page, its files, ``/api/state`` and ``/ws``.

The server never runs torch: `ldam.web.hub.Hub` holds the parameters the browsers set (with a
version number that grows on every change), keeps the worker process running and fans its
frames and metrics out to every browser; `ldam.web.serve.run_server` serves this app.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ldam.web import security
from ldam.web.atlas import atlas_routes, checkpoint_param, load_atlas
from ldam.web.config import ServeConfig, worker_setup
from ldam.web.hub import Hub
from ldam.web.watch import Watcher

# The page: frontend/ in a source checkout, ldam/frontend/ in an installed wheel.
FRONTEND = Path(str(importlib.resources.files("ldam.frontend")))
# The only files served from node_modules: the chart library's built script and styles.
VENDOR_FILES = {
    "uPlot.iife.min.js": FRONTEND / "node_modules" / "uplot" / "dist" / "uPlot.iife.min.js",
    "uPlot.min.css": FRONTEND / "node_modules" / "uplot" / "dist" / "uPlot.min.css",
}
_STATIC_SUFFIXES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def _not_found() -> Response:
    return Response("Not found.", status_code=404, media_type="text/plain")


def create_app(config: ServeConfig) -> FastAPI:
    """The dashboard app for `config`; the worker starts with the app's lifespan and stops
    with it. The `Hub` is ``app.state.hub``. Raises `ServeError` for a bad target, setting or
    file (see `ldam.web.config.worker_setup`)."""
    base, initial = worker_setup(config)
    view, links = None, {}
    if config.atlas is not None:
        view = load_atlas(config.atlas)
        links = view.live_links(checkpoint_param(view, base.checkpoint, config.folder))
    watch = Watcher(Path(config.watch), config.watch_settle_s) if config.watch else None
    hub = Hub(base, initial, config.worker_entry, config.standby, watch, config.watch_poll_s)
    auth = security.TokenAuth(config.token, config.port)

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
    app.router.routes.extend(atlas_routes(view, links))

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
            return _not_found()
        return FileResponse(
            file, media_type=_STATIC_SUFFIXES[suffix], headers={"Cache-Control": "no-cache"}
        )

    @app.get("/vendor/{name}")
    async def vendor(name: str) -> Response:
        file = VENDOR_FILES.get(name)
        if file is None or not file.is_file():
            return _not_found()
        return FileResponse(file)

    @app.get("/api/state")
    async def state() -> JSONResponse:
        metrics = hub.broadcaster.latest("metrics")
        timeline = hub.broadcaster.latest("timeline")
        return JSONResponse(
            {
                "version": hub.store.version,
                "params": hub.store.params.model_dump(),
                "info": hub.store.info,
                "status": hub.status_payload(),
                "frame_seq": hub.broadcaster.frame_seq,
                "metrics": json.loads(metrics) if metrics is not None else None,
                # --watch: the run's checkpoints and which ones the panels show (else None).
                "timeline": json.loads(timeline) if timeline is not None else None,
                # The event loop's task count: the load test checks it returns to where it was.
                "tasks": len(asyncio.all_tasks()),
            }
        )

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await hub.serve(websocket)

    app.add_middleware(security.SecurityMiddleware, auth=auth, host=config.host, port=config.port)
    app.add_middleware(
        TrustedHostMiddleware,
        allowed_hosts=security.allowed_hosts(config.host, config.extra_hosts),
    )
    return app
