"""Issue 19's goals, measured: do the output units of the bundled LeNet mix, and do their window
means stay informative? One row per setting, the frontier between the two.

Each row samples units `fc3:0-9` of the plain LeNet with `--chains` chains per unit for
`--steps` steps (all units in one batch, grid order, as `ldam sample` lays them out) at the
settings of `ldam sample`, changed by the row's own (T, lambda, replicas, ladder end and
discriminator weight w; with w > 0 `ldam sample` trains D on the bundled digits as it runs).
Each row is an `ldam sample` run in this process, read back from its npz. The columns:

- **mixing**: how many of the 10 units mix: split R-hat < 1.1 and ESS >= 10 per chain over the
  kept draws of the activation (`ldam.sampling.diagnostics.unit_diagnostics`), the issue's bar.
- **R-hat med / max** over the units.
- **classified**: the share of window means (one per chain, the image the dashboard shows) that
  an independent digit classifier labels as the unit's class; **of run means**, the same for
  the mean of all of a chain's kept samples. The classifier is an MLP (784-256-10) trained here
  on the bundled training digits; it is not the sampled network and shares no weights with it
  (its held-out accuracy is printed). Digits and samples are each standardized per image
  (mean 0, std 1 over its pixels), as the page shows them at their own contrast.
- **swap acc**: the mean over units of the frozen ladder's lowest per-pair swap acceptance,
  and **trips/chain**, round trips per chain since the ladder froze.
- **s**: the seconds of the row's sampling.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_explore [--chains 4] [--steps 3000]
        [--rows "T,lambda,replicas,end;..."] [--units 0-9] [--checkpoint PATH]
        [--compare CKPT] [--extra "--prior spectral --prior-decay 1"]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ldam.cli.main import main as ldam_main
from ldam.models.bundled import DEFAULT_CHECKPOINT
from ldam.models.data import load_mnist, normalize_mnist, split_indices
from ldam.models.loading import load_checkpoint

# The rows run when none are given: (T, lambda, replicas, ladder end).
DEFAULT_ROWS = "0.01,0.05,0,0.02;0.01,0.05,7,0.02;0.03,0.05,7,0.02;0.1,0.1,7,0.02"


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Each image `[N, ...]` flattened and shifted and scaled to mean 0 and standard deviation
    1 over its pixels: what the page shows is each grid's own contrast, so the judge should
    not depend on a sample's brightness or contrast (a sample's background sits at 0, a
    normalized digit's at -0.42)."""
    flat = images.flatten(1)
    return (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp(min=1e-8)


def train_classifier(seed: int = 0) -> tuple[nn.Module, float]:
    """An MLP digit classifier on the bundled training digits (normalized as the bundled
    LeNet's checkpoint says) and its accuracy on the held-out digits."""
    loaded = load_checkpoint(DEFAULT_CHECKPOINT)
    mean, std = loaded.normalization or ([0.0], [1.0])
    images, labels = load_mnist()
    digits = standardize(normalize_mnist(images, mean[0], std[0]))
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
    disc_weight: float = 0.0
    mixing: int = 0
    units: int = 0
    rhat: list[float] = field(default_factory=list)
    classified: float = float("nan")
    classified_mean: float = float("nan")
    swap: float | None = None
    trips: float | None = None
    seconds: float = 0.0
    window_means: np.ndarray | None = None
    diagnostics: list[dict] = field(default_factory=list)
    units_per_chain: list[int] = field(default_factory=list)


def sample_row(
    checkpoint: Path,
    units: list[int],
    chains: int,
    steps: int,
    row: Row,
    classifier: nn.Module,
    folder: Path,
    seed: int = 0,
    extra: list[str] | None = None,
) -> Row:
    """Run `ldam sample` (in this process) on `chains` chains of each of `units` of fc3 at the
    row's settings, everything else at its defaults; fill the row's figures from its npz."""
    name = f"{checkpoint.stem}-{row.temperature}-{row.l2_weight}-{row.replicas}-{row.disc_weight}"
    out = folder / f"{name}.npz"
    argv = [
        "sample",
        str(checkpoint),
        "--target",
        f"fc3:{units[0]}-{units[-1]}",
        "--chains",
        str(chains * len(units)),
        "--steps",
        str(steps),
        "--temperature",
        str(row.temperature),
        "--l2-weight",
        str(row.l2_weight),
        "--replicas",
        str(row.replicas),
        "--ladder-end",
        str(row.ladder_end),
        "--disc-weight",
        str(row.disc_weight),
        "--seed",
        str(seed),
        "--out",
        str(out),
        *(extra or []),
    ]
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        code = ldam_main(argv)
    row.seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"ldam {' '.join(argv)} failed with exit {code}")
    with np.load(out) as npz:
        params = json.loads(str(npz["params"]))
        window_means = torch.from_numpy(npz["window_mean"].astype(np.float32))
        run_means = torch.from_numpy(npz["mean"].astype(np.float32))
    diagnostics = row.diagnostics = params["diagnostics"]
    row.units = len(diagnostics)
    for d in diagnostics:
        rhat, ess = d["rhat"], d["ess"]
        if rhat is not None and np.isfinite(rhat):
            row.rhat.append(float(rhat))
        if rhat is not None and rhat < 1.1 and ess is not None and ess >= 10 * len(d["chains"]):
            row.mixing += 1
    row.window_means = window_means.numpy()
    row.units_per_chain = list(params["units_per_chain"])
    truth = torch.tensor(row.units_per_chain)
    with torch.no_grad():
        row.classified = float(
            (classifier(standardize(window_means)).argmax(1) == truth).float().mean()
        )
        row.classified_mean = float(
            (classifier(standardize(run_means)).argmax(1) == truth).float().mean()
        )
    tuning = params["tuning"].values()
    acc = [
        min(a for a in t["swap_acceptance"] if a is not None)
        for t in tuning
        if any(a is not None for a in t.get("swap_acceptance") or [])
    ]
    if acc:
        row.swap = float(np.mean(acc))
        row.trips = sum(t["round_trips"] for t in tuning) / (chains * len(units))
    return row


def table(rows: list[Row], chains: int, steps: int) -> str:
    """The rows as a Markdown table."""
    head = (
        f"| T | lambda | replicas | ladder end | w | mixing (of {rows[0].units}) | R-hat med / max | "
        "classified | of run means | swap acc | trips/chain | s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        med = f"{np.median(r.rhat):.2f} / {max(r.rhat):.2f}" if r.rhat else "-"
        swap = f"{r.swap:.2f}" if r.swap is not None else "-"
        trips = f"{r.trips:.1f}" if r.trips is not None else "-"
        lines.append(
            f"| {r.temperature:g} | {r.l2_weight:g} | {r.replicas} | "
            f"{r.ladder_end:g} | {r.disc_weight:g} | {r.mixing} | {med} | {r.classified:.0%} | "
            f"{r.classified_mean:.0%} | {swap} | {trips} | "
            f"{r.seconds:.0f} |"
        )
    lines.append(f"\n{chains} chains per unit, {steps} steps.")
    return "\n".join(lines)


def compare_table(plain: Row, averaged: Row) -> str:
    """Section 5.2 as numbers: per unit, the plain and the parameter-averaged model's split
    R-hat, modes and Vendi score, and the differences (averaged - plain), with their means."""
    lines = [
        "| unit | R-hat plain / averaged | modes plain / averaged (diff) "
        "| Vendi plain / averaged (diff) |",
        "|---|---|---|---|",
    ]
    other = {d["unit"]: d for d in averaged.diagnostics}
    dm, dv = [], []

    def f(v: float | None, digits: int) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    for a in plain.diagnostics:
        b = other[a["unit"]]
        diff_m = b["modes"] - a["modes"] if None not in (a["modes"], b["modes"]) else None
        diff_v = b["vendi"] - a["vendi"] if None not in (a["vendi"], b["vendi"]) else None
        if diff_m is not None:
            dm.append(diff_m)
        if diff_v is not None:
            dv.append(diff_v)
        lines.append(
            f"| {a['unit']} | {f(a['rhat'], 2)} / {f(b['rhat'], 2)} | "
            f"{a['modes']} / {b['modes']} ({'-' if diff_m is None else f'{diff_m:+d}'}) | "
            f"{f(a['vendi'], 2)} / {f(b['vendi'], 2)} ({'-' if diff_v is None else f'{diff_v:+.2f}'}) |"
        )

    def mean(key: str, row: Row = plain) -> float:
        return float(np.mean([d[key] for d in row.diagnostics if d[key] is not None]))

    def mean_b(key: str) -> float:
        return mean(key, averaged)

    lines.append(
        f"| mean | {mean('rhat'):.2f} / {mean_b('rhat'):.2f} | {mean('modes'):.2f} / "
        f"{mean_b('modes'):.2f} ({np.mean(dm):+.2f}) | {mean('vendi'):.2f} / "
        f"{mean_b('vendi'):.2f} ({np.mean(dv):+.2f} +- {np.std(dv, ddof=1) / np.sqrt(len(dv)):.2f}) |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=4, help="chains per unit")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument(
        "--rows", default=DEFAULT_ROWS, help="T,lambda,replicas,end[,disc weight];..."
    )
    parser.add_argument("--units", default="0-9")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--seed", type=int, default=0, help="the runs' seed")
    parser.add_argument("--save", default=None, help="an npz of every row's window means")
    parser.add_argument(
        "--extra",
        default="",
        help="more ldam sample flags for every row, e.g. '--prior spectral --prior-decay 1'",
    )
    parser.add_argument(
        "--compare",
        default=None,
        help="a second checkpoint (the parameter-averaged LeNet): every row also runs on it, "
        "and a per-unit table of both models' modes and Vendi follows (section 5.2)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lo, hi = (int(v) for v in args.units.split("-"))
    units = list(range(lo, hi + 1))
    classifier, accuracy = train_classifier()
    print(f"classifier: MLP 784-256-10, held-out accuracy {accuracy:.1%}", flush=True)
    rows = []
    compared: list[tuple[Row, Row]] = []
    with tempfile.TemporaryDirectory(prefix="ldam-explore-") as folder:
        for spec in args.rows.split(";"):
            t, lam, k, end, *w = spec.split(",")
            row = Row(float(t), float(lam), int(k), float(end), float(w[0]) if w else 0.0)
            sample_row(
                Path(args.checkpoint),
                units,
                args.chains,
                args.steps,
                row,
                classifier,
                Path(folder),
                args.seed,
                shlex.split(args.extra),
            )
            rows.append(row)
            print(table([row], args.chains, args.steps).splitlines()[2], flush=True)
            if args.compare:
                other = Row(
                    row.temperature, row.l2_weight, row.replicas, row.ladder_end, row.disc_weight
                )
                sample_row(
                    Path(args.compare),
                    units,
                    args.chains,
                    args.steps,
                    other,
                    classifier,
                    Path(folder),
                    args.seed,
                    shlex.split(args.extra),
                )
                compared.append((row, other))
                print(table([other], args.chains, args.steps).splitlines()[2] + " (compare)")
                print(compare_table(row, other), flush=True)
    print(table(rows, args.chains, args.steps))
    for plain, averaged in compared:
        print(
            f"\nSection 5.2 at T {plain.temperature:g}, lambda {plain.l2_weight:g}, "
            f"{plain.replicas} replicas, w {plain.disc_weight:g}:"
        )
        print(compare_table(plain, averaged))
    if args.save:
        np.savez(
            args.save,
            **{f"row{i}": r.window_means for i, r in enumerate(rows)},
            units=np.array(rows[0].units_per_chain),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
