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
            if not path:
                continue  # the network itself
            # A layer called several times (a shared ReLU) is read at its first call.
            if first_key.setdefault(path, key) == key:
                members.setdefault(key, []).append(node)
    position = {node: i for i, node in enumerate(module.graph.nodes)}
    found = []
    for path, key in first_key.items():
        nodes = members[key]
        inside = set(nodes)
        outputs = tuple(n for n in nodes if any(user not in inside for user in n.users))
        if outputs:
            end = max(position[n] for n in outputs)
            found.append((end, -path.count("."), Region(path, outputs)))
    found.sort(key=lambda item: (item[0], item[1]))
    return {region.path: region for _, _, region in found}


def output_nodes(module: fx.GraphModule) -> tuple[fx.Node, ...]:
    """The nodes the whole network returns (one for a network with one tensor output)."""
    (out,) = [node for node in module.graph.nodes if node.op == "output"]
    values = out.args[0]
    flat = values if isinstance(values, (tuple, list)) else (values,)
    return tuple(v for v in flat if isinstance(v, fx.Node))


def cut(module: fx.GraphModule, nodes: tuple[fx.Node, ...]) -> fx.GraphModule:
    """A module computing `nodes` (one tensor for one node, else a tuple) from the graph's
    inputs with only the ops they need. It shares the parameters of `module`."""
    needed: set[fx.Node] = set()
    todo = list(nodes)
    while todo:
        node = todo.pop()
        if node not in needed:
            needed.add(node)
            todo.extend(node.all_input_nodes)
    graph = fx.Graph()
    copied: dict[fx.Node, fx.Node] = {}
    for node in module.graph.nodes:
        if node.op == "placeholder" or node in needed:
            copied[node] = graph.node_copy(node, lambda n: copied[n])
    graph.output(copied[nodes[0]] if len(nodes) == 1 else tuple(copied[n] for n in nodes))
    graph.lint()
    return fx.GraphModule(module, graph)


def layer_shapes(
    module: fx.GraphModule, input_shape: tuple[int, ...], batch: int
) -> dict[str, tuple[int, ...] | None]:
    """The per-image output shape of every layer (None for one that returns several values),
    from one forward of zeros `[batch, *input_shape]` through a graph that returns them all."""
    found = regions(module)
    single = [r for r in found.values() if len(r.outputs) == 1]
    shapes: dict[str, tuple[int, ...] | None] = {path: None for path in found}
    if single:
        probe = cut(module, tuple(r.outputs[0] for r in single))
        with torch.no_grad():
            values = probe(torch.zeros(batch, *input_shape))
        if len(single) == 1:
            values = (values,)
        for region, value in zip(single, values, strict=True):
            if isinstance(value, torch.Tensor):
                shapes[region.path] = tuple(value.shape[1:])
    return shapes
