"""Issue 19's goals, measured: do the output units of the bundled LeNet mix, and do their window
means stay informative? One row per setting, the frontier between the two.

Each row samples units `fc3:0-9` of the plain LeNet with `--chains` chains per unit for
`--steps` steps (all units in one batch, grid order, as `ldam sample` lays them out) at the
settings of `ldam sample` (`ldam.wire.settings.defaults("sample")`) changed by the row's own
(T, lambda, replicas, ladder end). The columns:

- **mixing**: how many of the 10 units mix: split R-hat < 1.1 and ESS >= 10 per chain over the
  kept draws of the activation (`ldam.sampling.diagnostics.unit_diagnostics`), the issue's bar.
- **R-hat med / max** over the units.
- **classified**: the share of window means (one per chain, the image the dashboard shows) that
  an independent digit classifier labels as the unit's class. The classifier is an MLP
  (784-256-10) trained here on the bundled training digits, normalized as the LeNet expects;
  it is not the sampled network and shares no weights with it (its held-out accuracy is
  printed).
- **swap acc**: the mean over units of the frozen ladder's lowest per-pair swap acceptance,
  and **trips/chain**, round trips per chain since the ladder froze.
- **s**: the seconds of the row's sampling.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_explore [--chains 40] [--steps 3000]
        [--rows "T,lambda,replicas,end;..."] [--units 0-9] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ldam.models.bundled import DEFAULT_CHECKPOINT
from ldam.models.data import load_mnist, normalize_mnist, split_indices
from ldam.models.loading import LoadedModel, load_checkpoint
from ldam.sampling.diagnostics import unit_diagnostics
from ldam.sampling.energy import ActivationTerm, L2Term
from ldam.sampling.sampler import Sampler
from ldam.sampling.settings import SamplerConfig
from ldam.sampling.targets import Target
from ldam.wire.settings import defaults, for_sampler

# The rows run when none are given: (T, lambda, replicas, ladder end).
DEFAULT_ROWS = "0.01,0.05,0,0.02;0.01,0.05,7,0.02;0.03,0.05,7,0.02;0.1,0.1,7,0.02"


def train_classifier(seed: int = 0) -> tuple[nn.Module, float]:
    """An MLP digit classifier on the bundled training digits (normalized as the bundled
    LeNet's checkpoint says) and its accuracy on the held-out digits."""
    loaded = load_checkpoint(DEFAULT_CHECKPOINT)
    mean, std = loaded.normalization or ([0.0], [1.0])
    images, labels = load_mnist()
    digits = normalize_mnist(images, mean[0], std[0]).flatten(1)
    train, test = split_indices()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)
    for _epoch in range(8):
        order = train[torch.randperm(len(train), generator=gen)]
        for start in range(0, len(order), 128):
            idx = order[start : start + 128]
            loss = nn.functional.cross_entropy(mlp(digits[idx]), labels[idx].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    mlp.eval()
    with torch.no_grad():
        accuracy = float((mlp(digits[test]).argmax(1) == labels[test]).float().mean())
    for p in mlp.parameters():
        p.requires_grad_(False)
    return mlp, accuracy


@dataclass
class Row:
    """One setting's figures (see the module docstring)."""

    temperature: float
    l2_weight: float
    replicas: int
    ladder_end: float
    mixing: int = 0
    units: int = 0
    rhat: list[float] = field(default_factory=list)
    classified: float = float("nan")
    swap: float | None = None
    trips: float | None = None
    seconds: float = 0.0
    window_means: np.ndarray | None = None
    units_per_chain: list[int] = field(default_factory=list)


def sample_row(
    loaded: LoadedModel,
    units: list[int],
    chains: int,
    steps: int,
    row: Row,
    classifier: nn.Module,
    seed: int = 0,
) -> Row:
    """Sample `chains` chains of each of `units` of fc3 at the row's settings; fill its figures."""
    settings = for_sampler(defaults("sample"))
    settings.update(
        temperature=row.temperature,
        l2_weight=row.l2_weight,
        replicas=row.replicas,
        ladder_end=row.ladder_end,
        seed=seed,
    )
    n = chains * len(units)
    target = Target(loaded.module, f"fc3:{units[0]}-{units[-1]}", n, batch_size=loaded.batch_size)
    config = SamplerConfig(chains=n, **settings)
    sampler = Sampler([ActivationTerm(target), L2Term()], loaded.input_shape, config)
    activation = np.empty((steps, n), dtype=np.float64)
    started = time.perf_counter()
    for t in range(steps):
        info = sampler.step()
        activation[t] = info.activation.detach().double().numpy()
    row.seconds = time.perf_counter() - started
    burn = sampler.burn_in_step.tolist()
    diagnostics = unit_diagnostics(activation, burn, target.units_per_chain)
    row.units = len(diagnostics)
    for d in diagnostics:
        rhat, ess = d["rhat"], d["ess"]
        if rhat is not None and np.isfinite(rhat):
            row.rhat.append(float(rhat))
        if rhat is not None and rhat < 1.1 and ess is not None and ess >= 10 * len(d["chains"]):
            row.mixing += 1
    means = sampler.window_mean().detach()
    row.window_means = means.numpy()
    row.units_per_chain = list(target.units_per_chain)
    with torch.no_grad():
        labels = classifier(means.flatten(1)).argmax(1)
    row.classified = float((labels == torch.tensor(target.units_per_chain)).float().mean())
    tuning = sampler.unit_tuning()
    acc = [
        min(a for a in t["swap_acceptance"] if a is not None)
        for t in tuning.values()
        if t.get("swap_acceptance")
    ]
    if acc:
        row.swap = float(np.mean(acc))
        row.trips = sum(t["round_trips"] for t in tuning.values()) / n
    return row


def table(rows: list[Row], chains: int, steps: int) -> str:
    """The rows as a Markdown table."""
    head = (
        f"| T | lambda | replicas | ladder end | mixing (of {rows[0].units}) | R-hat med / max | "
        "classified | swap acc | trips/chain | s |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        med = f"{np.median(r.rhat):.2f} / {max(r.rhat):.2f}" if r.rhat else "-"
        swap = f"{r.swap:.2f}" if r.swap is not None else "-"
        trips = f"{r.trips:.1f}" if r.trips is not None else "-"
        lines.append(
            f"| {r.temperature:g} | {r.l2_weight:g} | {r.replicas} | "
            f"{r.ladder_end:g} | {r.mixing} | {med} | {r.classified:.0%} | {swap} | {trips} | "
            f"{r.seconds:.0f} |"
        )
    lines.append(f"\n{chains} chains per unit, {steps} steps.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=40, help="chains per unit")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rows", default=DEFAULT_ROWS, help="T,lambda,replicas,end;...")
    parser.add_argument("--units", default="0-9")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--save", default=None, help="an npz of every row's window means")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lo, hi = (int(v) for v in args.units.split("-"))
    units = list(range(lo, hi + 1))
    classifier, accuracy = train_classifier()
    print(f"classifier: MLP 784-256-10, held-out accuracy {accuracy:.1%}", flush=True)
    loaded = load_checkpoint(Path(args.checkpoint))
    rows = []
    for spec in args.rows.split(";"):
        t, lam, k, end = spec.split(",")
        row = Row(float(t), float(lam), int(k), float(end))
        sample_row(loaded, units, args.chains, args.steps, row, classifier)
        rows.append(row)
        print(table([row], args.chains, args.steps).splitlines()[2], flush=True)
    print(table(rows, args.chains, args.steps))
    if args.save:
        np.savez(
            args.save,
            **{f"row{i}": r.window_means for i, r in enumerate(rows)},
            units=np.array(rows[0].units_per_chain),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
