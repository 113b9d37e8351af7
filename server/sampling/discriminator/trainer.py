"""The discriminator regularizer, trained online next to the sampler (paper Algorithm 2).

The sampling loop hands its chains to `DiscriminatorTrainer.offer()` (a copy into a one-slot
mailbox: the newest offer wins, the sampler never waits for D). A background thread takes each
new offer, scores it with D, keeps the chains that fooled D (`sigmoid(D(x)) > tau`) or that have
run `max_age` steps in a small pool of generated samples, and takes one optimizer step on half
generated (label 0) and half real (label 1) images: at most one D step per offer, as the paper's
implementation did one D step per sampling call. After every step it publishes a fresh copy of
the weights: the sampler reads D only through `current()`, which returns a published module that
nobody writes to again (copy, then swap a reference under a lock). An untrained D is never
handed out: `current()` answers None (the sampler skips the term) until D has been warmed up
on real images against the chains (`warm_up`, or automatically on the first offer) or loaded.

This module is the trainer's public face; each part lives in a module of its own in this
package:

    offers      the one-slot mailbox of offered chains
    pool        which generated samples D trains on (tau, max_age)
    training    the training step, warm-up and what one offer does
    metrics     the figures `metrics()` reports
    publish     the published copies the sampler reads
    stream      ordering D's CUDA stream against the sampler's
    thread      the background thread and its share of the CPU cores
    checkpoint  the checkpoint file (`save`, `load`, `read_checkpoint`)
    data        the real images (`real_images_for`)
    run         a sampling run with D training next to it (`run_with_discriminator`)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ldam.models.discriminator import make_discriminator
from ldam.sampling.discriminator.checkpoint import (
    load_weights,
    read_checkpoint_for,
    write_checkpoint,
)
from ldam.sampling.discriminator.data import real_images_for
from ldam.sampling.discriminator.errors import DiscriminatorError
from ldam.sampling.discriminator.offers import OfferBox
from ldam.sampling.discriminator.thread import TrainingThread, check_duty_cycle
from ldam.sampling.discriminator.training import DiscriminatorLearner

# The share of wall time D's thread may train by default: the largest duty that kept the
# sampler at >= 0.7 of its speed with D frozen, with margin, on the 2-core benchmark machine
# (`benchmarks/bench_disc.py`, 10 rounds: C/B 0.67 at 1, 0.70 at 0.75, 0.75 at 0.6, 0.79 at
# 0.5), with D's accuracy on held-out digits and on the chains as good as with no cap.
DEFAULT_DUTY_CYCLE = 0.5


def _check_options(
    real_images: torch.Tensor,
    batch_size: int,
    max_age: int,
    threads: int,
    warm_up_steps: int,
    duty_cycle: float,
) -> None:
    """Raise `DiscriminatorError` for the first bad argument, before anything is built."""
    if real_images.dim() != 4 or real_images.shape[0] == 0:
        raise DiscriminatorError(
            f"Real images must be a non-empty [M, C, H, W] tensor, got shape {tuple(real_images.shape)}."
        )
    if batch_size < 2:
        raise DiscriminatorError(f"The batch size must be at least 2, got {batch_size}.")
    if max_age < 0:
        raise DiscriminatorError(f"max_age must be a step count of 0 or more, got {max_age}.")
    if threads < 1:
        raise DiscriminatorError(f"threads must be at least 1, got {threads}.")
    if warm_up_steps < 0:
        raise DiscriminatorError(f"Warm-up steps must be 0 or more, got {warm_up_steps}.")
    check_duty_cycle(duty_cycle)


class DiscriminatorTrainer:
    """Trains a discriminator online in a background thread and publishes its weights.

    `real_images` is `[M, C, H, W]`, already normalized like the classifier's input. D is trained
    with Adam (betas 0.5, 0.999, the usual GAN setting) on binary cross-entropy, real = 1.
    """

    def __init__(
        self,
        discriminator: nn.Module,
        real_images: torch.Tensor,
        *,
        lr: float = 2e-4,
        tau: float = 0.9,
        max_age: int = 200,
        batch_size: int = 64,
        warm_up_steps: int = 50,
        device: str | torch.device = "cpu",
        seed: int = 0,
        threads: int = 1,
        share_cores: bool = True,
        duty_cycle: float = DEFAULT_DUTY_CYCLE,
        on_publish: Callable[[int, nn.Module], None] | None = None,
    ) -> None:
        """`warm_up_steps`: a D that never trained is first warmed up this many steps against
        the first chains it is offered (0 = never). `threads`: intra-op threads of D's thread
        on CPU; `share_cores`: see `start()`. `duty_cycle`: the most of wall time, a fraction
        in (0, 1], that the background thread spends training (1 = no cap): after an offer
        that took t seconds it rests `t * (1 - duty_cycle) / duty_cycle` seconds, which leaves
        the sampler the machine more of the time at the price of fewer D steps.
        `on_publish(version, module)`, if given, is called with each new published copy just
        before `current()` can return it (from the trainer's thread, or the caller's for
        warm-up and load)."""
        _check_options(real_images, batch_size, max_age, threads, warm_up_steps, duty_cycle)
        self.device = torch.device(device)
        self.input_shape: tuple[int, int, int] = tuple(real_images.shape[1:])  # type: ignore[assignment]
        expected = getattr(discriminator, "input_shape", None)
        if expected is not None and tuple(expected) != self.input_shape:
            raise DiscriminatorError(
                f"The real images are {self.input_shape} but the discriminator expects {tuple(expected)}."
            )
        self.batch_size = int(batch_size)
        self._learner = DiscriminatorLearner(
            discriminator,
            real_images,
            self.device,
            lr=lr,
            tau=tau,
            max_age=int(max_age),
            half=self.batch_size // 2,
            warm_up_steps=int(warm_up_steps),
            seed=seed,
            on_publish=on_publish,
        )
        self._publisher = self._learner.publisher
        stream = self._learner.stream
        self._offers = OfferBox(self.input_shape, stream)
        self._thread = TrainingThread(
            self._offers,
            stream,
            self._learner.process,
            self._publisher.fail,
            threads=int(threads),
            share_cores=bool(share_cores),
            duty_cycle=duty_cycle,
        )

    # ----------------------------------------------------------------- what the sampler reads
    def current(self) -> nn.Module | None:
        """The newest published D: eval mode, no parameter gradients, never written to again.

        It has an integer attribute `version` and maps `[N, C, H, W]` to `[N]` logits. None
        while D has never trained (version 0, random weights would only add noise) and after
        the training thread failed (see `metrics()['error']`): the sampler then goes on
        without the discriminator term (until warm-up, or `restart()`).
        """
        return self._publisher.current()

    @property
    def version(self) -> int:
        """How many times weights were published (0 = the initial, untrained weights)."""
        return self._publisher.version

    @property
    def steps(self) -> int:
        """Optimizer steps taken so far (warm-up and online)."""
        return self._learner.steps

    def offer(self, x: torch.Tensor, ages: torch.Tensor) -> None:
        """Hand the sampler's chains `x [N, C, H, W]` and their ages `[N]` (steps run) to D.

        Cheap: one copy of `x` into a one-slot mailbox; an offer not yet taken is replaced.
        On CPU, from the thread that called `start()`, this also sets that thread's intra-op
        threads for its next step: all of its own while D's thread rests (`duty_cycle`), the
        cores D leaves otherwise.
        """
        self._thread.after_offer(self._offers.offer(x, ages))

    # --------------------------------------------------------------------------- settings
    @property
    def max_age(self) -> int:
        """Chains that have run this many steps join D's pool whatever D says of them."""
        return self._learner.max_age

    @property
    def warm_up_steps(self) -> int:
        """Warm-up steps of a D that never trained, on the first offer (0 = never)."""
        return self._learner.warm_up_steps

    @property
    def threads(self) -> int:
        """Intra-op threads of D's thread on CPU."""
        return self._thread.threads

    @property
    def share_cores(self) -> bool:
        """Whether `start()` gives the calling thread only the cores D's thread leaves."""
        return self._thread.share_cores

    @property
    def duty_cycle(self) -> float:
        """The most of wall time D's background thread spends training, in (0, 1]; 1 = no cap."""
        return self._thread.duty_cycle

    @property
    def on_publish(self) -> Callable[[int, nn.Module], None] | None:
        """Called with each new published copy, `(version, module)`, or None."""
        return self._publisher.on_publish

    def set(
        self,
        lr: float | None = None,
        tau: float | None = None,
        training: bool | None = None,
        duty_cycle: float | None = None,
    ) -> None:
        """Change the learning rate (> 0), tau (in [0, 1]), switch online training on/off, or
        change the duty cycle (in (0, 1]; a running thread follows within 0.1 s)."""
        if duty_cycle is not None:
            check_duty_cycle(duty_cycle)  # before anything changes, like the others
        self._learner.set(lr=lr, tau=tau, training=training)
        if duty_cycle is not None:
            self._thread.duty_cycle = duty_cycle

    # --------------------------------------------------------------------------- the thread
    def start(self) -> None:
        """Start the background training thread (no-op if it runs already).

        On CPU with `share_cores`, the calling thread (the sampler's) is set to the cores D's
        thread leaves free, `max(1, min(its count, cores - threads))`, until `stop()` is called
        from that same thread: 2 cores = 1 thread each, so OpenMP teams never oversubscribe.
        While D's thread rests (`duty_cycle` below 1), that thread's `offer()` calls give it
        its own count back until D is about to train again.
        """
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to stop after its current step; True once it has stopped. Called
        from the thread that started it, this also gives that thread its cores back."""
        return self._thread.stop(timeout)

    def restart(self) -> None:
        """Clear a reported error and start the thread again."""
        if not self.stop():
            raise DiscriminatorError("The discriminator thread did not stop, so it cannot restart.")
        self._publisher.clear_error()
        self.start()

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread.running

    def metrics(self) -> dict[str, Any]:
        """Live figures: `loss` (BCE of the last batch), `acc_real`, `acc_generated` (fractions
        of the last batch D got right), `mean_d` (mean sigmoid(D(x)) over the last offered
        chains), `steps_per_s`, `step_ms` (mean time of one D step), `steps`, `version`,
        `training`, `tau`, `lr`, `duty_cycle`, `busy_fraction` (the fraction of the thread's
        last 10 s of wall time, up to now or to `stop()`, spent on offers; 0.0 before it
        first ran), `error` (one sentence, or None)."""
        learner = self._learner
        return {
            **learner.stats.as_dict(),
            "steps": learner.steps,
            "version": self.version,
            "training": learner.training and self.running,
            "tau": learner.tau,
            "lr": learner.lr,
            "duty_cycle": self._thread.duty_cycle,
            "busy_fraction": self._thread.busy_fraction(),
            "error": self._publisher.error,
        }

    # --------------------------------------------------------------------------- training
    def warm_up(self, generated: torch.Tensor, steps: int) -> None:
        """Train `steps` steps on real images against `generated [K, C, H, W]` (e.g. the
        chains' current samples), in the calling thread, then publish once."""
        self._learner.warm_up(generated, steps)

    def process(self, x: torch.Tensor, ages: torch.Tensor) -> bool:
        """What the thread does with one offer, in the calling thread: score chains `x [N, C,
        H, W]` (sets `mean_d`), pool those with `sigmoid(D(x)) > tau` or `ages [N] >= max_age`,
        and, when training is on and the pool is not empty, take one step on up to half a
        batch from the pool against as many real images. A D that never trained is warmed up
        against `x` first (`warm_up_steps`). Returns whether a step was taken."""
        return self._learner.process(x, ages)

    # ----------------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write the published weights with metadata (input shape, steps, tau, lr) to `path`."""
        write_checkpoint(
            path,
            self._publisher.module,
            input_shape=self.input_shape,
            steps=self._learner.steps,
            tau=self._learner.tau,
            lr=self._learner.lr,
        )

    def load(self, path: str | Path) -> None:
        """Load weights saved by `save()` (read with weights_only=True) and publish them."""
        payload = read_checkpoint_for(path, self.input_shape)
        self._learner.replace_weights(lambda model: load_weights(model, payload, path))


# ------------------------------------------------------------------ helpers for `ldam sample`
def build_discriminator_for(
    input_shape: tuple[int, int, int],
    normalization: tuple[list[float], list[float]] | None,
    data: str | Path | None = None,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    **trainer_options: Any,
) -> DiscriminatorTrainer:
    """A `DiscriminatorTrainer` for a classifier with input `input_shape` (C, H, W).

    Real images come from `real_images_for`; `checkpoint` (a file from `save()`) sets the
    starting weights; `trainer_options` go to the trainer (lr, tau, max_age, batch_size, seed,
    threads, duty_cycle, ...). Raises `DiscriminatorError` with one sentence on any bad input.
    """
    real = real_images_for(input_shape, normalization, data)
    try:
        module = make_discriminator(tuple(real.shape[1:]))  # type: ignore[arg-type]
    except ValueError as exc:
        raise DiscriminatorError(str(exc)) from None
    trainer = DiscriminatorTrainer(module, real, device=device, **trainer_options)
    if checkpoint is not None:
        trainer.load(checkpoint)
    return trainer
