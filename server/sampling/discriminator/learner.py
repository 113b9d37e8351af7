"""D's learner (paper Algorithm 2): the training step, the pool of generated samples it trains
on, and the figures of its last steps.

One Adam step on half generated (label 0) and half real (label 1) images. The generated half
comes from a pool of chains that fooled D (`sigmoid(D(x)) > tau`) or that have run `max_age`
steps: what D takes for real is what it must learn to reject, and old chains show it where the
chains settle. No thread and no publishing here: the trainer (`trainer.py`) owns a learner,
calls it from its own thread and from the caller's, and publishes `frozen_copy()`s.
"""

from __future__ import annotations

import collections
import copy
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ldam.errors import UserError

# Steps whose end times are kept for the rate, and how far back the rate looks (seconds).
_RECENT_STEPS = 50
_RATE_WINDOW_S = 5.0


class DiscriminatorError(UserError):
    """A user-facing discriminator problem, explained in one sentence."""


def check_lr(lr: float) -> float:
    """`lr` as a float if it is a positive finite rate; else a one-sentence `DiscriminatorError`
    (before Adam sees it: Adam's own refusal of a negative rate is no sentence)."""
    if not (math.isfinite(lr) and lr > 0):
        raise DiscriminatorError(f"The discriminator learning rate must be positive, got {lr}.")
    return float(lr)


def check_tau(tau: float) -> float:
    """`tau` as a float if it is in [0, 1]; else a one-sentence `DiscriminatorError`."""
    if not (math.isfinite(tau) and 0.0 <= tau <= 1.0):
        raise DiscriminatorError(f"tau must be between 0 and 1, got {tau}.")
    return float(tau)


class SamplePool:
    """The newest `capacity` eligible chains, kept in a ring buffer on D's device."""

    def __init__(
        self,
        capacity: int,
        input_shape: tuple[int, int, int],
        device: torch.device,
        max_age: int,
        tau: float = 0.0,
    ) -> None:
        self.max_age = max_age
        self.tau = tau
        self._device = device
        self._samples = torch.zeros((capacity, *input_shape), device=device)
        self._len = 0
        self._next = 0

    def __len__(self) -> int:
        """How many samples the pool holds (at most its capacity)."""
        return self._len

    def keep(self, x: torch.Tensor, p_real: torch.Tensor, ages: torch.Tensor) -> None:
        """Add the chains of `x [N, C, H, W]` with `p_real [N] > tau` or `ages [N] >= max_age`."""
        eligible = (p_real > self.tau) | (torch.as_tensor(ages).to(self._device) >= self.max_age)
        samples = x[eligible][-self._samples.shape[0] :]  # more than fit: the newest win
        k = samples.shape[0]
        if k == 0:
            return
        capacity = self._samples.shape[0]
        slots = (self._next + torch.arange(k)) % capacity
        self._samples[slots.to(self._device)] = samples
        self._next = (self._next + k) % capacity
        self._len = min(capacity, self._len + k)

    def draw(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """Up to `k` different samples, picked at random with `generator`."""
        pick = torch.randperm(self._len, generator=generator)[:k]
        return self._samples[pick.to(self._device)]


class StepStats:
    """D's last batch (loss, accuracies), mean D(x) of the last offer, and step timing.

    Written by whichever thread trains D and read from any other without a lock: each field
    is one float, replaced whole, so a reader sees an old or a new value, never a torn one.
    """

    def __init__(self) -> None:
        self.loss = math.nan
        self.acc_real = math.nan
        self.acc_generated = math.nan
        self.mean_d = math.nan
        self.step_s = math.nan
        self._step_times: collections.deque[float] = collections.deque(maxlen=_RECENT_STEPS)

    def record_step(self, start: float, loss: float, acc_real: float, acc_generated: float) -> None:
        """A step that began at `start` (`time.perf_counter()`) has just ended with these figures."""
        self.acc_generated = acc_generated
        self.acc_real = acc_real
        self.loss = loss
        elapsed = time.perf_counter() - start
        # A running mean, so one slow step (another process on the core) barely shows.
        self.step_s = elapsed if math.isnan(self.step_s) else 0.9 * self.step_s + 0.1 * elapsed
        self._step_times.append(time.perf_counter())

    def steps_per_s(self) -> float:
        """Steps per second over the last few seconds (0 with fewer than 2 steps there)."""
        now = time.perf_counter()
        recent = [t for t in list(self._step_times) if now - t < _RATE_WINDOW_S]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """`loss`, `acc_real`, `acc_generated`, `mean_d`, `steps_per_s` and `step_ms`."""
        return {
            "loss": self.loss,
            "acc_real": self.acc_real,
            "acc_generated": self.acc_generated,
            "mean_d": self.mean_d,
            "steps_per_s": self.steps_per_s(),
            "step_ms": self.step_s * 1e3,
        }


class DiscriminatorLearner:
    """D's training model, optimizer, real images and pool, and what one offer does to them.

    `real_images` is `[M, C, H, W]`, already normalized like the classifier's input. D is
    trained with Adam (betas 0.5, 0.999, the usual GAN setting) on binary cross-entropy, real
    = 1, in batches of `2 * half`. Every random pick comes from one generator seeded with
    `seed`, so a run is reproducible when one thread does all the training. Safe to call from
    two threads: one lock keeps steps, loads, copies and rate changes from interleaving.
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
        seed: int,
    ) -> None:
        self.device = device
        self.input_shape: tuple[int, int, int] = tuple(real_images.shape[1:])  # type: ignore[assignment]
        self.training = True
        self.steps = 0  # optimizer steps so far, warm-up and online
        self.stats = StepStats()
        self._half = half
        self._model = discriminator.to(self.device).train()
        self._real = real_images.detach().to(self.device, torch.float32)
        self._gen = torch.Generator().manual_seed(seed)
        self._lr = check_lr(lr)
        self._opt = torch.optim.Adam(self._model.parameters(), lr=self._lr, betas=(0.5, 0.999))
        self._lock = threading.Lock()
        # Room for the last 2 half-batches of eligible chains.
        self._pool = SamplePool(2 * half, self.input_shape, self.device, max_age, check_tau(tau))

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
        """Change the learning rate (> 0), tau (in [0, 1]) or switch online training on/off;
        every value is checked before any changes."""
        lr = check_lr(lr) if lr is not None else None
        tau = check_tau(tau) if tau is not None else None
        if lr is not None:
            with self._lock:  # not in the middle of an optimizer step
                for group in self._opt.param_groups:
                    group["lr"] = lr
            self._lr = lr
        if tau is not None:
            self._pool.tau = tau
        if training is not None:
            self.training = bool(training)

    def warm_up(self, generated: torch.Tensor, steps: int) -> None:
        """Train `steps` steps on real images against `generated [K, C, H, W]` (e.g. the
        chains' current samples), in the calling thread."""
        if steps < 0:
            raise DiscriminatorError(f"Warm-up steps must be 0 or more, got {steps}.")
        shape = tuple(generated.shape)
        if generated.dim() != 4 or shape[1:] != self.input_shape or len(generated) == 0:
            raise DiscriminatorError(
                f"Warm-up samples must be [K, {', '.join(map(str, self.input_shape))}], got {shape}."
            )
        generated = generated.detach().to(self.device, torch.float32)
        for _ in range(steps):
            with self._lock:
                if len(generated) >= self._half:
                    pick = torch.randperm(len(generated), generator=self._gen)[: self._half]
                else:  # too few samples for half a batch: draw with repeats
                    pick = torch.randint(len(generated), (self._half,), generator=self._gen)
                self._train_step(generated[pick.to(self.device)])

    def process(self, x: torch.Tensor, ages: torch.Tensor) -> bool:
        """Score chains `x [N, C, H, W]` (sets `mean_d`), pool those with `sigmoid(D(x)) > tau`
        or `ages [N] >= max_age`, and, when training is on and the pool is not empty, take one
        step on up to half a batch from the pool against as many real images. Returns whether
        a step was taken."""
        x = x.detach().to(self.device, torch.float32)
        with self._lock:
            with torch.no_grad():
                p_real = torch.sigmoid(self._model(x))
            self.stats.mean_d = float(p_real.mean())
            if not self.training:
                return False
            self._pool.keep(x, p_real, ages)
            if len(self._pool) == 0:
                return False
            self._train_step(self._pool.draw(self._half, self._gen))
            return True

    def load(self, load: Callable[[nn.Module], int]) -> None:
        """`load(model)` writes new weights into the training model and returns the steps they
        were trained for (between two steps, never during one)."""
        with self._lock:
            self.steps = load(self._model)

    def frozen_copy(self) -> nn.Module:
        """A copy of the training model in eval mode with no parameter gradients: what the
        sampler may read, since nobody writes to it again."""
        with self._lock:
            return copy.deepcopy(self._model).eval().requires_grad_(False)

    def _train_step(self, generated: torch.Tensor) -> None:
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
        # Gradients dropped now, so a copy published after this step does not carry them.
        self._opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            acc_generated = float((logits[:n] < 0).float().mean())
            acc_real = float((logits[n:] > 0).float().mean())
        self.steps += 1
        self.stats.record_step(start, loss_value, acc_real, acc_generated)
