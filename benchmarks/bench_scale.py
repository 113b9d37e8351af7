"""Issue 18's goals, measured on real `ldam atlas` runs: does every layer show structure at the
atlas's defaults? One table, one row per layer; run it before and after a change (`--extra`).

Each row runs `ldam atlas CKPT --layer L --units ... --out DIR [extra flags]` in this process
(`ldam.cli.main.main`), then reads `DIR/atlas.json` (per unit: `rhat`, `mean_activation`, the
mean of the unit's activation over its chains after burn-in) and each unit's npz
(`window_mean [chains, C, H, W]`: the average of the chain's moving window, the image the atlas
shows, in the network's normalized input space). The columns:

- **grad corr min / med / max**: only where the unit is affine in the input (its gradient is the
  same at three random inputs: LeNet's `conv1`, a channel mean of a convolution of the input).
  Then f(x) = w.x + b, and under the L2 prior the law exp((f(x) - l2/2 |x|^2) / T) is a
  Gaussian with mean w / l2: the closed-form mean direction is w = grad f (a per-unit energy
  scale f / sigma_u changes the length of the mean, not its direction). The figure is the
  Pearson correlation over pixels of each chain's window mean with w; min, median and max over
  the layer's chains (a table per unit follows the main one). The goal is >= 0.9 for every chain.
- **reach p99**: LeNet only: the share of units whose `mean_activation` is above the unit's
  99th percentile over the 2,000 held-out bundled digits (`ldam.models.data.split_indices`),
  normalized as the checkpoint says. The mean after burn-in, not the largest value seen, so
  that one lucky step of noise does not count.
- **hf share**: the share of a window mean's spectral power (mean removed, channels summed)
  at radii above half the Nyquist radius, median over chains; white noise puts the share of
  frequency bins there (shown in brackets: 0.81 at 28x28, 0.80 at 64x64) and a smooth image far less. It
  tells noise from smooth pictures, but a texture made of high frequencies (a channel of an
  inner layer may prefer one) also scores high, so it is not the only test.
- **drive z**: the window mean's activation against white noise of the same norm: z = (f(m) -
  mean f(n)) / std f(n) over 32 Gaussian images n rescaled to |m|; median over chains. Noise
  has z ~ N(0, 1); a window mean that still drives its unit scores far above, whatever its
  frequencies, which is what "structure" means for a texture. (For an affine unit z = sqrt(d)
  cos(m, w): 28 at 784 pixels for a window mean along w.)
- **chain corr**: the Pearson correlation between the window means of two independent chains
  of one unit, mean over pairs, median over units. Independent noise gives ~0 (sd 1/sqrt(d)),
  chains that find the same picture give a high value; a texture found at different shifts
  can score low although it is structure, which is why drive z stands beside it.
- **burned in**: the share of the row's chains that finished burn-in (`burned_in_chains`).
- **R-hat**: the manifest's split R-hat per unit: median and max over the units that have one,
  the share of all units below 1.1, and (in brackets) how many units have one: a unit gets
  none while one of its chains is still burning in at the last step, or with under 40 kept
  draws.
- **s**: the seconds the atlas runs of the row took.

The zoo rows (random weights, small inputs, built by `tests/test_zoo.py`'s `ZOO` helpers and
exported like the zoo test) have no real data, so no reach column. Run:

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_scale [--quick] [--extra "FLAGS"]
        [--layers conv1,conv2,fc1,fc2] [--units-per-layer 16] [--zoo | --no-zoo] [--zoo-units 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ldam.cli.main import main as ldam_main
from ldam.models.bundled import DEFAULT_CHECKPOINT
from ldam.models.data import load_mnist, normalize_mnist, split_indices
from ldam.models.loading import IMAGENET_NORMALIZATION, LoadedModel, load_checkpoint
from ldam.sampling.prior import frequency_radius
from ldam.sampling.prior import high_frequency_share as spectral_share
from ldam.sampling.targets import Target, list_layers

NOISE_DRAWS = 32  # same-norm noise images per window mean for drive z

# ----------------------------------------------------------------------------- the measures


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """The Pearson correlation of two arrays over all their elements (NaN if one is constant)."""
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denominator) if denominator > 0 else float("nan")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of the angle between two arrays as vectors (NaN if one is zero)."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denominator) if denominator > 0 else float("nan")


def direction_correlations(images: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The cosine of each of `images [K, ...]` with `direction [...]`: `[K]`. A cosine, not
    Pearson: the closed-form mean is a direction, DC included. The gradient of a channel mean
    of a first-layer conv is its filter summed over every position, nearly constant inside a
    border of the kernel's width, so Pearson (which subtracts each image's pixel mean) keeps
    only the thin border of that direction and reads a window mean at the exact mean plus
    little noise as 0.88 where its cosine is 0.98."""
    return np.array([cosine(image, direction) for image in images])


def chain_correlation(images: np.ndarray) -> float:
    """The mean Pearson correlation over all pairs of `images [K, ...]` (K >= 2 chains)."""
    k = len(images)
    pairs = [pearson(images[i], images[j]) for i in range(k) for j in range(i + 1, k)]
    return float(np.mean(pairs))


def white_noise_share(height: int, width: int) -> float:
    """The share of the non-zero frequency bins beyond half the Nyquist radius: white noise's
    expected high-frequency share (its power is flat over the bins)."""
    radius = frequency_radius(height, width)
    return float((radius > 0.25).sum() / (radius.numel() - 1))


def high_frequency_share(images: np.ndarray) -> np.ndarray:
    """Per image of `images [K, C, H, W]`: the share of its spectral power (each channel's mean
    removed, channels summed) above half the Nyquist radius, `[K]`; NaN for a constant image
    (`ldam.sampling.prior.high_frequency_share` on an array)."""
    return spectral_share(torch.from_numpy(np.asarray(images))).numpy()


def noise_z(
    activation: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    draws: int = NOISE_DRAWS,
    seed: int = 0,
) -> np.ndarray:
    """Drive z of each of `images [K, C, H, W]`: (f(image) - mean f(noise)) / std f(noise) over
    `draws` Gaussian images rescaled to the image's L2 norm; `activation` maps `[N, C, H, W]`
    to `[N]`. Returns `[K]` (float64)."""
    k = images.shape[0]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((k, draws, *images.shape[1:]), generator=generator)
    norms = images.flatten(1).norm(dim=1).view(k, 1, *[1] * (images.dim() - 1))
    noise = noise / noise.flatten(2).norm(dim=2).view(k, draws, *[1] * (images.dim() - 1)) * norms
    with torch.no_grad():
        own = activation(images).double()
        other = activation(noise.flatten(0, 1)).double().view(k, draws)
    spread = other.std(dim=1).clamp_min(1e-12)
    return ((own - other.mean(dim=1)) / spread).numpy()


def rhat_summary(rhats: list[float | None]) -> tuple[float, float, float]:
    """(median, max, share below 1.1) of split R-hats; an undefined one (None) counts as not
    mixed and is left out of the median and max."""
    finite = [r for r in rhats if r is not None]
    if not rhats:
        return float("nan"), float("nan"), float("nan")
    share = sum(1 for r in finite if r < 1.1) / len(rhats)
    if not finite:
        return float("nan"), float("nan"), share
    return float(np.median(finite)), float(np.max(finite)), share


def spaced_units(count: int, n: int) -> list[int]:
    """`n` units of `count` evenly spaced from the first to the last (all when n >= count)."""
    if n >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / (n - 1)) for i in range(n)}) if n > 1 else [0]


# ----------------------------------------------------------------------------- atlas runs


def contiguous(units: list[int]) -> list[tuple[int, int]]:
    """Sorted `units` as (first, last) runs, one `--units A-B` each."""
    runs: list[tuple[int, int]] = []
    for unit in sorted(units):
        if runs and unit == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], unit)
        else:
            runs.append((unit, unit))
    return runs


def run_atlas(checkpoint: Path, layer: str, units: list[int], out: Path, extra: list[str]) -> float:
    """`ldam atlas` for `units` of `layer` into `out` (one call per contiguous run, adding to
    the same atlas with --resume); returns the seconds taken."""
    started = time.perf_counter()
    for first, last in contiguous(units):
        argv = ["atlas", str(checkpoint), "--layer", layer, "--out", str(out)]
        argv += ["--units", f"{first}-{last}", "--resume", *extra]
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured):
            try:
                code = ldam_main(argv)
            except SystemExit as stopped:  # argparse exits on a bad flag (an --extra it lacks)
                code = stopped.code
        if code != 0:
            raise SystemExit(f"ldam {shlex.join(argv)} failed ({code}):\n{captured.getvalue()}")
    return time.perf_counter() - started


@dataclass
class Row:
    """One layer's figures (NaN where a measure does not apply)."""

    name: str
    units: int
    grad_corr: tuple[float, float, float] = (float("nan"), float("nan"), float("nan"))
    reach: float = float("nan")
    hf: float = float("nan")
    white: float = float("nan")
    drive: float = float("nan")
    chain_corr: float = float("nan")
    rhat: tuple[float, float, float] = (float("nan"), float("nan"), float("nan"))
    rhat_defined: int = 0
    burned_in: float = float("nan")
    seconds: float = float("nan")
    per_unit: list[tuple[int, float, float]] | None = None  # unit, grad corr min, median


def unit_activation(
    loaded: LoadedModel, layer: str, unit: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The unit's activation as the sampler reads it: `[N, C, H, W] -> [N]`, for any N."""

    def activation(x: torch.Tensor) -> torch.Tensor:
        return Target(loaded.module, f"{layer}:{unit}", len(x), batch_size=loaded.batch_size)(x)

    return activation


def unit_direction(loaded: LoadedModel, layer: str, unit: int) -> np.ndarray | None:
    """grad f of the unit `[C, H, W]` if it is the same at three random inputs (the unit is
    affine in the input), else None."""
    x = torch.randn(3, *loaded.input_shape, generator=torch.Generator().manual_seed(7))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(unit_activation(loaded, layer, unit)(x).sum(), x)
    scale = grad.abs().max()
    if not torch.allclose(grad, grad[:1].expand_as(grad), atol=1e-5 * float(scale), rtol=1e-4):
        return None
    return grad[0].numpy()


def real_p99(loaded: LoadedModel, layer: str, unit: int, digits: torch.Tensor) -> float:
    """The unit's 99th percentile over `digits [N, 1, 28, 28]` (normalized)."""
    with torch.no_grad():
        return float(np.percentile(unit_activation(loaded, layer, unit)(digits).numpy(), 99))


def measure_layer(
    name: str,
    checkpoint: Path,
    loaded: LoadedModel,
    layer: str,
    units: list[int],
    out: Path,
    extra: list[str],
    digits: torch.Tensor | None = None,
) -> Row:
    """Run the atlas for `units` of `layer` and compute the row (`digits`: real inputs for the
    reach column, or None)."""
    seconds = run_atlas(checkpoint, layer, units, out, extra)
    manifest = json.loads((out / "atlas.json").read_text())
    entries = {e["unit"]: e for e in manifest["units"]}
    row = Row(name, len(units), seconds=seconds)
    row.rhat = rhat_summary([entries[u]["rhat"] for u in units])
    row.rhat_defined = sum(1 for u in units if entries[u]["rhat"] is not None)
    chains = [len(entries[u]["burn_in_steps"]) for u in units]
    row.burned_in = sum(entries[u]["burned_in_chains"] for u in units) / sum(chains)
    hf, drive, chain, corr, reached = [], [], [], [], []
    per_unit = []
    for unit in units:
        with np.load(out / entries[unit]["npz"]) as npz:
            means = npz["window_mean"].astype(np.float32)
        row.white = white_noise_share(*means.shape[-2:])
        hf.append(high_frequency_share(means))
        drive.append(
            noise_z(unit_activation(loaded, layer, unit), torch.from_numpy(means), seed=unit)
        )
        chain.append(chain_correlation(means))
        direction = unit_direction(loaded, layer, unit)
        if direction is not None:
            c = direction_correlations(means, direction)
            corr.append(c)
            per_unit.append((unit, float(c.min()), float(np.median(c))))
        if digits is not None:
            reached.append(entries[unit]["mean_activation"] > real_p99(loaded, layer, unit, digits))
    row.hf = float(np.nanmedian(np.concatenate(hf)))
    row.drive = float(np.median(np.concatenate(drive)))
    row.chain_corr = float(np.median(chain))
    if corr:
        every = np.concatenate(corr)
        row.grad_corr = (float(every.min()), float(np.median(every)), float(every.max()))
        row.per_unit = per_unit
    if reached:
        row.reach = sum(reached) / len(reached)
    return row


# ----------------------------------------------------------------------------- the networks


def lenet_rows(layers: list[str], per_layer: int, out: Path, extra: list[str]) -> list[Row]:
    """The bundled LeNet's rows: `per_layer` evenly spaced units of each layer."""
    loaded = load_checkpoint(DEFAULT_CHECKPOINT)
    images, _labels = load_mnist()
    mean, std = loaded.normalization or ([0.0], [1.0])
    digits = normalize_mnist(images[split_indices()[1]], mean[0], std[0])
    rows = []
    for layer in layers:
        count = next(
            info.units
            for info in list_layers(loaded.module, loaded.input_shape, loaded.batch_size)
            if info.name == layer
        )
        units = spaced_units(count, per_layer)
        row = measure_layer(
            f"LeNet {layer}", DEFAULT_CHECKPOINT, loaded, layer, units, out / layer, extra, digits
        )
        rows.append(row)
    return rows


# One inner layer of each zoo family: (ZOO name, input size, layer). The ViT runs at 64x64
# (16 patches and the class token) instead of its native 224 to keep 8 chains x 500 steps
# within a minute on this CPU.
ZOO_LAYERS = (
    ("torchvision-resnet18", 32, "layer3.0.conv1"),
    ("torchvision-vit_ti_16", 64, "encoder.layers.encoder_layer_5.mlp.0"),
    ("timm-convnext_atto", 32, "stages.0.blocks.0.mlp.fc1"),
)


def zoo_rows(units: int, out: Path, extra: list[str]) -> list[Row]:
    """One row per `ZOO_LAYERS` entry: the network built by `tests/test_zoo.py`'s helpers with
    random weights (seed 0), exported with a dynamic batch and ImageNet's normalization."""
    from ldam.models.saving import export_checkpoint
    from tests.test_zoo import ZOO

    architectures = {arch.name: arch for arch in ZOO}
    mean, std = IMAGENET_NORMALIZATION
    rows = []
    for name, size, layer in ZOO_LAYERS:
        torch.manual_seed(0)
        eager = architectures[name].build(size).eval()
        for parameter in eager.parameters():
            parameter.requires_grad_(False)
        path = export_checkpoint(
            eager,
            out / f"{name}.pt2",
            (3, size, size),
            {"normalization": {"mean": mean, "std": std}},
        )
        loaded = load_checkpoint(path)
        row = measure_layer(
            f"{name} {layer} ({size}px)", path, loaded, layer, list(range(units)), out / name, extra
        )
        rows.append(row)
        path.unlink()  # up to tens of MB each
    return rows


# ----------------------------------------------------------------------------- the table


def _f(value: float, digits: int = 2) -> str:
    return "-" if np.isnan(value) else f"{value:.{digits}f}"


def table(rows: list[Row]) -> str:
    """The markdown table of `rows`, then a per-unit table for the layers with a direction."""
    header = (
        "| layer | units | grad corr min / med / max | reach p99 | hf share (white) | drive z | "
        "chain corr | burned in | R-hat med / max / <1.1 (defined) | s |"
    )
    lines = [header, "|" + " --- |" * 10]
    for r in rows:
        corr = "-" if np.isnan(r.grad_corr[0]) else " / ".join(_f(c) for c in r.grad_corr)
        reach = "-" if np.isnan(r.reach) else f"{r.reach:.0%}"
        rhat = f"{_f(r.rhat[0])} / {_f(r.rhat[1])} / {r.rhat[2]:.0%} ({r.rhat_defined}/{r.units})"
        lines.append(
            f"| {r.name} | {r.units} | {corr} | {reach} | {_f(r.hf)} ({_f(r.white)}) | "
            f"{_f(r.drive, 1)} | {_f(r.chain_corr)} | {r.burned_in:.0%} | {rhat} | {r.seconds:.0f} |"
        )
    for r in rows:
        if r.per_unit:
            lines += ["", f"{r.name}, per unit: grad corr over its chains", ""]
            lines += ["| unit | min | median |", "| --- | --- | --- |"]
            lines += [f"| {u} | {_f(lo)} | {_f(mid)} |" for u, lo, mid in r.per_unit]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--layers", default="conv1,conv2,fc1,fc2", help="LeNet layers ('' for none)"
    )
    parser.add_argument("--units-per-layer", type=int, default=16)
    parser.add_argument("--zoo", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--zoo-units", type=int, default=8)
    parser.add_argument(
        "--extra", default="", help='extra ldam atlas flags, e.g. "--temperature 0.001"'
    )
    parser.add_argument("--quick", action="store_true", help="4 units, 2 per zoo net, 200 steps")
    parser.add_argument("--out", help="keep the atlases in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    per_layer, zoo_units, extra = args.units_per_layer, args.zoo_units, shlex.split(args.extra)
    if args.quick:
        # Before --extra: argparse keeps the last value, so --extra "--steps N" still wins.
        per_layer, zoo_units, extra = (
            min(per_layer, 4),
            min(zoo_units, 2),
            ["--steps", "200", *extra],
        )
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    layers = [layer for layer in args.layers.split(",") if layer]
    print(
        f"ldam atlas at its defaults{' + ' + shlex.join(extra) if extra else ''}, 8 chains per unit"
    )
    started = time.perf_counter()
    try:
        rows = lenet_rows(layers, per_layer, out, extra)
        if args.zoo:
            rows += zoo_rows(zoo_units, out, extra)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    print(table(rows))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
