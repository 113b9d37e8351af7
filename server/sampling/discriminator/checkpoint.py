"""D's checkpoint file: its published weights with the metadata needed to trust and reuse them.

A file is a `torch.save`d dict of plain values and tensors, so it is read back with
`weights_only=True` (no code runs from it): `format` (`FORMAT`), `format_version`, `arch` (the
module's class name), `input_shape`, `steps`, `tau`, `lr` and the `state_dict`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ldam.sampling.discriminator.errors import DiscriminatorError

FORMAT = "ldam-discriminator"
FORMAT_VERSION = 1


def write_checkpoint(
    path: str | Path,
    module: nn.Module,
    *,
    input_shape: tuple[int, int, int],
    steps: int,
    tau: float,
    lr: float,
) -> None:
    """Write `module`'s weights and the metadata to `path`, whole or not at all."""
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": type(module).__name__,
        "input_shape": list(input_shape),
        "steps": steps,
        "tau": tau,
        "lr": lr,
        "state_dict": state,
    }
    path = Path(path)
    if not path.parent.is_dir():
        # torch.save would raise its own RuntimeError here, not an OSError.
        raise DiscriminatorError(
            f"Cannot write the discriminator to {path}: the folder {path.parent} does not exist."
        )
    # Written next to it, then renamed over it: a crash mid-write never leaves half a file.
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise DiscriminatorError(
            f"Cannot write the discriminator to {path}: {exc.strerror}."
        ) from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a file written by `DiscriminatorTrainer.save` (safely: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise DiscriminatorError(f"Discriminator checkpoint {path} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise DiscriminatorError(f"{path} is not a readable discriminator checkpoint.") from None
    if (
        not isinstance(payload, dict)
        or payload.get("format") != FORMAT
        or not isinstance(payload.get("state_dict"), dict)
        or not isinstance(payload.get("input_shape"), list)
    ):
        raise DiscriminatorError(f"{path} is not a discriminator checkpoint written by ldam.")
    return payload


def read_checkpoint_for(path: str | Path, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """`read_checkpoint(path)`, refused unless it holds a D for inputs `input_shape`."""
    payload = read_checkpoint(path)
    if tuple(payload["input_shape"]) != input_shape:
        raise DiscriminatorError(
            f"{path} holds a discriminator for inputs {tuple(payload['input_shape'])}, "
            f"but this model's input is {input_shape}."
        )
    return payload


def load_weights(model: nn.Module, payload: dict[str, Any], path: str | Path) -> int:
    """Load a checkpoint's weights into `model`; returns the steps they were trained for."""
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise DiscriminatorError(
            f"The weights in {path} do not fit this discriminator's layers."
        ) from None
    return int(payload.get("steps", 0))
