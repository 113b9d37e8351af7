"""The discriminator regularizer, trained online next to the sampler (paper Algorithm 2).

`DiscriminatorTrainer` (in `trainer`) is the public face; the other modules of this package
are its parts. Everything a caller needs is importable from here.
"""

from ldam.sampling.discriminator.checkpoint import FORMAT, FORMAT_VERSION, read_checkpoint
from ldam.sampling.discriminator.data import real_images_for
from ldam.sampling.discriminator.errors import DiscriminatorError
from ldam.sampling.discriminator.run import run_with_discriminator
from ldam.sampling.discriminator.trainer import DiscriminatorTrainer, build_discriminator_for

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "DiscriminatorError",
    "DiscriminatorTrainer",
    "build_discriminator_for",
    "read_checkpoint",
    "real_images_for",
    "run_with_discriminator",
]
