"""D's background thread: its lifecycle, and its share of the CPU cores.

On CPU, `torch.set_num_threads` with the OpenMP backend sets the calling thread's own intra-op
team size (and the default for threads that start later). D's thread sets its own count
(`threads`) and `start()` sets the sampler's thread (the caller) to the cores left over, until
`stop()`: on 2 cores one thread each, because two OpenMP teams asking for more threads than
there are cores spin against each other and both slow down many times over. On CUDA, D's
thread works on D's own stream (see `DiscriminatorStream`).

Pacing: with a duty cycle below 1, the thread works at most that fraction of wall time. After
handling an offer that took t seconds it rests `t * (1 - duty) / duty` seconds, then takes the
first offer made after the rest. While it rests the sampler's thread has every core again: each
`offer()` answers whether D rests, and `after_offer` gives the offering thread its full thread
count for its next step, or the shared count back once D is about to work. D only ever takes an
offer whose caller was told it is back, so the two teams never run on more threads than cores.
(Sleeping alone would not do: on 2 cores the sampler would still run on 1 thread, and that
thread count, not D's interference, is most of what D's training costs the sampler.) The time
counted is the thread's own wall time; on CUDA that is the time to queue D's work, not the GPU's.
"""

from __future__ import annotations

import math
import numbers
import os
import threading
import time
from collections.abc import Callable

import torch

from ldam.sampling.discriminator.errors import DiscriminatorError
from ldam.sampling.discriminator.metrics import BusyClock
from ldam.sampling.discriminator.offers import OfferBox
from ldam.sampling.discriminator.stream import DiscriminatorStream

# How long the thread waits for a new offer before it checks again whether to stop (seconds).
_POLL_S = 0.1
# How long `start()` waits for the thread to set itself up (seconds).
_READY_S = 10.0


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


def _failure_sentence(exc: BaseException) -> str:
    """One sentence naming the exception that stopped the training thread."""
    text = str(exc).strip().splitlines()[0].strip().rstrip(".") if str(exc).strip() else ""
    detail = f": {text}" if text else ""
    return f"Discriminator training stopped on {type(exc).__name__}{detail}."


def _cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class TrainingThread:
    """Takes each new offer from `offers` and hands it to `handle(x, ages)`, until stopped.

    An exception from `handle` ends the thread; `on_error` gets its sentence. `threads`:
    intra-op threads of this thread on CPU; `share_cores`: see `start()`; `duty_cycle`: the
    most of wall time the thread works, in (0, 1] (1 = no cap; see the module's docstring).
    """

    def __init__(
        self,
        offers: OfferBox,
        stream: DiscriminatorStream,
        handle: Callable[[torch.Tensor, torch.Tensor], object],
        on_error: Callable[[str], None],
        *,
        threads: int = 1,
        share_cores: bool = True,
        duty_cycle: float = 1.0,
    ) -> None:
        self.threads = threads
        self.share_cores = share_cores
        self._duty = check_duty_cycle(duty_cycle)
        self.busy = BusyClock()
        self._offers = offers
        self._stream = stream
        self._device = stream.device
        self._handle = handle
        self._on_error = on_error
        self._caller: tuple[int, int] | None = None  # (thread id, its thread count) for stop()
        self._shared = 1  # the caller's thread count while D works (set by start())
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def duty_cycle(self) -> float:
        """The most of wall time the thread works, in (0, 1]; 1 = no cap."""
        return self._duty

    @duty_cycle.setter
    def duty_cycle(self, duty: float) -> None:
        # Read again at every poll of a rest, so a change applies within _POLL_S seconds.
        self._duty = check_duty_cycle(duty)

    def busy_fraction(self) -> float:
        """The fraction of the thread's recent wall time (see `BusyClock`) spent on offers."""
        return self.busy.fraction()

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (no-op if it runs already).

        On CPU with `share_cores`, the calling thread (the sampler's) is set to the cores this
        thread leaves free, `max(1, min(its count, cores - threads))`, until `stop()` is called
        from that same thread: 2 cores = 1 thread each, so OpenMP teams never oversubscribe.
        While the thread rests (duty cycle below 1), `after_offer` gives that thread its own
        count back between two offers.
        """
        if self.running:
            return
        self._stop.clear()
        self._ready.clear()
        caller_threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._run, name="ldam-discriminator", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=_READY_S)
        if self._device.type == "cpu":
            # D's set_num_threads also changed the default for threads started later; this
            # call sets the caller's own count and that default back to a sharing value.
            shared = max(1, min(caller_threads, _cpu_count() - self.threads))
            torch.set_num_threads(shared if self.share_cores else caller_threads)
            if self._caller is None:
                self._caller = (threading.get_ident(), caller_threads)
            self._shared = shared

    def after_offer(self, resting: bool) -> None:
        """Called in the thread that just offered, with what the offer answered: on CPU with
        `share_cores`, if that is the thread that started this one, set its intra-op threads
        for its next step: its own count while D rests, the shared count otherwise."""
        caller = self._caller
        if (
            caller is None
            or caller[0] != threading.get_ident()
            or not self.share_cores
            or self._device.type != "cpu"
            or not self.running  # a failed thread: leave the cores as they are until stop()
        ):
            return
        wanted = caller[1] if resting else self._shared
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

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

    def _run(self) -> None:
        if self._device.type == "cpu":
            torch.set_num_threads(self.threads)
        elif self._device.type == "cuda" and self._device.index is not None:
            torch.cuda.set_device(self._device)
        self.busy.started()
        self._ready.set()
        taken = 0
        try:
            while not self._stop.is_set():
                offer = self._offers.take(taken, timeout=_POLL_S)
                if offer is None:
                    continue
                taken = offer.index
                self.busy.working()
                with self._stream.active():
                    self._stream.wait_for(offer.ready)
                    self._handle(offer.x, offer.ages)
                skip = self._rest(self.busy.idle())
                if skip is not None:  # offers made while resting went to a sampler on all cores
                    taken = skip
        except Exception as exc:  # reported through on_error; the thread ends here
            self._on_error(_failure_sentence(exc))
        finally:
            self.busy.stopped()

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
