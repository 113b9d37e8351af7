"""Driving D from a sampling loop: the one cadence of `ldam sample` and the dashboard's worker.

A loop calls `after_step` once after each sampler step; the driver offers the chains to D's
thread on the first step and every `OFFER_EVERY`-th after it, and the sampler reads D through
`current()`. The trainer's lifecycle (warm-up, `start`, `stop`) stays with whoever owns it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ldam.sampling.discriminator.learner import DiscriminatorError
from ldam.sampling.discriminator.trainer import DiscriminatorTrainer

# Offer the chains to D after every sampler step. An offer is one copy of the chains (D trains
# at most once per offer, on the newest), as the paper's implementation took at most one D
# step per sampling call; D's duty cycle, not the cadence, bounds what D costs the sampler,
# and it was measured offering every step (`benchmarks/bench_disc.py`).
OFFER_EVERY = 1


class DiscriminatorLoop:
    """Offers a sampler's chains to `trainer` at one cadence and hands out its published D.

    `every`: offer on the first step and every `every`-th after it. In the background (the
    default) an offer goes to D's thread, and only while that thread runs; `background=False`
    trains in the calling thread instead (`DiscriminatorTrainer.process`) at the same cadence:
    slower, but the whole run, D included, is reproducible from the seeds.
    """

    def __init__(
        self, trainer: DiscriminatorTrainer, every: int = OFFER_EVERY, background: bool = True
    ) -> None:
        if every < 1:
            raise DiscriminatorError(f"Offers must come every 1 or more steps, got {every}.")
        self.trainer = trainer
        self.every = every
        self.background = background
        self.steps = 0  # sampler steps seen

    def current(self) -> nn.Module | None:
        """The newest published D (`DiscriminatorTrainer.current`), for `DiscriminatorTerm`."""
        return self.trainer.current()

    def after_step(self, x: torch.Tensor, ages: torch.Tensor) -> bool:
        """The sampler has taken a step to chains `x [N, C, H, W]` of `ages [N]` (steps run):
        offer them to D when the cadence says so. Returns whether D was offered them."""
        due = self.steps % self.every == 0
        self.steps += 1
        if not due:
            return False
        if not self.background:
            self.trainer.process(x, ages)
            return True
        if not self.trainer.running:  # stopped, resting or failed: nobody would take it
            return False
        self.trainer.offer(x, ages)
        return True


def run_with_discriminator(
    sampler: Any,
    trainer: DiscriminatorTrainer,
    steps: int,
    train: bool = True,
    progress_callback: Callable[[int, Any], None] | None = None,
    *,
    warm_up_steps: int = 50,
    offer_every: int = OFFER_EVERY,
    background: bool = True,
) -> dict[str, Any]:
    """Run `steps` steps of `sampler` (a `ldam.sampling.sampler.Sampler` whose energy includes
    `DiscriminatorTerm(trainer.current)`) while D trains online, driven by a
    `DiscriminatorLoop(trainer, offer_every, background)`.

    A D that never trained (`trainer.steps == 0`) is first warmed up for `warm_up_steps` steps
    on real images against the chains' initial samples. With `train`, D's thread runs for the
    whole run (`DiscriminatorTrainer.start`, which on CPU gives the sampler's thread the cores
    D's does not use, until `stop`). `progress_callback(i, step_info)` is called after each
    step i = 0..steps-1. Returns `trainer.metrics()` at the end plus `sampler_steps_per_s`; a
    failure of D's thread shows in its `error` and does not stop the run (the sampler goes on
    without the discriminator term).
    """
    if steps < 0:
        raise DiscriminatorError(f"steps must be 0 or more, got {steps}.")
    loop = DiscriminatorLoop(trainer, offer_every, background)
    if trainer.steps == 0 and warm_up_steps > 0:
        trainer.warm_up(sampler.x.detach().clone(), warm_up_steps)
    threaded = train and background
    start = time.perf_counter()
    try:
        if threaded:
            trainer.start()
        for i in range(steps):
            info = sampler.step()
            if train:
                loop.after_step(sampler.x, sampler.age)
            if progress_callback is not None:
                progress_callback(i, info)
    finally:
        elapsed = time.perf_counter() - start
        if threaded:
            trainer.stop()  # also gives this thread its cores back
    result = trainer.metrics()
    result["sampler_steps_per_s"] = steps / elapsed if elapsed > 0 else 0.0
    return result
