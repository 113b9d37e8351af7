"""`ldam inspect`: a checkpoint's layers with output shapes, unit counts and kinds.

The kind says how a target reads the layer (see `ldam.sampling.targets`): `vector` [K],
`channels` [C, H, W], `channels_last` [H, W, C], `tokens` [T, D]; a layer without units has
none and cannot be a target.
"""

from __future__ import annotations

import argparse

from ldam.cli.options import load_from_args


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print the layers of a checkpoint with output shapes, unit counts and kinds."""
    from ldam.sampling.targets import list_layers

    loaded = load_from_args(args)
    layers = list_layers(
        loaded.module, loaded.input_shape, batch_size=loaded.batch_size, layout=args.layout
    )
    print(f"{args.checkpoint}: {loaded.format}, input {'x'.join(map(str, loaded.input_shape))}")
    if loaded.normalization is not None:
        mean, std = (",".join(f"{v:g}" for v in values) for values in loaded.normalization)
        print(f"normalization: mean {mean}, std {std}")
    if loaded.class_names:
        print(f"class names: {', '.join(loaded.class_names)}")
    width = max([len(layer.name or "output") for layer in layers] + [5])
    print(f"{'layer':<{width}}  {'output shape':<20} {'units':>6}  kind")
    for layer in layers:
        shape = "x".join(str(s) for s in layer.shape)
        kind = layer.kind or "-"
        print(f"{(layer.name or 'output'):<{width}}  {shape:<20} {layer.units:>6}  {kind}")
    return 0
