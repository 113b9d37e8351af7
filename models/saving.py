"""The one exporter: a module, or a module `torch.export` already made, written as a `.pt2`.

    ldam.save_checkpoint(model, images[:2], f"runs/mnist/step_{step:06d}.pt2", step=step)

`save_checkpoint` is the one line a training loop adds to be watched by ``ldam serve --watch``;
`export_checkpoint` is the same exporter for a known input shape and any JSON-able metadata (the
trainer's accuracy and settings, the tests' fixed-batch programs, ``ldam bench``). Both write a
`torch.export` program whose batch dimension is dynamic (`export_program`: all chains in one
forward) and ldam's metadata (`input_shape`, and `class_names`, `normalization`, `step` when
known) as the extra file ``ldam.json``, to a hidden temporary file beside `path` that is then
renamed onto `path`: a watcher never sees a half-written checkpoint under its final name, and a
reader of the old file keeps a whole one. The model is exported in eval mode and left in the
mode it was in.

A module that `torch.export` made (``torch.export.load(path).module()``) refuses ``eval()``: its
mode was fixed when it was traced. It is exported again as it is, when its batch is dynamic; one
traced for a fixed batch, or in training mode, is refused in one sentence.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ldam.errors import first_line
from ldam.models.loading import METADATA_FILE, CheckpointError, training_ops

NormalizationArg = Mapping[str, Sequence[float]] | tuple[Sequence[float], Sequence[float]]


def _normalization(value: NormalizationArg | None) -> dict[str, list[float]] | None:
    """`{"mean": [...], "std": [...]}` from that dict or a `(mean, std)` pair (one value per
    channel), or None; anything else is a `CheckpointError`."""
    if value is None:
        return None
    try:
        if isinstance(value, Mapping):
            mean, std = value["mean"], value["std"]
        else:
            mean, std = value
        out = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            "normalization must be (mean, std) or {'mean': [...], 'std': [...]}, one value per "
            f"channel, not {value!r}."
        ) from None
    if len(out["mean"]) != len(out["std"]) or not out["mean"] or min(out["std"]) <= 0:
        raise CheckpointError(
            "normalization needs as many means as standard deviations, all deviations positive, "
            f"not {value!r}."
        )
    return out


def _example_batch(example_input: torch.Tensor) -> torch.Tensor:
    """`example_input` as a batch of at least 2 images `[N >= 2, C, H, W]` on the CPU (a batch
    of 1 would be specialized even when marked dynamic)."""
    if not isinstance(example_input, torch.Tensor):
        raise CheckpointError(
            f"example_input must be a tensor of images [N, C, H, W], not {type(example_input).__name__}."
        )
    x = example_input.detach()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or min(x.shape[1:]) < 1:
        raise CheckpointError(
            f"example_input must be images [N, C, H, W] (or one image [C, H, W]), got shape "
            f"{list(example_input.shape)}."
        )
    x = x[:2].to("cpu", torch.float32)
    return x if x.shape[0] == 2 else x.expand(2, *x.shape[1:]).clone()


# ----------------------------------------------------------------------------- the exporter


def _exported_batch(model: nn.Module) -> int | None:
    """For a module `torch.export` made: its input's batch size, -1 when dynamic; None for any
    other module. `ExportedProgram.module()` replaces the graph module's ``train`` and ``eval``
    with ones that refuse (its mode is part of the traced graph), which is how it is told."""
    if not isinstance(model, torch.fx.GraphModule) or "eval" not in vars(model):
        return None
    inputs = [n for n in model.graph.nodes if n.op == "placeholder"]
    value = inputs[0].meta.get("val") if inputs else None
    if value is None or value.dim() == 0:
        return -1
    return value.shape[0] if isinstance(value.shape[0], int) else -1


def export_program(
    model: nn.Module, example: torch.Tensor, dynamic_batch: bool = True
) -> torch.export.ExportedProgram:
    """`model` traced by `torch.export` in eval mode on `example` ([N, C, H, W] on the CPU; N = 2
    for a dynamic batch, since a batch of 1 is specialized even when marked dynamic).

    The one batch rule of every `.pt2` ldam writes: with `dynamic_batch` the batch dimension is
    `torch.export.Dim("batch")` without bounds (any number of chains in one forward), else it is
    fixed to `example`'s. A model on an accelerator is exported from a CPU copy (the file loads
    on any machine; the training loop's model and optimizer state are never touched) and left
    in the mode it was in. Raises `CheckpointError` (one sentence) when torch cannot export it.
    """
    exported = _exported_batch(model)
    if exported is not None and exported >= 0 and dynamic_batch:
        raise CheckpointError(
            f"model was made by torch.export for a fixed batch of {exported}, so it cannot be "
            "exported with a dynamic batch; pass the original torch.nn.Module instead."
        )
    on_cpu = all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    module = model if on_cpu else copy.deepcopy(model).to("cpu")
    was_training = model.training
    if exported is None:
        module.eval()
    dims = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, (example,), dynamic_shapes=dims)
    except Exception as error:
        raise CheckpointError(
            f"torch.export could not export the model ({first_line(error)})."
        ) from error
    finally:
        if exported is None:
            model.train(was_training)
    active = training_ops(program)
    if active:
        raise CheckpointError(
            f"model was made by torch.export in training mode ({' and '.join(active)} active); "
            "export the original torch.nn.Module, which is exported in eval mode."
        )
    return program


def write_program(
    program: torch.export.ExportedProgram, path: Path, metadata: dict[str, Any]
) -> Path:
    """Write `program` with `metadata` as ``ldam.json`` to `path`, whole: to a hidden temporary
    file in the same folder (created if missing), then renamed onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and not ending in a checkpoint suffix: the watcher never looks at it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            torch.export.save(program, file, extra_files={METADATA_FILE: json.dumps(metadata)})
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _pt2_path(path: str | Path, caller: str) -> Path:
    path = Path(path)
    if path.suffix != ".pt2":
        raise CheckpointError(
            f"{caller} writes torch.export programs; name the file *.pt2, not {path.name}."
        )
    return path


def _check_module(model: Any) -> None:
    if isinstance(model, torch.export.ExportedProgram):
        raise CheckpointError("model is an ExportedProgram; pass program.module() instead.")
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"model must be a torch.nn.Module, not {type(model).__name__}.")


# ----------------------------------------------------------------------------- the two doors


def save_checkpoint(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    normalization: NormalizationArg | None = None,
    step: int | None = None,
) -> Path:
    """Write `model` as a `.pt2` checkpoint that ``ldam serve --watch`` follows; returns the path.

    `example_input` is a batch of images `[N, C, H, W]` (or one `[C, H, W]`) of the model's
    input; only its shape is used and the batch dimension is exported as dynamic. `class_names`
    label the output units on the dashboard; `normalization` (mean, std per channel) is applied
    outside the network when ldam shows images; `step` is the training step, stored in the
    metadata (put it in the file name too, ``step_001200.pt2``: the watcher orders files by it).
    `model` may be a module `torch.export` made (``torch.export.load(f).module()``) with a
    dynamic batch: it is exported again as it is.

    The file is written by `write_program`, so it appears whole. Raises `CheckpointError` (one
    sentence) for a path not ending in ``.pt2``, a bad argument, or a model that `torch.export`
    cannot export.
    """
    path = _pt2_path(path, "save_checkpoint")
    _check_module(model)
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        raise CheckpointError(f"step must be a whole number of at least 0, not {step!r}.")
    example = _example_batch(example_input)
    meta: dict[str, Any] = {"input_shape": [int(s) for s in example.shape[1:]]}
    if class_names is not None:
        meta["class_names"] = [str(name) for name in class_names]
    norm = _normalization(normalization)
    if norm is not None:
        meta["normalization"] = norm
    if step is not None:
        meta["step"] = step
    return write_program(export_program(model, example), path, meta)


def export_checkpoint(
    module: nn.Module,
    path: str | Path,
    input_shape: tuple[int, int, int],
    metadata: dict[str, Any] | None = None,
    dynamic_batch: bool = True,
) -> Path:
    """Write `module` as a `.pt2` for images of `input_shape` (C, H, W); returns the path.

    `metadata` (JSON-able: `normalization` as {"mean": [...], "std": [...]}, `class_names`, a
    trainer's accuracy and settings) is stored as ``ldam.json`` with `input_shape`. Without
    `dynamic_batch` the program accepts batch 1 only (a fixed-batch export, for tests of that
    case). Same exporter and errors as `save_checkpoint`.
    """
    path = _pt2_path(path, "export_checkpoint")
    _check_module(module)
    shape = [int(s) for s in input_shape]
    example = torch.zeros(2 if dynamic_batch else 1, *shape)
    program = export_program(module, example, dynamic_batch)
    return write_program(program, path, {**(metadata or {}), "input_shape": shape})
