"""`save_checkpoint`: the one line a training loop adds to be watched by ``ldam serve --watch``.

    ldam.save_checkpoint(model, images[:2], f"runs/mnist/step_{step:06d}.pt2", step=step)

It writes a `torch.export` program with a dynamic batch dimension (all chains in one forward)
and ldam's metadata (`input_shape`, `class_names`, `normalization`, `step`) as the extra file
``ldam.json``, to a hidden temporary file beside `path` that is then renamed onto `path`: a
watcher never sees a half-written checkpoint under its final name, and a reader of the old file
keeps a whole one. The model is exported in eval mode and left in the mode it was in.
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

from ldam.models.loading import METADATA_FILE, CheckpointError

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

    The model is exported in eval mode from a CPU copy when it lives elsewhere (so that any
    machine can load the file), then left in the mode it was in. The file is written to a hidden
    temporary file in the same folder and renamed onto `path`, so it appears whole. Raises
    `CheckpointError` (one sentence) for a path not ending in ``.pt2``, a bad argument, or a
    model that `torch.export` cannot export.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise CheckpointError(
            f"save_checkpoint writes torch.export programs; name the file *.pt2, not {path.name}."
        )
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"model must be a torch.nn.Module, not {type(model).__name__}.")
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

    on_cpu = all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    # A training model on an accelerator is copied to the CPU rather than moved, so the training
    # loop's model, its optimizer state and its device are never touched.
    module = model if on_cpu else copy.deepcopy(model).to("cpu")
    was_training = model.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
            )
    except Exception as error:
        lines = str(error).strip().splitlines()
        first = (lines[0] if lines else type(error).__name__)[:200].rstrip(". ")
        raise CheckpointError(f"torch.export could not export the model ({first}).") from error
    finally:
        model.train(was_training)

    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and not ending in a checkpoint suffix: the watcher never looks at it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            torch.export.save(program, file, extra_files={METADATA_FILE: json.dumps(meta)})
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
