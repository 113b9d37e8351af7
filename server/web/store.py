"""The parameters the browsers set: one `SamplerParams`, its version, the checkpoint files.

Every change the browsers make gets a new version number; the worker stamps each frame with
the version it was made with, so a page knows when its change shows. A change the worker
refuses rolls back to what the worker still runs, unless a newer change was sent meanwhile
(the refusal is then out of date; the newer change stands or is refused in its turn).

The store never talks to the worker itself: `ParamStore.apply` and `ParamStore.on_rejected`
return the `SetParams` command to send, or None. No torch here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ldam.errors import UserError
from ldam.web import security
from ldam.wire.events import Ready, Rejected, SetParams
from ldam.wire.link import WorkerConfig
from ldam.wire.messages import MessageError
from ldam.wire.params import SamplerParams, SetMessage, check_layer_and_units, invalid
from ldam.wire.settings import describe

# The page keeps only settings that differ from these in its URL.
_DEFAULTS = SamplerParams().model_dump()
SETTINGS_DESCRIBED = describe()


def name_in_folder(folder: Path, path: str | None) -> str | None:
    """The name of file `path` relative to `folder` (``"runs/a.pt"``), or None when `path` is
    None or lies outside `folder`: how the picker shows a file the operator named."""
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None


class ParamStore:
    """The current parameters, their version and checkpoint `sources`, and the model's `info`.

    `base` is the worker's start configuration from the command line: its `checkpoint` and
    `compare` are the operator's own files, its `version` the first version number.
    `sources` maps ``checkpoint`` and ``compare`` to the absolute paths the worker loads.
    With `watch` (``--watch``: the run's folder) the store also owns what is followed: the
    run's newest loadable file, and whether the page pinned a file instead (`following`).
    """

    def __init__(self, base: WorkerConfig, params: SamplerParams, watch: str | None = None) -> None:
        self.base = base
        self.folder = Path(base.checkpoints_dir)
        self.params = params
        self.version = base.version
        self.sources: dict[str, str | None] = {
            "checkpoint": base.checkpoint,
            "compare": base.compare,
        }
        # What the worker said about the model (layers, device, panels); None until "ready".
        self.info: dict[str, Any] | None = None
        # ``--watch``: the run's folder, and its newest loadable file (`follow`,
        # `follow_failed`), where ``checkpoint: ""`` (follow the run again) leads.
        self.watch = watch
        self._newest: str | None = None

    def worker_config(self) -> WorkerConfig:
        """The start configuration of a worker that runs the current parameters and files."""
        base = self.base
        return dataclasses.replace(
            base,
            checkpoint=self.sources["checkpoint"],
            compare=self.sources["compare"],
            params=self.params.model_dump(),
            version=self.version,
            # Only the files the operator named may be loaded as trusted full pickles, never a
            # pick from the folder (the worker compares resolved paths).
            trusted_paths=tuple(p for p in (base.checkpoint, base.compare) if p is not None),
        )

    def apply(self, message: SetMessage) -> SetParams | None:
        """Apply a validated ``set`` message: the command for the worker, or None when nothing
        changed. Raises `MessageError` naming the field for a checkpoint name that is not in
        the folder, a layer or unit the model lacks, or a combination out of bounds."""
        changes = message.changes()
        sources = dict(self.sources)
        for name in ("checkpoint", "compare"):
            if name not in changes:
                continue
            if changes[name] is None:
                if name == "checkpoint":
                    # The picker's "(from the command line)" entry: the operator's own file,
                    # or with --watch the run's newest checkpoint (followed from then on).
                    sources[name] = self._newest or self.base.checkpoint
                    changes[name] = name_in_folder(self.folder, self.base.checkpoint)
                else:
                    sources[name] = None
                continue
            try:
                path = security.resolve_checkpoint(self.folder, changes[name])
            except security.SecurityError as err:
                raise MessageError(str(err), name) from None
            sources[name] = str(path)
        self._check_target(changes)
        try:
            params = SamplerParams.model_validate({**self.params.model_dump(), **changes})
        except ValidationError as err:
            raise MessageError(*invalid(err)) from None
        if params == self.params and sources == self.sources:
            return None
        self.params = params
        self.sources = sources
        self.version += 1
        return SetParams(self.version, params.model_dump(), dict(sources))

    def follow(self, path: str) -> SetParams | None:
        """``--watch`` found `path`, the run's newest checkpoint: the main panel moves to it
        unless the page pinned one (``checkpoint`` set). Returns the warm command that swaps
        the model under the running chains, or None while pinned."""
        self._newest = path
        if not self.following:
            return None
        self.sources = {**self.sources, "checkpoint": path}
        self.version += 1
        return SetParams(self.version, self.params.model_dump(), dict(self.sources), warm=True)

    def follow_failed(self, shown: str | None) -> None:
        """``--watch``: the newest file failed to load; following the run again (``""`` from
        the page) leads back to `shown`, the run's file the main panel ran last (None when no
        file of the run ran yet)."""
        self._newest = shown

    @property
    def following(self) -> bool:
        """True while the main panel follows the run (or the operator's file): the page pinned
        no checkpoint."""
        return self.params.checkpoint is None

    def shown(self) -> tuple[str | None, str | None]:
        """The absolute paths of the files the main and compare panels run (None: none)."""
        return self.sources["checkpoint"], self.sources["compare"]

    def _check_target(self, changes: dict[str, Any]) -> None:
        # The worker knows the layers; checking here keeps a bad pick from reaching it. A new
        # checkpoint has layers of its own, which only the worker can check.
        if self.info is None or "checkpoint" in changes:
            return
        layers = {layer["name"]: layer["units"] for layer in self.info.get("layers", [])}
        layer = changes.get("layer", self.params.layer)
        if "layer" not in changes and layer not in layers:
            return  # the worker fills in the layer it runs
        values = {name: changes[name] for name in ("unit", "unit_end") if name in changes}
        try:
            check_layer_and_units(layers, layer, values)
        except UserError as err:
            raise MessageError(err.message, err.field or "layer") from None

    def on_ready(self, message: Ready) -> None:
        """A worker runs: keep what it filled in (the layer when none was given) if it runs
        the current version, and its description of the model."""
        if message.version == self.version:
            self.params = SamplerParams.model_validate(message.params)
        self.info = message.info

    def on_rejected(self, message: Rejected) -> SetParams | None:
        """The worker refused version `message.version` and still runs `message.params`.

        A refusal of the current version rolls back to what the worker runs, under a new
        version so that frames match; the `SetParams` returned tells the worker that version.
        An out-of-date refusal (a newer change was sent since) changes nothing and returns
        None: the worker refuses the newer change too if it is bad, and that refusal rolls back.
        A refused start (`message.params` None) changes nothing either.
        """
        if message.params is None or message.version != self.version:
            return None
        self.params = SamplerParams.model_validate(message.params)
        if message.sources is not None:
            self.sources = dict(message.sources)
        self.version += 1
        return SetParams(self.version, self.params.model_dump(), dict(self.sources))

    def state_message(self) -> dict[str, Any]:
        """The ``state`` message: the full parameters and their version."""
        return {
            "type": "state",
            "version": self.version,
            "params": self.params.model_dump(),
            "defaults": _DEFAULTS,
            # Each sampler setting's bounds, default, help and control span, from the one
            # settings model: the page builds its controls from these.
            "settings": SETTINGS_DESCRIBED,
        }

    def info_message(self) -> dict[str, Any]:
        """The ``info`` message: the model's layers, the checkpoints to pick from, the device."""
        checkpoint = self.base.checkpoint
        return {
            "type": "info",
            **(self.info or {}),
            "checkpoints": security.list_checkpoints(self.folder),
            # The picker offers the operator's file (sent as checkpoint "") when it is not one
            # of `checkpoints`.
            "operator_checkpoint": Path(checkpoint).name if checkpoint else None,
            # --watch: the run's folder (the picker's "" then means: follow the newest).
            "watch": self.watch,
        }
