"""`ldam bench`: the sampler's steps/s against a bare forward+backward loop, in one process.

Both loops run on the same network, batch, device and thread count, interleaved in rounds
(bare, sampler, bare, sampler, ...) so that load from other processes on a shared machine
hits both alike; the table reports the median rate of each and the median of the paired
per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Case:
    """One benchmark row: a network, its input shape, the target and the chain count."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    target: str
    chains: int


def _lenet() -> nn.Module:
    from ldam.models.bundled import DEFAULT_CHECKPOINT
    from ldam.models.loading import load_checkpoint

    return load_checkpoint(str(DEFAULT_CHECKPOINT)).module


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        return getattr(torchvision.models, name)(weights=None).eval()

    return build


def cases(which: str) -> list[Case]:
    """The rows asked for: `default`, `gpu` (adds resnet50 at 224x224) or a comma list of names."""
    all_cases = {
        "lenet-1": Case("LeNet 1x28x28, 1 chain", _lenet, (1, 28, 28), "fc3:3", 1),
        "lenet-16": Case("LeNet 1x28x28, 16 chains", _lenet, (1, 28, 28), "fc3:3", 16),
        "lenet-256": Case("LeNet 1x28x28, 256 chains", _lenet, (1, 28, 28), "fc3:3", 256),
        "resnet18-64": Case(
            "resnet18 (random) 3x64x64, 16 chains",
            _torchvision("resnet18"),
            (3, 64, 64),
            "fc:1",
            16,
        ),
        "resnet50-224": Case(
            "resnet50 (random) 3x224x224, 16 chains",
            _torchvision("resnet50"),
            (3, 224, 224),
            "fc:1",
            16,
        ),
    }
    if which == "default":
        names = ["lenet-1", "lenet-16", "lenet-256", "resnet18-64"]
    elif which == "gpu":
        names = ["lenet-16", "lenet-256", "resnet18-64", "resnet50-224"]
    else:
        names = [n.strip() for n in which.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_cases]
    if unknown:
        from ldam.cli.options import UsageError

        raise UsageError(
            f"Unknown benchmark case {unknown[0]!r}; known cases: {', '.join(all_cases)}."
        )
    return [all_cases[n] for n in names]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rate(step: Callable[[], object], n: int, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(n):
        step()
    _sync(device)
    return n / (time.perf_counter() - start)


def run_case(
    case: Case, device: str, rounds: int, seconds_per_round: float
) -> dict[str, float | str]:
    """Measure one case; returns the medians and the paired ratio."""
    from ldam.sampling.energy import ActivationTerm, L2Term
    from ldam.sampling.sampler import Sampler, SamplerConfig
    from ldam.sampling.targets import Target

    model = case.build().to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    target = Target(model, case.target, case.chains)
    layer, unit = case.target.split(":")
    unit_index = int(unit)

    gen = torch.Generator(device=device).manual_seed(0)
    x_bare = torch.randn((case.chains, *case.input_shape), generator=gen, device=device)

    def bare_step() -> None:
        # What any gradient-based visualizer must do per step: forward, backward to the input.
        x = x_bare.detach().requires_grad_(True)
        out = model(x)
        (grad,) = torch.autograd.grad(out[:, unit_index].sum(), x)
        x_bare.add_(grad, alpha=1e-3)

    config = SamplerConfig(
        chains=case.chains,
        temperature=0.01,
        step_size=0.05 if case.input_shape[0] == 1 else 0.01,
        l2_weight=0.1,
        window=50,
        burn_in=0,
        seed=0,
        device=device,
    )
    sampler = Sampler([ActivationTerm(target), L2Term()], case.input_shape, config)

    def sampler_step() -> None:
        sampler.step()

    # Warm up both (allocator, kernels, first-call overheads), then size a round.
    for _ in range(3):
        bare_step()
        sampler_step()
    probe = _rate(bare_step, 3, device)
    n = max(3, int(probe * seconds_per_round))
    bare_rates, sampler_rates, ratios = [], [], []
    for _ in range(rounds):
        b = _rate(bare_step, n, device)
        s = _rate(sampler_step, n, device)
        bare_rates.append(b)
        sampler_rates.append(s)
        ratios.append(s / b)
    return {
        "case": case.name,
        "bare": statistics.median(bare_rates),
        "sampler": statistics.median(sampler_rates),
        "ratio": statistics.median(ratios),
        "steps_per_round": n,
    }


def main(args: argparse.Namespace) -> int:
    """Run the benchmark and print a markdown table."""
    from ldam.sampling.device import pick_device

    device = pick_device(args.device)
    rounds = 3 if args.quick else 7
    seconds = 0.3 if args.quick else 1.5
    chosen = cases(args.cases)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {rounds} rounds"
    )
    print("| case | bare fwd+bwd steps/s | sampler steps/s | ratio (median of paired rounds) |")
    print("| --- | ---: | ---: | ---: |")
    for case in chosen:
        r = run_case(case, device, rounds, seconds)
        print(
            f"| {r['case']} | {r['bare']:,.1f} | {r['sampler']:,.1f} | {r['ratio']:.3f} |",
            flush=True,
        )
    return 0
