"""`ldam train mnist`: re-make the two bundled LeNet checkpoints."""

from __future__ import annotations

import argparse

from ldam.cli.options import UsageError
from ldam.cli.progress import Progress


def cmd_train(args: argparse.Namespace) -> int:
    """Train the paper's LeNet on the bundled MNIST digits, plain and parameter-averaged."""
    from ldam.models.train import train_mnist

    if args.dataset != "mnist":
        raise UsageError(f"ldam train knows only 'mnist', not {args.dataset!r}.")
    bar = Progress(1, "train lenet")

    def on_step(done: int, total: int) -> None:
        bar.total = total
        bar.update(done)

    try:
        result = train_mnist(args.out, steps=args.steps, seed=args.seed, progress=on_step)
    finally:
        bar.close()
    print(
        f"trained {result['steps']} steps in {result['seconds']:.0f} s; held-out accuracy on 2,000 digits:"
    )
    for key in ["plain", "averaged", "prediction_averaged"]:
        print(f"  {key:<20} {100 * float(result[key]):.2f}%")
    for path in result.get("files", []):
        print(f"wrote {path}")
    return 0
