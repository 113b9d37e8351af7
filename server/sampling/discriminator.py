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

Threads: on CPU, `torch.set_num_threads` with the OpenMP backend sets the calling thread's own
intra-op team size (and the default for threads that start later). D's thread sets its own
count (`threads`, default 1) and `start()` sets the sampler's thread (the caller) to the cores
left over, until `stop()`: on 2 cores one thread each, because two OpenMP teams asking for more
threads than there are cores spin against each other and both slow down many times over. On
CUDA, D trains on its own stream and the published copy is made on the default stream, so the
sampler's kernels are ordered after it.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ldam.errors import UserError
from ldam.models.discriminator import make_discriminator

FORMAT = "ldam-discriminator"
FORMAT_VERSION = 1


class DiscriminatorError(UserError):
    """A user-facing discriminator problem, explained in one sentence."""


def _sentence(exc: BaseException) -> str:
    """One sentence naming the exception that stopped the training thread."""
    text = str(exc).strip().splitlines()[0].strip().rstrip(".") if str(exc).strip() else ""
    detail = f": {text}" if text else ""
    return f"Discriminator training stopped on {type(exc).__name__}{detail}."


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class _Offer:
    x: torch.Tensor  # [N, C, H, W] copy on the trainer's device
    ages: torch.Tensor  # [N] steps each chain has run, on the trainer's device
    ready: Any  # a CUDA event recorded after the copy, or None on CPU
    index: int


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
        on_publish: Callable[[int, nn.Module], None] | None = None,
    ) -> None:
        """`warm_up_steps`: a D that never trained is first warmed up this many steps against
        the first chains it is offered (0 = never). `threads`: intra-op threads of D's thread
        on CPU; `share_cores`: see `start()`.
        `on_publish(version, module)`, if given, is called with each new published copy just
        before `current()` can return it (from the trainer's thread, or the caller's for
        warm-up and load)."""
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
        self.device = torch.device(device)
        self.input_shape: tuple[int, int, int] = tuple(real_images.shape[1:])  # type: ignore[assignment]
        expected = getattr(discriminator, "input_shape", None)
        if expected is not None and tuple(expected) != self.input_shape:
            raise DiscriminatorError(
                f"The real images are {self.input_shape} but the discriminator expects {tuple(expected)}."
            )
        self.max_age = int(max_age)
        self.batch_size = int(batch_size)
        self.warm_up_steps = int(warm_up_steps)
        self.threads = int(threads)
        self.share_cores = bool(share_cores)
        self._caller: tuple[int, int] | None = None  # (thread id, its thread count) for stop()
        self.on_publish = on_publish
        self._tau = 0.0
        self._lr = 0.0
        self._model = discriminator.to(self.device).train()
        self._real = real_images.detach().to(self.device, torch.float32)
        self._gen = torch.Generator().manual_seed(seed)
        self._opt = torch.optim.Adam(self._model.parameters(), lr=lr, betas=(0.5, 0.999))
        self._train_lock = threading.Lock()  # one step at a time on the training model
        self._training = True
        self.set(lr=lr, tau=tau)
        self._half = self.batch_size // 2
        # The pool of generated samples: the last 2 half-batches of eligible chains.
        self._pool = torch.zeros((2 * self._half, *self.input_shape), device=self.device)
        self._pool_len = 0
        self._pool_next = 0
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

        self._publish_lock = threading.Lock()
        self._offer_cond = threading.Condition()
        self._latest: _Offer | None = None
        self._offers = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: str | None = None

        self._steps = 0
        self._loss = math.nan
        self._acc_real = math.nan
        self._acc_generated = math.nan
        self._mean_d = math.nan
        self._step_s = math.nan
        self._step_times: collections.deque[float] = collections.deque(maxlen=50)
        self._version = -1
        self._published: nn.Module = self._model
        self._publish()

    # ----------------------------------------------------------------- what the sampler reads
    def current(self) -> nn.Module | None:
        """The newest published D: eval mode, no parameter gradients, never written to again.

        It has an integer attribute `version` and maps `[N, C, H, W]` to `[N]` logits. None
        while D has never trained (version 0, random weights would only add noise) and after
        the training thread failed (see `metrics()['error']`): the sampler then goes on
        without the discriminator term (until warm-up, or `restart()`).
        """
        with self._publish_lock:
            if self._error is not None or self._version == 0:
                return None
            return self._published

    @property
    def version(self) -> int:
        """How many times weights were published (0 = the initial, untrained weights)."""
        with self._publish_lock:
            return self._version

    @property
    def steps(self) -> int:
        """Optimizer steps taken so far (warm-up and online)."""
        return self._steps

    def offer(self, x: torch.Tensor, ages: torch.Tensor) -> None:
        """Hand the sampler's chains `x [N, C, H, W]` and their ages `[N]` (steps run) to D.

        Cheap: one copy of `x` into a one-slot mailbox; an offer not yet taken is replaced.
        """
        if tuple(x.shape[1:]) != self.input_shape:
            raise DiscriminatorError(
                f"Offered chains are {tuple(x.shape[1:])} but the discriminator expects {self.input_shape}."
            )
        # Ages stay on the device: moving them to the host would sync a GPU sampler every step.
        ages = torch.as_tensor(ages).detach().to(self.device, copy=True).reshape(-1)
        if ages.numel() != x.shape[0]:
            raise DiscriminatorError(
                f"Got {ages.numel()} chain ages for {x.shape[0]} chains; give one age per chain."
            )
        # A copy, because the sampler updates its chains in place on the next step.
        snapshot = x.detach().to(self.device, torch.float32, copy=True)
        ready = None
        if self._stream is not None:
            ready = torch.cuda.Event()
            ready.record()
            # The D stream reads these; the allocator must not reuse them before it is done.
            snapshot.record_stream(self._stream)
            ages.record_stream(self._stream)
        with self._offer_cond:
            self._offers += 1
            self._latest = _Offer(snapshot, ages, ready, self._offers)
            self._offer_cond.notify()

    # --------------------------------------------------------------------------- controls
    def set(
        self, lr: float | None = None, tau: float | None = None, training: bool | None = None
    ) -> None:
        """Change the learning rate (> 0), tau (in [0, 1]) or switch online training on/off."""
        if lr is not None:
            if not (math.isfinite(lr) and lr > 0):
                raise DiscriminatorError(
                    f"The discriminator learning rate must be positive, got {lr}."
                )
            with self._train_lock:
                for group in self._opt.param_groups:
                    group["lr"] = float(lr)
            self._lr = float(lr)
        if tau is not None:
            if not (math.isfinite(tau) and 0.0 <= tau <= 1.0):
                raise DiscriminatorError(f"tau must be between 0 and 1, got {tau}.")
            self._tau = float(tau)
        if training is not None:
            self._training = bool(training)

    def start(self) -> None:
        """Start the background training thread (no-op if it runs already).

        On CPU with `share_cores`, the calling thread (the sampler's) is set to the cores D's
        thread leaves free, `max(1, min(its count, cores - threads))`, until `stop()` is called
        from that same thread: 2 cores = 1 thread each, so OpenMP teams never oversubscribe.
        """
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._ready.clear()
        caller_threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._run, name="ldam-discriminator", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10.0)
        if self.device.type == "cpu":
            # D's set_num_threads also changed the default for threads started later; this
            # call sets the caller's own count and that default back to a sharing value.
            shared = max(1, min(caller_threads, _cpu_count() - self.threads))
            torch.set_num_threads(shared if self.share_cores else caller_threads)
            if self._caller is None:
                self._caller = (threading.get_ident(), caller_threads)

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to stop after its current step; True once it has stopped. Called
        from the thread that started it, this also gives that thread its cores back."""
        self._stop.set()
        with self._offer_cond:
            self._offer_cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        stopped = self._thread is None or not self._thread.is_alive()
        if stopped and self._caller is not None and self._caller[0] == threading.get_ident():
            torch.set_num_threads(self._caller[1])
            self._caller = None
        return stopped

    def restart(self) -> None:
        """Clear a reported error and start the thread again."""
        if not self.stop():
            raise DiscriminatorError("The discriminator thread did not stop, so it cannot restart.")
        with self._publish_lock:
            self._error = None
        self.start()

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def metrics(self) -> dict[str, Any]:
        """Live figures: `loss` (BCE of the last batch), `acc_real`, `acc_generated` (fractions
        of the last batch D got right), `mean_d` (mean sigmoid(D(x)) over the last offered
        chains), `steps_per_s`, `step_ms` (mean time of one D step), `steps`, `version`,
        `training`, `tau`, `lr`, `error` (one sentence, or None)."""
        times = list(self._step_times)
        now = time.perf_counter()
        recent = [t for t in times if now - t < 5.0]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 else 0.0
        return {
            "loss": self._loss,
            "acc_real": self._acc_real,
            "acc_generated": self._acc_generated,
            "mean_d": self._mean_d,
            "steps_per_s": rate,
            "step_ms": self._step_s * 1e3,
            "steps": self._steps,
            "version": self.version,
            "training": self._training and self.running,
            "tau": self._tau,
            "lr": self._lr,
            "error": self._error,
        }

    # --------------------------------------------------------------------------- training
    def warm_up(self, generated: torch.Tensor, steps: int) -> None:
        """Train `steps` steps on real images against `generated [K, C, H, W]` (e.g. the
        chains' current samples), in the calling thread, then publish once."""
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
        with self._on_stream(after_caller=True):
            for _ in range(steps):
                with self._train_lock:
                    if len(generated) >= self._half:
                        pick = torch.randperm(len(generated), generator=self._gen)[: self._half]
                    else:
                        pick = torch.randint(len(generated), (self._half,), generator=self._gen)
                    self._train_step(generated[pick.to(self.device)], publish=False)
            if steps:
                self._publish()

    def _run(self) -> None:
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        elif self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        self._ready.set()
        taken = 0
        try:
            while not self._stop.is_set():
                with self._offer_cond:
                    offer = self._latest
                    if offer is None or offer.index == taken:
                        self._offer_cond.wait(timeout=0.1)
                        continue
                taken = offer.index
                with self._on_stream():
                    if offer.ready is not None:
                        torch.cuda.current_stream(self.device).wait_event(offer.ready)
                    self.process(offer.x, offer.ages)
        except Exception as exc:  # reported through metrics(); current() now answers None
            with self._publish_lock:
                self._error = _sentence(exc)

    def process(self, x: torch.Tensor, ages: torch.Tensor) -> bool:
        """What the thread does with one offer, in the calling thread: score chains `x [N, C,
        H, W]` (sets `mean_d`), pool those with `sigmoid(D(x)) > tau` or `ages [N] >= max_age`,
        and, when training is on and the pool is not empty, take one step on up to half a
        batch from the pool against as many real images. A D that never trained is warmed up
        against `x` first (`warm_up_steps`). Returns whether a step was taken."""
        x = x.detach().to(self.device, torch.float32)
        if self._training and self._steps == 0 and self.warm_up_steps > 0:
            self.warm_up(x, self.warm_up_steps)
        with self._train_lock:
            with torch.no_grad():
                p_real = torch.sigmoid(self._model(x))
            self._mean_d = float(p_real.mean())
            if not self._training:
                return False
            eligible = (p_real > self._tau) | (
                torch.as_tensor(ages).to(self.device) >= self.max_age
            )
            self._add_to_pool(x[eligible])
            if self._pool_len == 0:
                return False
            pick = torch.randperm(self._pool_len, generator=self._gen)[: self._half]
            self._train_step(self._pool[pick.to(self.device)], publish=True)
            return True

    def _add_to_pool(self, samples: torch.Tensor) -> None:
        capacity = self._pool.shape[0]
        samples = samples[-capacity:]
        k = samples.shape[0]
        if k == 0:
            return
        slots = (self._pool_next + torch.arange(k)) % capacity
        self._pool[slots.to(self.device)] = samples
        self._pool_next = (self._pool_next + k) % capacity
        self._pool_len = min(capacity, self._pool_len + k)

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
            self._acc_generated = float((logits[:n] < 0).float().mean())
            self._acc_real = float((logits[n:] > 0).float().mean())
        self._loss = loss_value
        self._steps += 1
        if publish:
            self._publish()
        elapsed = time.perf_counter() - start
        self._step_s = elapsed if math.isnan(self._step_s) else 0.9 * self._step_s + 0.1 * elapsed
        self._step_times.append(time.perf_counter())

    def _publish(self) -> None:
        if self._stream is None:
            published = copy.deepcopy(self._model).eval().requires_grad_(False)
        else:
            # Copy on the default stream, where the sampler runs: its kernels are ordered after
            # the copy (never a half-written D), and the copy's memory belongs to that stream.
            default = torch.cuda.default_stream(self.device)
            default.wait_stream(self._stream)  # the optimizer step has finished
            with torch.cuda.stream(default):
                published = copy.deepcopy(self._model).eval().requires_grad_(False)
            self._stream.wait_stream(default)  # the next step must not write mid-copy
        version = self._version + 1
        published.version = version
        if self.on_publish is not None:
            self.on_publish(version, published)  # before anyone can read it
        with self._publish_lock:
            self._version = version
            self._published = published

    def _on_stream(self, after_caller: bool = False) -> Any:
        """D's CUDA stream as the current stream (a no-op on CPU); `after_caller` first orders
        it after the work already queued on the caller's stream (for warm-up and load)."""
        if self._stream is None:
            return contextlib.nullcontext()
        if after_caller:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
        return torch.cuda.stream(self._stream)

    # ----------------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write the published weights with metadata (input shape, steps, tau, lr) to `path`."""
        with self._publish_lock:
            module = self._published
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": type(module).__name__,
            "input_shape": list(self.input_shape),
            "steps": self._steps,
            "tau": self._tau,
            "lr": self._lr,
            "state_dict": state,
        }
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            raise DiscriminatorError(
                f"Cannot write the discriminator to {path}: {exc.strerror}."
            ) from None

    def load(self, path: str | Path) -> None:
        """Load weights saved by `save()` (read with weights_only=True) and publish them."""
        payload = read_checkpoint(path)
        if tuple(payload["input_shape"]) != self.input_shape:
            raise DiscriminatorError(
                f"{path} holds a discriminator for inputs {tuple(payload['input_shape'])}, "
                f"but this model's input is {self.input_shape}."
            )
        with self._train_lock, self._on_stream(after_caller=True):
            try:
                self._model.load_state_dict(payload["state_dict"])
            except RuntimeError:
                raise DiscriminatorError(
                    f"The weights in {path} do not fit this discriminator's layers."
                ) from None
            self._steps = int(payload.get("steps", 0))
            self._publish()


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a file written by `DiscriminatorTrainer.save` (safely: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise DiscriminatorError(f"Discriminator checkpoint {path} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise DiscriminatorError(f"{path} is not a readable discriminator checkpoint.") from None
    if (
        not isinstance(payload, dict)
        or payload.get("format") != FORMAT
        or not isinstance(payload.get("state_dict"), dict)
        or not isinstance(payload.get("input_shape"), list)
    ):
        raise DiscriminatorError(f"{path} is not a discriminator checkpoint written by ldam.")
    return payload


# ------------------------------------------------------------------ helpers for `ldam sample`
def real_images_for(
    input_shape: tuple[int, int, int],
    normalization: tuple[list[float], list[float]] | None,
    data: str | Path | None,
) -> torch.Tensor:
    """D's real images `[M, C, H, W]`, normalized like the classifier's input.

    `data` (a folder or `.npz`, read by `ldam.models.data.load_images`) when given; else the bundled
    MNIST training split (8,000 digits; the 2,000 held out stay unseen) for 1x28x28 inputs.
    """
    from ldam.models import data as datasets

    input_shape = tuple(int(s) for s in input_shape)  # type: ignore[assignment]
    try:
        if data is not None:
            return datasets.load_images(data, input_shape, normalization)
        if input_shape == (1, 28, 28):
            mean, std = (normalization[0][0], normalization[1][0]) if normalization else (0.0, 1.0)
            images, _ = datasets.load_mnist()
            train, _ = datasets.split_indices()
            return datasets.normalize_mnist(images[train], mean, std)
    except datasets.DataError as exc:
        raise DiscriminatorError(str(exc)) from None
    raise DiscriminatorError(
        f"The discriminator needs real images shaped like the model's input {input_shape}: "
        "pass --disc-data with a folder of images or an .npz."
    )


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
    threads). Raises `DiscriminatorError` with one sentence on any bad input.
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
