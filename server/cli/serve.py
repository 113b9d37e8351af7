"""`ldam serve`: the live dashboard (the worker process does the torch work)."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the dashboard server (the worker process does the torch work)."""
    from ldam.cli.options import UsageError, given_settings, int_triple, metadata_option
    from ldam.web.config import ServeConfig
    from ldam.web.serve import run_server

    for name in ("watch_settle", "idle_pause"):
        value = getattr(args, name)
        if not value >= 0 or value == float("inf"):
            option = name.replace("_", "-")
            raise UsageError(f"--{option} must be a number of seconds of at least 0, not {value}.")
    run_server(
        ServeConfig(
            checkpoint=args.checkpoint,
            watch=args.watch,
            watch_settle_s=args.watch_settle,
            idle_pause_s=args.idle_pause,
            arch=args.arch,
            input_shape=int_triple(args.input_shape, "input-shape"),
            compare=args.compare,
            target=args.target,
            data=args.data,
            checkpoints_dir=args.checkpoints,
            host=args.host,
            port=args.port,
            device=args.device,
            trust_checkpoint=args.trust_checkpoint,
            token=args.token,
            atlas=args.atlas,
            metadata=metadata_option(args),
            # The page's first values of the settings the command line names, and its view.
            params={**given_settings(args, "serve"), "view": args.view},
        )
    )
    return 0
