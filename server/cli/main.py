"""The `ldam` command: sample, inspect, train, bench and serve.

Every user error ends in one sentence on stderr and exit status 2; torch is imported only
by the subcommands that need it, so `ldam serve` keeps torch out of the web server's process.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from ldam.cli import atlas, inspect, sample, serve, train
from ldam.cli.options import (
    add_checkpoint_options,
    add_layout_option,
    add_metadata_options,
    add_setting_flags,
    add_view_option,
)
from ldam.errors import UserError
from ldam.models.bundled import DEFAULT_CHECKPOINT


def cmd_bench(args: argparse.Namespace) -> int:
    """ldam against the eager network and Lucent on the same unit, and print the table."""
    from ldam.cli.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldam", description="Langevin Dynamics Activation Maximization."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="sample images that drive a unit, headless")
    s.add_argument("checkpoint", nargs="?", default=str(DEFAULT_CHECKPOINT))
    s.add_argument(
        "--target",
        default="fc3:0",
        help="LAYER:UNIT, LAYER:A-B, LAYER:C@Y,X (a position), LAYER:D@T (a token) or "
        "LAYER[ELEMENT]:UNIT (one element of a tuple or dict output)",
    )
    s.add_argument("--device", default="auto")
    s.add_argument("--out", default="run.npz")
    s.add_argument("--png")
    add_view_option(s)
    s.add_argument("--disc-data", help="real images for the discriminator: a folder or an .npz")
    s.add_argument(
        "--disc-steps",
        type=int,
        default=None,
        help=f"discriminator warm-up steps, then it trains online during the run (default "
        f"{sample.DEFAULT_DISC_STEPS} with --disc-weight > 0 and no --disc-checkpoint; 0 keeps a loaded D frozen)",
    )
    s.add_argument("--disc-checkpoint", help="load a saved discriminator")
    s.add_argument("--save-disc", help="write the discriminator after the run")
    add_checkpoint_options(s)
    add_layout_option(s)
    add_setting_flags(s, "sample")
    s.set_defaults(func=sample.cmd_sample)

    i = sub.add_parser("inspect", help="list a checkpoint's layers, output shapes and unit counts")
    i.add_argument("checkpoint")
    add_checkpoint_options(i)
    add_layout_option(i)
    i.set_defaults(func=inspect.cmd_inspect)

    atlas.add_atlas_parser(sub)

    t = sub.add_parser("train", help="train the bundled LeNet (plain and parameter-averaged)")
    t.add_argument("dataset", choices=["mnist"])
    t.add_argument("--out", default=str(DEFAULT_CHECKPOINT.parent))
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=train.cmd_train)

    b = sub.add_parser("bench", help="ldam's steps/s against eager PyTorch and Lucent")
    b.add_argument("--quick", action="store_true", help="fewer, shorter rounds (a smoke run)")
    b.add_argument("--device", default="auto")
    b.add_argument(
        "--cases",
        default="default",
        help="'default', 'gpu' (adds resnet50 at 224) or a comma list of names",
    )
    b.add_argument(
        "--lucent",
        metavar="DIR",
        default=None,
        help="folder holding torch-lucent for the comparison (default: $LDAM_BENCH_LUCENT, "
        "else the environment); 'off' skips Lucent",
    )
    b.set_defaults(func=cmd_bench)

    v = sub.add_parser("serve", help="start the live dashboard")
    v.add_argument("checkpoint", nargs="?")
    v.add_argument(
        "--watch",
        metavar="DIR",
        help="follow a training run: the newest complete checkpoint in DIR is the main panel",
    )
    v.add_argument(
        "--watch-settle",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="with --watch, a file counts as complete once unchanged this long (default 2)",
    )
    v.add_argument(
        "--idle-pause",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="stop sampling after this long with no browser connected (0: never; default 60)",
    )
    v.add_argument(
        "--arch",
        help="the network of state-dict checkpoints (.pt, .ckpt): lenet, a torchvision name, "
        "or package.module:factory",
    )
    v.add_argument("--input-shape", help="C,H,W when the checkpoints carry no metadata")
    v.add_argument("--compare")
    v.add_argument("--target")
    v.add_argument("--data", help="real images (folder or .npz) for the discriminator")
    v.add_argument(
        "--checkpoints",
        metavar="DIR",
        help="the folder the page's checkpoint picker offers (default: the bundled checkpoints; "
        "with --watch, the watched folder)",
    )
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    v.add_argument(
        "--token",
        default=os.environ.get("LDAM_TOKEN"),
        help="access token for a non-loopback bind (default: $LDAM_TOKEN, else one is generated and printed)",
    )
    v.add_argument("--trust-checkpoint", action="store_true")
    add_metadata_options(v)
    v.add_argument(
        "--atlas", help="an ldam atlas folder: its gallery at /atlas, each unit a click from live"
    )
    add_view_option(v, "the page first")
    add_setting_flags(v, "serve")
    v.set_defaults(func=serve.cmd_serve)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    # Warnings from our modules are sentences for the user, not source locations.
    sys.stderr.write(f"ldam: warning: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ldam` console script."""
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("ldam: interrupted\n")
        return 130
    except UserError as exc:  # one sentence for the user; anything else is a bug
        sys.stderr.write(f"ldam: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
