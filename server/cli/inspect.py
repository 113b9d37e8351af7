"""`ldam inspect`: a checkpoint's layers with output shapes and unit counts."""

from __future__ import annotations

import argparse

from ldam.cli.options import int_triple


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print the layers of a checkpoint with output shapes and unit counts."""
    from ldam.models.loading import load_checkpoint
    from ldam.sampling.targets import list_layers

    loaded = load_checkpoint(
        args.checkpoint,
        arch=args.arch,
        input_shape=int_triple(args.input_shape, "input-shape"),
        trust=args.trust_checkpoint,
    )
    layers = list_layers(loaded.module, loaded.input_shape, batch_size=loaded.batch_size)
    print(f"{args.checkpoint}: {loaded.format}, input {'x'.join(map(str, loaded.input_shape))}")
    width = max([len(layer.name or "output") for layer in layers] + [5])
    print(f"{'layer':<{width}}  {'output shape':<20} units")
    for layer in layers:
        shape = "x".join(str(s) for s in layer.shape)
        print(f"{(layer.name or 'output'):<{width}}  {shape:<20} {layer.units}")
    return 0
