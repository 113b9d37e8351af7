"""The worker process: runs LDAM continuously and publishes frames and metrics.

It is started by `ldam.wire.link.WorkerLink` in a fresh (spawned) interpreter and is the only
process of the dashboard that imports torch. Its loop, top to bottom:

1. drain the command pipe (parameter changes apply at the next step; a change of target,
   layout, seed or checkpoint rebuilds the chains through `ldam.worker.panels`, a bad one is
   refused and the old chains go on);
2. one Langevin step of every panel; the chains go to the discriminator slot, whose own thread
   trains D online;
3. at most `frame_rate` times a second (and right after a change, so a slider's effect shows
   at once): one frame through the publisher (latest wins);
4. `metrics_rate` times a second: activations, speed, burn-in, resets, D's figures, and the
   live diagnostics of every unit (`ldam.worker.live_diagnostics`, and the modes and Vendi
   score of `ldam.sampling.diversity`).

With no browser connected for `WorkerConfig.idle_pause_s` the loop stops stepping (the chains,
D and every setting are kept) and only answers commands and sends metrics, until a browser
connects. A `SetParams` marked `warm` (``ldam serve --watch`` found a newer checkpoint) that
changes only the main file swaps the model under the running chains (`PanelBuilder.swap`).

A heartbeat thread sends `Heartbeat()` every `HEARTBEAT_EVERY_S`, also during a long step or
checkpoint load: the server restarts a worker it has not heard from for its heartbeat timeout,
which then means a frozen process, not a slow network.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

import torch

from ldam.errors import UserError
from ldam.sampling.device import pick_device
from ldam.sampling.diversity import BLOCKS, unit_diversity
from ldam.wire.events import (
    Command,
    Reset,
    RestartDiscriminator,
    SetParams,
    Shake,
    Stop,
    Viewers,
)
from ldam.wire.link import WorkerConfig, WorkerEnd
from ldam.wire.params import STRUCTURAL_FIELDS, SamplerParams
from ldam.wire.views import resolve_view
from ldam.worker.disc_slot import DiscriminatorSlot
from ldam.worker.live_diagnostics import ActivationHistory, unit_diagnostics
from ldam.worker.models import ModelCache
from ldam.worker.panels import (
    Panel,
    PanelBuilder,
    SwapImpossible,
    live_settings,
    panel_window,
    source_path,
)
from ldam.worker.publisher import Publisher, Rate

# Seconds between the heartbeat thread's "alive" messages (the server waits 10 s).
HEARTBEAT_EVERY_S = 2.0
# Seconds between frames while no browser watches.
IDLE_FRAME_EVERY_S = 1.0
# How long the loop waits for a command while it does not step (paused, or idle).
PAUSED_POLL_S = 0.05
IDLE_POLL_S = 0.25
# The live diagnostics are computed at most this often (about 0.4 ms per unit on this
# machine's CPU for 2 chains of 1000 draws; 64 units once a second cost 3% of a core).
DIAGNOSTICS_EVERY_S = 1.0
SWEEP_NOTE = "The rows of a sweep run different settings, so their chains are not compared."


class Worker:
    """The sampler loop and its state; `run` until the server says stop or goes away."""

    def __init__(
        self, config: WorkerConfig, end: WorkerEnd, publisher: Publisher | None = None
    ) -> None:
        self.config = config
        self.end = end
        self.device = pick_device(config.device)
        self.params = SamplerParams.model_validate(config.params)
        self.version = config.version
        self.sources: dict[str, str | None] = {
            "checkpoint": config.checkpoint,
            "compare": config.compare,
        }
        # One publisher per process: `run_worker` makes it before the worker, for a refused start.
        self.publisher = publisher or Publisher(end.outbox, config.jpeg_quality)
        trusted = config.trusted_paths
        if trusted is None:  # started directly (not by the server): the config's own files
            trusted = (config.checkpoint, config.compare)
        models = ModelCache(
            self.device,
            config.trust_checkpoint,
            trusted,
            self.publisher.heartbeat,
            config.arch,
            config.input_shape,
            config.metadata,
        )
        self.disc = DiscriminatorSlot(config.data, self.device)
        self.builder = PanelBuilder(models, self.device, self.disc.published)
        self.panels: list[Panel] = []
        self.layers: list[Any] = []
        # The window in force: `params.window`, or for None (auto) the one fitted to the
        # memory budget at each rebuild, with the sentence that says when it is short.
        self.window = 0
        self.window_note: str | None = None
        self.shake_until = 0.0
        self.shake_factor = 1.0
        self.step = 0
        self.resets_before = 0
        self.dirty = True
        self.steps = Rate()
        self.stopping = False
        # Browsers watching; with none, frames are made once a second (for a late joiner),
        # and after `config.idle_pause_s` none at all: the loop rests (`idle`).
        self.clients = 0
        self.next_frame = 0.0
        self.last_viewer_at = time.monotonic()
        self.idle = False
        # Per panel: its chains' recent activations, and each unit's name when it has one.
        self.histories: list[ActivationHistory] = []
        self.unit_labels: list[dict[int, str]] = []
        self.diagnostics: list[dict[str, Any]] = []
        self.diagnosed_at: tuple[int, float] | None = None
        # Models swapped under running chains so far (warm starts).
        self.swaps = 0

    # --- building ---------------------------------------------------------------------

    def build(self, params: SamplerParams, sources: dict[str, str | None]) -> SamplerParams:
        """Swap in new panels for `params`; on a `UserError` the old panels stay.

        Returns `params` with the layer filled in when it was left empty.
        """
        built = self.builder.build(params, sources, self._shake())
        self.disc.ensure(built.panels[0].loaded, built.params)
        # Divergence resets are counted per sampler; keep the total across rebuilds.
        self.resets_before += sum(int(p.sampler.resets.sum()) for p in self.panels)
        self.panels = built.panels
        self.params = built.params
        self.layers = built.layers
        self.sources = dict(sources)
        self.histories = [
            ActivationHistory(p.sampler.config.chains, self.device) for p in self.panels
        ]
        self.unit_labels = [self._unit_labels(p) for p in self.panels]
        self.diagnosed_at = None
        self.dirty = True
        self._window_in_force(built.window, built.window_note)
        return built.params

    def _window_in_force(self, window: int, note: str | None) -> None:
        """Record the window the panels run with; a new note (auto fitted short) is told."""
        if note is not None and note != self.window_note:
            self.publisher.notice("window", note)
        self.window = window
        self.window_note = note

    def swap(self, params: SamplerParams, sources: dict[str, str | None]) -> SamplerParams:
        """Put the main file of `sources` under the main panel's running chains (a warm
        start), or build afresh when its model takes another input; a `UserError` leaves
        everything as it was."""
        path = source_path(sources, "checkpoint")
        assert path is not None
        try:
            panel, layers = self.builder.swap(self.panels[0], path, params)
        except SwapImpossible:
            return self.build(params, sources)
        self.panels[0] = panel
        self.layers = layers
        self.sources = dict(sources)
        # The energy changed under the chains: only draws from the new model are judged.
        self.histories[0].restart(panel.sampler.t)
        self.unit_labels[0] = self._unit_labels(panel)
        self.diagnosed_at = None
        self.disc.ensure(panel.loaded, params)
        self.swaps += 1
        self.dirty = True
        return params

    def _unit_labels(self, panel: Panel) -> dict[int, str]:
        # Class names label the units of the output layer only (the last layer listed).
        names = panel.loaded.class_names
        last = self.layers[-1] if self.layers else None
        if not names or last is None or self.params.layer != last.name or len(names) != last.units:
            return {}
        return dict(enumerate(names))

    def info(self) -> dict[str, Any]:
        """What the page's pickers need: layers, device, panels."""
        main = self.panels[0].loaded
        return {
            "device": str(self.device),
            "layers": [
                {"name": i.name, "shape": list(i.shape), "units": i.units, "kind": i.kind}
                for i in self.layers
            ],
            "input_shape": list(main.input_shape),
            "class_names": main.class_names,
            "panels": [
                {
                    "label": p.label,
                    "format": p.loaded.format,
                    # The view `auto` draws this panel in: the page's toggle shows it.
                    "auto_view": resolve_view("auto", p.loaded.input_shape[0]),
                    # The training step the file's metadata names (`ldam.save_checkpoint`).
                    "step": _metadata_step(p.loaded.metadata),
                    # The grid's columns, left to right.
                    "units": list(dict.fromkeys(p.target.units_per_chain)),
                    "unit_labels": {str(k): v for k, v in labels.items()},
                }
                for p, labels in zip(self.panels, self.unit_labels, strict=True)
            ],
            "disc_note": self.disc.note,
            # The window the chains run with: the user's, or auto's fitted one.
            "window": self.window,
            "window_note": self.window_note,
        }

    # --- controls ---------------------------------------------------------------------

    def handle(self, command: Command) -> None:
        """Apply one command from the server."""
        if isinstance(command, SetParams):
            params = SamplerParams.model_validate(command.params)
            self._set(command.version, params, command.sources, command.warm)
        elif isinstance(command, Reset):
            for panel, history in zip(self.panels, self.histories, strict=True):
                panel.sampler.reset()
                history.restart(panel.sampler.t)
            self.diagnosed_at = None
            self.dirty = True
        elif isinstance(command, Shake):
            self.shake_factor = float(command.factor)
            self.shake_until = time.monotonic() + float(command.seconds)
            self.apply_live()
        elif isinstance(command, RestartDiscriminator):
            try:
                self.disc.restart()
            except UserError as err:
                self.publisher.notice("disc_restart", str(err))
        elif isinstance(command, Viewers):
            self.clients = int(command.count)
            self.next_frame = 0.0  # back to the full frame rate (or the idle one) at once
        elif isinstance(command, Stop):
            self.stopping = True

    def _set(
        self,
        version: int,
        params: SamplerParams,
        sources: dict[str, str | None],
        warm: bool = False,
    ) -> None:
        changed = {k for k, v in params.model_dump().items() if getattr(self.params, k) != v}
        structural = bool(changed & STRUCTURAL_FIELDS)
        rebuild = structural or sources != self.sources
        # A newer checkpoint of the run alone (or the shown file written again, as a training
        # loop's last.ckpt is): the chains carry on under the new model.
        swap = warm and not structural and sources["compare"] == self.sources["compare"]
        try:
            if swap:
                params = self.swap(params, sources)
            elif rebuild:
                params = self.build(params, sources)
            elif "window" in changed:
                chains = sum(p.sampler.config.chains for p in self.panels)
                shape = tuple(self.panels[0].loaded.input_shape)
                self._window_in_force(*panel_window(params.window, chains, shape))
        except UserError as err:
            self.publisher.rejected(version, err, self.params.model_dump(), dict(self.sources))
            return
        # "ready" also tells the server what the worker changed: the layer, the window in
        # force, or its note.
        if rebuild or swap or "window" in changed:
            self.publisher.ready(version, params.model_dump(), self.info())
        self.params = params
        self.version = version
        had_note = self.disc.note
        self.disc.ensure(self.panels[0].loaded, params)
        if self.disc.note != had_note:
            self.publisher.notice("disc_weight", self.disc.note or "")
        self.apply_live()
        self.dirty = True

    def _shake(self) -> float:
        return self.shake_factor if time.monotonic() < self.shake_until else 1.0

    def apply_live(self) -> None:
        """Give every sampler the current live settings (and the shake, while it lasts), and
        let the discriminator follow the parameters."""
        for panel in self.panels:
            cells = panel.sampler.config.chains
            settings = live_settings(self.params, cells, panel.rows, self.window, self._shake())
            panel.sampler.set(**settings)
        self.disc.apply(self.params)

    # --- the loop ---------------------------------------------------------------------

    def step_all(self) -> None:
        """One Langevin step of every panel; the chains go to the discriminator now and then."""
        for panel, history in zip(self.panels, self.histories, strict=True):
            info = panel.sampler.step()
            panel.last_activation = info.activation
            history.add(info.step, info.activation)
        self.step += 1
        main = self.panels[0].sampler
        self.disc.after_step(main.x, main.age)
        self.steps.tick()

    def publish_frame(self) -> None:
        """One frame of every panel, to the outbox (latest wins)."""
        params = self.params
        self.publisher.frame(self.panels, params.show, self.step, self.version, params.view)
        self.dirty = False

    def publish_metrics(self) -> None:
        """Activations per chain and panel, speed, burn-in, resets and D's figures."""
        activation = []
        for panel in self.panels:
            a = panel.last_activation
            activation.append([] if a is None else [round(v, 4) for v in a.float().cpu().tolist()])
        main = self.panels[0].sampler
        resets = sum(int(p.sampler.resets.sum()) for p in self.panels) + self.resets_before
        self.publisher.metrics(
            {
                "time": time.time(),
                "step": self.step,
                "version": self.version,
                "paused": self.params.paused,
                "steps_per_s": self.steps.per_second(),
                "activation": activation,
                "chains": main.config.chains,
                "burned_in": int((main.burn_in_step >= 0).sum()),
                "resets": resets,
                "shaking": time.monotonic() < self.shake_until,
                "disc": self.disc.metrics(),
                "disc_note": self.disc.note,
                "device": str(self.device),
                "idle": self.idle,
                "swaps": self.swaps,
                "diagnostics": self.live_diagnostics(),
            }
        )

    def live_diagnostics(self) -> list[dict[str, Any]]:
        """Per panel: ``units``, each unit's split R-hat, ESS and state over its chains
        (`ldam.worker.live_diagnostics.unit_diagnostics`), its ``modes`` and ``vendi``
        (`ldam.sampling.diversity.unit_diversity`), and a ``note`` when the layout
        has none; computed again only after new steps, at most every `DIAGNOSTICS_EVERY_S`
        (a rebuild, swap or reset makes the next call compute)."""
        now = time.monotonic()
        if self.diagnosed_at is not None:
            step, at = self.diagnosed_at
            if step == self.step or now - at < DIAGNOSTICS_EVERY_S:
                return self.diagnostics
        out: list[dict[str, Any]] = []
        for panel, history, labels in zip(
            self.panels, self.histories, self.unit_labels, strict=True
        ):
            if self.params.layout == "sweep":
                out.append({"units": [], "note": SWEEP_NOTE})
                continue
            burn = panel.sampler.burn_in_step.cpu().tolist()
            units = panel.target.units_per_chain
            entries = unit_diagnostics(history, burn, units, labels)
            # Each unit's own scale and step (`ldam.sampling.scale`) beside its activation in
            # the network's own units (the mean over its chains of the last step).
            tuning = panel.sampler.unit_tuning()
            # How many different images each unit's chains hold (`ldam.sampling.diversity`):
            # None while a chain's window is not full.
            diverse = {
                d["unit"]: d for d in unit_diversity(panel.sampler.window_blocks(BLOCKS), units)
            }
            last = panel.last_activation
            for entry in entries:
                entry.update(tuning.get(entry["unit"], {}))
                entry["modes"] = diverse[entry["unit"]]["modes"]
                entry["vendi"] = diverse[entry["unit"]]["vendi"]
                if last is not None:
                    mine = [i for i, u in enumerate(units) if u == entry["unit"]]
                    entry["activation"] = float(last[mine].mean())
            out.append({"units": entries, "note": None})
        self.diagnostics = out
        self.diagnosed_at = (self.step, now)
        return out

    def _beat_forever(self) -> None:
        # A step of a large network on a CPU can outlast the server's watchdog; this thread
        # keeps saying "alive" meanwhile (torch releases the GIL inside its ops), so only a
        # frozen process (stopped, or stuck holding the GIL) goes silent and is restarted.
        while not self.stopping:
            time.sleep(HEARTBEAT_EVERY_S)
            self.publisher.heartbeat()

    def run(self) -> None:
        """The loop; returns when told to stop or when the server is gone."""
        threading.Thread(target=self._beat_forever, name="ldam-heartbeat", daemon=True).start()
        frame_every = 1.0 / self.config.frame_rate
        metrics_every = 1.0 / self.config.metrics_rate
        next_metrics = 0.0
        shaking = False
        while not self.stopping:
            resting = self.params.paused or self.idle
            wait = (IDLE_POLL_S if self.idle else PAUSED_POLL_S) if resting else 0.0
            try:
                commands = self.end.poll_commands(wait)
            except (EOFError, OSError):
                return
            for command in commands:
                self.handle(command)
            if self.stopping:
                return
            self.check_idle()
            if shaking and time.monotonic() >= self.shake_until:
                self.apply_live()  # the shake is over: back to the set temperature
            shaking = time.monotonic() < self.shake_until
            stepping = not self.params.paused and not self.idle
            if stepping:
                self.step_all()
            now = time.monotonic()
            if self.dirty or (stepping and now >= self.next_frame):
                self.publish_frame()
                # Keep the cadence: a frame that came a step late does not delay the next one.
                every = frame_every if self.clients else IDLE_FRAME_EVERY_S
                self.next_frame = max(self.next_frame + every, now)
            if now >= next_metrics:
                self.publish_metrics()
                next_metrics = now + metrics_every

    def check_idle(self) -> None:
        """Rest after `config.idle_pause_s` with no browser connected (0: never); wake when
        one connects. Resting keeps the chains and D as they are and stops D's thread."""
        now = time.monotonic()
        if self.clients:
            self.last_viewer_at = now
        after = self.config.idle_pause_s
        idle = after > 0 and not self.clients and now - self.last_viewer_at >= after
        if idle == self.idle:
            return
        self.idle = idle
        if idle:
            self.disc.rest()
        else:
            self.disc.apply(self.params)
            self.next_frame = 0.0
        self.dirty = True

    def close(self) -> None:
        """Stop the discriminator thread."""
        self.disc.close()


def _metadata_step(metadata: dict[str, Any]) -> int | None:
    step = metadata.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def warm_up() -> None:
    """Import what loading a `torch.export` checkpoint needs (seconds of imports), for a
    standby worker that should start sampling the moment it is handed a configuration."""
    import torch.export  # noqa: F401
    from torch._export.serde import serialize  # noqa: F401


def run_worker(config: WorkerConfig, end: WorkerEnd) -> None:
    """The worker process's entry point (see `ldam.wire.link.WORKER_ENTRY`)."""
    # Ctrl-C reaches the whole process group; the server stops the worker itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    publisher = Publisher(end.outbox, config.jpeg_quality)
    try:
        worker = Worker(config, end, publisher)
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        elif worker.device.type == "cpu":
            # Leave a core to the web server and the discriminator thread: on a small machine
            # oversubscribed OpenMP threads spin and wait on each other.
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
        params = worker.build(worker.params, worker.sources)
    except UserError as err:
        publisher.rejected(config.version, err, None)
        end.outbox.close()
        exit_at_once()
        return
    publisher.ready(config.version, params.model_dump(), worker.info())
    worker.apply_live()
    try:
        worker.run()
    except Exception as err:  # noqa: BLE001 - reported, then the server restarts the worker
        traceback.print_exc()
        publisher.notice("worker", f"The worker failed: {err}.")
        raise
    finally:
        worker.close()
        end.outbox.close()
    exit_at_once()


def exit_at_once() -> None:
    """End a spawned worker process now that everything is sent and stopped.

    A normal interpreter shutdown with torch loaded spends seconds collecting garbage (3 s and
    more measured on this project's 2-core machine), longer than the server waits before it
    kills the worker; so every stop of the server took that long. Run in-process (tests), it
    does nothing.
    """
    if multiprocessing.parent_process() is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
