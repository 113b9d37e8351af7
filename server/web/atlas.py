"""The dashboard's Atlas view (``ldam serve --atlas DIR``): the atlas's gallery at ``/atlas``,
its unit images at ``/atlas/units/...``, and for every unit a link that samples it live.

The link opens the dashboard with the atlas's settings in the URL (the page applies them at
start): the unit's layer and unit, one panel of the atlas's chains per unit, the same
temperature, step size, momentum, L2 weight and window, and as seed the unit's own seed
(`ldam.atlas.plan.unit_seed`), so the live chains start as the atlas's chains of that unit did.
No torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ldam.atlas.gallery import gallery_html
from ldam.atlas.manifest import AtlasError, read_manifest
from ldam.atlas.plan import file_sha256, unit_seed
from ldam.errors import UserError
from ldam.wire.limits import MAX_CHAINS
from ldam.wire.settings import on

_UNIT_FILE = re.compile(r"^unit_\d{5}\.png$")


class AtlasViewError(UserError):
    """The atlas folder cannot be shown; the message is one sentence."""


@dataclass(frozen=True)
class AtlasView:
    """An atlas folder as the dashboard shows it."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        """The checkpoint the atlas was made from."""
        return Path(self.manifest["checkpoint"]["path"])

    def live_params(self, unit: int) -> dict[str, Any]:
        """The dashboard parameters that sample `unit` live with the atlas's settings."""
        s = self.manifest["settings"]
        return {
            "layer": self.manifest["layer"],
            "unit": unit,
            "unit_end": unit,
            "layout": "chains",
            "chains": min(int(s["chains"]), MAX_CHAINS),
            # Every setting the atlas and the page share, by the one model's names (None as
            # the setting's word: "auto").
            **{
                name: setting.none if s[name] is None else s[name]
                for name, setting in on("dashboard").items()
                if name in s and name not in ("chains", "seed")
            },
            "seed": unit_seed(int(s["seed"]), unit),
            # The view the PNGs were drawn with (an atlas older than the setting has none).
            **({"view": s["view"]} if "view" in s else {}),
        }

    def live_links(self, checkpoint_param: str | None) -> dict[int, str]:
        """Unit -> the dashboard URL sampling it live (`checkpoint_param`: the picker's name
        of the atlas's checkpoint, None when it is the served checkpoint)."""
        extra = {"checkpoint": checkpoint_param} if checkpoint_param else {}
        return {
            e["unit"]: "/?" + urlencode({**extra, **self.live_params(e["unit"])})
            for e in self.manifest["units"]
        }


def load_atlas(folder: str | Path) -> AtlasView:
    """The atlas in `folder`, or `AtlasViewError` (one sentence)."""
    path = Path(folder)
    if not path.is_dir():
        raise AtlasViewError(f"The atlas folder {path} does not exist.")
    try:
        manifest = read_manifest(path)
    except AtlasError as err:
        raise AtlasViewError(str(err)) from None
    if manifest is None:
        raise AtlasViewError(f"{path} holds no atlas.json; make one with ldam atlas.")
    return AtlasView(path.resolve(), manifest)


def _sha256(path: Path) -> str | None:
    """The file's sha256, None when it cannot be read."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def checkpoint_param(view: AtlasView, served: str, folder: Path) -> str | None:
    """How the page names the atlas's checkpoint: None when it is the served checkpoint
    (same bytes), else its name in the checkpoint folder; `AtlasViewError` when the
    dashboard cannot reach it."""
    want = view.manifest["checkpoint"]["sha256"]
    if _sha256(Path(served)) == want:
        return None
    candidate = view.checkpoint.resolve()
    base = folder.resolve()
    if candidate.is_relative_to(base) and _sha256(candidate) == want:
        return str(candidate.relative_to(base))
    raise AtlasViewError(
        f"The atlas in {view.folder} was made from {view.checkpoint}, which is neither the served "
        f"checkpoint nor in the checkpoint folder {base}; serve that checkpoint with it."
    )


def atlas_routes(view: AtlasView | None, links: dict[int, str]) -> list[BaseRoute]:
    """``/atlas`` (the gallery with live links), ``/atlas/units/NAME`` (a unit's PNG, only
    names the manifest lists) and ``/api/atlas`` (whether there is one, for the page's link)."""
    listed = {Path(e["png"]).name for e in view.manifest["units"]} if view else set()

    async def page(_request: Request) -> Response:
        if view is None:
            return Response("No atlas is served.", status_code=404, media_type="text/plain")
        body = gallery_html(view.manifest, links, base="/atlas/")
        return HTMLResponse(body, headers={"Cache-Control": "no-cache"})

    async def unit_image(request: Request) -> Response:
        name = request.path_params["name"]
        if view is None or not _UNIT_FILE.match(name) or name not in listed:
            return Response("Not found.", status_code=404, media_type="text/plain")
        file = view.folder / "units" / name
        if not file.is_file():
            return Response("Not found.", status_code=404, media_type="text/plain")
        return FileResponse(file, media_type="image/png")

    async def summary(_request: Request) -> Response:
        if view is None:
            return JSONResponse({"atlas": None})
        return JSONResponse(
            {"atlas": {"layer": view.manifest["layer"], "units": len(view.manifest["units"])}}
        )

    return [
        Route("/atlas", page),
        Route("/atlas/units/{name}", unit_image),
        Route("/api/atlas", summary),
    ]
