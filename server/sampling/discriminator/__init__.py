"""The discriminator regularizer, trained online next to the sampler (paper Algorithm 2).

    learner   the training step, the pool of generated samples and the step figures
    trainer   `DiscriminatorTrainer`: owns the learner, its thread, duty cycle and offers,
              and publishes frozen copies that the sampler reads
    files     the checkpoint file and the real images
    loop      `DiscriminatorLoop`: the one cadence at which a sampling loop offers chains

Everything a caller needs is importable from here.
"""

from ldam.sampling.discriminator.files import (
    FORMAT,
    FORMAT_VERSION,
    read_checkpoint,
    real_images_for,
)
from ldam.sampling.discriminator.learner import DiscriminatorError
from ldam.sampling.discriminator.loop import OFFER_EVERY, DiscriminatorLoop, run_with_discriminator
from ldam.sampling.discriminator.trainer import (
    DEFAULT_DUTY_CYCLE,
    DiscriminatorTrainer,
    build_discriminator_for,
)

__all__ = [
    "DEFAULT_DUTY_CYCLE",
    "FORMAT",
    "FORMAT_VERSION",
    "OFFER_EVERY",
    "DiscriminatorError",
    "DiscriminatorLoop",
    "DiscriminatorTrainer",
    "build_discriminator_for",
    "read_checkpoint",
    "real_images_for",
    "run_with_discriminator",
]
