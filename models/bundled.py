"""Where the bundled files live: the two MNIST LeNet checkpoints and the digits.

The one place these paths are written. No torch here: the web server imports it to name the
default checkpoints, and the files travel inside the installed package.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
# The plain LeNet, the default checkpoint of every command.
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "lenet_mnist.pt2"
# Its parameter-averaged twin (paper section 5.2), shown beside it by `ldam serve`.
AVERAGED_CHECKPOINT = CHECKPOINT_DIR / "lenet_mnist_avg.pt2"
DEFAULT_PAIR = (DEFAULT_CHECKPOINT, AVERAGED_CHECKPOINT)
MNIST_FILE = Path(__file__).resolve().parent / "data" / "mnist.npz"
