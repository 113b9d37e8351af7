"""The command line's option parsing: one sentence and exit status 2 for every bad value."""

from __future__ import annotations

import argparse
from typing import Any

from ldam.errors import UserError
from ldam.metadata import MetadataOverride, parse_metadata
from ldam.wire.settings import Surface, on
from ldam.wire.views import DEFAULT_VIEW, VIEWS


class UsageError(UserError):
    """A bad command-line value; the message is one sentence for the user."""


# ----------------------------------------------------------------------------- parsing helpers


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


def add_view_option(p: argparse.ArgumentParser, what: str = "the PNG") -> None:
    """`--view`: how `what` shows the chains (`ldam.wire.views`, the dashboard's names)."""
    p.add_argument(
        "--view",
        default=DEFAULT_VIEW,
        choices=VIEWS,
        help=f"how {what} shows the chains: 'symmetric' (the paper's per-image scaling, grey = "
        "0), 'input' (de-normalized and clipped to [0, 1]) or 'auto' (input for 3-channel, "
        "colour networks, symmetric otherwise)",
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
    return out


def given_settings(args: argparse.Namespace, surface: Surface) -> dict[str, Any]:
    """Only the settings the command line names (for `ldam serve`: the page's first values)."""
    values = settings_from_args(args, surface)
    return {
        name: values[name] for name in on(surface) if getattr(args, f"setting_{name}") is not None
    }


def load_from_args(args: argparse.Namespace) -> Any:
    """`args.checkpoint` loaded as every command that takes `add_checkpoint_options` loads it
    (`ldam.models.loading.load_checkpoint`; torch is imported here, not with this module)."""
    from ldam.models.loading import load_checkpoint

    return load_checkpoint(
        args.checkpoint,
        arch=args.arch,
        input_shape=int_triple(args.input_shape, "input-shape"),
        trust=args.trust_checkpoint,
        metadata=metadata_option(args),
    )
