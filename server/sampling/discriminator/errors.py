"""The discriminator's error: one sentence the user can act on.

Its own module because every part of the discriminator raises it (the trainer, its checkpoint
files, its real images), and none of those should import another just for the error type.
"""

from __future__ import annotations

from ldam.errors import UserError


class DiscriminatorError(UserError):
    """A user-facing discriminator problem, explained in one sentence."""
