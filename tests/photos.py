"""Real colour photographs for tests and benchmarks: patches of scikit-image's bundled photographs,
a small colour CNN that tells which photograph a patch comes from, and its export.

scikit-image ships its sample photographs in the wheel (no download), so these are real photos
wherever the `test` extra is installed; nothing shipped imports this module.

A patch is a random square crop of one photograph, downscaled (bilinear, antialiased) to
`size` x `size`: the crop's side is `size` times a factor drawn log-uniformly from `SCALES`
(2 to 5, clipped to the photograph's shorter side), so a 48x48 patch spans 96 to 240 of the
photograph's pixels: an eye and its surroundings, a cup's rim, a wheel, not a single texture,
and already smoothed like the photographs a network sees at its input size. Every draw comes
from one `torch.Generator` seeded with `seed`: same arguments, same patches.

Photographs are split for the discriminator: D trains on patches of `TRAIN_PHOTOS` and is
judged on patches of `HELD_OUT_PHOTOS`, a photograph it never saw.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ldam.models.discriminator import make_discriminator
from ldam.models.saving import export_checkpoint
from ldam.sampling.discriminator import DiscriminatorTrainer, run_with_discriminator
from ldam.sampling.energy import ActivationTerm, DiscriminatorTerm, L2Term
from ldam.sampling.prior import high_frequency_share
from ldam.sampling.sampler import Sampler, SamplerConfig
from ldam.sampling.targets import Target

# The colour photographs in scikit-image's wheel; the photo net's class k is PHOTOGRAPHS[k].
PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle")
HELD_OUT_PHOTOS = ("chelsea",)
TRAIN_PHOTOS = tuple(name for name in PHOTOGRAPHS if name not in HELD_OUT_PHOTOS)
# A patch's crop side over its size: log-uniform in this range (see the module docstring).
SCALES = (2.0, 5.0)

# The photo net's training: patches, passes, batch, Adam's rate. 6-10 s on one shared thread.
_NET_PATCHES = 2000
_NET_EPOCHS = 4
_NET_BATCH = 64
_NET_LR = 2e-3
_HELD_OUT_PATCHES = 1000


@functools.cache
def photograph(name: str) -> Tensor:
    """The photograph `name` (one of `PHOTOGRAPHS`) as float32 `[3, H, W]` in [0, 1]."""
    import skimage.data
    from PIL import Image

    if name == "motorcycle":  # the left view of the stereo pair, a file with no loader of its own
        with Image.open(Path(skimage.data.__file__).parent / "motorcycle_left.png") as image:
            pixels = np.asarray(image.convert("RGB"))
    elif name in PHOTOGRAPHS:
        pixels = getattr(skimage.data, name)()
    else:
        raise ValueError(f"{name!r} is not one of the photographs {', '.join(PHOTOGRAPHS)}.")
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 255.0


def labelled_patches(
    count: int, size: int, seed: int, photos: Sequence[str] | None = None
) -> tuple[Tensor, Tensor]:
    """`count` patches `[count, 3, size, size]` float32 in [0, 1] and the index in `photos`
    (default `PHOTOGRAPHS`) of the photograph each comes from, `[count]` int64."""
    names = tuple(PHOTOGRAPHS if photos is None else photos)
    images = [photograph(name) for name in names]
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(names), (count,), generator=gen)
    log_lo, log_hi = math.log(SCALES[0]), math.log(SCALES[1])
    patches = torch.empty(count, 3, size, size)
    for i, label in enumerate(labels.tolist()):
        image = images[label]
        height, width = image.shape[1:]
        factor = math.exp(log_lo + (log_hi - log_lo) * torch.rand((), generator=gen).item())
        side = min(round(size * factor), height, width)
        top = int(torch.randint(height - side + 1, (), generator=gen))
        left = int(torch.randint(width - side + 1, (), generator=gen))
        crop = image[None, :, top : top + side, left : left + side]
        patches[i] = F.interpolate(
            crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )[0]
    return patches.clamp_(0.0, 1.0), labels


def photo_patches(count: int, size: int, seed: int, photos: Sequence[str] | None = None) -> Tensor:
    """`count` random patches `[count, 3, size, size]` float32 in [0, 1] of `photos` (default
    `PHOTOGRAPHS`), each from a photograph picked at random (see the module docstring)."""
    return labelled_patches(count, size, seed, photos)[0]


def write_patch_folder(folder: str | Path, count: int, size: int, seed: int) -> Path:
    """Write `photo_patches(count, size, seed, TRAIN_PHOTOS)` as PNG files `patch_0000.png`, ...
    into `folder` (created if missing): a real `--disc-data` folder. Returns the folder."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = photo_patches(count, size, seed, TRAIN_PHOTOS).mul(255).round().to(torch.uint8)
    for i, patch in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(patch).save(folder / f"patch_{i:04d}.png")
    return folder


class PhotoNet(nn.Module):
    """A small colour CNN over normalized `[N, 3, size, size]` patches: conv 3x3 (3 -> 16),
    ReLU, max pool 2, conv 3x3 (16 -> 32), ReLU, max pool 2, fc to one logit per photograph.

    `normalization` = (mean, std), 3 values each, is what the input was normalized with
    (`(x - mean) / std` per channel, outside the network, as ldam's checkpoints expect).
    """

    def __init__(self, size: int, classes: int) -> None:
        super().__init__()
        self.size = size
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * (size // 4) ** 2, classes)
        self.normalization: tuple[list[float], list[float]] = ([0.0] * 3, [1.0] * 3)
        self.held_out_accuracy = math.nan

    def forward(self, x: Tensor) -> Tensor:
        """Logits `[N, classes]` for normalized patches `[N, 3, size, size]`."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))

    def normalize(self, patches: Tensor) -> Tensor:
        """Patches in [0, 1] `[N, 3, H, W]` -> the network's input space."""
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in self.normalization)
        return (patches - mean) / std


def train_photo_net(size: int = 48, seed: int = 0) -> PhotoNet:
    """A `PhotoNet` trained to tell which of `PHOTOGRAPHS` a `size` x `size` patch comes from,
    in eval mode with frozen parameters; `normalization` is the per-channel mean and std of its
    2,000 training patches (seed `seed`), `held_out_accuracy` its accuracy on 1,000 patches of
    another seed (fresh crops at other positions and scales; they may overlap training crops).

    Four passes of Adam, 6-10 s on one thread of the shared 2-core machine. At size 48 and
    seed 0 the held-out accuracy was 0.989 (chance is 0.2).
    """
    patches, labels = labelled_patches(_NET_PATCHES, size, seed)
    test_patches, test_labels = labelled_patches(_HELD_OUT_PATCHES, size, seed + 10_000)
    # The weights' init and the batch order, without touching the caller's RNG.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = PhotoNet(size, len(PHOTOGRAPHS))
        net.normalization = (
            patches.mean(dim=(0, 2, 3)).tolist(),
            patches.std(dim=(0, 2, 3)).tolist(),
        )
        x = net.normalize(patches)
        opt = torch.optim.Adam(net.parameters(), lr=_NET_LR)
        for _ in range(_NET_EPOCHS):
            for batch in torch.randperm(len(x)).split(_NET_BATCH):
                loss = F.cross_entropy(net(x[batch]), labels[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        predicted = net(net.normalize(test_patches)).argmax(dim=1)
    net.held_out_accuracy = float((predicted == test_labels).float().mean())
    return net


def export_photo_net(path: str | Path, net: PhotoNet | None = None, size: int = 48) -> Path:
    """Write `net` (default `train_photo_net(size)`) as a `.pt2` checkpoint ldam loads, with
    its normalization, the photographs as class names and its held-out accuracy; returns the
    path. `ldam sample PATH --target fc:0 --disc-data FOLDER` then samples the astronaut logit."""
    net = net if net is not None else train_photo_net(size)
    mean, std = net.normalization
    metadata = {
        "normalization": {"mean": mean, "std": std},
        "class_names": list(PHOTOGRAPHS),
        "held_out_accuracy": net.held_out_accuracy,
    }
    return export_checkpoint(net, path, (3, size, size), metadata)


# ----------------------------------------------------------------------- D on photographs

# The sampler settings of the runs below, measured on the photo net's astronaut logit: at a
# low temperature and a light L2 the unit is driven (logit -7 -> 22 in 150 steps) and the
# samples are structure, not noise, so their spectrum can move.
PHOTO_SAMPLER = {
    "temperature": 1e-3,
    "step_size": 1.0,
    "l2_weight": 0.01,
    "energy_scale": "unit",
    "replicas": 0,
}


@dataclass
class PhotoRun:
    """What `disc_on_photos` measured: D's held-out accuracies, the unit's mean activation at
    the chains' starts and at the end of each run, and the median `high_frequency_share` of
    the final samples and of the window means at w = 0 and w = 0.5."""

    acc_real: float  # D on patches of HELD_OUT_PHOTOS, called real
    acc_generated: float  # D on fresh samples (another seed, w = 0), called generated
    activation_start: float
    activation: dict[float, float]
    hf_samples: dict[float, float]
    hf_window_means: dict[float, float]
    d_steps: int


def _median_hf(images: Tensor) -> float:
    return float(high_frequency_share(images).median())


def disc_on_photos(
    net: PhotoNet,
    unit: int = 0,
    chains: int = 8,
    steps: int = 150,
    seed: int = 0,
    real_count: int = 2000,
    extra: dict[str, object] | None = None,
) -> PhotoRun:
    """The discriminator regularizer on real photographs, with the real trainer and sampler.

    D (`make_discriminator`, `DiscriminatorTrainer`, 50 warm-up steps, then one step per two
    sampler steps in this thread, so the run is reproducible) learns `real_count` patches of
    `TRAIN_PHOTOS` against the chains of a `Sampler` driving `net`'s logit `unit` at w = 0
    (`PHOTO_SAMPLER` settings updated by `extra`, `steps` steps, the last half windowed).
    D is then judged on 500 patches of `HELD_OUT_PHOTOS` and on the samples of fresh chains
    (seed + 100, w = 0). Then chains from the same seed run the same steps at w = 0.5 while D
    goes on training online against them (Algorithm 2). A D frozen after the first run does
    not do: at w = 0.5 the chains find its adversarial directions and the high-frequency
    share rises (0.71 against 0.58 in one measurement) instead of falling.
    """
    size = net.size
    shape = (3, size, size)
    real = net.normalize(photo_patches(real_count, size, seed + 1, TRAIN_PHOTOS))
    held_out = net.normalize(photo_patches(500, size, seed + 2, HELD_OUT_PHOTOS))
    target = ActivationTerm(Target(net, f"fc:{unit}", chains))
    window = steps // 2
    base = SamplerConfig(
        chains=chains, window=window, burn_in=steps - window, seed=seed, **PHOTO_SAMPLER
    )
    base = dataclasses.replace(base, **(extra or {}))
    with torch.random.fork_rng():  # D's initial weights
        torch.manual_seed(seed)
        trainer = DiscriminatorTrainer(make_discriminator(shape), real, max_age=20, seed=seed)
    activation, hf_samples, hf_means = {}, {}, {}
    acc_real = acc_generated = math.nan
    activation_start = math.nan
    for w in (0.0, 0.5):
        config = dataclasses.replace(base, disc_weight=w)
        sampler = Sampler([target, L2Term(), DiscriminatorTerm(trainer.current)], shape, config)
        with torch.no_grad():
            activation_start = float(target.value(sampler.x).mean())
        metrics = run_with_discriminator(
            sampler, trainer, steps, warm_up_steps=50, offer_every=2, background=False
        )
        if metrics["error"] is not None:
            raise RuntimeError(metrics["error"])
        with torch.no_grad():
            activation[w] = float(target.value(sampler.x).mean())
        hf_samples[w] = _median_hf(sampler.x)
        hf_means[w] = _median_hf(sampler.window_mean())
        if w == 0.0:
            fresh = Sampler([target, L2Term()], shape, dataclasses.replace(config, seed=seed + 100))
            for _ in range(steps):
                fresh.step()
            d = trainer.current()
            with torch.no_grad():
                acc_real = float((d(held_out) > 0).float().mean())
                acc_generated = float((d(fresh.x) < 0).float().mean())
    return PhotoRun(
        acc_real, acc_generated, activation_start, activation, hf_samples, hf_means, trainer.steps
    )
