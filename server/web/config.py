"""The dashboard's settings (`ServeConfig`) and their checks before anything starts.

`ServeConfig` holds what ``ldam serve`` was given; `worker_setup` turns it into the worker's
start configuration and the first parameters, raising `ServeError` (one sentence) for a file
that is missing or unreadable, a bad target or a bad setting. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ldam.errors import UserError
from ldam.metadata import MetadataOverride
from ldam.models.bundled import CHECKPOINT_DIR, DEFAULT_PAIR
from ldam.web.store import name_in_folder
from ldam.wire.link import WORKER_ENTRY, WorkerConfig
from ldam.wire.params import SamplerParams, invalid
from ldam.wire.targets import TargetError, parse_target


class ServeError(UserError):
    """The dashboard cannot start; the message is one sentence for the user."""


@dataclass(frozen=True)
class ServeConfig:
    """Everything the dashboard server is started with (``ldam serve``'s options and more).

    `checkpoint`/`compare`: files to load (None: the bundled LeNet pair); `target`: LAYER:UNIT
    or LAYER:A-B; `data`: real images for the discriminator; `checkpoints_dir`: the folder the
    page's checkpoint picker may reach (None: the bundled checkpoints); `host`/`port`: where to
    listen; `device`: ``auto``, ``cpu`` or ``cuda``; `trust_checkpoint`: load the operator's own
    files as full pickles; `token`: the access token (None on loopback: no auth);
    `params`: initial `SamplerParams` fields; `frame_rate`: frames per second the worker encodes
    at most; `worker_entry`: the worker's start function (tests swap it); `extra_hosts`: more
    Host header names to accept; `default_compare`: with no checkpoint named, show the
    averaged LeNet beside the plain one; `standby`: keep a warm spare worker for fast restarts;
    `watch`: a training run's folder whose newest complete checkpoint is the main panel (then
    also the picker's folder, and `checkpoint` must be None), with the settle rule's quiet time
    `watch_settle_s` and a scan every `watch_poll_s` seconds (`ldam.web.watch`);
    `idle_pause_s`: seconds with no browser connected before the worker rests (0: never);
    `arch`, `input_shape`: the network and C,H,W for state-dict files (``--arch``).
    `metadata`: the normalization and class names given for every checkpoint loaded
    (``--mean``, ``--std``, ``--class-names``).
    `atlas`: an `ldam atlas` folder for the Atlas view (its checkpoint is the main one when no
    checkpoint is named).
    """

    checkpoint: str | None = None
    compare: str | None = None
    target: str | None = None
    data: str | None = None
    checkpoints_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    trust_checkpoint: bool = False
    token: str | None = None
    params: dict[str, Any] | None = None
    frame_rate: float = 30.0
    worker_entry: str = WORKER_ENTRY
    extra_hosts: tuple[str, ...] = ()
    default_compare: bool = True
    standby: bool = True
    watch: str | None = None
    watch_settle_s: float = 2.0
    watch_poll_s: float = 0.5
    idle_pause_s: float = 60.0
    arch: str | None = None
    input_shape: tuple[int, int, int] | None = None
    atlas: str | None = None
    metadata: MetadataOverride | None = None

    @property
    def folder(self) -> Path:
        """The checkpoint picker's folder: `checkpoints_dir`, the watched run's folder, or the
        bundled checkpoints."""
        if self.checkpoints_dir:
            return Path(self.checkpoints_dir)
        return Path(self.watch) if self.watch else CHECKPOINT_DIR


def parse_target_option(target: str | None) -> dict[str, Any]:
    """The parameter fields that ``--target LAYER:UNIT`` or ``LAYER:A-B`` sets.

    The one target grammar (`ldam.wire.targets.parse_target`) reads it. ``LAYER:UNIT`` gives
    the "one unit, many chains" layout, ``LAYER:A-B`` one column per unit. The dashboard shows
    whole units, so a position (``C@Y,X``) is refused with a pointer to ``ldam sample``.
    """
    if target is None:
        return {}
    try:
        spec = parse_target(target)
    except TargetError as err:
        raise ServeError(str(err)) from None
    if spec.position is not None:
        raise ServeError(
            f"The dashboard samples whole units, so the position in {target!r} cannot be shown; "
            f"use --target {spec.layer_text}:{spec.first} here, or ldam sample for a position."
        )
    layer = spec.layer_text
    layout = "chains" if spec.first == spec.last else "range"
    return {"layer": layer, "unit": spec.first, "unit_end": spec.last, "layout": layout}


def _check_file(path: str | None, what: str) -> str | None:
    # The resolved path of a readable file, or one sentence naming what is wrong with it.
    if path is None:
        return None
    file = Path(path).expanduser()
    if not file.exists():
        raise ServeError(f"The {what} {path} does not exist.")
    if not file.is_file():
        raise ServeError(f"The {what} {path} is not a file.")
    try:
        with file.open("rb"):
            pass
    except OSError as err:
        raise ServeError(f"The {what} {path} cannot be read ({err.strerror}).") from None
    return str(file.resolve())


def worker_setup(config: ServeConfig) -> tuple[WorkerConfig, SamplerParams]:
    """The worker's start configuration and the first parameters for `config`.

    Fills in the bundled pair when no checkpoint is named (with `watch`, the main file comes
    later, from the run's folder), checks the files and the target, and validates
    `config.params`; raises `ServeError` (one sentence) for anything wrong.
    """
    folder = config.folder
    checkpoint, compare = config.checkpoint, config.compare
    if config.watch is not None:
        if checkpoint is not None:
            raise ServeError(
                "--watch follows the newest checkpoint in its folder; name no checkpoint with it."
            )
        if config.atlas is not None:
            raise ServeError("--atlas shows one checkpoint's units; leave it out with --watch.")
        if config.checkpoints_dir is not None and Path(config.checkpoints_dir).resolve() != (
            Path(config.watch).resolve()
        ):
            raise ServeError("--watch DIR is also the picker's folder; leave out --checkpoints.")
    if checkpoint is None and config.atlas is not None:
        from ldam.web.atlas import load_atlas

        checkpoint = str(load_atlas(config.atlas).checkpoint)
    if checkpoint is None and config.watch is None:
        checkpoint = str(DEFAULT_PAIR[0])
        if compare is None and config.default_compare and DEFAULT_PAIR[1].is_file():
            compare = str(DEFAULT_PAIR[1])
    checkpoint = _check_file(checkpoint, "checkpoint")
    compare = _check_file(compare, "compare checkpoint")
    data = config.data
    if data is not None and not Path(data).exists():
        raise ServeError(f"The data {data} does not exist.")
    if config.idle_pause_s < 0 or config.idle_pause_s != config.idle_pause_s:
        raise ServeError(
            f"--idle-pause must be 0 (never) or a number of seconds, not {config.idle_pause_s}."
        )
    try:
        # A file the operator named that lies inside the picker's folder shows under its name.
        # (With --watch the main file is followed, not named: `checkpoint` stays None.)
        initial = SamplerParams.model_validate(
            {
                **parse_target_option(config.target),
                "checkpoint": name_in_folder(folder, checkpoint),
                "compare": name_in_folder(folder, compare),
            }
        )
        if config.params:
            initial = SamplerParams.model_validate({**initial.model_dump(), **config.params})
    except ValidationError as err:
        raise ServeError(invalid(err)[0]) from None
    worker = WorkerConfig(
        checkpoints_dir=str(folder.resolve()),
        checkpoint=checkpoint,
        compare=compare,
        data=str(Path(data).resolve()) if data else None,
        device=config.device,
        trust_checkpoint=config.trust_checkpoint,
        frame_rate=config.frame_rate,
        arch=config.arch,
        input_shape=config.input_shape,
        metadata=config.metadata,
        idle_pause_s=config.idle_pause_s,
    )
    return worker, initial
