"""A sampling run with D trained online next to it (paper Algorithm 2), for `ldam sample`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ldam.sampling.discriminator.errors import DiscriminatorError

if TYPE_CHECKING:  # only for the annotation: the trainer's module imports this one
    from ldam.sampling.discriminator.trainer import DiscriminatorTrainer


def run_with_discriminator(
    sampler: Any,
    trainer: DiscriminatorTrainer,
    steps: int,
    train: bool = True,
    progress_callback: Callable[[int, Any], None] | None = None,
    *,
    warm_up_steps: int = 50,
    offer_every: int = 1,
    background: bool = True,
) -> dict[str, Any]:
    """Run `steps` steps of `sampler` (a `ldam.sampling.sampler.Sampler` whose energy includes
    `DiscriminatorTerm(trainer.current)`) while D trains online in the background.

    A D that never trained (`trainer.steps == 0`) is first warmed up for `warm_up_steps` steps
    on real images against the chains' initial samples. With `train`, the chains and their
    ages are offered to D every `offer_every` steps, and on CPU the sampler's thread gets the
    cores D's thread does not use (`DiscriminatorTrainer.start`, restored afterwards). `progress_callback(i, step_info)` is
    called after each step i = 0..steps-1. Returns `trainer.metrics()` at the end plus
    `sampler_steps_per_s`; a failure of D's thread shows in its `error` and does not stop the
    run (the sampler goes on without the discriminator term).

    `background=False` trains in the calling thread instead (`trainer.process` every
    `offer_every` steps): slower, but the whole run, D included, is reproducible from the seeds.
    """
    if steps < 0 or offer_every < 1:
        raise DiscriminatorError(
            f"steps must be 0 or more and offer_every at least 1, got {steps} and {offer_every}."
        )
    if trainer.steps == 0 and warm_up_steps > 0:
        trainer.warm_up(sampler.x.detach().clone(), warm_up_steps)
    threaded = train and background
    start = time.perf_counter()
    try:
        if threaded:
            trainer.start()
        for i in range(steps):
            info = sampler.step()
            if train and i % offer_every == 0:
                if threaded:
                    trainer.offer(sampler.x, sampler.age)
                else:
                    trainer.process(sampler.x, sampler.age)
            if progress_callback is not None:
                progress_callback(i, info)
    finally:
        elapsed = time.perf_counter() - start
        if threaded:
            trainer.stop()  # also gives this thread its cores back
    result = trainer.metrics()
    result["sampler_steps_per_s"] = steps / elapsed if elapsed > 0 else 0.0
    return result
