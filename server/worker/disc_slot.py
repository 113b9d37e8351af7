"""The dashboard's discriminator: one trainer at most, made when D is first used.

The one rule of when D is used lives here (`uses_discriminator`): a positive weight, or a sweep
over the weight. D's thread shares the CPU with the sampler, so it trains only while used.
"""

from __future__ import annotations

from typing import Any

import torch

from ldam.errors import UserError
from ldam.models.loading import LoadedModel
from ldam.wire.params import SamplerParams


def uses_discriminator(params: SamplerParams) -> bool:
    """Whether `params` sample with D: a weight above 0, or a sweep over the weight."""
    return params.disc_weight > 0 or (
        params.layout == "sweep" and params.sweep_param == "disc_weight"
    )


class DiscriminatorSlot:
    """Holds the trainer for one input shape and the `DiscriminatorLoop` that drives it (the
    one `ldam sample` uses), or the sentence that says why there is none.

    `data` is the operator's real images (a folder or an .npz), None for the bundled digits.
    """

    def __init__(self, data: str | None, device: torch.device) -> None:
        self.data = data
        self.device = device
        self.trainer: Any = None
        self.loop: Any = None
        self.shape: tuple[int, ...] | None = None
        # Why D cannot be made (no real images of the model's shape): shown on the page once.
        self.note: str | None = None

    def ensure(self, model: LoadedModel, params: SamplerParams) -> None:
        """Make the trainer for `model`'s input shape once `params` use D (a trainer for
        another shape is stopped); a failure sets `note` instead of raising."""
        shape = tuple(model.input_shape)
        if self.trainer is not None and self.shape != shape:
            self.trainer.stop()
            self.trainer = self.loop = None
        if self.trainer is not None or self.note is not None or not uses_discriminator(params):
            return
        from ldam.sampling.discriminator import DiscriminatorLoop, build_discriminator_for

        try:
            self.trainer = build_discriminator_for(
                model.input_shape,
                model.normalization,
                data=self.data,
                device=self.device,
                seed=params.seed,
            )
            self.loop = DiscriminatorLoop(self.trainer)
            self.shape = shape
        except UserError as err:
            self.note = str(err)

    def published(self, shape: tuple[int, ...]) -> Any:
        """The newest published D for images of `shape`, or None (no trainer, other shape)."""
        if self.loop is None or self.shape != shape:
            return None
        return self.loop.current()

    def apply(self, params: SamplerParams) -> None:
        """Follow `params` live: the training toggle, and the thread runs only while D is used."""
        if self.trainer is None:
            return
        used = uses_discriminator(params)
        self.trainer.set(training=params.disc_training)
        failed = bool(self.trainer.metrics().get("error"))
        if used and params.disc_training and not self.trainer.running and not failed:
            self.trainer.start()
        elif not used and self.trainer.running:
            self.trainer.stop()

    def rest(self) -> None:
        """Stop D's thread while nobody watches (its weights and pool are kept); `apply`
        starts it again."""
        if self.trainer is not None and self.trainer.running:
            self.trainer.stop()

    def restart(self) -> None:
        """Restart a trainer that failed; `UserError` when its thread cannot restart."""
        if self.trainer is not None:
            self.trainer.restart()

    def after_step(self, x: torch.Tensor, age: torch.Tensor) -> None:
        """The main panel took a step to chains `x` of `age`: the loop offers them to D at its
        cadence (`OFFER_EVERY`) while D's thread runs."""
        if self.loop is not None:
            self.loop.after_step(x, age)

    def metrics(self) -> dict[str, Any] | None:
        """D's loss, accuracy and mean D(x) (None without a trainer)."""
        return self.trainer.metrics() if self.trainer is not None else None

    def close(self) -> None:
        """Stop the training thread."""
        if self.trainer is not None:
            self.trainer.stop(timeout=2.0)
