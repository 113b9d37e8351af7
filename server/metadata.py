"""What the user says about a checkpoint that its file does not: input normalization and class
names (``--mean``, ``--std``, ``--class-names``).

A state dict, a TorchScript file or a Lightning ``.ckpt`` carries neither, so its "input space"
view and its column labels would be wrong; a `.pt2`'s own metadata may be wrong too. The user's
values, given, win over the file's. They are parsed once into one `MetadataOverride`, which the
command line, the dashboard's worker configuration and the atlas job carry as it is, and
`ldam.models.loading.load_checkpoint` applies with `override_normalization` and
`check_class_names` once the model's channel and unit counts are known.

This module imports only `ldam.errors`: the web server (no torch) and the worker share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ldam.errors import UserError

Normalization = tuple[list[float], list[float]]


@dataclass(frozen=True)
class MetadataOverride:
    """The user's normalization and class names for a checkpoint; None: keep the file's.

    `mean` and `std` hold one value (for every channel) or one per input channel, every std
    above 0; `class_names` label the output units in order.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None

    def as_json(self) -> dict[str, list[float] | list[str] | None]:
        """The values as lists (None where not given), as manifests and npz files store them."""
        return {
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            "class_names": list(self.class_names) if self.class_names is not None else None,
        }


def parse_values(text: str | float | Sequence[float] | None, flag: str) -> tuple[float, ...] | None:
    """``0.5`` or a comma list ``0.485,0.456,0.406`` (or a number, or a sequence of numbers) as
    finite floats; None stays None. `flag` (``--mean``) names the setting in the error
    sentence."""
    if text is None:
        return None
    if isinstance(text, str):
        parts: list[Any] = text.split(",")
    elif isinstance(text, (int, float)):
        parts = [text]
    else:
        parts = list(text)
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise UserError(
            f"{flag} must be one number or one per channel, comma-separated, not {text!r}.",
            flag.lstrip("-").replace("-", "_"),
        )
    return values


def parse_class_names(text: str | Sequence[str] | None, flag: str) -> tuple[str, ...] | None:
    """Class names from a comma list ``cat,dog,bird``, a file with one name per line (blank
    lines skipped), or a sequence of names; None stays None. A value without a comma names a
    file. `flag` (``--class-names``) names the setting in the error sentence."""
    if text is None:
        return None
    field = flag.lstrip("-").replace("-", "_")
    if not isinstance(text, str):
        names = tuple(str(name).strip() for name in text)
    elif "," in text:
        names = tuple(name.strip() for name in text.split(","))
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise UserError(
                f"{flag} {text} is not a file; give a file with one name per line or a comma "
                "list such as cat,dog.",
                field,
            )
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"{flag} {text} cannot be read as text ({error}).", field) from None
        names = tuple(line.strip() for line in lines if line.strip())
        if not names:
            raise UserError(f"{flag} {text} is empty; write one class name per line.", field)
    if not names or not all(names):
        raise UserError(f"{flag} has an empty name in {text!r}; give every class a name.", field)
    return names


def parse_metadata(
    mean: str | float | Sequence[float] | None,
    std: str | float | Sequence[float] | None,
    class_names: str | Sequence[str] | None,
    flags: tuple[str, str, str] = ("--mean", "--std", "--class-names"),
) -> MetadataOverride:
    """The one `MetadataOverride` of ``--mean``, ``--std`` and ``--class-names`` (each None
    when not given); a `UserError` naming the flag for a bad value or a std that is not above 0.
    `flags` are the names the sentences use (`ldam.notebook.show` passes its keywords).
    """
    stds = parse_values(std, flags[1])
    if stds is not None and min(stds) <= 0:
        raise UserError(f"{flags[1]} must be above 0 for every channel, not {std!r}.", "std")
    return MetadataOverride(
        mean=parse_values(mean, flags[0]),
        std=stds,
        class_names=parse_class_names(class_names, flags[2]),
    )


def override_normalization(
    override: MetadataOverride, normalization: Normalization | None, channels: int
) -> Normalization | None:
    """`normalization` (the file's: mean and std per channel, or None) with the user's mean and
    std put in. A mean given alone keeps the file's std (1 when it has none); a std alone keeps
    the file's mean (0). A `UserError` names the flag whose count is neither 1 nor `channels`.
    """
    for flag, values in (("--mean", override.mean), ("--std", override.std)):
        if values is not None and len(values) not in (1, channels):
            raise UserError(
                f"{flag} has {len(values)} values for a model with {channels} input channels; "
                f"give one value or {channels}.",
                flag.lstrip("-"),
            )
    if override.mean is None and override.std is None:
        return normalization
    mean, std = normalization if normalization is not None else ([0.0], [1.0])
    return (
        list(override.mean) if override.mean is not None else list(mean),
        list(override.std) if override.std is not None else list(std),
    )


def normalization_json(normalization: Normalization | None) -> dict[str, list[float]] | None:
    """(mean, std) as a checkpoint's metadata, an npz's or a manifest's store it:
    ``{"mean": [...], "std": [...]}``, or None."""
    if normalization is None:
        return None
    return {"mean": list(normalization[0]), "std": list(normalization[1])}


def check_class_names(names: Sequence[str], units: int | None) -> None:
    """A `UserError` when the user gave a number of `names` other than the output's `units`
    (None: the output is not one vector per image, so there is nothing to count)."""
    if units is not None and len(names) != units:
        raise UserError(
            f"--class-names gives {len(names)} names for a model with {units} output units; "
            "give one name per unit, in order.",
            "class_names",
        )
