"""Targets: which unit of which layer each chain maximizes.

The target grammar (`fc3:7`, `conv1:3@12,12`, `blocks.5.mlp.fc1:7@0`, `attn[0]:5`,
`output:7`) is parsed by `ldam.wire.targets.parse_target`; this module resolves a parsed target
against a model. LAYER is the dotted path of `named_modules()` (native names, resolved exactly).

What a unit is depends on the layer's output, batch first:

    [N, K]          vector         unit k; no position
    [N, C, H, W]    channels       channel c, mean over positions; @Y,X one position
    [N, H, W, C]    channels_last  the same, with the channels on the last axis (Swin, ConvNeXt)
    [N, T, D]       tokens         channel d, mean over tokens; @T one token (@0: a ViT's class token)
    [N, C, L]       channels       when the graph shows a 1-D convolution made it; @L one position

Which axis holds the channels is read from a `torch.export` graph (`graph.channel_axes`: a
convolution or batch norm puts them on axis 1, a linear layer or layer norm on the last, a
permute moves them). An eager module's modules tell it over one forward (`_EagerAxes`: their
types, permute modules, and modules that pass a child's output or their input's shape on).
Where neither tells, a 4-D output is [N, C, H, W] and a 3-D output is
tokens [N, T, D]; `layout="channels-first"` or `"channels-last"` states it instead, for every
output of three or more axes.

Two ways to read a layer, with the same results:
- a `torch.export` program (`ExportedProgram.module()`, a flat graph) is cut at the node that
  produces the layer's output (`ldam.sampling.graph`): no hook, and nothing above the layer
  is computed;
- an eager module (a state dict with its architecture) gets a forward hook on the target
  module only, for one forward, removed in `finally`; the forward stops right after the target
  module ran, so a shallow target does not pay for the layers above it either.

A layer that returns a tuple, list or dict is read at one element (`attn[0]`, `output[logits]`).
An eager module's elements are what it returns; in a flat export graph an inner layer's return
structure is gone, so its values are numbered in the order the graph computes them, and only
the network's output keeps its structure and names.

A module called several times in one forward is read at its first call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.utils import _pytree as pytree

from ldam.errors import first_line
from ldam.sampling import graph
from ldam.wire.targets import (
    ChainTargets,
    Element,
    TargetError,
    TargetSpec,
    chain_targets,
    element_text,
    parse_target,
)

LAYOUTS = ("auto", "channels-first", "channels-last")
KINDS = ("vector", "channels", "channels_last", "tokens")


@dataclass(frozen=True)
class LayerInfo:
    """One layer that can be a target: dotted `name` ("" = output; an element in brackets for
    a tuple or dict output), output `shape` without the batch dimension, `units` (the size of
    the channel axis; 0 if the shape cannot be a target) and `kind` (one of `KINDS`, "" when
    there are no units)."""

    name: str
    shape: tuple[int, ...]
    units: int
    kind: str = ""


def unit_axis(ndim: int, detected: int | None, layout: str = "auto") -> int | None:
    """The axis (of the full tensor, batch = 0) holding the units of an output with `ndim`
    axes: `detected` from the graph or module (may be negative), unless `layout` states it;
    None when the output has no unit axis (a number per image)."""
    if ndim < 2:
        return None
    if ndim == 2:
        return 1
    if layout == "channels-first":
        return 1
    if layout == "channels-last":
        return ndim - 1
    if detected is not None and detected % ndim in (1, ndim - 1):
        return detected % ndim
    return ndim - 1 if ndim == 3 else 1


def layer_kind(ndim: int, axis: int | None) -> str:
    """One of `KINDS` for an output of `ndim` axes read with units on `axis`; "" for none."""
    if axis is None:
        return ""
    if ndim == 2:
        return "vector"
    if ndim == 3 and axis == 2:
        return "tokens"
    return "channels" if axis == 1 else "channels_last"


def check_layout(layout: str) -> str:
    """`layout` if it is one of `LAYOUTS`, else `TargetError`."""
    if layout not in LAYOUTS:
        raise TargetError(
            f"The layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.", "layout"
        )
    return layout


def _module_axis(module: nn.Module | None, out: Tensor | None = None) -> int | None:
    """The channel axis a module's type shows for its output `out` (negative: from the end),
    or None. A linear layer puts its features last; a layer norm normalizes its channels,
    last, except the `LayerNorm2d` kind (timm, torchvision ConvNeXt), which permutes around
    the norm and returns [N, C, H, W]; convolutions and batch norms put them on axis 1."""
    if isinstance(module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)):
        return 1
    if isinstance(module, nn.Linear):
        return -1
    if isinstance(module, nn.LayerNorm):
        channels = module.normalized_shape[-1]
        if out is None or out.ndim < 3:
            return -1
        first, last = out.shape[1] == channels, out.shape[-1] == channels
        if first and (not last or type(module).__name__.endswith("2d")):
            return 1
        return -1 if last else None
    return None


class _EagerAxes:
    """The channel axis of every module's output in one eager forward, from hooks.

    The eager counterpart of `graph.channel_axes`, over module outputs instead of ops: a
    module's type tells (`_module_axis`); else a module that returns a tensor some module
    inside it returned (a Sequential, an in-place ReLU) has that module's axis; a permute
    module (a `dims` attribute, as torchvision's `Permute`) moves its input's axis; a module
    whose output has its input's shape (activations, dropout, a residual block) keeps its
    input's axis. The network's input is [N, C, H, W]: channels on axis 1.
    """

    def __init__(self, network_input: Tensor) -> None:
        self._axes: dict[int, int | None] = {id(network_input): 1}
        self._alive: list[Tensor] = [network_input]  # keeps ids unique during the forward

    def axis(self, tensor: Tensor) -> int | None:
        """The axis recorded for `tensor` (None: not seen, or not known)."""
        return self._axes.get(id(tensor))

    def record(self, module: nn.Module, inputs: Any, output: Any) -> int | None:
        """Work out and remember the axis of `module`'s output; returns it."""
        out = next((leaf for _, leaf in _leaves(output) if isinstance(leaf, Tensor)), None)
        if out is None:
            return None
        axis = _module_axis(module, out)
        if axis is None:
            axis = self._axes.get(id(out))
        source = next((v for v in inputs if isinstance(v, Tensor)), None) if inputs else None
        in_axis = self._axes.get(id(source)) if source is not None else None
        if axis is None and in_axis is not None and source is not None:
            dims = getattr(module, "dims", None)
            if isinstance(dims, (list, tuple)) and len(dims) == source.ndim == out.ndim:
                try:
                    axis = [int(d) % source.ndim for d in dims].index(in_axis)
                except (TypeError, ValueError):
                    axis = None
            elif out.shape == source.shape:
                axis = in_axis
        if axis is not None:
            axis %= out.ndim
        self._axes[id(out)] = axis
        self._alive.append(out)
        return axis


def eager_layer_axis(module: nn.Module, layer: str, x: Tensor) -> int | None:
    """The channel axis of `layer`'s first output in one forward of `x` through `module`
    (`_EagerAxes`), or None where the modules do not tell."""
    axes = _EagerAxes(x)
    found: list[int | None] = []
    handles = []

    def hook(sub: nn.Module) -> Any:
        def run(_module: nn.Module, inputs: Any, output: Any) -> None:
            axis = axes.record(sub, inputs, output)
            if sub is target:
                found.append(axis)
                raise _Stop

        return run

    target = module.get_submodule(layer)
    for _, sub in module.named_modules():
        handles.append(sub.register_forward_hook(hook(sub)))
    try:
        with torch.no_grad():
            module(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def _kind_text(value: Any) -> str:
    if isinstance(value, dict):
        return "a dict with keys " + ", ".join(str(k) for k in value)
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} values"
    return f"a {type(value).__name__}"


def pick_element(
    value: Any, element: Element, name: str, unit: int = 0, leaf: type = Tensor
) -> Any:
    """The tensor at `element` (keys and indices) of what layer `name` returned, or one
    sentence saying what it returned and how to name an element. `leaf` is the type of the
    leaves (`fx.Node` to pick from a graph's output structure instead of its values)."""
    for depth, key in enumerate(element):
        where = name + element_text(element[:depth])
        if isinstance(value, dict):
            found = key if key in value else str(key) if str(key) in value else None
            if found is None:
                raise TargetError(f"{where} returns {_kind_text(value)}; it has no [{key}].")
            value = value[found]
        elif isinstance(value, (tuple, list)):
            if not isinstance(key, int) or key >= len(value):
                raise TargetError(
                    f"{where} returns {_kind_text(value)}; name one of them as "
                    f"{where}[0] to {where}[{len(value) - 1}]."
                )
            value = value[key]
        elif isinstance(value, leaf):
            raise TargetError(
                f"{where} returns one tensor, so it takes no [{key}]; write {where}:{unit}."
            )
        else:
            raise TargetError(f"{where} returns {_kind_text(value)}, not a tensor.")
    if isinstance(value, leaf):
        return value
    written = name + element_text(element)
    if isinstance(value, (tuple, list, dict)) and value:
        first = next(iter(value)) if isinstance(value, dict) else 0
        raise TargetError(
            f"{written} returns {_kind_text(value)}, not one tensor; name one, such as "
            f"{written}[{first}]:{unit}."
        )
    raise TargetError(f"{written} returns {_kind_text(value)}, not a tensor.")


def _leaves(value: Any, prefix: Element = ()) -> list[tuple[Element, Any]]:
    """Every leaf of a nest of tuples, lists and dicts, with its element path."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*prefix, k))]
    if isinstance(value, (tuple, list)):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*prefix, i))]
    return [(prefix, value)]


class _Stop(Exception):
    """Raised by the hook to end the forward once the target module has run."""


def _layer_names(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_modules() if name]


def _is_torchscript(module: nn.Module) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


class Target:
    """The activation of each chain's target unit: `x [N, C, H, W] -> [N]`, differentiable in x.

    `spec` is a target string or `TargetSpec` laid out over `chains` = N chains in grid order
    (`chain_targets`: a range `fc3:0-2` over 6 chains is units 0, 1, 2, 0, 1, 2), or a
    `ChainTargets` that names the unit of every chain itself (then `chains` is left out). Either
    way `units_per_chain` lists chain i's unit, and chain i of the batch is grid cell i: no
    caller reorders. `batch_size` is a fixed export batch: the chains then run in chunks of it
    (the last chunk padded with zeros). `input_shape` (C, H, W), when given, checks the layer
    and units now with one forward of one image instead of at the first call. `layout` (one of
    `LAYOUTS`) says which axis holds the channels when the model cannot tell (see the module
    docstring).
    """

    def __init__(
        self,
        module: nn.Module,
        spec: str | TargetSpec | ChainTargets,
        chains: int | None = None,
        batch_size: int | None = None,
        input_shape: Sequence[int] | None = None,
        layout: str = "auto",
    ) -> None:
        self.module = module
        if isinstance(spec, str):
            spec = parse_target(spec)
        self.batch_size = batch_size
        self.layout = check_layout(layout)
        if isinstance(spec, TargetSpec):
            if chains is None:
                raise TargetError("A target string needs the number of chains.", "chains")
            spec = chain_targets(spec, chains)
        elif chains is not None and chains != len(spec.units):
            raise TargetError(
                f"The target names the units of {len(spec.units)} chains, not {chains}.", "chains"
            )
        self.spec: ChainTargets = spec
        self.units_per_chain: list[int] = list(self.spec.units)
        self._units = torch.tensor(self.units_per_chain)
        self._copies = 1  # rows per chain in the batch being evaluated
        self._rows_units: Tensor | None = None  # each row's unit when there are several
        # The unit of every chain when they all share one (the common case), else None.
        self._one_unit = self.spec.first if self.spec.first == self.spec.last else None
        self.layer: nn.Module | None = None
        # A flat export graph, cut at the target's node (None: run `module`, with a hook).
        self.cut: nn.Module | None = None
        # The channel axis the graph or the module type shows (None: it does not tell).
        self.detected_axis: int | None = None
        self._axis: int | None = None
        self._checked_ndim = -1
        if graph.is_flat_export(module):
            self.cut = self._cut_graph(module)  # type: ignore[arg-type]
        elif not self.spec.is_output:
            if _is_torchscript(module):
                raise TargetError(
                    "A TorchScript model allows only output targets (such as output:7); export it with "
                    "torch.export (.pt2) to target inner layers.",
                    "layer",
                )
            names = _layer_names(module)
            if self.spec.layer not in names:
                raise TargetError(
                    f"No layer named {self.spec.layer!r}; the layers are: {', '.join([*names, 'output'])}.",
                    "layer",
                )
            self.layer = module.get_submodule(self.spec.layer)
        if input_shape is not None:
            probe = torch.zeros(batch_size or 1, *input_shape)
            with torch.no_grad():
                self._detect(probe)
                self._check(self._forward(probe))

    @property
    def name(self) -> str:
        """The layer as the user wrote it, for sentences: `fc3`, `attn[0]`, `the output`."""
        if self.spec.is_output and not self.spec.element:
            return "the output"
        return self.spec.layer_text

    def _cut_graph(self, module: fx.GraphModule) -> nn.Module:
        spec = self.spec
        if spec.is_output:
            node = self._output_node(module)
        else:
            found = graph.regions(module)
            region = found.get(spec.layer)
            if region is None:
                raise TargetError(
                    f"No layer named {spec.layer!r}; the layers are: {', '.join([*found, 'output'])}.",
                    "layer",
                )
            node = self._region_node(region)
        self.detected_axis = graph.channel_axes(module).get(node)
        return graph.cut(module, (node,))

    def _output_node(self, module: fx.GraphModule) -> fx.Node:
        structure = _output_structure(module)
        return pick_element(structure, self.spec.element, "output", self.spec.first, fx.Node)

    def _region_node(self, region: graph.Region) -> fx.Node:
        spec, outputs = self.spec, region.outputs
        if not spec.element:
            if len(outputs) != 1:
                raise TargetError(
                    f"Layer {spec.layer!r} returns {len(outputs)} values, not one tensor; name one, "
                    f"such as {spec.layer}[0]:{spec.first}.",
                    "layer",
                )
            return outputs[0]
        (key, *rest) = spec.element
        if rest or not isinstance(key, int) or key >= len(outputs):
            raise TargetError(
                f"In an exported model the values of layer {spec.layer!r} are numbered in the order "
                f"they are computed, {spec.layer}[0] to {spec.layer}[{len(outputs) - 1}]; "
                f"got {spec.layer_text}.",
                "layer",
            )
        return outputs[key]

    @property
    def chains(self) -> int:
        """The number of chains N this target was set up for."""
        return len(self.units_per_chain)

    def __call__(self, x: Tensor) -> Tensor:
        """Activation `[R]` of each row's unit for images `x [R, C, H, W]`: R = N chains, or
        a whole multiple k N where each chain has k consecutive rows (a sampler's replicas:
        row i k + r is a replica of chain i, `ldam.sampling.tempering`)."""
        if x.shape[0] == 0 or x.shape[0] % self.chains:
            raise TargetError(
                f"The target was set up for {self.chains} chains but got a batch of {x.shape[0]}."
            )
        self._copies = x.shape[0] // self.chains
        if self.batch_size is None or self.batch_size == x.shape[0]:
            out = self._forward(x)
        else:
            parts = []
            for start in range(0, x.shape[0], self.batch_size):
                chunk = x[start : start + self.batch_size]
                real = chunk.shape[0]
                if real < self.batch_size:
                    pad = chunk.new_zeros((self.batch_size - real, *chunk.shape[1:]))
                    chunk = torch.cat([chunk, pad])
                parts.append(self._forward(chunk)[:real])
            out = torch.cat(parts)
        if out.ndim != self._checked_ndim:
            self._detect(x[:1].detach())
            self._check(out)
        return self._select(out)

    def _detect(self, x: Tensor) -> None:
        """For an eager layer, read its channel axis from one forward of `x` (once)."""
        if self.layer is not None and self.detected_axis is None and self.layout == "auto":
            self.detected_axis = eager_layer_axis(self.module, self.spec.layer, x)

    def _forward(self, x: Tensor) -> Tensor:
        if self.cut is not None:
            return self.cut(x)
        if self.layer is None:
            return pick_element(self.module(x), self.spec.element, "output", self.spec.first)
        box: list[Any] = []

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            box.append(output)
            raise _Stop

        handle = self.layer.register_forward_hook(hook)
        try:
            self.module(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not box:
            raise TargetError(f"Layer {self.spec.layer!r} did not run in the model's forward pass.")
        return pick_element(box[0], self.spec.element, self.spec.layer, self.spec.first)

    def _check(self, out: Tensor) -> None:
        """Check the units and position against the layer's output `[N, ...]` (once per rank)."""
        name, spec = self.name, self.spec
        axis = unit_axis(out.ndim, self.detected_axis, self.layout)
        if axis is None:
            subject = "The output" if name == "the output" else f"Layer {name!r}"
            raise TargetError(
                f"{subject} gives one number per image (output shape {list(out.shape)}), so it "
                "has no units; target a layer whose output per image is [K], [T, D] or "
                "[C, H, W], as ldam inspect lists them."
            )
        kind = layer_kind(out.ndim, axis)
        shape = list(out.shape[1:])
        units = out.shape[axis]
        positions = [out.shape[d] for d in range(1, out.ndim) if d != axis]
        if kind == "vector":
            if spec.position is not None:
                raise TargetError(
                    f"{name} has a 2-D output with {units} units, so its unit takes no @Y,X position."
                )
            if spec.last >= units:
                raise TargetError(
                    f"Unit {spec.last} is out of range for {name} (units 0-{units - 1}).", "unit"
                )
        elif kind == "channels" and out.ndim == 4:
            if spec.last >= units:
                raise TargetError(
                    f"Channel {spec.last} is out of range for {name} (channels 0-{units - 1}).",
                    "unit",
                )
        elif spec.last >= units:
            raise TargetError(
                f"Channel {spec.last} is out of range for {name}, which outputs "
                f"{_describe(kind, shape)} (channels 0-{units - 1}).",
                "unit",
            )
        if spec.position is not None:
            if len(spec.position) != len(positions):
                want = {1: "one number", 2: "two numbers"}.get(
                    len(positions), f"{len(positions)} numbers"
                )
                example = ",".join("0" for _ in positions)
                given = ",".join(str(p) for p in spec.position)
                raise TargetError(
                    f"{name} outputs {_describe(kind, shape)}, so a position is {want} "
                    f"({_position_names(kind, len(positions))}), such as {spec.first}@{example}; "
                    f"got @{given}."
                )
            if kind == "tokens" and spec.position[0] >= positions[0]:
                raise TargetError(
                    f"Token {spec.position[0]} is out of range for {name}, which outputs "
                    f"{_describe(kind, shape)} (tokens 0-{positions[0] - 1})."
                )
            if len(positions) == 2 and (
                spec.position[0] >= positions[0] or spec.position[1] >= positions[1]
            ):
                raise TargetError(
                    f"Position {spec.position[0]},{spec.position[1]} is out of range for {name} "
                    f"(rows 0-{positions[0] - 1}, columns 0-{positions[1] - 1})."
                )
            if any(p >= size for p, size in zip(spec.position, positions, strict=True)):
                ranges = ", ".join(f"0-{size - 1}" for size in positions)
                raise TargetError(
                    f"Position {','.join(map(str, spec.position))} is out of range for {name} "
                    f"(positions {ranges})."
                )
        self._axis = axis
        self._checked_ndim = out.ndim

    def _select(self, out: Tensor) -> Tensor:
        if self._axis != 1:
            out = out.movedim(self._axis, 1)  # [N, C, *positions]: a view, no copy
        if self._one_unit is not None:
            # One unit for every chain (the common case): a plain slice, whose backward is a
            # cheap strided copy, instead of advanced indexing, whose backward is a scatter.
            picked = out[:, self._one_unit]
        else:
            if self._units.device != out.device:
                self._units = self._units.to(out.device)  # once, not every step
            units = self._units
            if self._copies > 1:
                if self._rows_units is None or len(self._rows_units) != len(out):
                    self._rows_units = units.repeat_interleave(self._copies)
                units = self._rows_units
            index = units.view(-1, *([1] * (out.ndim - 1))).expand(-1, 1, *out.shape[2:])
            picked = out.gather(1, index).squeeze(1)
        if picked.ndim == 1:
            return picked
        if self.spec.position is None:
            return picked.mean(dim=tuple(range(1, picked.ndim)))
        return picked[(slice(None), *self.spec.position)]


def _describe(kind: str, shape: list[int]) -> str:
    """What a layer outputs per image, in words: `197 tokens of 768 channels`."""
    if kind == "tokens":
        return f"{shape[0]} tokens of {shape[1]} channels"
    if kind == "channels_last":
        return (
            f"channels last {shape} (rows, columns, channels)"
            if len(shape) == 3
            else f"channels last {shape}"
        )
    if kind == "channels":
        return f"{shape[0]} channels of {'x'.join(map(str, shape[1:]))} positions"
    return f"{shape[0]} units"


def _position_names(kind: str, count: int) -> str:
    if kind == "tokens":
        return "a token"
    if count == 2:
        return "row, column"
    return "one index per position axis"


def list_layers(
    module: nn.Module,
    input_shape: Sequence[int],
    batch_size: int | None = None,
    layout: str = "auto",
) -> list[LayerInfo]:
    """Every layer that ran in one forward of zeros `[batch, *input_shape]`, in call order,
    then the output (name ""), with output shapes, unit counts and kinds. A layer that returns
    a tuple, list or dict is listed once per tensor in it (`attn[0]`, `output[logits]`).
    Hooks are removed after.

    For TorchScript (which refuses hooks) only the output is listed; a flat export graph is
    read through its graph, with the same result.
    """
    check_layout(layout)
    if graph.is_flat_export(module):
        return _list_graph_layers(module, input_shape, batch_size, layout)  # type: ignore[arg-type]
    found: dict[str, tuple[Any, int | None]] = {}
    handles = []
    x = torch.zeros(batch_size or 1, *input_shape)
    axes = _EagerAxes(x)

    def record(name: str, sub: nn.Module) -> Any:
        def hook(_module: nn.Module, inputs: Any, output: Any) -> None:
            axis = axes.record(sub, inputs, output)
            if name not in found:
                found[name] = (output, axis)

        return hook

    try:
        if not _is_torchscript(module):
            for name, sub in module.named_modules():
                if name:
                    handles.append(sub.register_forward_hook(record(name, sub)))
        with torch.no_grad():
            out = module(x)
    except Exception as error:
        raise _refused_input(input_shape, error) from None
    finally:
        for handle in handles:
            handle.remove()
    layers: list[LayerInfo] = []
    for name, (value, axis) in found.items():
        layers.extend(_infos(name, value, axis, layout))
    layers.extend(_infos("", out, None, layout))
    return layers


def _infos(name: str, value: Any, axis: int | None, layout: str) -> list[LayerInfo]:
    """The layer entries of one layer's value: one per tensor in it."""
    if isinstance(value, Tensor):
        return [_info(name, tuple(value.shape), axis, layout)]
    stem = name or "output"
    return [
        _info(stem + element_text(path), tuple(leaf.shape), axis, layout)
        for path, leaf in _leaves(value)
        if isinstance(leaf, Tensor) and path
    ]


def _info(name: str, full_shape: tuple[int, ...], detected: int | None, layout: str) -> LayerInfo:
    ndim = len(full_shape)
    axis = unit_axis(ndim, detected, layout)
    units = full_shape[axis] if axis is not None else 0
    return LayerInfo(name, tuple(full_shape[1:]), units, layer_kind(ndim, axis))


def _list_graph_layers(
    module: fx.GraphModule, input_shape: Sequence[int], batch_size: int | None, layout: str
) -> list[LayerInfo]:
    entries: list[tuple[str, fx.Node]] = []
    for path, region in graph.regions(module).items():
        if len(region.outputs) == 1:
            entries.append((path, region.outputs[0]))
        else:
            entries.extend((f"{path}[{i}]", node) for i, node in enumerate(region.outputs))
    structure = _output_structure(module)
    if isinstance(structure, fx.Node):
        outputs = [("", structure)]
    else:
        outputs = [("output" + element_text(path), leaf) for path, leaf in _leaves(structure)]
    entries.extend((name, node) for name, node in outputs if isinstance(node, fx.Node))
    axes = graph.channel_axes(module)
    try:
        probe = graph.cut(module, tuple(node for _, node in entries))
        with torch.no_grad():
            got = probe(torch.zeros(batch_size or 1, *input_shape))
    except Exception as error:
        raise _refused_input(input_shape, error) from None
    if len(entries) == 1:
        got = (got,)
    return [
        _info(name, tuple(value.shape), axes.get(node), layout)
        for (name, node), value in zip(entries, got, strict=True)
        if isinstance(value, Tensor)
    ]


def _output_structure(module: fx.GraphModule) -> Any:
    """What the network returns, with graph nodes for tensors: one node, or a nest of
    tuples, lists and dicts of them (from the graph's pytree spec)."""
    values = graph.output_values(module)
    out_spec = graph.output_spec(module)
    if out_spec is None:
        return values[0] if len(values) == 1 else tuple(values)
    return pytree.tree_unflatten(list(values), out_spec)  # type: ignore[arg-type]


def _refused_input(input_shape: Sequence[int], error: Exception) -> TargetError:
    shape = ",".join(str(s) for s in input_shape)
    return TargetError(f"The model does not accept input of shape {shape} ({first_line(error)}).")
