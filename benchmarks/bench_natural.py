"""Issue 20's goals, measured: does the spectral prior (`ldam.sampling.prior`) give window means
with a photograph's spectrum while the unit stays driven, does its preconditioner mix every
frequency band alike, and what does its filtering cost per step? Three parts (`--part`), a
markdown report on stdout, PNG grids in `--out` (default docs/images).

**hf** runs real `ldam atlas` in this process (like `bench_scale`) with `--prior white` and with
`--prior spectral --prior-decay A` for A = 0.5, 1, 1.5, at the atlas's defaults (T 0.01,
lambda 0.05, the unit's own energy scale, the step adapted in burn-in, no replicas): the sample
command's defaults (T 0.1, lambda 0.1, 6 replicas) cost 7 rows per chain, too slow for 224 px
networks on one CPU thread. The first network is a real trained one and runs at the sample
command's defaults (`--temperature 0.1 --l2-weight 0.1 --replicas 6`, 4 chains, 1200 steps):
the photo net of `tests.photos`, a small colour CNN trained here to tell which of five
photographs a 48 px patch comes from (its logit `output:0`, astronaut, and the inner channel
`conv2:5`). The others have random weights (seed 0) and ImageNet's
normalization: a torchvision resnet18 at 224 px (an inner unit `layer3.0.conv1:3` and the logit
`fc:0`; 2 chains and a short schedule `--steps 120 --adapt-steps 30 --burn-in 40`, so each window
mean averages 80 steps) and the same resnet18 at 32 px as `bench_scale`'s zoo row builds it
(`layer3.0.conv1:3`, 8 chains, the atlas's 500 steps). Columns, one row per (unit, prior):

- **hf share**: the share of a window mean's spectral power above half the Nyquist radius
  (`ldam.sampling.prior.high_frequency_share`: each channel's mean removed, channels summed),
  median over the chains. The reference rows give the same figure for random 64 px and 224 px
  crops of scikit-image's colour photographs (astronaut, coffee, chelsea, rocket; 8 crops each,
  normalized like the network's inputs) and for white Gaussian noise. The issue's bar is <= 0.35
  for the spectral prior.
- **drive z (prior)**: the window mean's activation against 16 draws of the SAME prior
  (`x = L xi`, the chain's alpha; white noise for the white prior) rescaled to the window mean's
  norm: z = (f(m) - mean f(n)) / std f(n), median over chains. Noise scores ~N(0, 1); a window
  mean that still drives its unit scores far above.
- **drive z (white)**: the same against white Gaussian noise of the same norm (`bench_scale`'s
  drive z).
- **mean act**: the atlas's `mean_activation`, the unit's activation averaged over its chains
  after burn-in (the white prior's row is the one to compare with; a ratio would flip sign
  where the white prior's mean is negative, as on the photo net's logit).
- **s**: the seconds of the row's atlas run.

**iat** samples the linear model f(x) = w.x (w ~ N(0, I), 3x32x32) under the spectral prior
alpha 1 at T 0.1, lambda 1, 64 chains, in two ways: (a) ldam's `Sampler` with `prior="spectral"`,
absolute energy scale, the fixed step beta = 0.5 (a quarter of the bound 2 / lambda on the
preconditioned chain), and (b) plain Langevin in pixel space on the same target,
x <- x + beta (w - lambda Sigma^-1 x) + sqrt(2 beta T) xi, with Sigma^-1 x = L^-T L^-1 x
(`SpectralBasis.analyze`, then S^-1 C^-T), at a quarter of its stability bound,
beta = 0.25 * 2 / (lambda * max eig Sigma^-1) (max eig = max 1/s^2 over the plane times the
largest eigenvalue of (C C^T)^-1). So both chains move their stiffest mode alike (an AR(1)
coefficient 0.5). After 200 steps of burn-in each chain keeps every step. Per band of |f|
([0, 1/16), [1/16, 1/8), [1/8, 1/4), [1/4, 0.71]) the **IAT** is the integrated autocorrelation
time, in steps, of the real parts of the rfft coefficients of x (channels separately), 48 random
coefficients per band (DC and the zero real parts excluded): tau = M n / ESS with
`ldam.sampling.diagnostics.effective_sample_size` over the 64 chains (Stan's split-chain ESS,
Geyer's initial monotone sequence), median over the band's coefficients. **max/min** is the
largest band median over the smallest (goal with preconditioning: <= 2). Each RGB channel
mixes the three colour components, whose plain-Langevin rates differ by C C^T's condition
number at every frequency, so two more rows take the same bands of the image projected on
C C^T's top eigenvector (48 coefficients per band), where the modes differ by frequency alone. A tau above n / 20
(n kept steps) is a lower bound: the run is too short to see the band decorrelate. Chain (b)
starts from exact draws of the target, so its slow bands need no burn-in.

**cost** times `Sampler.step` on a random-weight resnet18 at 224 px (the logit `fc:0`), 16
chains, the fixed step 0.05, no replicas, absolute scale: prior white, spectral (alpha 1), and
spectral with `transforms="on"`, after 2 warm-up steps each, interleaved over 3 rounds of 3
steps (median of the per-round seconds per step); the ratio is spectral / white. Then the filter
alone: `synthesize` + `adjoint` on [16, 3, 224, 224] float32, median of 5.

**pictures**: `natural_<net>.png`, the window means in the input view (de-normalized, clipped to
[0, 1], `display_grid(..., "input", normalization)`): a row per unit, the priors left to right
(white, alpha 0.5, 1, 1.5), up to 4 chains each; `natural_photos.png`: the 64 px crops. Run:

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_natural [--part hf|iat|cost|all]
        [--quick] [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_scale import noise_z, run_atlas, unit_activation
from ldam.models.loading import IMAGENET_NORMALIZATION, LoadedModel, load_checkpoint
from ldam.sampling.diagnostics import effective_sample_size
from ldam.sampling.energy import ActivationTerm, L2Term
from ldam.sampling.images import display_grid, to_pil
from ldam.sampling.prior import SpectralBasis, amplitude, colour_matrix, high_frequency_share
from ldam.sampling.sampler import Sampler, SamplerConfig
from ldam.sampling.targets import Target

DECAYS = (0.5, 1.0, 1.5)
PRIORS = ("white", *(f"spectral {a:g}" for a in DECAYS))
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CROPS_PER_PHOTO = 8
DRAWS = 16  # noise or prior draws per window mean for drive z
SHOWN_CHAINS = 4
BANDS = ((0.0, 1 / 16), (1 / 16, 1 / 8), (1 / 8, 1 / 4), (1 / 4, 0.71))

# ----------------------------------------------------------------------------- part 1: hf


@dataclass
class Network:
    """One network of part 1: a zoo architecture at an input size, its units, its atlas
    schedule (extra flags) and its label."""

    label: str
    size: int
    units: tuple[tuple[str, int], ...]
    schedule: tuple[str, ...]
    trained: bool = False  # the photo net (`tests.photos`), else the random-weight resnet18


@dataclass
class HfRow:
    """One (unit, prior) row of the hf table."""

    network: str
    unit: str
    prior: str
    hf: float
    drive_prior: float
    drive_white: float
    activation: float
    seconds: float


def prior_flags(prior: str) -> list[str]:
    """The `ldam atlas` flags for a `PRIORS` entry."""
    if prior == "white":
        return ["--prior", "white"]
    return ["--prior", "spectral", "--prior-decay", prior.split()[1]]


def prior_draws(prior: str, like: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """`draws` images of the prior per image of `like [K, C, H, W]`, each rescaled to that image's
    norm: `[K * draws, C, H, W]` (white noise for the white prior, `L xi` for a spectral one)."""
    k, shape = like.shape[0], tuple(like.shape[1:])
    generator = torch.Generator().manual_seed(seed)
    xi = torch.randn((k * draws, *shape), generator=generator)
    x = xi if prior == "white" else SpectralBasis(shape, float(prior.split()[1])).synthesize(xi)
    x = x.reshape(k, draws, -1)
    x = x / x.norm(dim=2, keepdim=True) * like.flatten(1).norm(dim=1).view(k, 1, 1)
    return x.view(k * draws, *shape)


def prior_z(
    activation: Callable[[torch.Tensor], torch.Tensor], prior: str, means: torch.Tensor, seed: int
) -> np.ndarray:
    """Drive z of each window mean of `means [K, C, H, W]` against draws of `prior` of the same
    norm: `[K]`."""
    k = means.shape[0]
    with torch.no_grad():
        own = activation(means).double()
        other = activation(prior_draws(prior, means, DRAWS, seed)).double().view(k, DRAWS)
    return ((own - other.mean(1)) / other.std(1).clamp_min(1e-12)).numpy()


def export_resnet18(size: int, folder: Path) -> Path:
    """The zoo's random-weight torchvision resnet18 (seed 0) exported at `size` px with
    ImageNet's normalization, as `bench_scale.zoo_rows` exports it."""
    from ldam.models.saving import export_checkpoint
    from tests.test_zoo import ZOO

    architecture = next(arch for arch in ZOO if arch.name == "torchvision-resnet18")
    torch.manual_seed(0)
    eager = architecture.build(size).eval()
    for parameter in eager.parameters():
        parameter.requires_grad_(False)
    mean, std = IMAGENET_NORMALIZATION
    return export_checkpoint(
        eager,
        folder / f"resnet18_{size}.pt2",
        (3, size, size),
        {"normalization": {"mean": mean, "std": std}},
    )


def export_photo(folder: Path) -> Path:
    """The photo net of `tests.photos` (a small colour CNN trained, here, to tell which of
    five photographs a 48 px patch comes from; held-out accuracy ~0.99), exported with its
    patches' normalization: a real trained colour network."""
    from tests.photos import export_photo_net, train_photo_net

    return export_photo_net(folder / "photo_48.pt2", train_photo_net(48, seed=0), 48)


def measure_network(
    network: Network, folder: Path
) -> tuple[list[HfRow], dict[tuple[str, int, str], np.ndarray], LoadedModel]:
    """Run the atlas for every unit and prior of `network`; the rows and each (layer, unit,
    prior)'s window means `[chains, C, H, W]`."""
    path = export_photo(folder) if network.trained else export_resnet18(network.size, folder)
    loaded = load_checkpoint(path)
    rows: list[HfRow] = []
    means: dict[tuple[str, int, str], np.ndarray] = {}
    for layer, unit in network.units:
        for prior in PRIORS:
            out = folder / f"{network.size}_{layer}_{unit}_{prior.replace(' ', '_')}"
            seconds = run_atlas(path, layer, [unit], out, [*network.schedule, *prior_flags(prior)])
            entry = json.loads((out / "atlas.json").read_text())["units"][0]
            with np.load(out / entry["npz"]) as npz:
                window = npz["window_mean"].astype(np.float32)
            means[(layer, unit, prior)] = window
            x = torch.from_numpy(window)
            activation = unit_activation(loaded, layer, unit)
            rows.append(
                HfRow(
                    network.label,
                    f"{layer}:{unit}",
                    prior,
                    float(np.nanmedian(high_frequency_share(x).numpy())),
                    float(np.median(prior_z(activation, prior, x, seed=unit))),
                    float(np.median(noise_z(activation, x, DRAWS, seed=unit))),
                    entry["mean_activation"],
                    seconds,
                )
            )
    path.unlink()
    return rows, means, loaded


def photo_crops(size: int, per_photo: int, seed: int = 0) -> torch.Tensor:
    """`per_photo` random `size` px crops of each of scikit-image's `PHOTOS`, in [0, 1] and then
    normalized with ImageNet's statistics: `[4 * per_photo, 3, size, size]`."""
    from tests.photos import photograph

    rng = np.random.default_rng(seed)
    crops = []
    for name in PHOTOS:
        image = photograph(name)  # [3, H, W] in [0, 1]
        h, w = image.shape[1:]
        for _ in range(per_photo):
            top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
            crops.append(image[:, top : top + size, left : left + size])
    x = torch.stack(crops)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET_NORMALIZATION)
    return (x - mean) / std


def reference_lines(sizes: tuple[int, ...]) -> list[str]:
    """The hf share of the photographs' crops and of white noise at each of `sizes`."""
    lines = []
    for size in sizes:
        photos = high_frequency_share(photo_crops(size, CROPS_PER_PHOTO)).numpy()
        constant = int(np.isnan(photos).sum())  # a crop of a flat region (the black sky)
        photos = photos[~np.isnan(photos)]
        noise = torch.randn(32, 3, size, size, generator=torch.Generator().manual_seed(size))
        white = float(high_frequency_share(noise).median())
        lines.append(
            f"| photographs' crops ({size} px, {len(photos)}"
            f"{f' + {constant} constant' if constant else ''}) | {np.median(photos):.2f} "
            f"(range {photos.min():.2f} to {photos.max():.2f}) | white noise: {white:.2f} |"
        )
    return lines


def save_network_picture(
    network: Network,
    means: dict[tuple[str, int, str], np.ndarray],
    loaded: LoadedModel,
    out: Path,
) -> Path:
    """`natural_<net>.png`: a row per unit, the priors left to right, `SHOWN_CHAINS` chains each."""
    rows = []
    for layer, unit in network.units:
        for prior in PRIORS:
            rows.append(torch.from_numpy(means[(layer, unit, prior)][:SHOWN_CHAINS]))
    shown = rows[0].shape[0]
    x = torch.cat(rows)
    path = out / f"natural_{network.label.split()[0]}_{network.size}.png"
    to_pil(display_grid(x, shown * len(PRIORS), "input", loaded.normalization)).save(path)
    return path


def part_hf(quick: bool, out: Path) -> str:
    """Part 1: the hf table, its reference lines and the pictures."""
    if quick:
        big = ("--chains", "1", "--steps", "30", "--adapt-steps", "10", "--burn-in", "10")
        small = ("--chains", "4", "--steps", "150")
    else:
        big = ("--chains", "2", "--steps", "120", "--adapt-steps", "30", "--burn-in", "40")
        small = ()
    # The trained photo net runs at `ldam sample`'s defaults: T 0.1, lambda 0.1, 6 replicas.
    photo = ("--chains", "4", "--steps", "400" if quick else "1200")
    photo += ("--temperature", "0.1", "--l2-weight", "0.1", "--replicas", "6")
    networks = [
        Network("photo net (trained)", 48, (("output", 0), ("conv2", 5)), photo, trained=True),
        Network("resnet18 (random)", 224, (("layer3.0.conv1", 3), ("fc", 0)), big),
        Network("resnet18 (zoo)", 32, (("layer3.0.conv1", 3),), small),
    ]
    folder = Path(tempfile.mkdtemp(prefix="bench-natural-"))
    rows: list[HfRow] = []
    pictures = []
    try:
        for network in networks:
            found, means, loaded = measure_network(network, folder)
            rows += found
            pictures.append(save_network_picture(network, means, loaded, out))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    photos = photo_crops(64, SHOWN_CHAINS)
    photo_path = out / "natural_photos.png"
    to_pil(display_grid(photos, SHOWN_CHAINS * 2, "input", IMAGENET_NORMALIZATION)).save(photo_path)
    lines = [
        "| network | unit | prior | hf share | drive z (prior) | drive z (white) | mean act | s |",
        "|" + " --- |" * 8,
    ]
    for r in rows:
        lines.append(
            f"| {r.network} {r_size(r, networks)} | {r.unit} | {r.prior} | {r.hf:.2f} | "
            f"{r.drive_prior:.1f} | {r.drive_white:.1f} | {r.activation:.2f} | {r.seconds:.0f} |"
        )
    lines += ["", "| reference | hf share (median) | |", "| --- | --- | --- |"]
    lines += reference_lines((32, 48, 64, 224))
    schedules = "; ".join(
        f"{n.label} {n.size} px: {' '.join(n.schedule) or 'the atlas defaults (8 chains, 500 steps)'}"
        for n in networks
    )
    lines += ["", f"Schedules: {schedules}.", ""]
    lines += [f"Pictures: {', '.join(str(p) for p in [*pictures, photo_path])}."]
    return "\n".join(lines)


def r_size(row: HfRow, networks: list[Network]) -> str:
    """The input size of `row`'s network, as '(224 px)'."""
    return f"({next(n.size for n in networks if n.label == row.network)} px)"


# ----------------------------------------------------------------------------- part 2: iat


def band_indices(size: int, per_band: int, channels: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Per band of `BANDS`: `per_band` random flat indices into the real parts of the rfft
    coefficients `[channels, size, size // 2 + 1]`, DC left out (only imaginary parts vanish
    at the self-conjugate bins, so every other real part is free)."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.broadcast_to(np.sqrt(fy**2 + fx**2), (channels, size, size // 2 + 1)).ravel()
    rng = np.random.default_rng(seed)
    chosen = []
    for low, high in BANDS:
        inside = np.flatnonzero((radius >= low) & (radius < high) & (radius > 0))
        chosen.append(rng.choice(inside, size=min(per_band, inside.size), replace=False))
    return chosen


def band_iat(trace: np.ndarray, bands: list[np.ndarray]) -> list[float]:
    """Per band: the median over its coefficients of tau = M n / ESS, `trace [n, M, coeffs]`."""
    n, m = trace.shape[:2]
    result = []
    for idx in bands:
        taus = [m * n / effective_sample_size(trace[:, :, i].T) for i in idx]
        result.append(float(np.median(taus)))
    return result


class PixelLangevin:
    """Plain (unpreconditioned) Langevin in pixel space on E(x) = w.x - lambda/2 x^T Sigma^-1 x,
    Sigma = L L^T of `basis`: x <- x + beta (w - lambda Sigma^-1 x) + sqrt(2 beta T) xi."""

    def __init__(self, basis: SpectralBasis, w: torch.Tensor, lam: float, temperature: float):
        self.basis, self.w, self.lam, self.temperature = basis, w, lam, temperature
        _, h, width = basis.shape
        self.inverse_gain = 1.0 / amplitude(h, width, float(basis.decay)).to(basis.dtype)
        self.colour_inverse_t = torch.linalg.inv(colour_matrix()).t().to(basis.dtype)

    def precision(self, x: torch.Tensor) -> torch.Tensor:
        """Sigma^-1 x = L^-T L^-1 x, with L^-T = S^-1 C^-T (S and C commute)."""
        u = self.basis.analyze(x)
        u = torch.einsum("oc,nchw->nohw", self.colour_inverse_t, u)
        h, w = self.basis.shape[1:]
        return torch.fft.irfft2(
            torch.fft.rfft2(u, norm="ortho") * self.inverse_gain, s=(h, w), norm="ortho"
        )

    def largest_step(self) -> float:
        """The stability bound 2 / (lambda * max eig Sigma^-1)."""
        colour = colour_matrix()
        biggest = float(self.inverse_gain.max() ** 2) / float(
            torch.linalg.eigvalsh(colour @ colour.t()).min()
        )
        return 2.0 / (self.lam * biggest)

    def step(self, x: torch.Tensor, beta: float, generator: torch.Generator) -> torch.Tensor:
        """One Langevin step of every chain of `x`."""
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        drift = self.w - self.lam * self.precision(x)
        return x + beta * drift + math.sqrt(2 * beta * self.temperature) * noise


def part_iat(quick: bool) -> str:
    """Part 2: the IAT per band, preconditioned against plain Langevin."""
    shape, lam, temperature, chains = (3, 32, 32), 1.0, 0.1, 64
    burn, kept = 200, (600 if quick else 3000)
    per_band = 16 if quick else 48
    # The channels' coefficients, and those of the image's projection on the eigenvector of
    # C C^T with the largest eigenvalue (the slowest colour for plain Langevin): there the
    # modes differ by frequency alone.
    bands, bands_colour = band_indices(32, per_band), band_indices(32, per_band, channels=1)
    flat, flat_colour = np.concatenate(bands), np.concatenate(bands_colour)
    colour = colour_matrix()
    top = torch.linalg.eigh(colour @ colour.t()).eigenvectors[:, -1]
    torch.manual_seed(0)
    w = torch.randn(shape)

    def coefficients(x: torch.Tensor) -> np.ndarray:
        spectrum = torch.fft.rfft2(x.double(), norm="ortho").real
        projected = torch.einsum("c,nchw->nhw", top, spectrum).flatten(1)
        return torch.cat([spectrum.flatten(1)[:, flat], projected[:, flat_colour]], 1).numpy()

    def split(sets: list[np.ndarray], offset: int) -> list[np.ndarray]:
        starts = offset + np.cumsum([0, *[len(b) for b in sets]])
        return [np.arange(starts[i], starts[i + 1]) for i in range(len(sets))]

    # (a) ldam's preconditioned sampler.
    beta_z = 0.25 * 2.0 / lam
    config = SamplerConfig(
        chains=chains,
        temperature=temperature,
        step_size=beta_z,
        l2_weight=lam,
        prior="spectral",
        prior_decay=1.0,
        energy_scale="absolute",
        burn_in=0,
        window=1,
    )
    term = ActivationTerm(lambda x: (x * w).flatten(1).sum(1))
    sampler = Sampler([term, L2Term()], shape, config)
    started = time.perf_counter()
    trace = []
    for t in range(burn + kept):
        sampler.step()
        if t >= burn:
            trace.append(coefficients(sampler.x))
    seconds_a = time.perf_counter() - started
    a = np.stack(trace)
    # (b) plain Langevin in pixel space on the same target.
    basis = SpectralBasis(shape, 1.0, dtype=torch.float64)
    plain = PixelLangevin(basis, w.double(), lam, temperature)
    bound = plain.largest_step()
    beta_x = 0.25 * bound
    generator = torch.Generator().manual_seed(1)
    # Start at exact draws of the target, N(Sigma w / lambda, T Sigma / lambda), so that the
    # short burn-in need not cross the slow bands (the stiff ones settle within it).
    xi = torch.randn(chains, *shape, dtype=torch.float64, generator=generator)
    mean = basis.synthesize(basis.adjoint(w.double()[None])) / lam
    x = mean + math.sqrt(temperature / lam) * basis.synthesize(xi)
    check = torch.randn(2, *shape, dtype=torch.float64, generator=generator)
    assert torch.allclose(plain.precision(basis.synthesize(basis.adjoint(check))), check, atol=1e-9)
    started = time.perf_counter()
    trace = []
    for t in range(burn + kept):
        x = plain.step(x, beta_x, generator)
        if t >= burn:
            trace.append(coefficients(x))
    seconds_b = time.perf_counter() - started
    b = np.stack(trace)
    rows = []
    for name, traced, beta, seconds, sets in (
        ("(a) Sampler, prior spectral (preconditioned)", a, beta_z, seconds_a, split(bands, 0)),
        ("(b) plain Langevin in pixel space", b, beta_x, seconds_b, split(bands, 0)),
        ("(a), top colour component", a, beta_z, seconds_a, split(bands_colour, len(flat))),
        ("(b), top colour component", b, beta_x, seconds_b, split(bands_colour, len(flat))),
    ):
        taus = band_iat(traced, sets)
        ratio = max(taus) / min(taus)
        cells = " | ".join(f"{t:.1f}{'*' if t > kept / 20 else ''}" for t in taus)
        rows.append(f"| {name} | {beta:.3g} | {cells} | {ratio:.1f} | {seconds:.0f} |")
    header = " | ".join(f"[{lo:.3g}, {hi:.3g})" for lo, hi in BANDS)
    lines = [
        f"| chain | beta | IAT {header} | max/min | s |",
        "|" + " --- |" * 8,
        *rows,
        "",
        f"{chains} chains, {burn} burn-in + {kept} kept steps; (b)'s stability bound "
        f"2 / (lambda max eig Sigma^-1) = {bound:.3g}, beta a quarter of it; (a)'s bound is "
        f"2 / lambda = {2 / lam:g}. * = above n / 20 = {kept // 20}: a lower bound.",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- part 3: cost


def part_cost(quick: bool) -> str:
    """Part 3: seconds per step, white against spectral (and transforms), and the filter alone."""
    import torchvision

    chains, rounds, steps = (4, 2, 2) if quick else (16, 3, 3)
    torch.manual_seed(0)
    module = torchvision.models.resnet18(weights=None).eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    shape = (3, 224, 224)
    kinds = {
        "white": {"prior": "white"},
        "spectral": {"prior": "spectral", "prior_decay": 1.0},
        "spectral + transforms": {"prior": "spectral", "prior_decay": 1.0, "transforms": "on"},
    }
    samplers = {}
    for name, extra in kinds.items():
        config = SamplerConfig(chains=chains, step_size=0.05, **extra)  # type: ignore[arg-type]
        target = Target(module, "fc:0", chains)
        samplers[name] = Sampler([ActivationTerm(target), L2Term()], shape, config)
        for _ in range(2):
            samplers[name].step()
    per_step: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, sampler in samplers.items():
            started = time.perf_counter()
            for _ in range(steps):
                sampler.step()
            per_step[name].append((time.perf_counter() - started) / steps)
    basis = SpectralBasis(shape, 1.0)
    z = torch.randn(chains, *shape)
    filters = []
    for _ in range(5):
        started = time.perf_counter()
        basis.adjoint(basis.synthesize(z))
        filters.append(time.perf_counter() - started)
    white = statistics.median(per_step["white"])
    lines = ["| prior | s / step (median of rounds) | / white |", "| --- | --- | --- |"]
    for name, values in per_step.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.2f} | {median / white:.3f} |")
    lines += [
        "",
        f"resnet18 224 px, {chains} chains, {rounds} interleaved rounds of {steps} steps, 1 CPU "
        f"thread; synthesize + adjoint on [{chains}, 3, 224, 224]: "
        f"{1000 * statistics.median(filters):.0f} ms (median of 5).",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", default="all", choices=("hf", "iat", "cost", "all"))
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer chains")
    parser.add_argument("--out", default="docs/images", help="the folder for the PNGs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    parts = ("hf", "iat", "cost") if args.part == "all" else (args.part,)
    titles = {
        "hf": "High-frequency share and drive",
        "iat": "Integrated autocorrelation time per band (linear model)",
        "cost": "Cost of the filtering per step",
    }
    for part in parts:
        begun = time.perf_counter()
        if part == "hf":
            body = part_hf(args.quick, out)
        elif part == "iat":
            body = part_iat(args.quick)
        else:
            body = part_cost(args.quick)
        print(
            f"### {titles[part]}\n\n{body}\n\n({time.perf_counter() - begun:.0f} s)\n", flush=True
        )
    print(f"{time.perf_counter() - started:.0f} s in all{' (--quick)' if args.quick else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
