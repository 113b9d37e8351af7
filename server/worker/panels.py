"""Building the panels the dashboard shows: pure, so a bad change leaves nothing to undo.

`build_panels` turns parameters and checkpoint files into new `Panel`s (one, or two in the
compare view: the second checkpoint with the same seed and parameters) or raises a
`UserError` naming the field at fault; the worker swaps them in only on success.

The averaging window of all panels shares one memory budget (`WINDOW_MEMORY_LIMIT_BYTES`).
A window the user chose is refused when it does not fit; ``window=None`` (auto, the default)
is fitted to the budget, with a sentence saying so (`fitted_window`): 20 chains of a
3x224x224 network fit 89 steps, not 200.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ldam.errors import UserError
from ldam.models.bundled import DEFAULT_CHECKPOINT
from ldam.models.loading import LoadedModel
from ldam.sampling.energy import ActivationTerm, DiscriminatorTerm, L2Term
from ldam.sampling.sampler import (
    LIVE_SETTINGS,
    Sampler,
    SamplerConfig,
    check_window_memory,
    fitted_window,
)
from ldam.sampling.targets import LayerInfo, Target, list_layers
from ldam.wire.params import SamplerParams, check_layer_and_units, grid_rows
from ldam.wire.settings import SETTINGS
from ldam.wire.targets import ChainTargets
from ldam.worker.models import ModelCache

Sources = dict[str, str | None]


@dataclass
class Panel:
    """One checkpoint's chains: its model, target, sampler and grid."""

    label: str
    target_text: str  # the target as the page's header writes it (`fc3:0-9`)
    loaded: LoadedModel
    target: Target
    sampler: Sampler  # its chains are the target's, in grid order (row-major cells)
    columns: int
    last_activation: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        """Rows of the panel's grid."""
        return grid_rows(self.sampler.config.chains, self.columns)


@dataclass
class Built:
    """What `build_panels` made: the panels, the parameters with the layer filled in, and
    the main model's layers for the page's picker."""

    panels: list[Panel]
    params: SamplerParams
    layers: list[LayerInfo]
    # The window in force (auto resolved), and when auto fitted it below
    # `AUTO_WINDOW_STEPS`, the sentence that says so.
    window: int
    window_note: str | None = None


def live_settings(
    params: SamplerParams, chains: int, rows: int, window: int, shake: float = 1.0
) -> dict[str, Any]:
    """The sampler's live settings for `params`, by the one model's names, with `window` the
    window in force (the user's, or the fitted one for auto); a sweep makes one value per
    chain (chains in grid order: cell r * columns + c is in row r), each already checked
    against the swept setting's bounds by `SamplerParams`; `shake` multiplies the
    temperature."""
    settings = {
        name: value for name, value in params.sampler_settings().items() if name in LIVE_SETTINGS
    }
    settings["window"] = window
    sweep = params.sweep_rows()
    if sweep is not None:
        columns = chains // rows
        settings[params.sweep_param] = [sweep[i // columns] for i in range(chains)]
    temperature = settings["temperature"]
    if isinstance(temperature, list):
        settings["temperature"] = [v * shake for v in temperature]
    else:
        settings["temperature"] = temperature * shake
    return settings


def target_layers(loaded: LoadedModel) -> list[LayerInfo]:
    """The layers the picker offers: those with units, the output as ``output`` (listed only
    when it differs from the last layer, as for a model ending in a functional call)."""
    try:
        layers = list_layers(loaded.module, loaded.input_shape, batch_size=loaded.batch_size)
    except UserError as err:
        raise UserError(str(err), "checkpoint") from None
    named = [info for info in layers if info.name and info.units > 0]
    out = [info for info in layers if not info.name and info.units > 0]
    if out and (not named or tuple(named[-1].shape) != tuple(out[0].shape)):
        named.append(LayerInfo("output", out[0].shape, out[0].units, out[0].kind))
    return named


def panel_window(
    window: int | None, chains: int, input_shape: tuple[int, ...], replicas: int = 0
) -> tuple[int, str | None]:
    """The window in force for `chains` chains (every panel together: one budget) of
    `input_shape` with `replicas` hidden replicas each: the user's `window`, refused with a
    sentence when it (or the replicas beside it) does not fit, or for None (auto) the fitted
    one and the sentence that says when it is short (`fitted_window`)."""
    if window is None:
        window, note = fitted_window(chains, input_shape, replicas=replicas)
        check_window_memory(window, chains, input_shape, replicas=replicas)
        return window, note
    check_window_memory(window, chains, input_shape, replicas=replicas)
    return window, None


def source_path(sources: Sources, which: str) -> str | None:
    """The file of panel `which` (``checkpoint`` or ``compare``); the bundled LeNet when no
    checkpoint is named."""
    source = sources[which]
    if source is None and which == "checkpoint":
        return str(DEFAULT_CHECKPOINT)
    return source


class PanelBuilder:
    """Makes panels from parameters; holds only the model cache and how to find D."""

    def __init__(
        self,
        models: ModelCache,
        device: torch.device,
        discriminator: Callable[[tuple[int, ...]], Any],
    ) -> None:
        self.models = models
        self.device = device
        # shape -> the newest published D for that input shape, or None.
        self.discriminator = discriminator

    def main_model(self, sources: Sources) -> LoadedModel:
        """The main panel's model (loaded once)."""
        return self.models.load(source_path(sources, "checkpoint") or "", "checkpoint")

    def build(
        self,
        params: SamplerParams,
        sources: Sources,
        shake: float = 1.0,
    ) -> Built:
        """New panels for `params` and `sources`, or a `UserError` naming the field at fault.

        The window is `params.window`, which must fit the memory budget, or for None (auto)
        as much of `AUTO_WINDOW_STEPS` as fits (`panel_window`).
        """
        main = self.main_model(sources)
        layers = target_layers(main)
        if not layers:
            raise UserError("The model has no layer that can be a target.", "layer")
        units_by_layer = {info.name: info.units for info in layers}
        # The last layer by default: for a classifier the pre-softmax logits (section 5.1).
        layer = params.layer or str(layers[-1].name)
        check_layer_and_units(units_by_layer, layer, {})
        if not params.layer:
            last = min(params.unit_end, units_by_layer[layer] - 1)
            params = params.model_copy(update={"layer": layer, "unit_end": last})
        check_layer_and_units(
            units_by_layer, layer, {"unit": params.unit, "unit_end": params.unit_end}
        )
        which = ["checkpoint"] + (["compare"] if sources["compare"] is not None else [])
        chains = len(params.grid()[0]) * len(which)
        window, note = panel_window(params.window, chains, tuple(main.input_shape), params.replicas)
        panels = [self._panel(params, sources, w, layer, window, shake) for w in which]
        return Built(panels, params, layers, window, note)

    def _panel(
        self,
        params: SamplerParams,
        sources: Sources,
        which: str,
        layer: str,
        window: int,
        shake: float,
    ) -> Panel:
        path = source_path(sources, which)
        assert path is not None
        loaded = self.models.load(path, which)
        units, columns = params.grid()
        cells = len(units)
        first, last = min(units), max(units)
        # For the page's header only: the target is built from the units themselves.
        text = f"{layer}:{first}" if first == last else f"{layer}:{first}-{last}"
        try:
            target = Target(
                loaded.module,
                ChainTargets.on_layer(layer, units),
                batch_size=loaded.batch_size,
                input_shape=loaded.input_shape,
            )
        except UserError as err:
            # The compare model is the one at fault when the main model took the target.
            field = "compare" if which == "compare" else err.field or "layer"
            raise UserError(str(err), field) from None
        # The target's chains are the grid's cells, row-major, so per-chain sweep settings
        # are simply one value per row.
        settings = live_settings(params, cells, grid_rows(cells, columns), window, shake)
        # The discriminator term is always there; it is skipped while no D is published for
        # this input shape, so turning D on later needs no rebuild.
        shape = tuple(loaded.input_shape)
        terms: list[Any] = [
            ActivationTerm(target),
            L2Term(),
            DiscriminatorTerm(lambda: self.discriminator(shape)),
        ]
        # The settings fixed for a run (seed, energy scale, replicas, prior, ...): every one the
        # page shows that the sampler takes and is not live; changing one rebuilds.
        fixed = {
            name: value
            for name, value in params.sampler_settings().items()
            if name not in LIVE_SETTINGS and "config" in SETTINGS[name].surfaces
        }
        config = SamplerConfig(chains=cells, device=self.device, **fixed, **settings)
        sampler = Sampler(terms, loaded.input_shape, config)
        return Panel(Path(path).name, text, loaded, target, sampler, columns)

    def swap(self, panel: Panel, path: str, params: SamplerParams) -> tuple[Panel, list[LayerInfo]]:
        """`panel` with the model in `path` under its running chains (a warm start: the
        sampler's chains, velocities, windows, RNGs and burn-in carry on, only the activation
        term reads the new model), and the new model's layers.

        Raises `SwapImpossible` when the new model takes another input shape (the chains
        cannot carry over: build afresh), `UserError` naming ``checkpoint`` when the file
        cannot be loaded or lacks the target; `panel` is unchanged then.
        """
        loaded = self.models.load(path, "checkpoint")
        if tuple(loaded.input_shape) != tuple(panel.loaded.input_shape):
            raise SwapImpossible(
                f"{Path(path).name} takes input {list(loaded.input_shape)}, not "
                f"{list(panel.loaded.input_shape)}."
            )
        layers = target_layers(loaded)
        try:
            check_layer_and_units(
                {info.name: info.units for info in layers},
                params.layer,
                {"unit": params.unit, "unit_end": params.unit_end},
            )
            target = Target(
                loaded.module,
                panel.target.spec,
                batch_size=loaded.batch_size,
                input_shape=loaded.input_shape,
            )
        except UserError as err:
            raise UserError(f"{Path(path).name}: {err}", "checkpoint") from None
        term = next(t for t in panel.sampler.terms if isinstance(t, ActivationTerm))
        term.activation_fn = target
        panel.sampler.energy_changed()
        swapped = dataclasses.replace(panel, label=Path(path).name, loaded=loaded, target=target)
        return swapped, layers


class SwapImpossible(Exception):
    """A new checkpoint's model takes another input shape than the chains it should take over."""
