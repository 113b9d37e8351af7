"""D's files: its checkpoint, and the real images it learns to tell the chains from.

A checkpoint is a `torch.save`d dict of plain values and tensors, so it is read back with
`weights_only=True` (no code runs from it): `format` (`FORMAT`), `format_version`, `arch` (the
module's class name), `input_shape`, `steps`, `tau`, `lr` and the `state_dict`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ldam.sampling.discriminator.learner import DiscriminatorError

FORMAT = "ldam-discriminator"
FORMAT_VERSION = 1


def write_checkpoint(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    *,
    arch: str,
    input_shape: tuple[int, int, int],
    steps: int,
    tau: float,
    lr: float,
) -> None:
    """Write D's weights `state_dict` (on the CPU) and the metadata to `path`, whole or not
    at all."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "input_shape": list(input_shape),
        "steps": steps,
        "tau": tau,
        "lr": lr,
        "state_dict": state_dict,
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


def real_images_for(
    input_shape: tuple[int, int, int],
    normalization: tuple[list[float], list[float]] | None,
    data: str | Path | None,
) -> torch.Tensor:
    """D's real images `[M, C, H, W]`, normalized like the classifier's input.

    `data` (a folder or `.npz`, read by `ldam.models.data.load_images`) when given; else the bundled
    MNIST training split (8,000 digits; the 2,000 held out stay unseen) for 1x28x28 inputs.
    """
    from ldam.models import data as datasets

    input_shape = tuple(int(s) for s in input_shape)  # type: ignore[assignment]
    try:
        if data is not None:
            return datasets.load_images(data, input_shape, normalization)
        if input_shape == (1, 28, 28):
            mean, std = (normalization[0][0], normalization[1][0]) if normalization else (0.0, 1.0)
            images, _ = datasets.load_mnist()
            train, _ = datasets.split_indices()
            return datasets.normalize_mnist(images[train], mean, std)
    except datasets.DataError as exc:
        raise DiscriminatorError(str(exc)) from None
    raise DiscriminatorError(
        f"The discriminator needs real images shaped like the model's input {input_shape}: "
        "pass --disc-data with a folder of images or an .npz."
    )
