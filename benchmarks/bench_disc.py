"""The sampler's speed with the discriminator training in the background, against without.

Three modes on the same network, chains, settings and seed, interleaved in rounds (A, B, C, A,
B, C, ...) so that load from other processes on a shared machine hits them alike:

    A  w = 0, no discriminator term evaluated (plain LDAM), default thread count
    B  w > 0, D frozen (its forward/backward runs inside the sampler's energy), default threads
    C  w > 0, D training online in its own thread (`run_with_discriminator`)

B -> C is the issue's comparison (same settings, with vs without D training; goal C/B >= 0.7
on a 2-core CPU). The table also says where the time goes: one D training step, one sampler
step in each mode, and D's forward/backward inside the energy. Run:

    .venv/bin/python -m benchmarks.bench_disc [--chains 16] [--steps 150] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ldam.models.discriminator import make_discriminator
from ldam.sampling.discriminator import (
    DiscriminatorTrainer,
    real_images_for,
    run_with_discriminator,
)
from ldam.sampling.energy import ActivationTerm, DiscriminatorTerm, L2Term, autograd_value_and_grad
from ldam.sampling.sampler import Sampler, SamplerConfig

MNIST_NORM = ([0.1307], [0.3081])


def _lenet() -> tuple[nn.Module, str]:
    """The bundled LeNet checkpoint, or a seeded random LeNet while it is not there yet."""
    try:
        from ldam.models.loading import load_default_pair

        return load_default_pair()[0].module, "LeNet (bundled checkpoint)"
    except Exception:
        from ldam.models.lenet import LeNet

        torch.manual_seed(0)
        return LeNet().eval().requires_grad_(False), "LeNet (random weights)"


def _time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of one call."""
    fn()  # warm caches and lazy init
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    """Print the markdown table of the three modes and the time breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=150, help="sampler steps per mode per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--disc-weight", type=float, default=0.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the sampler in modes A and B (default: torch's)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    net, net_name = _lenet()
    net = net.to(device)
    units = (torch.arange(args.chains) % 10).to(device)
    trainer = DiscriminatorTrainer(
        make_discriminator((1, 28, 28)),
        real_images_for((1, 28, 28), MNIST_NORM, None),
        max_age=20,
        device=device,
    )

    def sampler(weight: float) -> Sampler:
        target = ActivationTerm(lambda x: net(x).gather(1, units[:, None]).squeeze(1))
        terms = [target, L2Term(), DiscriminatorTerm(trainer.current)]
        config = SamplerConfig(chains=args.chains, disc_weight=weight, seed=0, burn_in=0)
        return Sampler(terms, (1, 28, 28), config, device=device)

    modes = {"A": sampler(0.0), "B": sampler(args.disc_weight), "C": sampler(args.disc_weight)}
    trainer.warm_up(modes["C"].x.clone(), 50)

    def run_plain(s: Sampler) -> None:
        for _ in range(args.steps):
            s.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rates: dict[str, list[float]] = {name: [] for name in modes}
    d_steps = d_step_ms = 0.0
    for _ in range(args.rounds):
        for name, s in modes.items():
            start = time.perf_counter()
            if name == "C":
                before = trainer.steps
                result = run_with_discriminator(s, trainer, args.steps, train=True)
                d_steps += trainer.steps - before
                d_step_ms = result["step_ms"]
            else:
                run_plain(s)
            rates[name].append(args.steps / (time.perf_counter() - start))
    rate = {name: statistics.median(r) for name, r in rates.items()}
    ratio = statistics.median(c / b for b, c in zip(rates["B"], rates["C"], strict=True))

    # Where the time goes, each piece alone in this thread.
    x = modes["B"].x.clone()
    d_term = DiscriminatorTerm(trainer.current)
    target = ActivationTerm(lambda x: net(x).gather(1, units[:, None]).squeeze(1))
    d_grad = _time(lambda: autograd_value_and_grad(d_term, x), 20)
    act_grad = _time(lambda: autograd_value_and_grad(target, x), 20)
    pool = x.repeat((trainer.batch_size // 2 + args.chains - 1) // args.chains, 1, 1, 1)
    d_train = _time(lambda: trainer.process(pool, torch.full((len(pool),), 10**6)), 10)

    print(
        f"Discriminator benchmark: {net_name}, {args.chains} chains, w = {args.disc_weight}, "
        f"{args.steps} steps x {args.rounds} rounds, device {device}, "
        f"torch threads {torch.get_num_threads()} (D's thread: {trainer.threads})\n"
    )
    print("| mode | sampler steps/s | ms/step |")
    print("| --- | ---: | ---: |")
    labels = {
        "A": "A: w = 0 (no D)",
        "B": f"B: w = {args.disc_weight}, D frozen",
        "C": f"C: w = {args.disc_weight}, D training in background",
    }
    for name in modes:
        print(f"| {labels[name]} | {rate[name]:.1f} | {1e3 / rate[name]:.2f} |")
    print(
        f"\nC/B (with D training vs without, same settings): **{ratio:.2f}** (goal >= 0.7); "
        f"C/A: {rate['C'] / rate['A']:.2f}"
    )
    print(
        f"D steps during C: {d_steps:.0f} ({d_steps / (args.rounds * args.steps):.2f} per sampler "
        f"step), {d_step_ms:.1f} ms each in the background thread\n"
    )
    print("| piece (alone, this thread) | ms |")
    print("| --- | ---: |")
    print(
        f"| D forward+backward to the input, {args.chains} chains (inside the energy) | {1e3 * d_grad:.2f} |"
    )
    print(f"| classifier target forward+backward, {args.chains} chains | {1e3 * act_grad:.2f} |")
    print(
        f"| one D training step (score chains + batch of {trainer.batch_size} + publish) | {1e3 * d_train:.2f} |"
    )


if __name__ == "__main__":
    main()
