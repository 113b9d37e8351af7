"""`ldam serve`: the live dashboard (the worker process does the torch work)."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the dashboard server (the worker process does the torch work)."""
    from ldam.web.config import ServeConfig
    from ldam.web.serve import run_server

    run_server(
        ServeConfig(
            checkpoint=args.checkpoint,
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
        )
    )
    return 0
