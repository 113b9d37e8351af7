"""Targets: which unit of which layer each chain maximizes, read through a forward hook.

The target grammar (`fc3:7`, `conv1:3@12,12`, `fc3:0-9`, `output:7`) is parsed by
`ldam.wire.targets.parse_target`; this module resolves a parsed target against a model.
LAYER is the dotted path of `named_modules()` (native names, resolved exactly, no `_` joining).

Two ways to read a layer, with the same results:
- a `torch.export` program (`ExportedProgram.module()`, a flat graph) is cut at the node that
  produces the layer's output (`ldam.sampling.graph`): no hook, and nothing above the layer
  is computed;
- an eager module (a state dict with its architecture) gets a forward hook on the target
  module only, for one forward, removed in `finally`; the forward stops right after the target
  module ran, so a shallow target does not pay for the layers above it either.

A module called several times in one forward is read at its first call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ldam.sampling import graph
from ldam.wire.targets import TargetError, TargetSpec, parse_target


@dataclass(frozen=True)
class LayerInfo:
    """One layer that can be a target: dotted `name` ("" = output), output `shape` without the
    batch dimension, and `units` (K of [K], C of [C, H, W]; 0 if the shape cannot be a target)."""

    name: str
    shape: tuple[int, ...]
    units: int


class _Stop(Exception):
    """Raised by the hook to end the forward once the target module has run."""


def _layer_names(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_modules() if name]


def _is_torchscript(module: nn.Module) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


class Target:
    """The activation of each chain's target unit: `x [N, C, H, W] -> [N]`, differentiable in x.

    `spec` is a target string or `TargetSpec`; `chains` is N. With a unit range the chains are
    split into equal contiguous groups, one per unit (`units_per_chain`). `batch_size` is a
    fixed export batch: the chains then run in chunks of it (the last chunk padded with zeros).
    `input_shape` (C, H, W), when given, checks the layer and units now with one forward of
    one image instead of at the first call.
    """

    def __init__(
        self,
        module: nn.Module,
        spec: str | TargetSpec,
        chains: int,
        batch_size: int | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        self.module = module
        self.spec = spec if isinstance(spec, TargetSpec) else parse_target(spec)
        self.batch_size = batch_size
        if chains < 1:
            raise TargetError(f"The number of chains must be at least 1, got {chains}.", "chains")
        units = self.spec.units
        if chains % len(units):
            raise TargetError(
                f"{chains} chains cannot be split evenly over the {len(units)} units "
                f"{self.spec.first}-{self.spec.last}; use a multiple of {len(units)} chains.",
                "chains",
            )
        per_unit = chains // len(units)
        self.units_per_chain: list[int] = [units[i // per_unit] for i in range(chains)]
        self._units = torch.tensor(self.units_per_chain)
        self.layer: nn.Module | None = None
        # A flat export graph, cut at the target's node (None: run `module`, with a hook).
        self.cut: nn.Module | None = None
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
                self._check(self._forward(probe))

    def _cut_graph(self, module: torch.fx.GraphModule) -> nn.Module:
        if self.spec.is_output:
            nodes = graph.output_nodes(module)
            if len(nodes) != 1:
                raise TargetError(
                    f"The model returns {len(nodes)} values, not one tensor, so its output "
                    "cannot be a target."
                )
            return graph.cut(module, nodes)
        found = graph.regions(module)
        region = found.get(self.spec.layer)
        if region is None:
            raise TargetError(
                f"No layer named {self.spec.layer!r}; the layers are: {', '.join([*found, 'output'])}.",
                "layer",
            )
        if len(region.outputs) != 1:
            raise TargetError(
                f"Layer {self.spec.layer!r} returns {len(region.outputs)} values, not one tensor.",
                "layer",
            )
        return graph.cut(module, region.outputs)

    @property
    def chains(self) -> int:
        """The number of chains N this target was set up for."""
        return len(self.units_per_chain)

    def __call__(self, x: Tensor) -> Tensor:
        """Activation `[N]` of each chain's unit for images `x [N, C, H, W]` (N = chains)."""
        if x.shape[0] != self.chains:
            raise TargetError(
                f"The target was set up for {self.chains} chains but got a batch of {x.shape[0]}."
            )
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
        self._check(out)
        return self._select(out)

    def _forward(self, x: Tensor) -> Tensor:
        if self.cut is not None:
            return self.cut(x)
        if self.layer is None:
            out = self.module(x)
            if not isinstance(out, Tensor):
                raise TargetError(
                    f"The model returns a {type(out).__name__}, not one tensor, so its output cannot be a target."
                )
            return out
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
        if not isinstance(box[0], Tensor):
            raise TargetError(
                f"Layer {self.spec.layer!r} returns a {type(box[0]).__name__}, not one tensor."
            )
        return box[0]

    def _check(self, out: Tensor) -> None:
        name = self.spec.layer or "the output"
        spec = self.spec
        if out.ndim == 2:
            if spec.position is not None:
                raise TargetError(
                    f"{name} has a 2-D output with {out.shape[1]} units, so its unit takes no @Y,X position."
                )
            if spec.last >= out.shape[1]:
                raise TargetError(
                    f"Unit {spec.last} is out of range for {name} (units 0-{out.shape[1] - 1}).",
                    "unit",
                )
        elif out.ndim == 4:
            channels, height, width = out.shape[1:]
            if spec.last >= channels:
                raise TargetError(
                    f"Channel {spec.last} is out of range for {name} (channels 0-{channels - 1}).",
                    "unit",
                )
            if spec.position is not None and (
                spec.position[0] >= height or spec.position[1] >= width
            ):
                raise TargetError(
                    f"Position {spec.position[0]},{spec.position[1]} is out of range for {name} "
                    f"(rows 0-{height - 1}, columns 0-{width - 1})."
                )
        else:
            raise TargetError(
                f"{name} outputs shape {list(out.shape[1:])} per image; a target needs a layer with "
                "a 2-D [N, K] or 4-D [N, C, H, W] output."
            )

    def _select(self, out: Tensor) -> Tensor:
        if self.spec.first == self.spec.last:
            # One unit for every chain (the common case): a plain slice, whose backward is a
            # cheap strided copy, instead of advanced indexing, whose backward is a scatter.
            picked = out[:, self.spec.first]
        else:
            if self._units.device != out.device:
                self._units = self._units.to(out.device)  # once, not every step
            index = self._units.view(-1, *([1] * (out.ndim - 1))).expand(-1, 1, *out.shape[2:])
            picked = out.gather(1, index).squeeze(1)
        if out.ndim == 2:
            return picked
        if self.spec.position is None:
            return picked.mean(dim=(1, 2))
        y, x = self.spec.position
        return picked[:, y, x]


def list_layers(
    module: nn.Module, input_shape: Sequence[int], batch_size: int | None = None
) -> list[LayerInfo]:
    """Every layer that ran in one forward of zeros `[batch, *input_shape]`, in call order,
    then the output (name ""), with output shapes and unit counts. Hooks are removed after.

    For TorchScript (which refuses hooks) only the output is listed; a flat export graph is
    read through its graph (`ldam.sampling.graph.layer_shapes`), with the same result.
    """
    if graph.is_flat_export(module):
        return _list_graph_layers(module, input_shape, batch_size)  # type: ignore[arg-type]
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def record(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if name not in shapes and isinstance(output, Tensor):
                shapes[name] = tuple(output.shape[1:])

        return hook

    try:
        if not _is_torchscript(module):
            for name, sub in module.named_modules():
                if name:
                    handles.append(sub.register_forward_hook(record(name)))
        with torch.no_grad():
            out = module(torch.zeros(batch_size or 1, *input_shape))
    except Exception as error:
        raise _refused_input(input_shape, error) from None
    finally:
        for handle in handles:
            handle.remove()
    layers = [LayerInfo(name, shape, _units(shape)) for name, shape in shapes.items()]
    if isinstance(out, Tensor):
        layers.append(LayerInfo("", tuple(out.shape[1:]), _units(tuple(out.shape[1:]))))
    return layers


def _units(shape: tuple[int, ...]) -> int:
    return shape[0] if len(shape) in (1, 3) else 0


def _list_graph_layers(
    module: torch.fx.GraphModule, input_shape: Sequence[int], batch_size: int | None
) -> list[LayerInfo]:
    try:
        shapes = graph.layer_shapes(module, tuple(input_shape), batch_size or 1)
        with torch.no_grad():
            out = module(torch.zeros(batch_size or 1, *input_shape))
    except Exception as error:
        raise _refused_input(input_shape, error) from None
    layers = [LayerInfo(name, s, _units(s)) for name, s in shapes.items() if s is not None]
    if isinstance(out, Tensor):
        layers.append(LayerInfo("", tuple(out.shape[1:]), _units(tuple(out.shape[1:]))))
    return layers


def _refused_input(input_shape: Sequence[int], error: Exception) -> TargetError:
    shape = ",".join(str(s) for s in input_shape)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200].rstrip(". ")
    return TargetError(f"The model does not accept input of shape {shape} ({first}).")
