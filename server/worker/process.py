"""The worker process: runs LDAM continuously and publishes frames and metrics.

It is started by `ldam.wire.link.WorkerLink` in a fresh (spawned) interpreter and is the only
process of the dashboard that imports torch. Its loop, top to bottom:

1. drain the command pipe (parameter changes apply at the next step; a change of target,
   layout, seed or checkpoint rebuilds the chains, a bad one is refused and the old chains go
   on);
2. one Langevin step of every panel (one panel, or two in the compare view: the second
   checkpoint with the same seed and parameters); the chains go to the discriminator trainer,
   whose own thread trains D online;
3. at most `frame_rate` times a second (and right after a change, so a slider's effect shows
   at once): the chains, in grid order, scaled for display and tiled into one image on the
   device, copied to the host once, encoded once to JPEG, and handed to the outbox (latest
   wins);
4. `metrics_rate` times a second: activations, speed, burn-in, resets, D's figures.

A heartbeat thread sends `Heartbeat()` every `HEARTBEAT_EVERY_S`, also during a long
step or checkpoint load: the server restarts a worker it has not heard from for
`ldam.web.app.HEARTBEAT_TIMEOUT_S`, which then means a frozen process, not a slow network.

JPEG encoding uses Pillow: on this 2-core machine it takes about 170 us for the 16-chain grid
(122x122) against 80 us for simplejpeg; at 30 frames/s that is 0.5% of a core, so a second
JPEG library is not worth its dependency.
"""

from __future__ import annotations

import io
import math
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ldam.models.loading import DEFAULT_CHECKPOINT, CheckpointError, LoadedModel, load_checkpoint
from ldam.sampling.energy import ActivationTerm, DiscriminatorTerm, L2Term
from ldam.sampling.images import grid_order, tile, to_display, to_pil
from ldam.sampling.sampler import Sampler, SamplerConfig, SamplerError
from ldam.sampling.targets import Target, TargetError, list_layers
from ldam.wire.events import (
    Frame,
    Heartbeat,
    Metrics,
    Notice,
    Ready,
    Rejected,
    Reset,
    RestartDiscriminator,
    SetParams,
    Shake,
    Stop,
    Viewers,
)
from ldam.wire.link import Message, WorkerConfig, WorkerEnd
from ldam.wire.params import STRUCTURAL_FIELDS, SamplerParams

# Offer the chains to the discriminator every this many steps (it trains on the newest offer).
DISC_OFFER_EVERY = 2
# Models kept loaded, so that switching back and forth between checkpoints is instant.
MODEL_CACHE = 4
# Seconds between the heartbeat thread's "alive" messages (the server waits 10 s).
HEARTBEAT_EVERY_S = 2.0
# Seconds between frames while no browser watches.
IDLE_FRAME_EVERY_S = 1.0
# The moving windows of all panels together may take this much memory; more is refused.
WINDOW_BUDGET_BYTES = 512 << 20


class BuildError(Exception):
    """A parameter change the worker cannot carry out; `field` names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Panel:
    """One checkpoint's chains: its model, target, sampler and grid order."""

    label: str
    target_text: str
    loaded: LoadedModel
    target: Target
    sampler: Sampler  # its chains are in grid order (row-major cells)
    columns: int
    last_activation: torch.Tensor | None = None


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


NO_CUDA = "--device cuda was asked for, but this machine has no CUDA device; use --device cpu."


def check_device(device: torch.device) -> None:
    """Raise BuildError (field ``device``) when `device` is CUDA and this machine has none."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BuildError("device", NO_CUDA)


def encode_jpeg(grid: torch.Tensor, quality: int) -> bytes:
    """uint8 grid `[C, H, W]` (C = 1 or 3) -> JPEG bytes (4:4:4, no chroma blur on tiny images)."""
    out = io.BytesIO()
    to_pil(grid).save(out, format="JPEG", quality=quality, subsampling=0)
    return out.getvalue()


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (browsers reject NaN in JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class Worker:
    """The sampler loop and its state; `run` until the server says stop or goes away."""

    def __init__(self, config: WorkerConfig, end: WorkerEnd) -> None:
        self.config = config
        self.end = end
        self.device = pick_device(config.device)
        self.params = SamplerParams.model_validate(config.params)
        self.version = config.version
        self.sources: dict[str, str | None] = {
            "checkpoint": config.checkpoint,
            "compare": config.compare,
        }
        self.models: dict[str, LoadedModel] = {}
        self.panels: list[Panel] = []
        self.layers: list[Any] = []
        self.trainer: Any = None
        self.trainer_shape: tuple[int, ...] | None = None
        self.disc_note: str | None = None
        self.shake_until = 0.0
        self.shake_factor = 1.0
        self.seq = 0
        self.step = 0
        self.resets_before = 0
        self.dirty = True
        self.step_times: list[float] = []
        self.frame_times: list[float] = []
        self.stopping = False
        # Browsers watching; with none, frames are made once a second (for a late joiner).
        self.clients = 0
        self.next_frame = 0.0

    # --- building ---------------------------------------------------------------------

    def _path(self, which: str) -> str | None:
        source = self.sources[which]
        if source is None and which == "checkpoint":
            return str(DEFAULT_CHECKPOINT)
        return source

    def _beat(self) -> None:
        # "Still alive" for the server's watchdog, around work that keeps the loop from turning.
        self.end.outbox.put_event(Heartbeat())

    def _trusted(self, path: str) -> bool:
        """`--trust-checkpoint` covers only the files the operator named on the command line,
        never a checkpoint picked in the browser."""
        if not self.config.trust_checkpoint:
            return False
        named = self.config.trusted_paths
        if named is None:  # started directly (not by the server): the config's own files
            named = (self.config.checkpoint, self.config.compare)
        resolved = {str(Path(p).resolve()) for p in named if p is not None}
        return str(Path(path).resolve()) in resolved

    def _load(self, path: str, field: str) -> LoadedModel:
        if path not in self.models:
            self._beat()
            try:
                loaded = load_checkpoint(path, trust=self._trusted(path))
            except CheckpointError as err:
                raise BuildError(field, str(err)) from None
            finally:
                self._beat()
            loaded.module.to(self.device)
            if len(self.models) >= MODEL_CACHE:
                self.models.pop(next(iter(self.models)))
            self.models[path] = loaded
        return self.models[path]

    def _settings(self, params: SamplerParams, chains: int, rows: int) -> dict[str, Any]:
        """The sampler's live settings for `params` (a sweep makes one setting per chain)."""
        settings: dict[str, Any] = {
            "temperature": params.temperature * self._shake_multiplier(),
            "step_size": params.step_size,
            "momentum": params.momentum,
            "l2_weight": params.l2_weight,
            "disc_weight": params.disc_weight,
            "normalize": "all" if params.grad_norm else "none",
            "window": params.window,
        }
        sweep = params.sweep_rows()
        if sweep is not None:
            # Chains are in grid order per panel (see `grid_order`); cell r*columns + c is in row r.
            per_row = [min(v, 1.0) if params.sweep_param == "disc_weight" else v for v in sweep]
            if params.sweep_param == "step_size":
                per_row = [max(v, 1e-6) for v in per_row]
            columns = chains // rows
            values = [per_row[i // columns] for i in range(chains)]
            if params.sweep_param == "temperature":
                values = [v * self._shake_multiplier() for v in values]
            settings[params.sweep_param] = values
        return settings

    def _shake_multiplier(self) -> float:
        return self.shake_factor if time.monotonic() < self.shake_until else 1.0

    def _build_panel(self, params: SamplerParams, which: str, layer: str) -> Panel:
        path = self._path(which)
        assert path is not None
        loaded = self._load(path, which)
        units, columns = params.grid()
        cells = len(units)
        first, last = min(units), max(units)
        spec = f"{layer}:{first}" if first == last else f"{layer}:{first}-{last}"
        try:
            target = Target(
                loaded.module,
                spec,
                cells,
                batch_size=loaded.batch_size,
                input_shape=loaded.input_shape,
            )
        except TargetError as err:
            field = "compare" if which == "compare" else _field_of(str(err), "layer")
            raise BuildError(field, str(err)) from None
        unit_columns = sorted(set(units))
        order = grid_order(list(target.units_per_chain), unit_columns)
        if len(order) != cells:
            raise BuildError(
                "chains", f"The target gave {len(order)} grid cells for {cells} chains."
            )
        # The sampler's chains are put in grid order, so that per-chain sweep settings are
        # simply row-major; `order` maps cells back to the target's chains.
        rows = cells // columns
        settings = self._settings(params, cells, rows)
        # The discriminator term is always there; it is inactive (skipped) while no trainer
        # runs for this input shape, so turning D on later needs no rebuild.
        shape = tuple(loaded.input_shape)
        terms: list[Any] = [
            ActivationTerm(_Reordered(target, order)),
            L2Term(),
            DiscriminatorTerm(lambda: self._published_disc(shape)),
        ]
        try:
            config = SamplerConfig(chains=cells, seed=params.seed, device=self.device, **settings)
            sampler = Sampler(terms, loaded.input_shape, config)
        except SamplerError as err:
            raise BuildError(_field_of(str(err), "chains"), str(err)) from None
        label = Path(path).name
        return Panel(label, spec, loaded, target, sampler, columns)

    def build(self, params: SamplerParams, sources: dict[str, str | None]) -> SamplerParams:
        """Build the panels for `params`; on failure the old panels stay and BuildError says why.

        Returns `params` with the layer filled in when it was left empty.
        """
        old_sources = self.sources
        self.sources = dict(sources)
        try:
            check_device(self.device)
            main = self._load(self._path("checkpoint") or "", "checkpoint")
            layers = target_layers(main)
            if not layers:
                raise BuildError("layer", "The model has no layer that can be a target.")
            names = {info.name: info for info in layers}
            layer = params.layer or _default_layer(layers)
            if layer not in names:
                raise BuildError("layer", f"The model has no layer named {layer!r}.")
            units = names[layer].units
            if not params.layer:
                params = params.model_copy(
                    update={"layer": layer, "unit_end": min(params.unit_end, units - 1)}
                )
            for name in ("unit", "unit_end"):
                if getattr(params, name) >= units:
                    raise BuildError(
                        name, f"Layer {layer!r} has {units} units; {name} must be below {units}."
                    )
            panel_count = 2 if self.sources["compare"] is not None else 1
            check_window(params.window, len(params.grid()[0]), main.input_shape, panel_count)
            self._ensure_trainer(main, params)
            panels = [self._build_panel(params, "checkpoint", layer)]
            if self.sources["compare"] is not None:
                panels.append(self._build_panel(params, "compare", layer))
        except BuildError:
            self.sources = old_sources
            raise
        # Divergence resets are counted per sampler; keep the total across rebuilds.
        self.resets_before += sum(int(p.sampler.resets.sum()) for p in self.panels)
        self.panels = panels
        self.params = params
        self.layers = layers
        self.dirty = True
        return params

    def _ensure_trainer(self, main: LoadedModel, params: SamplerParams) -> None:
        """Create the discriminator trainer for the model's input shape once it is needed."""
        wanted = params.disc_weight > 0 or (
            params.layout == "sweep" and params.sweep_param == "disc_weight"
        )
        shape = tuple(main.input_shape)
        if self.trainer is not None and self.trainer_shape != shape:
            self.trainer.stop()
            self.trainer = None
        if self.trainer is None and wanted and self.disc_note is None:
            from ldam.sampling.discriminator import DiscriminatorError, build_discriminator_for

            try:
                self.trainer = build_discriminator_for(
                    main.input_shape,
                    main.normalization,
                    data=self.config.data,
                    device=self.device,
                    seed=params.seed,
                )
                self.trainer_shape = shape
            except DiscriminatorError as err:
                self.disc_note = str(err)

    def _published_disc(self, shape: tuple[int, ...]) -> Any:
        """The trainer's newest D for images of `shape`, or None (no trainer, other shape)."""
        if self.trainer is None or self.trainer_shape != shape:
            return None
        return self.trainer.current()

    def info(self) -> dict[str, Any]:
        """What the page's pickers need: layers, device, panels."""
        main = self.panels[0].loaded
        return {
            "device": str(self.device),
            "layers": [
                {"name": i.name, "shape": list(i.shape), "units": i.units} for i in self.layers
            ],
            "input_shape": list(main.input_shape),
            "class_names": main.class_names,
            "panels": [{"label": p.label, "format": p.loaded.format} for p in self.panels],
            "disc_note": self.disc_note,
        }

    # --- controls ---------------------------------------------------------------------

    def handle(self, command: Message) -> None:
        """Apply one command from the server."""
        if isinstance(command, SetParams):
            self._set(
                command.version, SamplerParams.model_validate(command.params), command.sources
            )
        elif isinstance(command, Reset):
            for panel in self.panels:
                panel.sampler.reset()
            self.dirty = True
        elif isinstance(command, Shake):
            self.shake_factor = float(command.factor)
            self.shake_until = time.monotonic() + float(command.seconds)
            self._apply_live()
        elif isinstance(command, RestartDiscriminator):
            if self.trainer is not None:
                from ldam.sampling.discriminator import DiscriminatorError

                try:
                    self.trainer.restart()
                except DiscriminatorError as err:
                    self.end.outbox.put_event(Notice("disc_restart", str(err)))
        elif isinstance(command, Viewers):
            self.clients = int(command.count)
            self.next_frame = 0.0  # back to the full frame rate (or the idle one) at once
        elif isinstance(command, Stop):
            self.stopping = True

    def _set(self, version: int, params: SamplerParams, sources: dict[str, str | None]) -> None:
        changed = {k for k, v in params.model_dump().items() if getattr(self.params, k) != v}
        try:
            if changed & STRUCTURAL_FIELDS or sources != self.sources:
                params = self.build(params, sources)
                self.end.outbox.put_event(Ready(version, params.model_dump(), self.info()))
            elif "window" in changed:
                main = self.panels[0]
                check_window(
                    params.window,
                    main.sampler.config.chains,
                    main.loaded.input_shape,
                    len(self.panels),
                )
        except BuildError as err:
            self.end.outbox.put_event(
                Rejected(version, err.field, str(err), self.params.model_dump(), dict(self.sources))
            )
            return
        self.params = params
        self.version = version
        had_note = self.disc_note
        self._ensure_trainer(self.panels[0].loaded, params)
        if self.disc_note != had_note:
            self.end.outbox.put_event(Notice("disc_weight", self.disc_note or ""))
        self._apply_live()
        self.dirty = True

    def _apply_live(self) -> None:
        for panel in self.panels:
            cells = panel.sampler.config.chains
            panel.sampler.set(**self._settings(self.params, cells, cells // panel.columns))
        if self.trainer is not None:
            uses = self.params.disc_weight > 0 or (
                self.params.layout == "sweep" and self.params.sweep_param == "disc_weight"
            )
            self.trainer.set(training=self.params.disc_training)
            if (
                uses
                and self.params.disc_training
                and not self.trainer.running
                and not self._disc_failed()
            ):
                self.trainer.start()
            elif not uses and self.trainer.running:
                # D's training thread shares the CPU with the sampler: only run it while used.
                self.trainer.stop()

    def _disc_failed(self) -> bool:
        return bool(self.trainer is not None and self.trainer.metrics().get("error"))

    # --- the loop ---------------------------------------------------------------------

    def step_all(self) -> None:
        """One Langevin step of every panel; chains go to the discriminator now and then."""
        for panel in self.panels:
            info = panel.sampler.step()
            panel.last_activation = info.activation
        self.step += 1
        if self.trainer is not None and self.trainer.running and self.step % DISC_OFFER_EVERY == 0:
            main = self.panels[0].sampler
            self.trainer.offer(main.x, main.age)
        self.step_times.append(time.monotonic())

    def publish_frame(self) -> None:
        """Tile, copy once, encode once, hand to the outbox (latest wins)."""
        images: list[bytes] = []
        panels: list[dict[str, Any]] = []
        with torch.no_grad():
            for panel in self.panels:
                sampler = panel.sampler
                x = sampler.window_mean() if self.params.show == "average" else sampler.x
                grid = tile(to_display(x), columns=panel.columns)
                images.append(encode_jpeg(grid, self.config.jpeg_quality))
                panels.append(
                    {
                        "label": panel.label,
                        "target": panel.target_text,
                        "width": int(grid.shape[2]),
                        "height": int(grid.shape[1]),
                        "columns": panel.columns,
                        "rows": sampler.config.chains // panel.columns,
                    }
                )
        self.seq += 1
        header = {
            "seq": self.seq,
            "time": time.time(),
            "step": self.step,
            "version": self.version,
            "show": self.params.show,
            "panels": panels,
        }
        self.end.outbox.put_frame(Frame(header, images))
        self.frame_times.append(time.monotonic())
        self.dirty = False

    def publish_metrics(self) -> None:
        """Activations per chain and panel, speed, burn-in, resets and D's figures."""
        now = time.monotonic()
        self.step_times = [t for t in self.step_times if now - t < 1.0]
        self.frame_times = [t for t in self.frame_times if now - t < 1.0]
        activation = []
        for panel in self.panels:
            a = panel.last_activation
            activation.append([] if a is None else [round(v, 4) for v in a.float().cpu().tolist()])
        main = self.panels[0].sampler
        disc = self.trainer.metrics() if self.trainer is not None else None
        metrics = {
            "time": time.time(),
            "step": self.step,
            "version": self.version,
            "paused": self.params.paused,
            "steps_per_s": float(len(self.step_times)),
            "frames_per_s": float(len(self.frame_times)),
            "activation": activation,
            "chains": main.config.chains,
            "burned_in": int((main.burn_in_step >= 0).sum()),
            "resets": int(sum(int(p.sampler.resets.sum()) for p in self.panels))
            + self.resets_before,
            "shaking": time.monotonic() < self.shake_until,
            "disc": disc,
            "disc_note": self.disc_note,
            "device": str(self.device),
        }
        self.end.outbox.put_metrics(Metrics(_finite(metrics)))

    def _beat_forever(self) -> None:
        # A step of a large network on a CPU can outlast the server's watchdog; this thread
        # keeps saying "alive" meanwhile (torch releases the GIL inside its ops), so only a
        # frozen process (stopped, or stuck holding the GIL) goes silent and is restarted.
        while not self.stopping:
            time.sleep(HEARTBEAT_EVERY_S)
            self._beat()

    def run(self) -> None:
        """The loop; returns when told to stop or when the server is gone."""
        threading.Thread(target=self._beat_forever, name="ldam-heartbeat", daemon=True).start()
        frame_every = 1.0 / self.config.frame_rate
        metrics_every = 1.0 / self.config.metrics_rate
        next_metrics = 0.0
        shaking = False
        while not self.stopping:
            try:
                commands = self.end.poll_commands(0.05 if self.params.paused else 0.0)
            except (EOFError, OSError):
                return
            for command in commands:
                self.handle(command)
            if self.stopping:
                return
            if shaking and time.monotonic() >= self.shake_until:
                self._apply_live()  # the shake is over: back to the set temperature
            shaking = time.monotonic() < self.shake_until
            if not self.params.paused:
                self.step_all()
            now = time.monotonic()
            if self.dirty or (not self.params.paused and now >= self.next_frame):
                self.publish_frame()
                # Keep the cadence: a frame that came a step late does not delay the next one.
                every = frame_every if self.clients else IDLE_FRAME_EVERY_S
                self.next_frame = max(self.next_frame + every, now)
            if now >= next_metrics:
                self.publish_metrics()
                next_metrics = now + metrics_every

    def close(self) -> None:
        """Stop the discriminator thread."""
        if self.trainer is not None:
            self.trainer.stop(timeout=2.0)


class _Reordered:
    """A target whose chains are listed in grid order: chain i of the sampler is chain
    `order[i]` of the target (identity when the target already groups chains by row)."""

    def __init__(self, target: Target, order: list[int]) -> None:
        self.target = target
        self.order = torch.tensor(order)
        self.inverse = torch.argsort(self.order)
        self.identity = order == sorted(order)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return self.target(x)
        # x is in grid order; the target expects its own chain order.
        out = self.target(x[self.inverse.to(x.device)])
        return out[self.order.to(out.device)]


def target_layers(loaded: LoadedModel) -> list[Any]:
    """The layers the picker offers: those with units, the output as ``output`` (listed only
    when it differs from the last layer, as for a model ending in a functional call)."""
    try:
        layers = list_layers(loaded.module, loaded.input_shape, batch_size=loaded.batch_size)
    except TargetError as err:
        raise BuildError("checkpoint", str(err)) from None
    named = [info for info in layers if info.name and info.units > 0]
    out = [info for info in layers if not info.name and info.units > 0]
    if out and (not named or tuple(named[-1].shape) != tuple(out[0].shape)):
        named.append(type(out[0])("output", out[0].shape, out[0].units))
    return named


def _default_layer(layers: list[Any]) -> str:
    # The last layer: for a classifier the pre-softmax logits (paper section 5.1).
    return str(layers[-1].name)


def check_window(window: int, cells: int, input_shape: tuple[int, ...], panels: int) -> None:
    """Raise BuildError (field ``window``) when the windows would pass `WINDOW_BUDGET_BYTES`."""
    need = window * cells * math.prod(input_shape) * 4 * panels
    if need > WINDOW_BUDGET_BYTES:
        raise BuildError(
            "window",
            f"A window of {window} samples for {cells * panels} chains needs {need >> 20} MiB, "
            f"over the {WINDOW_BUDGET_BYTES >> 20} MiB limit; use a smaller window or fewer chains.",
        )


def _field_of(message: str, default: str) -> str:
    for name in ("window", "chains", "unit_end", "unit", "layer", "temperature", "step_size"):
        if name in message:
            return name
    return default


def warm_up() -> None:
    """Import what loading a `torch.export` checkpoint needs (seconds of imports), for a
    standby worker that should start sampling the moment it is handed a configuration."""
    import torch.export  # noqa: F401
    from torch._export.serde import serialize  # noqa: F401


def run_worker(config: WorkerConfig, end: WorkerEnd) -> None:
    """The worker process's entry point (see `ldam.wire.link.WORKER_ENTRY`)."""
    # Ctrl-C reaches the whole process group; the server stops the worker itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    elif pick_device(config.device).type == "cpu":
        # Leave a core to the web server and the discriminator thread: on a small machine
        # oversubscribed OpenMP threads spin and wait on each other.
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    worker = Worker(config, end)
    try:
        params = worker.build(worker.params, worker.sources)
    except BuildError as err:
        end.outbox.put_event(Rejected(config.version, err.field, str(err), None))
        end.outbox.close()
        return
    end.outbox.put_event(Ready(config.version, params.model_dump(), worker.info()))
    worker._apply_live()
    try:
        worker.run()
    except Exception as err:  # noqa: BLE001 - reported, then the server restarts the worker
        traceback.print_exc()
        end.outbox.put_event(Notice("worker", f"The worker failed: {err}."))
        raise
    finally:
        worker.close()
        end.outbox.close()
