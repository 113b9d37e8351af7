"""The recorder's block copies against the same run read step by step, and the host copies
it is built on: every value, the first all-burned-in step and the samples kept after it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ldam.sampling.energy import ActivationTerm, L2Term
from ldam.sampling.recorder import Recorder
from ldam.sampling.sampler import Sampler, SamplerConfig
from ldam.sampling.transfer import HostCopy

CPU = torch.device("cpu")
SHAPE = (1, 4, 4)


def small_sampler(chains: int = 4, **settings: object) -> Sampler:
    """A conv -> tanh -> linear unit with L2 and auto burn-in (one chain burns in late)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 1)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    base: dict = dict(chains=chains, temperature=0.05, burn_in_window=30, seed=2)
    config = SamplerConfig(**{**base, **settings})
    return Sampler([ActivationTerm(lambda x: net(x)[:, 0]), L2Term()], SHAPE, config)


def step_by_step(sampler: Sampler, recorder: Recorder, steps: int, every: int) -> dict:
    """Run `steps` steps feeding `recorder`, and read the same values on the host each step as
    `ldam sample` did before the recorder: the reference."""
    activation, burned_in, samples = [], [], []
    record_from = None
    for t in range(steps):
        info = sampler.step()
        recorder.add(info, sampler.x)
        activation.append(info.activation.clone())
        burned_in.append(info.burned_in.clone())
        if record_from is None and bool((sampler.burn_in_step >= 0).all()):
            record_from = t
        if record_from is not None and (t - record_from) % every == 0:
            samples.append(sampler.x.clone())
    return dict(
        activation=torch.stack(activation),
        burned_in=torch.stack(burned_in),
        record_from=record_from,
        samples=torch.stack(samples) if samples else torch.zeros(0, sampler.config.chains, *SHAPE),
    )


@pytest.mark.parametrize(
    ("block", "slots", "every"),
    [(64, None, 7), (7, 3, 1), (1, None, 2), (5, 1, 3), (16, 2, 4)],
    ids=["default", "staging-full", "block-1", "one-slot", "small"],
)
def test_block_copies_give_exactly_the_per_step_values(
    block: int, slots: int | None, every: int
) -> None:
    sampler = small_sampler()
    staging = 4 * 4 * 16 * slots if slots is not None else 2**20
    recorder = Recorder(4, CPU, SHAPE, every, block=block, staging_bytes=staging)
    expected = step_by_step(sampler, recorder, 200, every)
    recording = recorder.finish()
    # Found in the middle of the run, blocks after the recorder began to stage samples.
    assert expected["record_from"] is not None and 60 < expected["record_from"] < 150
    assert recording.record_from == expected["record_from"]
    assert torch.equal(recording.activation, expected["activation"])
    assert torch.equal(recording.burned_in, expected["burned_in"])
    assert recording.samples.shape[0] == len(range(expected["record_from"], 200, every))
    assert torch.equal(recording.samples, expected["samples"])
    assert recording.activation.dtype == recording.samples.dtype == torch.float32


def test_no_sample_is_kept_while_a_chain_never_burns_in() -> None:
    sampler = small_sampler(burn_in_threshold=[0.0, 0.0, 0.0, 1e9])
    recorder = Recorder(4, CPU, SHAPE, 1, block=8, staging_bytes=4 * 4 * 16 * 3)
    expected = step_by_step(sampler, recorder, 40, 1)
    recording = recorder.finish()
    assert expected["record_from"] is None and recording.record_from is None
    assert recording.samples.shape == (0, 4, *SHAPE)
    assert torch.equal(recording.activation, expected["activation"])
    assert recording.burned_in[:, 3].any().item() is False


def test_a_recorder_without_samples_keeps_the_rows_only() -> None:
    sampler = small_sampler(burn_in=3)
    recorder = Recorder(4, CPU, block=10)
    expected = step_by_step(sampler, recorder, 25, 1)
    recording = recorder.finish()
    assert recording.record_from == expected["record_from"] == 3
    assert torch.equal(recording.activation, expected["activation"])
    assert recording.samples.shape == (0, 4)
    assert recorder.finish().record_from == 3  # finishing again changes nothing
    with pytest.raises(RuntimeError, match="after finish"):
        recorder.add(sampler.step(), sampler.x)


def test_host_copy_reuses_its_buffers_and_hands_back_what_was_posted() -> None:
    copy = HostCopy(CPU)
    with pytest.raises(RuntimeError, match="nothing posted"):
        copy.wait()
    a, flags = torch.arange(6.0).view(3, 2), torch.tensor([True, False])
    copy.post(a, flags)
    a.add_(100)  # the copy was made at post
    got, got_flags = copy.wait()
    assert got.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert got_flags.tolist() == [True, False]
    buffer = got
    copy.post(a[:2], flags)  # fewer rows: into the same buffer
    shorter, _ = copy.wait()
    assert shorter.tolist() == [[100.0, 101.0], [102.0, 103.0]]
    assert shorter.data_ptr() == buffer.data_ptr()
    copy.post(torch.zeros(4, 2), torch.tensor(1))  # more rows, a 0-dim tensor: new buffers
    longer, scalar = copy.wait()
    assert longer.shape == (4, 2) and scalar.item() == 1 and not copy.posted
