"""What the worker tells the server: typed events, frames and metrics, through the outbox.

Frames: the chains, in grid order, scaled for display and tiled into one image on the device,
copied to the host once and encoded once to JPEG per panel. Pillow encodes the 16-chain grid
(122x122) in about 170 us on this 2-core machine against 80 us for simplejpeg; at 30 frames/s
that is 0.5% of a core, so a second JPEG library is not worth its dependency.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import torch

from ldam.errors import UserError
from ldam.sampling.images import display_grid, to_pil
from ldam.wire.events import Frame, Heartbeat, Metrics, Notice, Ready, Rejected
from ldam.wire.link import Outbox
from ldam.wire.views import DEFAULT_VIEW, resolve_view
from ldam.worker.panels import Panel


def encode_jpeg(grid: torch.Tensor, quality: int) -> bytes:
    """uint8 grid `[C, H, W]` (C = 1 or 3, as `display_grid` makes it) -> JPEG bytes (4:4:4, no
    chroma blur on tiny images)."""
    out = io.BytesIO()
    to_pil(grid).save(out, format="JPEG", quality=quality, subsampling=0)
    return out.getvalue()


def finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (browsers reject NaN in JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class Rate:
    """Events per second over the last second (steps, frames)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def tick(self) -> None:
        """Count one event now."""
        self.times.append(time.monotonic())

    def per_second(self) -> float:
        """Events in the last second."""
        now = time.monotonic()
        self.times = [t for t in self.times if now - t < 1.0]
        return float(len(self.times))


class Publisher:
    """Sends the worker's events, frames and metrics; `seq` numbers the frames it made."""

    def __init__(self, outbox: Outbox, jpeg_quality: int) -> None:
        self.outbox = outbox
        self.jpeg_quality = jpeg_quality
        self.seq = 0
        self.frames = Rate()

    def heartbeat(self) -> None:
        """Still alive (for the server's watchdog)."""
        self.outbox.put_event(Heartbeat())

    def ready(self, version: int, params: dict[str, Any], info: dict[str, Any]) -> None:
        """The chains for `version` run."""
        self.outbox.put_event(Ready(version, params, info))

    def rejected(
        self,
        version: int,
        err: UserError,
        params: dict[str, Any] | None,
        sources: dict[str, str | None] | None = None,
    ) -> None:
        """The change to `version` was refused (`params` None: the start itself failed)."""
        self.outbox.put_event(Rejected(version, err.field or "message", str(err), params, sources))

    def notice(self, field: str, message: str) -> None:
        """A sentence for the browsers that refuses no change."""
        self.outbox.put_event(Notice(field, message))

    def frame(
        self, panels: list[Panel], show: str, step: int, version: int, view: str = DEFAULT_VIEW
    ) -> None:
        """One frame of every panel: window means (`show` "average") or the chains, in `view`
        (the paper's symmetric scaling, the input space with the panel's normalization, or
        ``auto``: each panel by its own channel count); each panel's header names the view it
        was drawn in."""
        images: list[bytes] = []
        headers: list[dict[str, Any]] = []
        with torch.no_grad():
            for panel in panels:
                sampler = panel.sampler
                x = sampler.window_mean() if show == "average" else sampler.x
                shown = resolve_view(view, x.shape[1])
                grid = display_grid(x, panel.columns, shown, panel.loaded.normalization)
                images.append(encode_jpeg(grid, self.jpeg_quality))
                headers.append(
                    {
                        "label": panel.label,
                        "target": panel.target_text,
                        "width": int(grid.shape[2]),
                        "height": int(grid.shape[1]),
                        "columns": panel.columns,
                        "rows": panel.rows,
                        "view": shown,
                    }
                )
        self.seq += 1
        header = {
            "seq": self.seq,
            "time": time.time(),
            "step": step,
            "version": version,
            "show": show,
            "view": view,
            "panels": headers,
        }
        self.outbox.put_frame(Frame(header, images))
        self.frames.tick()

    def metrics(self, payload: dict[str, Any]) -> None:
        """The page's ``metrics`` message (NaN and infinities become null)."""
        self.outbox.put_metrics(
            Metrics(finite({**payload, "frames_per_s": self.frames.per_second()}))
        )
