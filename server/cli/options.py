"""The command line's option parsing: one sentence and exit status 2 for every bad value."""

from __future__ import annotations

import argparse
import math

from ldam.errors import UserError
from ldam.metadata import MetadataOverride, parse_metadata


class UsageError(UserError):
    """A bad command-line value; the message is one sentence for the user."""


# ----------------------------------------------------------------------------- parsing helpers


def per_chain(text: str, name: str) -> float | list[float]:
    """Parse `0.1` or a comma list `0,0.2,0.5` (one value per chain) into floats."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError(f"--{name} needs a number or a comma-separated list of numbers.")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UsageError(
            f"--{name} must be a number or a comma-separated list of numbers, not {text!r}."
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"--{name} must be finite, not {text!r}.")
    return values[0] if len(values) == 1 else values


def int_triple(text: str | None, name: str) -> tuple[int, int, int] | None:
    """Parse `C,H,W` into three positive ints."""
    if text is None:
        return None
    try:
        c, h, w = (int(p) for p in text.split(","))
    except ValueError:
        raise UsageError(
            f"--{name} must be three positive integers C,H,W such as 1,28,28, not {text!r}."
        ) from None
    if min(c, h, w) <= 0:
        raise UsageError(
            f"--{name} must be three positive integers C,H,W such as 1,28,28, not {text!r}."
        )
    return (c, h, w)


def float_tuple(text: str | None, name: str, n: int) -> tuple[float, ...] | None:
    """Parse `a,b[,c]` into exactly n floats."""
    if text is None:
        return None
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise UsageError(f"--{name} must be {n} comma-separated numbers, not {text!r}.")
    return values


def burn_in_value(text: str) -> int | None:
    """`auto` -> None (detected per chain), else a non-negative step count."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(
            f"--burn-in must be 'auto' or a whole number of steps, not {text!r}."
        ) from None
    if value < 0:
        raise UsageError(f"--burn-in must be 'auto' or a whole number of steps, not {text!r}.")
    return value


def add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    """The options every command that loads a checkpoint takes."""
    p.add_argument(
        "--arch",
        help="built-in network for a state dict: lenet, a torchvision name, or package.module:factory",
    )
    p.add_argument("--input-shape", help="C,H,W when the checkpoint carries no metadata")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full pickles (runs code from the file)",
    )
    add_metadata_options(p)


def add_metadata_options(p: argparse.ArgumentParser) -> None:
    """``--mean``, ``--std`` and ``--class-names``: what a checkpoint without metadata (a state
    dict, TorchScript, a Lightning .ckpt) cannot say; they override a .pt2's metadata."""
    p.add_argument(
        "--mean",
        help="the input normalization's mean: one value, or one per channel (comma list)",
    )
    p.add_argument(
        "--std",
        help="the input normalization's standard deviation: one value, or one per channel",
    )
    p.add_argument(
        "--class-names",
        metavar="NAMES|FILE",
        help="the output units' names: a comma list, or a file with one name per line",
    )


def metadata_option(args: argparse.Namespace) -> MetadataOverride:
    """The one `MetadataOverride` of ``--mean``, ``--std`` and ``--class-names`` (one sentence
    naming the flag for a bad value)."""
    try:
        return parse_metadata(args.mean, args.std, args.class_names)
    except UserError as err:
        raise UsageError(str(err), err.field) from None


def add_layout_option(p: argparse.ArgumentParser) -> None:
    """`--layout`: which axis of a layer's output holds the channels, where the model cannot tell."""
    p.add_argument(
        "--layout",
        default="auto",
        choices=["auto", "channels-first", "channels-last"],
        help="where the channels of 3-D and 4-D layer outputs are: auto (read from a .pt2 graph; "
        "else [N, C, H, W] and tokens [N, T, D]), channels-first or channels-last",
    )
