"""The command line's option parsing: one sentence and exit status 2 for every bad value."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ldam.errors import UserError
from ldam.wire.settings import Surface, check_clamp, check_step_decay, on


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


def add_layout_option(p: argparse.ArgumentParser) -> None:
    """`--layout`: which axis of a layer's output holds the channels, where the model cannot tell."""
    p.add_argument(
        "--layout",
        default="auto",
        choices=["auto", "channels-first", "channels-last"],
        help="where the channels of 3-D and 4-D layer outputs are: auto (read from a .pt2 graph; "
        "else [N, C, H, W] and tokens [N, T, D]), channels-first or channels-last",
    )


# ----------------------------------------------------------------------------- sampler settings


def add_setting_flags(p: argparse.ArgumentParser, surface: Surface) -> None:
    """One flag per setting of the one settings model (`ldam.wire.settings`) that appears on
    `surface`, with its default there and its help; old spellings stay as aliases (``--l2``).
    Values are parsed and checked by `settings_from_args`, so a refusal reads as on every
    other surface."""
    group = p.add_argument_group("sampler settings")
    for name, setting in on(surface).items():
        default = setting.default_on(surface)
        shown = setting.none if default is None else default
        extra = ""
        if setting.low is not None or setting.high is not None:
            extra = f"; {setting.range_text()}"
        if setting.scope == "per_chain" and surface == "sample":
            extra += "; one value or one per chain (comma list)"
        group.add_argument(
            setting.flag,
            *setting.aliases,
            dest=f"setting_{name}",
            default=None,
            metavar=name.upper()
            if setting.kind != "choice"
            else "{" + ",".join(setting.choices) + "}",
            help=f"{setting.help} (default {shown}{extra})",
        )


def settings_from_args(args: argparse.Namespace, surface: Surface) -> dict[str, Any]:
    """The settings of `surface` from `args`: each flag given is parsed and checked
    (`Setting.parse`), each one left out is its default there. Per-chain lists only on
    `ldam sample`."""
    out: dict[str, Any] = {}
    for name, setting in on(surface).items():
        text = getattr(args, f"setting_{name}", None)
        if text is None:
            out[name] = setting.default_on(surface)
            continue
        value = setting.parse(text)
        if isinstance(value, list) and surface != "sample":
            setting.check(value, single=True)
        out[name] = value
    out["step_decay"] = check_step_decay(out["step_decay"]) if "step_decay" in out else None
    if "clamp" in out:
        out["clamp"] = check_clamp(out["clamp"])
    if "step_decay" not in on(surface):
        out.pop("step_decay")
    return out


def given_settings(args: argparse.Namespace, surface: Surface) -> dict[str, Any]:
    """Only the settings the command line names (for `ldam serve`: the page's first values)."""
    values = settings_from_args(args, surface)
    return {
        name: values[name] for name in on(surface) if getattr(args, f"setting_{name}") is not None
    }
