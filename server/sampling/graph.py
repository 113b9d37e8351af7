"""Layers of a `torch.export` program, read from its flat graph, and the graph cut at one.

`ExportedProgram.module()` is one flat `torch.fx` graph of ATen ops; every op node carries the
stack of modules that called it (``nn_module_stack``: key -> (dotted path, type)). A layer's
nodes are those whose stack holds the key of the layer's first call; its output is the one node
of them that is used outside them (as `torch.export.unflatten` decides module outputs too).

Cutting the graph at that node gives a module that computes the layer's output from the input
and nothing after it: no unflattened module tree, no forward hook, no layers above the target.
On this machine the flat graph runs at 0.90-0.99 of the eager network, the unflattened module at
0.46-0.89.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn


@dataclass(frozen=True)
class Region:
    """One layer's first call in the flat graph: its dotted `path` and its `outputs` (the
    nodes used after it; one for a layer that returns one tensor)."""

    path: str
    outputs: tuple[fx.Node, ...]


def is_flat_export(module: nn.Module) -> bool:
    """Whether `module` is a flat `ExportedProgram.module()` graph that names its layers."""
    if not isinstance(module, fx.GraphModule):
        return False
    return any(node.meta.get("nn_module_stack") for node in module.graph.nodes)


def regions(module: fx.GraphModule) -> dict[str, Region]:
    """Every layer with ops in the graph, in the order its output is computed (a container
    after the layers inside it, as forward hooks would fire), by dotted path."""
    first_key: dict[str, str] = {}
    members: dict[str, list[fx.Node]] = {}
    for node in module.graph.nodes:
        for key, (path, _kind) in (node.meta.get("nn_module_stack") or {}).items():
            if not path or path.startswith("_empty_nn_module_stack"):
                continue  # the network itself, or a node export gave no stack
            # A layer called several times (a shared ReLU) is read at its first call.
            if first_key.setdefault(path, key) == key:
                members.setdefault(key, []).append(node)
    position = {node: i for i, node in enumerate(module.graph.nodes)}
    found = []
    for path, key in first_key.items():
        nodes = members[key]
        inside = set(nodes)
        # Sizes computed inside a layer and used after it (a batch size times a window count
        # in Swin) are not what the layer returns: only tensors are its outputs.
        outputs = tuple(
            n for n in nodes if not _is_size(n) and any(user not in inside for user in n.users)
        )
        if outputs:
            end = max(position[n] for n in outputs)
            found.append((end, -path.count("."), Region(path, outputs)))
    found.sort(key=lambda item: (item[0], item[1]))
    return {region.path: region for _, _, region in found}


def _is_size(node: fx.Node) -> bool:
    """Whether the node computes a number (a symbolic size), not a tensor."""
    return isinstance(
        node.meta.get("val"), (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool)
    )


def output_values(module: fx.GraphModule) -> tuple[object, ...]:
    """What the graph returns, flat, in order: nodes, and constants where the network returns
    one (the leaves of `output_spec`)."""
    (out,) = [node for node in module.graph.nodes if node.op == "output"]
    values = out.args[0]
    return tuple(values) if isinstance(values, (tuple, list)) else (values,)


def _written(node: fx.Node) -> list[fx.Node]:
    """The tensors an in-place op writes into (its arguments marked as written in its schema)."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return []
    return [
        node.args[i]
        for i, argument in enumerate(schema.arguments)
        if argument.alias_info is not None
        and argument.alias_info.is_write
        and i < len(node.args)
        and isinstance(node.args[i], fx.Node)
    ]


def _base(node: fx.Node) -> fx.Node:
    """The tensor a view (a slice, a select...) views, following views of views."""
    while True:
        schema = getattr(node.target, "_schema", None)
        aliases = schema is not None and any(r.alias_info is not None for r in schema.returns)
        source = node.args[0] if node.args else None
        if not aliases or _written(node) or not isinstance(source, fx.Node):
            return node
        node = source


def cut(module: fx.GraphModule, nodes: tuple[fx.Node, ...]) -> fx.GraphModule:
    """A module computing `nodes` (one tensor for one node, else a tuple) from the graph's
    inputs with only the ops they need. It shares the parameters of `module`.

    An export graph keeps in-place writes (Swin builds its shifted-window mask with
    `mask[h0:h1, w0:w1] = k`: `fill_` nodes that nothing uses). A write into a tensor the cut
    needs, through any view of it, is kept when it comes before the last node cut at: the
    value read there includes it. Writes after it (an in-place ReLU on a batch norm's output
    once the batch norm is done) are not, as a forward hook would not have seen them.
    """
    position = {node: i for i, node in enumerate(module.graph.nodes)}
    end = max(position[n] for n in nodes)
    needed: set[fx.Node] = set()
    todo = list(nodes)
    while todo:
        while todo:
            node = todo.pop()
            if node not in needed:
                needed.add(node)
                todo.extend(node.all_input_nodes)
        todo = [
            node
            for node in module.graph.nodes
            if node not in needed
            and position[node] < end
            and any(_base(w) in needed for w in _written(node))
        ]
    graph = fx.Graph()
    copied: dict[fx.Node, fx.Node] = {}
    for node in module.graph.nodes:
        if node.op == "placeholder" or node in needed:
            copied[node] = graph.node_copy(node, lambda n: copied[n])
    graph.output(copied[nodes[0]] if len(nodes) == 1 else tuple(copied[n] for n in nodes))
    graph.lint()
    return fx.GraphModule(module, graph)


# ----------------------------------------------------------------------------- channel axes
#
# Which axis of a tensor holds the channels is not in its shape: a Swin stage's [N, H, W, C]
# and a CNN's [N, C, H, W] look alike. The graph says it: a convolution or batch norm makes
# channels axis 1, a linear layer or layer norm the last axis, a permute or transpose moves
# the axis, and an op that keeps the size of that axis (elementwise ops, residual adds,
# dropout, padding, rolls) passes it on. Anything else leaves it unknown (None), and the
# caller falls back to its default or what the user stated.

_FIRST_AXIS_OPS = frozenset(
    {
        "conv1d",
        "conv2d",
        "conv3d",
        "convolution",
        "_convolution",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "batch_norm",
        "_native_batch_norm_legit_no_training",
        "_native_batch_norm_legit",
        "native_batch_norm",
        "group_norm",
        "native_group_norm",
        "instance_norm",
    }
)
_LAST_AXIS_OPS = frozenset({"linear"})
_RESHAPE_OPS = frozenset({"view", "reshape", "_unsafe_view", "contiguous", "clone"})


def _op_name(node: fx.Node) -> str:
    """`aten.conv2d.default` -> `conv2d`; a Python function (getitem) -> its name."""
    text = str(node.target)
    parts = text.split(".")
    return (
        parts[1]
        if len(parts) >= 3 and parts[0] == "aten"
        else getattr(node.target, "__name__", text)
    )


def _shape(node: fx.Node) -> tuple[str, ...] | None:
    """The node's tensor shape as text (symbolic sizes stay comparable), None if not a tensor."""
    value = node.meta.get("val")
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(str(s) for s in shape)


def _axis_of(node: fx.Node, known: dict[fx.Node, int | None]) -> int | None:
    shape = _shape(node)
    if node.op == "placeholder":
        return 1 if shape is not None and len(shape) >= 3 else None  # images [N, C, H, W]
    if node.op != "call_function":
        return None
    name = _op_name(node)
    if name == "getitem":
        # An element of a multi-output op (batch norm's tuple) shares the op's axis.
        source = node.args[0]
        return known.get(source) if isinstance(source, fx.Node) else None
    if shape is None and not isinstance(node.meta.get("val"), (tuple, list)):
        return None
    ndim = len(shape) if shape is not None else 0
    if name in _FIRST_AXIS_OPS:
        return 1
    if name in _LAST_AXIS_OPS:
        return ndim - 1 if ndim else None
    if name == "layer_norm":
        normalized = node.args[1] if len(node.args) > 1 else ()
        return ndim - 1 if isinstance(normalized, (list, tuple)) and len(normalized) == 1 else None
    inputs = node.all_input_nodes
    if not inputs:
        return None
    source = inputs[0]
    axis = known.get(source)
    in_shape = _shape(source)
    if axis is None or in_shape is None or shape is None:
        if name in _RESHAPE_OPS or name in ("permute", "transpose"):
            return None
        # An op of several tensors (x + pos_embed) may know the axis from another input.
        for other in inputs[1:]:
            other_axis, other_shape = known.get(other), _shape(other)
            if (
                other_axis is not None
                and other_shape is not None
                and shape is not None
                and len(other_shape) == ndim
                and other_shape[other_axis] == shape[other_axis]
            ):
                return other_axis
        return None
    if name == "permute":
        dims = [d % len(in_shape) for d in node.args[1]]  # type: ignore[union-attr]
        return dims.index(axis)
    if name == "transpose":
        first, second = (int(d) % len(in_shape) for d in node.args[1:3])  # type: ignore[arg-type]
        return second if axis == first else first if axis == second else axis
    if name == "flatten":
        start = int(node.args[1]) if len(node.args) > 1 else 0  # type: ignore[arg-type]
        end = int(node.args[2]) if len(node.args) > 2 else -1  # type: ignore[arg-type]
        start, end = start % len(in_shape), end % len(in_shape)
        if axis < start:
            return axis
        return axis - (end - start) if axis > end else None
    if name in _RESHAPE_OPS:
        if axis == len(in_shape) - 1 and ndim and shape[-1] == in_shape[-1]:
            return ndim - 1
        if axis == 1 and ndim >= 2 and shape[:2] == in_shape[:2]:
            return 1
        return None
    if ndim == len(in_shape) and shape[axis] == in_shape[axis]:
        return axis
    return None


def channel_axes(module: fx.GraphModule) -> dict[fx.Node, int | None]:
    """The channel axis of every node's output (an axis of the full tensor, batch = 0), or
    None where the graph does not tell; see the rules above."""
    known: dict[fx.Node, int | None] = {}
    for node in module.graph.nodes:
        known[node] = _axis_of(node, known)
    return known


def output_spec(module: fx.GraphModule) -> object | None:
    """The pytree spec of what the network returns (tuple, list, dict nesting), or None when
    the graph returns its outputs as a flat tuple without one."""
    info = getattr(module.graph._codegen, "pytree_info", None)
    return getattr(info, "out_spec", None)
