"""D trained online in a background thread next to the sampler (paper Algorithm 2).

The trainer owns everything on the training side: the learner (`learner.py`), a one-slot
mailbox of offered chains, the thread that trains on them, its duty cycle, and the copies it
publishes. The sampler's side only calls `offer()` (a copy of the chains; the newest offer
wins, the sampler never waits for D) and reads `current()`: a published copy of D that nobody
writes to again (copy, then swap a reference under a lock), so the sampler only ever reads a
finished version, bit for bit. An untrained D is never handed out: `current()` answers None
(the sampler skips the term) until D is warmed up (`warm_up`, or on the first offer) or loaded.

Cores: on CPU, `torch.set_num_threads` with the OpenMP backend sets the calling thread's own
intra-op team. D's thread takes `threads`, and `start()` sets the sampler's thread (the caller)
to the cores left over until `stop()`: on 2 cores one thread each, because two OpenMP teams
asking for more threads than there are cores spin against each other and both slow down many
times over. On CUDA, D works on a stream of its own (`DiscriminatorStream`).

Pacing: with a duty cycle below 1, the thread works at most that fraction of wall time. After
handling an offer that took t seconds it rests `t * (1 - duty) / duty` seconds, then takes the
first offer made after the rest. While it rests the sampler's thread has every core again: each
offer answers whether D rests, and the offering thread gets its full thread count for its next
step, or the shared count back once D is about to work. D only ever takes an offer whose caller
was told it is back, so the two teams never run on more threads than cores. (Sleeping alone
would not do: on 2 cores the sampler would still run on 1 thread, and that thread count, not
D's interference, is most of what D's training costs the sampler.) The time counted is the
thread's own wall time; on CUDA that is the time to queue D's work, not the GPU's.
"""

from __future__ import annotations

import collections
import contextlib
import math
import numbers
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from ldam.errors import first_line
from ldam.models.discriminator import make_discriminator
from ldam.sampling.discriminator.files import read_checkpoint_for, real_images_for, write_checkpoint
from ldam.sampling.discriminator.learner import DiscriminatorError, DiscriminatorLearner

T = TypeVar("T")

# The share of wall time D's thread may train by default: the largest duty that kept the
# sampler at >= 0.7 of its speed with D frozen, with margin, on the 2-core benchmark machine
# (`benchmarks/bench_disc.py`, 10 rounds: C/B 0.67 at 1, 0.70 at 0.75, 0.75 at 0.6, 0.79 at
# 0.5), with D's accuracy on held-out digits and on the chains as good as with no cap.
DEFAULT_DUTY_CYCLE = 0.5
# How long the thread waits for a new offer before it checks again whether to stop (seconds).
_POLL_S = 0.1
# How long `start()` waits for the thread to set itself up (seconds).
_READY_S = 10.0
# How far back the busy fraction looks (seconds): long enough to hold many D steps and their
# pauses (a step is tens of ms), short enough to follow a live change of the duty cycle.
_BUSY_WINDOW_S = 10.0


def check_duty_cycle(duty: float) -> float:
    """`duty` as a float if it is a fraction in (0, 1]; else a one-sentence `DiscriminatorError`."""
    ok = isinstance(duty, numbers.Real) and not isinstance(duty, bool)
    if not (ok and math.isfinite(duty) and 0.0 < duty <= 1.0):
        raise DiscriminatorError(f"The duty cycle must be more than 0 and at most 1, got {duty!r}.")
    return float(duty)


def pause_after(busy_s: float, duty: float) -> float:
    """Seconds to rest after `busy_s` seconds of work so that work fills at most the fraction
    `duty` (in (0, 1]) of wall time: `busy_s * (1 - duty) / duty`, 0 at duty 1."""
    return max(0.0, busy_s) * (1.0 - duty) / duty


def failure_sentence(exc: BaseException) -> str:
    """One sentence naming the exception that stopped the training thread."""
    name = type(exc).__name__
    text = first_line(exc)
    return f"Discriminator training stopped on {name}" + (f": {text}." if text != name else ".")


def _cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class DiscriminatorStream:
    """D's CUDA stream on a CUDA device, and the three hand-offs it orders; plain calls on CPU.

    D's steps overlap the sampler's, which runs on the default stream. An offered copy of the
    chains must be complete before D reads it, a published copy of D before the sampler reads
    it, and D's next step must not write its weights while they are still being copied.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def active(self, after_caller: bool = False) -> contextlib.AbstractContextManager[Any]:
        """D's stream as the current stream (a no-op on CPU); `after_caller` first orders it
        after the work already queued on the caller's stream (for warm-up and load)."""
        if self._stream is None:
            return contextlib.nullcontext()
        if after_caller:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
        return torch.cuda.stream(self._stream)

    def mark_offered(self, *tensors: torch.Tensor) -> Any:
        """An event recorded on the caller's stream once it has made `tensors` (None on CPU),
        for `wait_for` on D's stream before it reads them."""
        if self._stream is None:
            return None
        ready = torch.cuda.Event()
        ready.record()
        for tensor in tensors:
            # D's stream reads these; the allocator must not reuse them before it is done.
            tensor.record_stream(self._stream)
        return ready

    def wait_for(self, ready: Any) -> None:
        """Order the current stream (D's, inside `active()`) after an event from
        `mark_offered`; None (CPU) waits for nothing."""
        if ready is not None:
            torch.cuda.current_stream(self.device).wait_event(ready)

    def for_readers(self, make: Callable[[], T]) -> T:
        """`make()` (the copy of D to publish), run where the sampler reads it: on CUDA on the
        default stream after D's work, so the sampler's kernels come after the whole copy and
        the copy's memory belongs to that stream; D's stream then waits for the copy."""
        if self._stream is None:
            return make()
        default = torch.cuda.default_stream(self.device)
        default.wait_stream(self._stream)
        with torch.cuda.stream(default):
            result = make()
        self._stream.wait_stream(default)
        return result


@dataclass
class Offer:
    """One offer: copies of the chains and their ages, on D's device."""

    x: torch.Tensor  # [N, C, H, W]
    ages: torch.Tensor  # [N] steps each chain has run
    ready: Any  # a CUDA event recorded after the copy, or None on CPU
    index: int  # 1 for the first offer, then counting up


class OfferBox:
    """The newest offer of chains, for D's thread to take, and whether that thread rests.

    An offer D has not taken yet is replaced, so D trains at most once per offer, on the
    freshest chains. Each offer answers whether D rests, and D, when its rest ends, takes only
    an offer made after it (whose caller was told D is back).
    """

    def __init__(self, input_shape: tuple[int, int, int], stream: DiscriminatorStream) -> None:
        self.input_shape = input_shape
        self._stream = stream
        self._cond = threading.Condition()
        self._latest: Offer | None = None
        self.count = 0  # offers made so far
        self._resting = False

    def offer(self, x: torch.Tensor, ages: torch.Tensor) -> bool:
        """Replace the offer with copies of the chains `x [N, C, H, W]` and their `ages [N]`.
        Returns whether D's thread is resting (so it will not take this offer)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise DiscriminatorError(
                f"Offered chains are {tuple(x.shape[1:])} but the discriminator expects {self.input_shape}."
            )
        device = self._stream.device
        # Ages stay on the device: moving them to the host would sync a GPU sampler every step.
        ages = torch.as_tensor(ages).detach().to(device, copy=True).reshape(-1)
        if ages.numel() != x.shape[0]:
            raise DiscriminatorError(
                f"Got {ages.numel()} chain ages for {x.shape[0]} chains; give one age per chain."
            )
        # A copy, because the sampler updates its chains in place on the next step.
        snapshot = x.detach().to(device, torch.float32, copy=True)
        ready = self._stream.mark_offered(snapshot, ages)
        with self._cond:
            self.count += 1
            self._latest = Offer(snapshot, ages, ready, self.count)
            self._cond.notify()
            return self._resting

    def take(self, taken: int, timeout: float) -> Offer | None:
        """The newest offer if its index is not `taken` (the last one taken); else wait up to
        `timeout` seconds, or until `wake()`, and answer None."""
        with self._cond:
            offer = self._latest
            if offer is None or offer.index == taken:
                self._cond.wait(timeout=timeout)
                return None
            return offer

    def rest(self) -> None:
        """D's thread begins a rest: offers from now on answer True."""
        with self._cond:
            self._resting = True

    def resume(self) -> int:
        """D's thread ends a rest: offers from now on answer False. Returns the index of the
        newest offer, made while D rested, for D to pass over in `take` (under the same lock
        as `offer`, so no offer falls between the two)."""
        with self._cond:
            self._resting = False
            return self.count

    def wake(self) -> None:
        """End every wait in `take` now (so a stopping thread notices at once)."""
        with self._cond:
            self._cond.notify_all()


class BusyClock:
    """The fraction of recent wall time D's thread spent working on offers.

    D's thread calls `started()` / `stopped()` around its life and `working()` / `idle()`
    around each offer; any thread may read `fraction()`. A small lock, because a reader walks
    the list of spans that the writer appends to and prunes.
    """

    def __init__(self, window_s: float = _BUSY_WINDOW_S) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self._spans: collections.deque[tuple[float, float]] = collections.deque()
        self._since = math.nan  # when the thread last started (perf_counter seconds)
        self._until: float | None = None  # when it stopped, None while it runs
        self._working: float | None = None  # start of the offer in hand, if any

    def started(self) -> None:
        """The thread starts (again): forget the spans of an earlier run."""
        with self._lock:
            self._spans.clear()
            self._since = time.perf_counter()
            self._until = None
            self._working = None

    def stopped(self) -> None:
        """The thread ends; `fraction()` then describes the window up to now."""
        with self._lock:
            now = time.perf_counter()
            if self._working is not None:
                self._spans.append((self._working, now))
                self._working = None
            self._until = now

    def working(self) -> None:
        """The thread begins work on an offer."""
        with self._lock:
            self._working = time.perf_counter()

    def idle(self) -> float:
        """The thread has finished the offer begun at `working()`; returns the seconds it took."""
        now = time.perf_counter()
        with self._lock:
            begun = self._working if self._working is not None else now
            self._working = None
            self._spans.append((begun, now))
            # Spans wholly out of the window can never count again.
            while self._spans and self._spans[0][1] < now - self.window_s:
                self._spans.popleft()
        return now - begun

    def fraction(self) -> float:
        """Working time / wall time over the thread's last `window_s` seconds of running
        (up to now, or to when it stopped), in [0, 1]; 0.0 if it never ran."""
        with self._lock:
            if math.isnan(self._since):
                return 0.0
            end = self._until if self._until is not None else time.perf_counter()
            begin = max(self._since, end - self.window_s)
            if end <= begin:
                return 0.0
            spans = list(self._spans)
            if self._working is not None:
                spans.append((self._working, end))
        busy = sum(max(0.0, min(b, end) - max(a, begin)) for a, b in spans)
        return min(1.0, busy / (end - begin))


class DiscriminatorTrainer:
    """Trains a discriminator online in a background thread and publishes its weights.

    `real_images` is `[M, C, H, W]`, already normalized like the classifier's input; D is
    trained by a `DiscriminatorLearner` (Adam, binary cross-entropy, real = 1) in batches of
    `batch_size`. `warm_up_steps`: a D that never trained is first warmed up this many steps
    against the first chains it is offered (0 = never). `threads`: intra-op threads of D's
    thread on CPU; `share_cores`: see `start()`. `duty_cycle`: the most of wall time, in
    (0, 1], that the thread trains (1 = no cap; see the module's docstring).
    `on_publish(version, module)`, if given, is called with each new published copy just
    before `current()` can return it (from D's thread, or the caller's for warm-up and load).
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
        if real_images.dim() != 4 or real_images.shape[0] == 0:
            raise DiscriminatorError(
                f"Real images must be a non-empty [M, C, H, W] tensor, got shape {tuple(real_images.shape)}."
            )
        for ok, sentence in [
            (batch_size >= 2, f"The batch size must be at least 2, got {batch_size}."),
            (max_age >= 0, f"max_age must be a step count of 0 or more, got {max_age}."),
            (threads >= 1, f"threads must be at least 1, got {threads}."),
            (warm_up_steps >= 0, f"Warm-up steps must be 0 or more, got {warm_up_steps}."),
        ]:
            if not ok:
                raise DiscriminatorError(sentence)
        self._duty = check_duty_cycle(duty_cycle)
        self.device = torch.device(device)
        self.input_shape: tuple[int, int, int] = tuple(real_images.shape[1:])  # type: ignore[assignment]
        expected = getattr(discriminator, "input_shape", None)
        if expected is not None and tuple(expected) != self.input_shape:
            raise DiscriminatorError(
                f"The real images are {self.input_shape} but the discriminator expects {tuple(expected)}."
            )
        self.batch_size = int(batch_size)
        self.warm_up_steps = int(warm_up_steps)
        self.threads = int(threads)
        self.share_cores = bool(share_cores)
        self.on_publish = on_publish
        self._learner = DiscriminatorLearner(
            discriminator,
            real_images,
            self.device,
            lr=lr,
            tau=tau,
            max_age=int(max_age),
            half=self.batch_size // 2,
            seed=seed,
        )
        self._stream = DiscriminatorStream(self.device)
        self._offers = OfferBox(self.input_shape, self._stream)
        self._busy = BusyClock()
        # The thread and the sampler's thread's cores.
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._caller: tuple[int, int] | None = None  # (thread id, its thread count) for stop()
        self._shared = 1  # the caller's thread count while D works (set by start())
        # What the sampler reads: the newest copy, its version, and why D is withheld.
        self._lock = threading.Lock()
        self._version = -1
        self._published: nn.Module = discriminator
        self._error: str | None = None
        self._publish()  # version 0, the untrained weights: never handed out

    # ----------------------------------------------------------------- what the sampler reads
    def current(self) -> nn.Module | None:
        """The newest published D: eval mode, no parameter gradients, never written to again.

        It has an integer attribute `version` and maps `[N, C, H, W]` to `[N]` logits. None
        while D has never trained (version 0, random weights would only add noise) and after
        the training thread failed (see `metrics()['error']`): the sampler then goes on
        without the discriminator term (until warm-up, or `restart()`).
        """
        with self._lock:
            if self._error is not None or self._version == 0:
                return None
            return self._published

    @property
    def version(self) -> int:
        """How many times weights were published (0 = the initial, untrained weights)."""
        with self._lock:
            return self._version

    @property
    def steps(self) -> int:
        """Optimizer steps taken so far (warm-up and online)."""
        return self._learner.steps

    @property
    def offers(self) -> int:
        """How many times chains were offered (each a copy, taken or replaced)."""
        return self._offers.count

    def offer(self, x: torch.Tensor, ages: torch.Tensor) -> None:
        """Hand the sampler's chains `x [N, C, H, W]` and their ages `[N]` (steps run) to D.

        Cheap: one copy of `x` into a one-slot mailbox; an offer not yet taken is replaced.
        On CPU with `share_cores`, from the thread that called `start()`, this also sets that
        thread's intra-op threads for its next step: all of its own while D's thread rests
        (`duty_cycle`), the cores D leaves otherwise.
        """
        resting = self._offers.offer(x, ages)
        caller = self._caller
        if (
            caller is None
            or caller[0] != threading.get_ident()
            or not self.share_cores
            or self.device.type != "cpu"
            or not self.running  # a failed thread: leave the cores as they are until stop()
        ):
            return
        wanted = caller[1] if resting else self._shared
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    # --------------------------------------------------------------------------- settings
    @property
    def duty_cycle(self) -> float:
        """The most of wall time D's background thread spends training, in (0, 1]; 1 = no cap."""
        return self._duty

    def set(
        self,
        lr: float | None = None,
        tau: float | None = None,
        training: bool | None = None,
        duty_cycle: float | None = None,
    ) -> None:
        """Change the learning rate (> 0), tau (in [0, 1]), switch online training on/off, or
        change the duty cycle (in (0, 1]; a running thread follows within 0.1 s). A refused
        value changes nothing, not even the good ones given with it."""
        duty = check_duty_cycle(duty_cycle) if duty_cycle is not None else None
        self._learner.set(lr=lr, tau=tau, training=training)
        if duty is not None:
            self._duty = duty  # read again at every poll of a rest

    def metrics(self) -> dict[str, Any]:
        """Live figures: `loss` (BCE of the last batch), `acc_real`, `acc_generated` (fractions
        of the last batch D got right), `mean_d` (mean sigmoid(D(x)) over the last offered
        chains), `steps_per_s`, `step_ms` (mean time of one optimizer step), `steps`,
        `version`, `offers`, `training`, `tau`, `lr`, `duty_cycle`, `busy_fraction` (the
        fraction of the thread's last 10 s of wall time, up to now or to `stop()`, spent on
        offers; 0.0 before it first ran), `error` (one sentence, or None)."""
        learner = self._learner
        return {
            **learner.stats.as_dict(),
            "steps": learner.steps,
            "version": self.version,
            "offers": self.offers,
            "training": learner.training and self.running,
            "tau": learner.tau,
            "lr": learner.lr,
            "duty_cycle": self._duty,
            "busy_fraction": self._busy.fraction(),
            "error": self._error,  # one reference read, atomic
        }

    # --------------------------------------------------------------------------- the thread
    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the background training thread (no-op if it runs already).

        On CPU with `share_cores`, the calling thread (the sampler's) is set to the cores D's
        thread leaves free, `max(1, min(its count, cores - threads))`, until `stop()` is called
        from that same thread: 2 cores = 1 thread each, so OpenMP teams never oversubscribe.
        While D's thread rests (`duty_cycle` below 1), that thread's `offer()` calls give it
        its own count back until D is about to train again.
        """
        if self.running:
            return
        self._stop.clear()
        self._ready.clear()
        caller_threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._run, name="ldam-discriminator", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=_READY_S)
        if self.device.type == "cpu":
            # D's set_num_threads also changed the default for threads started later; this
            # call sets the caller's own count and that default back to a sharing value.
            shared = max(1, min(caller_threads, _cpu_count() - self.threads))
            torch.set_num_threads(shared if self.share_cores else caller_threads)
            if self._caller is None:
                self._caller = (threading.get_ident(), caller_threads)
            self._shared = shared

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to stop after its current step; True once it has stopped. Called
        from the thread that started it, this also gives that thread its cores back."""
        self._stop.set()
        self._offers.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        stopped = not self.running
        if stopped and self._caller is not None and self._caller[0] == threading.get_ident():
            torch.set_num_threads(self._caller[1])
            self._caller = None
        return stopped

    def restart(self) -> None:
        """Clear a reported error and start the thread again."""
        if not self.stop():
            raise DiscriminatorError("The discriminator thread did not stop, so it cannot restart.")
        with self._lock:
            self._error = None
        self.start()

    def _run(self) -> None:
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        elif self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        self._busy.started()
        self._ready.set()
        taken = 0
        try:
            while not self._stop.is_set():
                offer = self._offers.take(taken, timeout=_POLL_S)
                if offer is None:
                    continue
                taken = offer.index
                self._busy.working()
                with self._stream.active():
                    self._stream.wait_for(offer.ready)
                    self.process(offer.x, offer.ages)
                skip = self._rest(self._busy.idle())
                if skip is not None:  # offers made while resting went to a sampler on all cores
                    taken = skip
        except Exception as exc:  # reported in metrics(); the sampler goes on without D
            with self._lock:
                self._error = failure_sentence(exc)
        finally:
            self._busy.stopped()

    def _rest(self, busy_s: float) -> int | None:
        """Wait out the pause the duty cycle asks for after `busy_s` seconds of work, or until
        `stop()`. Returns None if there was none, else the index of the newest offer made
        during it, which must not be taken: its caller went on with every core."""
        begun = time.perf_counter()
        if pause_after(busy_s, self._duty) <= 0:
            return None
        self._offers.rest()
        try:
            while not self._stop.is_set():
                left = begun + pause_after(busy_s, self._duty) - time.perf_counter()
                if left <= 0:
                    break
                self._stop.wait(min(left, _POLL_S))
        finally:
            skip = self._offers.resume()
        return skip

    # --------------------------------------------------------------------------- training
    def warm_up(self, generated: torch.Tensor, steps: int) -> None:
        """Train `steps` steps on real images against `generated [K, C, H, W]` (e.g. the
        chains' current samples), in the calling thread, then publish once."""
        with self._stream.active(after_caller=True):
            self._learner.warm_up(generated, steps)
            if steps:
                self._publish()

    def process(self, x: torch.Tensor, ages: torch.Tensor) -> bool:
        """What D's thread does with one offer, in the calling thread: a D that never trained
        is first warmed up against `x` (`warm_up_steps`, then published); then the learner
        scores, pools and steps (`DiscriminatorLearner.process`) and a step is published.
        Returns whether an online step was taken."""
        learner = self._learner
        if learner.training and learner.steps == 0 and self.warm_up_steps > 0:
            self.warm_up(x, self.warm_up_steps)
        stepped = learner.process(x, ages)
        if stepped:
            self._publish()
        return stepped

    def _publish(self) -> None:
        """Copy the training model (eval mode, no parameter gradients) as the next version."""
        published = self._stream.for_readers(self._learner.frozen_copy)
        # Only the training side publishes, one copy at a time, so this read needs no lock.
        version = self._version + 1
        published.version = version
        if self.on_publish is not None:
            self.on_publish(version, published)  # before anyone can read it
        with self._lock:
            self._version = version
            self._published = published

    # ----------------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write the published weights with metadata (input shape, steps, tau, lr) to `path`."""
        learner = self._learner
        with self._lock:
            module = self._published
        write_checkpoint(
            path,
            {k: v.detach().cpu() for k, v in module.state_dict().items()},
            arch=type(module).__name__,
            input_shape=self.input_shape,
            steps=learner.steps,
            tau=learner.tau,
            lr=learner.lr,
        )

    def load(self, path: str | Path) -> None:
        """Load weights saved by `save()` (read with weights_only=True) and publish them."""
        payload = read_checkpoint_for(path, self.input_shape)

        def load_into(model: nn.Module) -> int:
            try:
                model.load_state_dict(payload["state_dict"])
            except RuntimeError:
                raise DiscriminatorError(
                    f"The weights in {path} do not fit this discriminator's layers."
                ) from None
            return int(payload.get("steps", 0))

        with self._stream.active(after_caller=True):
            self._learner.load(load_into)
            self._publish()


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
