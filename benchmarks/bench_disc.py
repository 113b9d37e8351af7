"""The sampler's speed with the discriminator training in the background, against without.

Modes on the same network, chains, settings and seed, interleaved in rounds (A, B, C..., A, B,
C..., ...) so that load from other processes on a shared machine hits them alike:

    A  w = 0, no discriminator term evaluated (plain LDAM), default thread count
    B  w > 0, D frozen (its forward/backward runs inside the sampler's energy), default threads
    C  w > 0, D training online in its own thread, one mode per duty cycle in `--duty` (1 = no
       cap; the default compares no cap with `DiscriminatorTrainer`'s default cap)

B -> C is the issue's comparison (same settings, with vs without D training; goal C/B >= 0.7
on a 2-core CPU). Each C mode has its own D and chains, warmed up alike, and in each round runs
for the wall time B took in that round (the loop of `run_with_discriminator`: start D's thread,
step and offer, stop), so that after the rounds every D has trained for the same wall time.
Then each D's quality: its accuracy and mean sigmoid(D(x)) on 2,000 held-out real digits
(never trained on) and on its own chains as they are at the end. The table also says where the
time goes: one D training step, one sampler step in each mode, and D's forward/backward inside
the energy. Run:

    .venv/bin/python -m benchmarks.bench_disc [--chains 16] [--steps 150] [--rounds 3] [--duty 1 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ldam.models.data import load_mnist, normalize_mnist, split_indices
from ldam.models.discriminator import make_discriminator
from ldam.sampling.discriminator import DiscriminatorTrainer, real_images_for
from ldam.sampling.discriminator.trainer import DEFAULT_DUTY_CYCLE
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


@dataclass
class Background:
    """One C mode: D training in the background at `duty`, with its own D and chains."""

    duty: float
    trainer: DiscriminatorTrainer
    sampler: Sampler
    rates: list[float] = field(default_factory=list)  # sampler steps/s, one per round
    busy: list[float] = field(default_factory=list)  # D's busy fraction, one per round
    d_rates: list[float] = field(default_factory=list)  # D's steps/s, one per round
    d_steps: int = 0  # D's online steps over all rounds
    seconds: float = 0.0  # wall time over all rounds

    def run_for(self, seconds: float) -> None:
        """Sample with D training for `seconds` of wall time: `run_with_discriminator`'s loop
        (start D's thread, step and offer every step, stop), timed instead of counted."""
        trainer, sampler = self.trainer, self.sampler
        before, steps = trainer.steps, 0
        start = time.perf_counter()
        trainer.start()
        try:
            while time.perf_counter() - start < seconds:
                sampler.step()
                trainer.offer(sampler.x, sampler.age)
                steps += 1
        finally:
            elapsed = time.perf_counter() - start
            trainer.stop()  # also gives this thread its cores back
        self.rates.append(steps / elapsed)
        self.busy.append(trainer.metrics()["busy_fraction"])
        self.d_rates.append((trainer.steps - before) / elapsed)
        self.d_steps += trainer.steps - before
        self.seconds += elapsed


def _quality(
    d: nn.Module, real: torch.Tensor, chains: torch.Tensor, every: torch.Tensor
) -> dict[str, float]:
    """D's accuracy (logit > 0 means real) and mean sigmoid(D(x)) on `real` and on `chains`
    (its own mode's), and its accuracy on `every` (all modes' chains: the same test for all)."""
    with torch.no_grad():
        on_real, on_chains, on_every = d(real), d(chains), d(every)
    return {
        "acc_real": float((on_real > 0).float().mean()),
        "acc_chains": float((on_chains < 0).float().mean()),
        "acc_every": float((on_every < 0).float().mean()),
        "mean_real": float(torch.sigmoid(on_real).mean()),
        "mean_chains": float(torch.sigmoid(on_chains).mean()),
    }


def _duty_name(duty: float) -> str:
    return "1 (no cap)" if duty == 1.0 else f"{duty:g}"


def main(argv: list[str] | None = None) -> None:
    """Print the markdown table of the modes (speed and D's quality) and the time breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=150, help="sampler steps of A and B per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--disc-weight", type=float, default=0.5)
    parser.add_argument(
        "--duty",
        type=float,
        nargs="+",
        default=[1.0, DEFAULT_DUTY_CYCLE],
        help=f"duty cycles of D's thread, one C mode each (default: 1 and {DEFAULT_DUTY_CYCLE})",
    )
    parser.add_argument(
        "--show-rounds", action="store_true", help="also print every round's steps/s per mode"
    )
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
    real = real_images_for((1, 28, 28), MNIST_NORM, None)  # the training split
    images, _ = load_mnist()
    held_out = normalize_mnist(images[split_indices()[1]], MNIST_NORM[0][0], MNIST_NORM[1][0])

    def trainer(duty: float) -> DiscriminatorTrainer:
        torch.manual_seed(0)  # every D starts from the same weights
        module = make_discriminator((1, 28, 28))
        return DiscriminatorTrainer(module, real, max_age=20, device=device, duty_cycle=duty)

    def sampler(weight: float, d: DiscriminatorTrainer) -> Sampler:
        target = ActivationTerm(lambda x: net(x).gather(1, units[:, None]).squeeze(1))
        terms = [target, L2Term(), DiscriminatorTerm(d.current)]
        config = SamplerConfig(chains=args.chains, disc_weight=weight, seed=0, burn_in=0)
        return Sampler(terms, (1, 28, 28), config, device=device)

    backgrounds = []
    for duty in args.duty:
        d = trainer(duty)
        backgrounds.append(Background(duty, d, sampler(args.disc_weight, d)))
    for bg in backgrounds:  # the same warm-up for each: same weights, seed and chains
        bg.trainer.warm_up(bg.sampler.x.clone(), 50)
    frozen = backgrounds[0].trainer  # B reads it, but never while it trains
    plain = {"A": sampler(0.0, frozen), "B": sampler(args.disc_weight, frozen)}

    def run_plain(s: Sampler) -> None:
        for _ in range(args.steps):
            s.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rates: dict[str, list[float]] = {name: [] for name in plain}
    for round_ in range(args.rounds):
        for name, s in plain.items():
            start = time.perf_counter()
            run_plain(s)
            rates[name].append(args.steps / (time.perf_counter() - start))
        # Each as long as B took this round, in an order that turns round by round, so that
        # no duty always runs last (when other processes' load on the machine built up).
        shift = round_ % len(backgrounds)
        for bg in backgrounds[shift:] + backgrounds[:shift]:
            bg.run_for(args.steps / rates["B"][-1])
    rate = {name: statistics.median(r) for name, r in rates.items()}
    if args.show_rounds:
        for i in range(args.rounds):
            row = [f"{name} {r[i]:.1f}" for name, r in rates.items()]
            row += [
                f"C@{bg.duty:g} {bg.rates[i]:.1f} (busy {bg.busy[i]:.2f})" for bg in backgrounds
            ]
            print(f"round {i + 1}: " + ", ".join(row))

    # Where the time goes, each piece alone in this thread.
    x = plain["B"].x.clone()
    d_term = DiscriminatorTerm(frozen.current)
    target = ActivationTerm(lambda x: net(x).gather(1, units[:, None]).squeeze(1))
    d_grad = _time(lambda: autograd_value_and_grad(d_term, x), 20)
    act_grad = _time(lambda: autograd_value_and_grad(target, x), 20)
    spare = trainer(1.0)  # a copy to time, so the compared Ds stay as the rounds left them
    spare.warm_up(x, 1)
    pool = x.repeat((spare.batch_size // 2 + args.chains - 1) // args.chains, 1, 1, 1)
    d_train = _time(lambda: spare.process(pool, torch.full((len(pool),), 10**6)), 10)

    print(
        f"Discriminator benchmark: {net_name}, {args.chains} chains, w = {args.disc_weight}, "
        f"{args.steps} steps x {args.rounds} rounds, device {device}, "
        f"torch threads {torch.get_num_threads()} (D's thread: {frozen.threads})\n"
    )
    print(
        "| mode | sampler steps/s | ms/step | C/B | D steps/s | D busy | D acc, held-out real "
        "| D acc, own chains | D acc, every C's chains | mean D, held-out real "
        "| mean D, own chains |"
    )
    print("| --- |" + " ---: |" * 10)
    blank = " | ".join([""] * 8)
    print(f"| A: w = 0 (no D) | {rate['A']:.1f} | {1e3 / rate['A']:.2f} | {blank} |")
    print(
        f"| B: w = {args.disc_weight}, D frozen | {rate['B']:.1f} | {1e3 / rate['B']:.2f} | {blank} |"
    )
    every = torch.cat([bg.sampler.x for bg in backgrounds])
    for bg in backgrounds:
        r = statistics.median(bg.rates)
        ratio = statistics.median(c / b for b, c in zip(rates["B"], bg.rates, strict=True))
        q = _quality(bg.trainer.current(), held_out.to(device), bg.sampler.x, every)
        print(
            f"| C: w = {args.disc_weight}, D training, duty {_duty_name(bg.duty)} | {r:.1f} "
            f"| {1e3 / r:.2f} | **{ratio:.2f}** | {statistics.median(bg.d_rates):.1f} "
            f"| {statistics.median(bg.busy):.2f} | {q['acc_real']:.3f} | {q['acc_chains']:.3f} "
            f"| {q['acc_every']:.3f} | {q['mean_real']:.3f} | {q['mean_chains']:.3f} |"
        )
    print(
        f"\nC/B: median over rounds of C's rate / B's in the same round (goal >= 0.7). D steps/s "
        "and D busy (the fraction of wall time D's thread worked): medians over rounds. Each C "
        f"mode ran {backgrounds[0].seconds:.1f} s in all (D steps in all: "
        + ", ".join(f"{bg.d_steps} at duty {bg.duty:g}" for bg in backgrounds)
        + f"); D's quality is measured after that, on {len(held_out)} held-out digits, on "
        f"its own mode's {args.chains} chains and on all {len(every)} C chains.\n"
    )
    print("| piece (alone, this thread) | ms |")
    print("| --- | ---: |")
    print(
        f"| D forward+backward to the input, {args.chains} chains (inside the energy) | {1e3 * d_grad:.2f} |"
    )
    print(f"| classifier target forward+backward, {args.chains} chains | {1e3 * act_grad:.2f} |")
    print(
        f"| one D training step (score chains + batch of {spare.batch_size} + publish) | {1e3 * d_train:.2f} |"
    )


if __name__ == "__main__":
    main()
