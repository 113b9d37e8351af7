"""ldam.sampling.discriminator: the online discriminator trainer (paper Algorithm 2), its
loop driver (the one `ldam sample` and the worker share), files and real images."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ldam.cli.main import main
from ldam.models.bundled import DEFAULT_CHECKPOINT
from ldam.models.data import load_mnist, normalize_mnist, split_indices
from ldam.models.discriminator import make_discriminator
from ldam.models.loading import load_checkpoint
from ldam.sampling.discriminator import (
    DEFAULT_DUTY_CYCLE,
    FORMAT,
    FORMAT_VERSION,
    OFFER_EVERY,
    DiscriminatorError,
    DiscriminatorLoop,
    DiscriminatorTrainer,
    build_discriminator_for,
    read_checkpoint,
    real_images_for,
    run_with_discriminator,
)
from ldam.sampling.discriminator.trainer import pause_after
from ldam.sampling.energy import ActivationTerm, DiscriminatorTerm, L2Term
from ldam.sampling.sampler import Sampler, SamplerConfig
from ldam.sampling.targets import Target
from ldam.wire.link import WorkerConfig, WorkerEnd
from ldam.wire.params import SamplerParams
from ldam.wire.targets import ChainTargets
from ldam.worker.process import Worker
from tests.support import PAIR, lenet_folder

MEAN, STD = 0.1307, 0.3081
NORM = ([MEAN], [STD])


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for the test's own thread: on a shared 2-core machine OpenMP's
    spinning teams of 2 slow these small ops down many times over; D's thread uses 1 anyway."""
    default = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(default)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(8,000 training digits, 2,000 held-out digits), normalized `[M, 1, 28, 28]`."""
    images, _ = load_mnist()
    train, test = split_indices()
    return normalize_mnist(images[train], MEAN, STD), normalize_mnist(images[test], MEAN, STD)


@pytest.fixture(scope="module")
def lenet() -> nn.Module:
    """The committed LeNet (plain), eval mode and frozen."""
    return load_checkpoint(DEFAULT_CHECKPOINT).module


def _trainer(digits, **options) -> DiscriminatorTrainer:
    torch.manual_seed(0)
    return DiscriminatorTrainer(make_discriminator((1, 28, 28)), digits[0], **options)


def _wait(condition, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_warm_up_separates_held_out_digits_from_noise(digits) -> None:
    torch.manual_seed(0)
    module = make_discriminator((1, 28, 28))
    before = _state(module)
    trainer = DiscriminatorTrainer(module, digits[0])
    assert trainer.current() is None and trainer.version == 0  # untrained D is never handed out
    trainer.warm_up(torch.randn(256, 1, 28, 28), steps=30)
    d = trainer.current()
    assert d.version == 1 and trainer.version == 1 and trainer.steps == 30
    assert any(not torch.equal(before[k], v) for k, v in d.state_dict().items())
    torch.manual_seed(1)  # fresh noise, never seen in warm-up
    with torch.no_grad():
        acc_real = (d(digits[1]) > 0).float().mean().item()
        acc_noise = (d(torch.randn(2000, 1, 28, 28)) < 0).float().mean().item()
    assert (acc_real + acc_noise) / 2 > 0.95
    assert acc_real > 0.9 and acc_noise > 0.9


def test_published_copy_is_frozen_and_separate(digits) -> None:
    trainer = _trainer(digits)
    trainer.warm_up(torch.randn(64, 1, 28, 28), steps=3)
    d1 = trainer.current()
    assert d1.version == 1 and not d1.training
    assert all(not p.requires_grad for p in d1.parameters())
    frozen = _state(d1)
    trainer.warm_up(torch.randn(64, 1, 28, 28), steps=3)
    # Training changed the trainer's weights but not the copy the sampler may still hold.
    assert all(torch.equal(frozen[k], v) for k, v in d1.state_dict().items())
    assert trainer.current() is not d1 and trainer.current().version == 2


def test_process_pools_only_chains_that_fool_d_or_are_old(digits) -> None:
    trainer = _trainer(digits, tau=0.9, max_age=100)
    trainer.warm_up(torch.randn(128, 1, 28, 28), steps=20)
    noise = torch.randn(8, 1, 28, 28)  # D calls these fake, so only age makes them eligible
    assert not trainer.process(noise, torch.full((8,), 99))
    assert trainer.steps == 20
    assert trainer.metrics()["mean_d"] < 0.1
    # Real digits pass tau even when young.
    assert trainer.process(digits[1][:8], torch.zeros(8, dtype=torch.long))
    assert trainer.steps == 21
    assert trainer.process(noise, torch.full((8,), 100))
    assert trainer.steps == 22 and trainer.version == 3
    m = trainer.metrics()
    assert set(m) == {
        "loss",
        "acc_real",
        "acc_generated",
        "mean_d",
        "steps_per_s",
        "step_ms",
        "steps",
        "version",
        "offers",
        "training",
        "tau",
        "lr",
        "duty_cycle",
        "busy_fraction",
        "error",
    }
    assert 0.0 <= m["acc_real"] <= 1.0 and m["loss"] > 0.0
    assert (m["steps"], m["version"], m["tau"], m["error"]) == (22, 3, 0.9, None)
    trainer.set(training=False)
    assert not trainer.process(noise, torch.full((8,), 500))
    assert trainer.steps == 22


def test_error_in_thread_is_reported_sampling_goes_on_and_restart_recovers(digits, lenet) -> None:
    class Flaky(nn.Module):
        """A real discriminator whose training-mode forward fails, while `broken` is set, after
        its first `healthy` calls (a fault, not a mock); published eval copies keep working."""

        def __init__(self, healthy: int) -> None:
            super().__init__()
            self.inner = make_discriminator((1, 28, 28))
            self.input_shape = (1, 28, 28)
            self.healthy, self.calls, self.broken = healthy, 0, True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                self.calls += 1
                if self.broken and self.calls > self.healthy:
                    raise RuntimeError("injected fault\nsecond line")
            return self.inner(x)

    torch.manual_seed(0)
    flaky = Flaky(healthy=5)  # the 5 warm-up steps work, the thread's first offer fails
    trainer = DiscriminatorTrainer(flaky, digits[0], max_age=0)
    config = SamplerConfig(chains=4, disc_weight=0.5, seed=0)
    terms = [
        ActivationTerm(Target(lenet, "fc3:0-3", 4)),
        L2Term(),
        DiscriminatorTerm(trainer.current),
    ]
    sampler = Sampler(terms, (1, 28, 28), config)
    used_d: list[bool] = []

    def progress(i: int, info) -> None:
        used_d.append("discriminator" in info.terms)
        if i == 0:  # give the thread time to take the first offer and fail on it
            _wait(lambda: trainer.metrics()["error"] is not None)

    metrics = run_with_discriminator(
        sampler, trainer, 40, warm_up_steps=5, progress_callback=progress
    )
    assert metrics["error"] == "Discriminator training stopped on RuntimeError: injected fault."
    assert len(used_d) == 40 and used_d[0] and not any(used_d[1:])  # went on without D
    assert torch.isfinite(sampler.x).all() and trainer.current() is None

    flaky.broken = False
    trainer.restart()
    assert trainer.metrics()["error"] is None

    def wait_for_a_step(i: int, info) -> None:
        if i == 0:
            _wait(lambda: trainer.steps >= 1)

    metrics = run_with_discriminator(
        sampler, trainer, 40, warm_up_steps=0, progress_callback=wait_for_a_step
    )
    assert metrics["error"] is None and trainer.steps >= 1
    assert trainer.current() is not None
    assert not trainer.running


def test_bad_inputs_are_one_sentence(digits, tmp_path: Path) -> None:
    trainer = _trainer(digits)
    cases = [
        (
            lambda: trainer.offer(torch.zeros(2, 3, 28, 28), torch.zeros(2)),
            "Offered chains are (3, 28, 28) but the discriminator expects (1, 28, 28).",
        ),
        (
            lambda: trainer.offer(torch.zeros(2, 1, 28, 28), torch.zeros(3)),
            "Got 3 chain ages for 2 chains; give one age per chain.",
        ),
        (lambda: trainer.set(lr=0.0), "The discriminator learning rate must be positive, got 0.0."),
        (lambda: trainer.set(tau=1.5), "tau must be between 0 and 1, got 1.5."),
        (
            lambda: trainer.warm_up(torch.zeros(2, 28, 28), 3),
            "Warm-up samples must be [K, 1, 28, 28], got (2, 28, 28).",
        ),
        (
            lambda: trainer.load(tmp_path / "none.pt"),
            f"Discriminator checkpoint {tmp_path / 'none.pt'} does not exist.",
        ),
        (
            lambda: DiscriminatorTrainer(
                make_discriminator((1, 28, 28)), torch.zeros(5, 3, 32, 32)
            ),
            "The real images are (3, 32, 32) but the discriminator expects (1, 28, 28).",
        ),
        (
            lambda: build_discriminator_for((3, 32, 32), None),
            "The discriminator needs real images shaped like the model's input (3, 32, 32): "
            "pass --disc-data with a folder of images or an .npz.",
        ),
    ]
    for call, message in cases:
        with pytest.raises(DiscriminatorError) as info:
            call()
        assert str(info.value) == message
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DiscriminatorError, match=r"is not a readable discriminator checkpoint\.$"):
        trainer.load(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(DiscriminatorError) as info:
        trainer.load(other)
    assert str(info.value) == f"{other} is not a discriminator checkpoint written by ldam."


def test_save_and_load_round_trip(digits, tmp_path: Path) -> None:
    trainer = _trainer(digits)
    trainer.warm_up(torch.randn(64, 1, 28, 28), steps=5)
    path = tmp_path / "d.pt"
    trainer.save(path)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "ldam-discriminator" and payload["input_shape"] == [1, 28, 28]
    assert payload["steps"] == 5
    fresh = build_discriminator_for((1, 28, 28), NORM, checkpoint=path)
    assert fresh.steps == 5
    saved, loaded = trainer.current().state_dict(), fresh.current().state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    small = DiscriminatorTrainer(make_discriminator((3, 32, 32)), torch.zeros(4, 3, 32, 32))
    with pytest.raises(DiscriminatorError) as info:
        small.load(path)
    assert str(info.value) == (
        f"{path} holds a discriminator for inputs (1, 28, 28), but this model's input is (3, 32, 32)."
    )


def test_checkpoint_names_its_format_and_refuses_other_layers(digits, tmp_path: Path) -> None:
    trainer = _trainer(digits, tau=0.8, lr=1e-3)
    trainer.warm_up(torch.randn(64, 1, 28, 28), steps=2)
    path = tmp_path / "d.pt"
    trainer.save(path)
    payload = read_checkpoint(path)
    assert (FORMAT, FORMAT_VERSION) == ("ldam-discriminator", 1)
    assert (payload["format"], payload["format_version"]) == (FORMAT, FORMAT_VERSION)
    assert (payload["arch"], payload["steps"], payload["tau"], payload["lr"]) == (
        "MnistDiscriminator",
        2,
        0.8,
        1e-3,
    )
    # Right format and shape, but none of D's layers: refused, and nothing is published.
    hollow = tmp_path / "hollow.pt"
    torch.save({"format": FORMAT, "input_shape": [1, 28, 28], "state_dict": {}}, hollow)
    with pytest.raises(DiscriminatorError) as info:
        trainer.load(hollow)
    assert str(info.value) == f"The weights in {hollow} do not fit this discriminator's layers."
    assert (trainer.version, trainer.steps) == (1, 2)


def test_options_show_in_what_d_does(digits) -> None:
    """Each option of the trainer, seen in D's behaviour: the warm-up on the first offer,
    max_age, the batch D trains on, every version reaching on_publish, and share_cores=False
    leaving the caller's threads alone."""

    class Counting(nn.Module):
        """A real discriminator that notes the batch size of each training-mode forward."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = make_discriminator((1, 28, 28))
            self.input_shape = (1, 28, 28)
            self.batches: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                self.batches.append(x.shape[0])
            return self.inner(x)

    torch.manual_seed(0)
    module = Counting()
    versions: list[int] = []
    trainer = DiscriminatorTrainer(
        module,
        digits[0],
        tau=1.0,  # no chain fools D: only age makes a chain eligible
        max_age=7,
        batch_size=10,
        warm_up_steps=3,
        share_cores=False,
        on_publish=lambda version, published: versions.append(version),
    )
    noise = torch.randn(8, 1, 28, 28)
    assert not trainer.process(noise, torch.full((8,), 6))  # one step too young
    assert (trainer.steps, trainer.version) == (3, 1)  # but the first offer warmed D up
    assert trainer.process(noise, torch.full((8,), 7))
    assert (trainer.steps, versions) == (4, [0, 1, 2])
    # 3 warm-up batches of 5 generated + 5 real, two offers scored, one online batch.
    assert module.batches == [10, 10, 10, 8, 8, 10]
    trainer.set(tau=0.25, lr=1e-3)
    m = trainer.metrics()
    assert (m["tau"], m["lr"], m["training"], m["steps"], m["version"]) == (0.25, 1e-3, False, 4, 2)
    torch.set_num_threads(2)
    trainer.start()
    try:
        assert trainer.running and trainer.metrics()["training"]
        assert torch.get_num_threads() == 2  # share_cores=False: the caller keeps its threads
    finally:
        assert trainer.stop()
    assert torch.get_num_threads() == 2 and not trainer.running


def test_real_images_default_to_the_mnist_training_split(digits, tmp_path: Path) -> None:
    real = real_images_for((1, 28, 28), NORM, None)
    assert real.shape == (8000, 1, 28, 28)
    assert torch.equal(real, digits[0])
    # The user's own .npz for another input shape, through ldam.models.data.load_images.
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", images=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    trainer = build_discriminator_for(
        (3, 32, 32), None, data=str(tmp_path / "mine.npz"), warm_up_steps=2
    )
    assert trainer.input_shape == (3, 32, 32)
    # The first offer warms D up (2 steps) against it, then takes the online step.
    assert trainer.process(torch.randn(4, 3, 32, 32), torch.full((4,), 10**6))
    assert (trainer.steps, trainer.version) == (3, 2)
    assert trainer.current()(torch.zeros(2, 3, 32, 32)).shape == (2,)


def test_start_shares_the_cores_and_stop_gives_them_back(digits) -> None:
    trainer = _trainer(digits, threads=1)
    torch.set_num_threads(2)  # the sampler's thread before D starts
    cores = len(os.sched_getaffinity(0))
    trainer.start()
    try:
        assert trainer.running
        assert torch.get_num_threads() == max(1, min(2, cores - 1))  # 1 on a 2-core machine
    finally:
        assert trainer.stop()
    assert torch.get_num_threads() == 2
    assert not trainer.running


def _bits(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's weights as raw 32-bit patterns, so equality is bit-for-bit."""
    return {k: v.detach().clone().view(torch.int32) for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sampler_only_ever_reads_published_versions_while_d_trains(digits, lenet) -> None:
    published: dict[int, dict[str, torch.Tensor]] = {}
    lock = threading.Lock()

    def record(version: int, module: nn.Module) -> None:
        with lock:
            published[version] = _bits(module)
            published.pop(version - 100, None)  # bounded memory; reads lag by one step at most

    torch.manual_seed(0)
    module = make_discriminator((1, 28, 28))
    first = _bits(module)
    trainer = DiscriminatorTrainer(module, digits[0], max_age=5, on_publish=record)
    bad: list[int] = []
    seen: list[int] = []
    previous: list[nn.Module] = []

    def check(module: nn.Module) -> None:
        with lock:
            expected = published[module.version]
        if not _same(_bits(module), expected):
            bad.append(module.version)

    def read() -> nn.Module | None:
        d = trainer.current()
        check(d)  # as handed out ...
        if previous:
            check(previous.pop())  # ... and after the sampler's step used it
        previous.append(d)
        seen.append(d.version)
        return d

    config = SamplerConfig(chains=8, disc_weight=0.5, seed=0, burn_in=0)
    target = ActivationTerm(Target(lenet, "fc3:0-7", 8))
    sampler = Sampler([target, L2Term(), DiscriminatorTerm(read)], (1, 28, 28), config)

    def midway(i: int, info) -> None:
        if i == 150:  # under heavy load, make sure D has trained a little by now
            _wait(lambda: trainer.steps >= 10 + 5)

    metrics = run_with_discriminator(
        sampler, trainer, 300, train=True, warm_up_steps=10, progress_callback=midway
    )
    assert metrics["error"] is None and not trainer.running
    assert bad == []
    assert len(seen) >= 300 and seen == sorted(seen)  # versions only move forward
    assert len(set(seen)) >= 3  # the sampler picked up weights published during the run
    assert trainer.steps >= 10 + 5 and metrics["steps"] == trainer.steps
    assert not _same(_bits(trainer.current()), first)
    assert torch.isfinite(sampler.x).all()


def test_zero_weight_is_bit_identical_to_no_discriminator(digits, lenet) -> None:
    config = SamplerConfig(chains=6, seed=3, temperature=0.05, disc_weight=0.0)
    target = ActivationTerm(Target(lenet, "fc3:0-5", 6))
    plain = Sampler([target, L2Term()], (1, 28, 28), config)
    for _ in range(60):
        plain.step()
    trainer = _trainer(digits, max_age=0)
    with_d = Sampler([target, L2Term(), DiscriminatorTerm(trainer.current)], (1, 28, 28), config)

    def midway(i: int, info) -> None:
        if i == 30:
            _wait(lambda: trainer.steps > 5)

    metrics = run_with_discriminator(
        with_d, trainer, 60, train=True, warm_up_steps=5, progress_callback=midway
    )
    assert metrics["error"] is None and trainer.steps > 5  # D did train meanwhile
    assert torch.equal(plain.x, with_d.x)
    assert torch.equal(plain.window_mean(), with_d.window_mean())


def test_discriminator_pulls_samples_toward_real_digits(digits, lenet) -> None:
    """The paper's Figure 1 claim, measured without D: on the committed LeNet (fc3:K, one
    group of chains per class, L2 and window averaging) the distance from each averaged sample
    to its nearest held-out real digit, in pixels in [0, 1], falls as w goes 0 -> 0.5 -> 0.8,
    and at w = 0.8 the classifier still gives most samples their target class.

    D trains in this thread (one step per 2 sampler steps, `background=False`), so the run is
    reproducible from the seeds; the background thread is what the test above checks. Over
    seeds 0-4 these settings gave distances 13.2-15.2, 7.3-8.3 and 6.2-6.6 (ratios 0.51-0.58
    and 0.77-0.88) and 8-10 of 10 classified right at w = 0.8.
    """
    weights = (0.0, 0.5, 0.8)
    # Chains 3k, 3k+1, 3k+2 target class k (one group per class, each weight once per class).
    target = Target(lenet, ChainTargets.on_layer("fc3", [k for k in range(10) for _ in range(3)]))
    units = torch.tensor(target.units_per_chain)
    trainer = _trainer(digits, max_age=20)
    steps, window = 200, 80
    config = SamplerConfig(
        chains=30,
        disc_weight=[weights[i % 3] for i in range(30)],
        temperature=0.01,
        step_size=0.2,
        l2_weight=0.03,
        window=window,
        burn_in=steps - window,
        seed=0,
    )
    terms = [ActivationTerm(target), L2Term(), DiscriminatorTerm(trainer.current)]
    sampler = Sampler(terms, (1, 28, 28), config)
    metrics = run_with_discriminator(
        sampler, trainer, steps, train=True, warm_up_steps=50, offer_every=2, background=False
    )
    assert metrics["error"] is None and trainer.steps > 50 + 60

    averaged = sampler.window_mean()
    pixels = (averaged * STD + MEAN).flatten(1)
    held_out = (digits[1] * STD + MEAN).flatten(1)
    nearest = torch.cdist(pixels, held_out).min(dim=1).values
    distance = [nearest[k::3].mean().item() for k in range(3)]  # per weight 0, 0.5, 0.8
    assert distance[1] < 0.75 * distance[0], distance
    assert distance[2] < 0.95 * distance[1], distance
    with torch.no_grad():
        predicted = lenet(averaged).argmax(dim=1)
    correct_at_08 = (predicted[2::3] == units[2::3]).sum().item()
    assert correct_at_08 >= 7, predicted.tolist()


def test_bad_learning_rate_and_missing_folder_are_one_sentence(tmp_path: Path) -> None:
    real = torch.zeros(8, 1, 28, 28)
    for lr in (-1.0, float("nan"), 0.0):
        with pytest.raises(DiscriminatorError) as info:
            DiscriminatorTrainer(make_discriminator((1, 28, 28)), real, lr=lr)
        assert str(info.value) == f"The discriminator learning rate must be positive, got {lr}."
    trainer = DiscriminatorTrainer(make_discriminator((1, 28, 28)), real)
    target = tmp_path / "missing" / "d.pt"
    with pytest.raises(DiscriminatorError) as info:
        trainer.save(target)
    assert str(info.value) == (
        f"Cannot write the discriminator to {target}: the folder {target.parent} does not exist."
    )
    assert not target.parent.exists()


def test_duty_cycle_is_a_fraction_in_0_1_and_a_bad_one_is_one_sentence(digits) -> None:
    trainer = _trainer(digits)
    assert trainer.duty_cycle == DEFAULT_DUTY_CYCLE and 0.0 < DEFAULT_DUTY_CYCLE <= 1.0
    assert trainer.metrics()["duty_cycle"] == DEFAULT_DUTY_CYCLE
    assert trainer.metrics()["busy_fraction"] == 0.0  # the thread never ran
    for bad, shown in [
        (0.0, "0.0"),
        (-0.5, "-0.5"),
        (1.5, "1.5"),
        (float("nan"), "nan"),
        (True, "True"),
        ("0.5", "'0.5'"),
    ]:
        message = f"The duty cycle must be more than 0 and at most 1, got {shown}."
        with pytest.raises(DiscriminatorError) as info:
            _trainer(digits, duty_cycle=bad)
        assert str(info.value) == message
        with pytest.raises(DiscriminatorError) as info:
            trainer.set(lr=1e-3, duty_cycle=bad)
        assert str(info.value) == message
    # A refused setting changes nothing, not even the good one given with it.
    assert (trainer.duty_cycle, trainer.metrics()["lr"]) == (DEFAULT_DUTY_CYCLE, 2e-4)
    trainer.set(duty_cycle=1)
    assert trainer.duty_cycle == 1.0 and trainer.metrics()["duty_cycle"] == 1.0
    assert _trainer(digits, duty_cycle=0.25).metrics()["duty_cycle"] == 0.25


def test_pause_after_a_step_leaves_work_the_duty_share_of_wall_time() -> None:
    assert pause_after(0.03, 1.0) == 0.0  # no cap
    assert pause_after(0.03, 0.5) == pytest.approx(0.03)
    assert pause_after(0.03, 0.25) == pytest.approx(0.09)
    assert pause_after(0.0, 0.25) == 0.0 and pause_after(-1.0, 0.5) == 0.0
    for busy in (0.001, 0.028, 0.043, 2.0):
        for duty in (0.1, 0.3, 0.5, 0.9):
            assert busy / (busy + pause_after(busy, duty)) == pytest.approx(duty)


def _train_in_background(trainer: DiscriminatorTrainer, steps: int) -> dict:
    """Offer chains (every 5 ms, so a new one always waits) until D's thread has taken `steps`
    more steps; stop it and answer its metrics."""
    target = trainer.steps + steps
    x = torch.randn(16, 1, 28, 28)
    ages = torch.full((16,), 10**6)  # past max_age: every offer gets a step
    trainer.start()
    try:
        end = time.monotonic() + 120
        while trainer.steps < target:
            assert time.monotonic() < end, "D's thread took too few steps in time"
            assert trainer.metrics()["error"] is None
            trainer.offer(x, ages)
            time.sleep(0.005)
    finally:
        assert trainer.stop()
    return trainer.metrics()


def test_busy_fraction_stays_near_the_duty_cycle(digits) -> None:
    # Worst case over k steps: stopped just after a step, before its rest, counts as
    # (k + 1) t / (k t / duty + t): under 0.29 for k = 7 at duty 0.25. Slow steps on a loaded
    # machine change t, not the ratio, which comes from the thread's own clock.
    capped = _trainer(digits, max_age=0, duty_cycle=0.25)
    capped.warm_up(torch.randn(64, 1, 28, 28), steps=2)  # not in the thread: one long span
    m = _train_in_background(capped, 8)
    assert 0.0 < m["busy_fraction"] < 0.35, m
    assert m["steps_per_s"] > 0.0 and not m["training"]
    free = _trainer(digits, max_age=0, duty_cycle=1.0)
    free.warm_up(torch.randn(64, 1, 28, 28), steps=2)
    m = _train_in_background(free, 8)
    assert m["busy_fraction"] > 0.5, m  # about 1: a new offer is always waiting


def test_duty_cycle_changes_live_rests_give_the_cores_back_and_stop_ends_a_rest(digits) -> None:
    # At duty 1e-4 a step of t seconds is followed by a rest of about 10,000 t (minutes):
    # D goes on stepping only if the running thread follows the live change.
    trainer = _trainer(digits, max_age=0, duty_cycle=1e-4)
    trainer.warm_up(torch.randn(64, 1, 28, 28), steps=2)
    x, ages = torch.randn(8, 1, 28, 28), torch.full((8,), 10**6)
    torch.set_num_threads(2)  # the sampler's thread before D starts
    shared = max(1, min(2, len(os.sched_getaffinity(0)) - 1))  # 1 on a 2-core machine
    trainer.start()
    try:
        trainer.offer(x, ages)  # D is not resting: it takes this one, on the cores left
        assert torch.get_num_threads() == shared
        _wait(lambda: trainer.steps == 3)  # one step taken, a long rest about to begin

        def offered_and_widened() -> bool:
            trainer.offer(x, ages)
            return torch.get_num_threads() == 2

        _wait(offered_and_widened)  # D rests: the offering thread has all its threads again
        assert trainer.steps == 3 and trainer.running
        trainer.set(duty_cycle=1.0)
        assert trainer.metrics()["duty_cycle"] == 1.0

        def offered_and_stepped() -> bool:
            trainer.offer(x, ages)
            return trainer.steps >= 5

        _wait(offered_and_stepped)
        assert torch.get_num_threads() == shared  # no rests at duty 1: D always works
        trainer.set(duty_cycle=1e-4)  # the rest after the step in hand is minutes long again
        _wait(offered_and_widened)
    finally:
        assert trainer.stop()  # the rest ended at once (stop waits 10 s at most)
    assert not trainer.running and torch.get_num_threads() == 2


def test_loop_offers_on_the_first_step_and_every_nth_after_while_d_runs(digits) -> None:
    trainer = _trainer(digits, max_age=0)
    trainer.warm_up(torch.randn(64, 1, 28, 28), steps=2)
    x, ages = torch.randn(8, 1, 28, 28), torch.full((8,), 10**6)
    idle = DiscriminatorLoop(trainer)
    assert [idle.after_step(x, ages) for _ in range(3)] == [False] * 3  # no thread, no offers
    assert trainer.offers == 0
    loop = DiscriminatorLoop(trainer, every=3)
    trainer.start()
    try:
        offered = [loop.after_step(x, ages) for _ in range(7)]
    finally:
        assert trainer.stop()
    assert offered == [True, False, False, True, False, False, True]
    assert trainer.offers == trainer.metrics()["offers"] == 3
    # In the calling thread: one D step per due step, whether or not the thread runs.
    here = DiscriminatorLoop(trainer, every=2, background=False)
    before = trainer.steps
    assert [here.after_step(x, ages) for _ in range(5)] == [True, False, True, False, True]
    assert trainer.steps == before + 3 and trainer.offers == 3
    with pytest.raises(DiscriminatorError) as info:
        DiscriminatorLoop(trainer, every=0)
    assert str(info.value) == "Offers must come every 1 or more steps, got 0."


def test_ldam_sample_and_the_worker_offer_d_at_the_same_cadence(tmp_path: Path) -> None:
    steps = 12
    expected = len(range(0, steps, OFFER_EVERY))  # the first step, then every OFFER_EVERY-th
    out = tmp_path / "a.npz"
    argv = ["sample", str(DEFAULT_CHECKPOINT), "--target", "fc3:3", "--chains", "4"]
    argv += ["--steps", str(steps), "--device", "cpu", "--disc-weight", "0.5"]
    assert main([*argv, "--disc-steps", "2", "--out", str(out)]) == 0
    sampled = json.loads(str(np.load(out)["params"]))["disc"]
    assert (sampled["offers"], sampled["error"]) == (expected, None)

    folder = lenet_folder()
    command_read, _ = mp.get_context("spawn").Pipe(duplex=False)
    _, event_write = mp.get_context("spawn").Pipe(duplex=False)
    params = SamplerParams.model_validate({"disc_weight": 0.5})
    config = WorkerConfig(
        checkpoints_dir=str(folder),
        checkpoint=str(folder / PAIR[0]),
        device="cpu",
        params=params.model_dump(),
        version=1,
    )
    end = WorkerEnd(command_read, event_write)
    worker = Worker(config, end)
    try:
        worker.build(worker.params, worker.sources)
        worker.apply_live()  # D is used: its thread starts
        for _ in range(steps):
            worker.step_all()
        served = worker.disc.metrics()
    finally:
        worker.close()
        end.outbox.close()
    assert (served["offers"], served["error"]) == (expected, None)
