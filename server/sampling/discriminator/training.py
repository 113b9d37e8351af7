"""D's training: one Adam step on half generated (label 0) and half real (label 1) images.

Used from two threads: the sampler's (warm-up, load, settings) and D's own (one step per
offer). One lock keeps them from interleaving on the training model and its optimizer; the
sampler never touches this model, only the copies the `Publisher` hands out.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import torch
from torch import nn

from ldam.sampling.discriminator.errors import DiscriminatorError
from ldam.sampling.discriminator.metrics import StepStats
from ldam.sampling.discriminator.pool import SamplePool
from ldam.sampling.discriminator.publish import Publisher
from ldam.sampling.discriminator.stream import DiscriminatorStream


class DiscriminatorLearner:
    """D's training model, optimizer, real images and pool, and what one offer does to them.

    `real_images` is `[M, C, H, W]`, already normalized like the classifier's input. D is
    trained with Adam (betas 0.5, 0.999, the usual GAN setting) on binary cross-entropy, real
    = 1, in batches of `2 * half`. Every random pick comes from one generator seeded with `seed`,
    so a run is reproducible when one thread does all the training. `stream` (D's CUDA stream)
    and `publisher` (the copies the sampler reads; see `Publisher` for `on_publish`) are shared
    with the trainer's other parts; version 0, the untrained weights, is published when made.
    """

    def __init__(
        self,
        discriminator: nn.Module,
        real_images: torch.Tensor,
        device: torch.device,
        *,
        lr: float,
        tau: float,
        max_age: int,
        half: int,
        warm_up_steps: int,
        seed: int,
        on_publish: Callable[[int, nn.Module], None] | None = None,
    ) -> None:
        self.device = device
        self.input_shape: tuple[int, int, int] = tuple(real_images.shape[1:])  # type: ignore[assignment]
        self.warm_up_steps = warm_up_steps
        self.training = True
        self.steps = 0  # optimizer steps so far, warm-up and online
        self.stats = StepStats()
        self._half = half
        self._model = discriminator.to(self.device).train()
        self._real = real_images.detach().to(self.device, torch.float32)
        self._gen = torch.Generator().manual_seed(seed)
        # Checked before Adam sees it: Adam's own refusal of a negative rate is no sentence.
        _check_lr(lr)
        self._opt = torch.optim.Adam(self._model.parameters(), lr=lr, betas=(0.5, 0.999))
        self._lock = threading.Lock()  # one step at a time on the training model
        self._lr = 0.0
        # Room for the last 2 half-batches of eligible chains.
        self._pool = SamplePool(2 * half, self.input_shape, self.device, max_age)
        self.set(lr=lr, tau=tau)
        self.stream = DiscriminatorStream(device)
        self.publisher = Publisher(self._model, self.stream, on_publish)

    @property
    def lr(self) -> float:
        """The optimizer's learning rate."""
        return self._lr

    @property
    def tau(self) -> float:
        """Chains with `sigmoid(D(x)) > tau` fooled D and join the pool."""
        return self._pool.tau

    @property
    def max_age(self) -> int:
        """Chains that have run this many steps join the pool whatever D says."""
        return self._pool.max_age

    def set(
        self, lr: float | None = None, tau: float | None = None, training: bool | None = None
    ) -> None:
        """Change the learning rate (> 0), tau (in [0, 1]) or switch online training on/off."""
        if lr is not None:
            _check_lr(lr)
            with self._lock:  # not in the middle of an optimizer step
                for group in self._opt.param_groups:
                    group["lr"] = float(lr)
            self._lr = float(lr)
        if tau is not None:
            if not (math.isfinite(tau) and 0.0 <= tau <= 1.0):
                raise DiscriminatorError(f"tau must be between 0 and 1, got {tau}.")
            self._pool.tau = float(tau)
        if training is not None:
            self.training = bool(training)

    def warm_up(self, generated: torch.Tensor, steps: int) -> None:
        """Train `steps` steps on real images against `generated [K, C, H, W]`, in the calling
        thread, then publish once."""
        if steps < 0:
            raise DiscriminatorError(f"Warm-up steps must be 0 or more, got {steps}.")
        if (
            generated.dim() != 4
            or tuple(generated.shape[1:]) != self.input_shape
            or len(generated) == 0
        ):
            raise DiscriminatorError(
                f"Warm-up samples must be [K, {', '.join(map(str, self.input_shape))}], got {tuple(generated.shape)}."
            )
        generated = generated.detach().to(self.device, torch.float32)
        with self.stream.active(after_caller=True):
            for _ in range(steps):
                with self._lock:
                    if len(generated) >= self._half:
                        pick = torch.randperm(len(generated), generator=self._gen)[: self._half]
                    else:  # too few samples for half a batch: draw with repeats
                        pick = torch.randint(len(generated), (self._half,), generator=self._gen)
                    self._train_step(generated[pick.to(self.device)], publish=False)
            if steps:
                self.publisher.publish()

    def process(self, x: torch.Tensor, ages: torch.Tensor) -> bool:
        """Score `x [N, C, H, W]` (sets `mean_d`), pool the eligible chains (see `SamplePool`)
        and, when training is on and the pool is not empty, take one step on up to half a
        batch from it. A D that never trained is warmed up against `x` first
        (`warm_up_steps`). Returns whether a step was taken."""
        x = x.detach().to(self.device, torch.float32)
        if self.training and self.steps == 0 and self.warm_up_steps > 0:
            self.warm_up(x, self.warm_up_steps)
        with self._lock:
            with torch.no_grad():
                p_real = torch.sigmoid(self._model(x))
            self.stats.mean_d = float(p_real.mean())
            if not self.training:
                return False
            self._pool.keep(x, p_real, ages)
            if len(self._pool) == 0:
                return False
            self._train_step(self._pool.draw(self._half, self._gen), publish=True)
            return True

    def replace_weights(self, load: Callable[[nn.Module], int]) -> None:
        """`load(model)` writes new weights into the training model and returns their step
        count; then they are published. Between steps, and after the caller's queued work."""
        with self._lock, self.stream.active(after_caller=True):
            self.steps = load(self._model)
            self.publisher.publish()

    def _train_step(self, generated: torch.Tensor, publish: bool) -> None:
        """One optimizer step on `generated` (label 0) and as many real images (label 1)."""
        start = time.perf_counter()
        n = generated.shape[0]
        pick = torch.randint(self._real.shape[0], (n,), generator=self._gen).to(self.device)
        x = torch.cat([generated, self._real[pick]])
        labels = torch.cat([torch.zeros(n, device=self.device), torch.ones(n, device=self.device)])
        logits = self._model(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError("the discriminator's loss is not finite")
        loss.backward()
        self._opt.step()
        # Gradients dropped now, so the published copy below does not carry them.
        self._opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            acc_generated = float((logits[:n] < 0).float().mean())
            acc_real = float((logits[n:] > 0).float().mean())
        self.stats.record_batch(loss_value, acc_real, acc_generated)
        self.steps += 1
        if publish:
            self.publisher.publish()
        self.stats.record_time(start)


def _check_lr(lr: float) -> None:
    if not (math.isfinite(lr) and lr > 0):
        raise DiscriminatorError(f"The discriminator learning rate must be positive, got {lr}.")
