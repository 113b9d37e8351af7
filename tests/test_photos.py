"""tests/photos.py: patches of real colour photographs, a real colour network trained on them,
and the discriminator regularizer (the real trainer and sampler) on that network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ldam.models.data import load_images
from ldam.models.loading import load_checkpoint
from ldam.sampling.prior import high_frequency_share
from tests.photos import (
    HELD_OUT_PHOTOS,
    PHOTOGRAPHS,
    TRAIN_PHOTOS,
    PhotoNet,
    disc_on_photos,
    export_photo_net,
    labelled_patches,
    photo_patches,
    train_photo_net,
    write_patch_folder,
)


@pytest.fixture(scope="module")
def net() -> PhotoNet:
    """The photo net at 48x48, seed 0 (trained once for the module, about 6 s)."""
    return train_photo_net(48, seed=0)


@pytest.fixture(scope="module")
def run(net: PhotoNet):
    """D trained on photo patches against the photo net's chains, then w = 0 vs 0.5."""
    return disc_on_photos(net, unit=0, chains=8, steps=150, seed=0)


def test_patches_are_deterministic_colour_crops_with_a_photographs_spectrum() -> None:
    patches, labels = labelled_patches(64, 48, seed=3)
    assert patches.shape == (64, 3, 48, 48) and patches.dtype == torch.float32
    assert 0.0 <= patches.min() and patches.max() <= 1.0
    assert patches.std(dim=(2, 3)).min() > 0.005  # every patch holds some structure
    assert set(labels.tolist()) == set(range(len(PHOTOGRAPHS)))
    assert torch.equal(photo_patches(64, 48, seed=3), patches)
    assert not torch.equal(photo_patches(64, 48, seed=4), patches)
    # Measured: 0.056 over 2,000 patches of seed 0; white noise puts 0.81 there.
    share = high_frequency_share(photo_patches(500, 48, seed=0)).median().item()
    assert share < 0.3, share
    assert set(TRAIN_PHOTOS) | set(HELD_OUT_PHOTOS) == set(PHOTOGRAPHS)
    assert not set(TRAIN_PHOTOS) & set(HELD_OUT_PHOTOS)
    # A split's patches are of its photographs only: a chelsea-only patch is some chelsea crop.
    assert labelled_patches(8, 48, 0, HELD_OUT_PHOTOS)[1].tolist() == [0] * 8


def test_the_patch_folder_is_real_disc_data(tmp_path: Path) -> None:
    folder = write_patch_folder(tmp_path / "real", count=12, size=48, seed=5)
    assert sorted(p.name for p in folder.iterdir())[:2] == ["patch_0000.png", "patch_0001.png"]
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.2, 0.2]
    loaded = load_images(folder, (3, 48, 48), (mean, std))
    expected = photo_patches(12, 48, 5, TRAIN_PHOTOS)
    pixels = loaded * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert loaded.shape == (12, 3, 48, 48)
    assert (pixels - expected).abs().max() <= 0.5 / 255 + 1e-5  # PNG's 8 bits, nothing else


def test_the_photo_net_tells_held_out_patches_apart_and_exports(net, tmp_path: Path) -> None:
    # Measured 0.989 on 1,000 held-out patches at seed 0; chance is 0.2.
    assert net.held_out_accuracy > 0.85, net.held_out_accuracy
    mean, std = net.normalization
    assert len(mean) == len(std) == 3 and min(std) > 0.1
    patches, labels = labelled_patches(200, 48, seed=77)
    with torch.no_grad():
        accuracy = (net(net.normalize(patches)).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.85, accuracy
    loaded = load_checkpoint(export_photo_net(tmp_path / "photo.pt2", net))
    assert loaded.input_shape == (3, 48, 48)
    assert loaded.class_names == list(PHOTOGRAPHS)
    assert loaded.normalization == (mean, std)
    x = net.normalize(patches[:4])
    assert torch.allclose(loaded.module(x), net(x), atol=1e-5)


def test_d_tells_a_held_out_photograph_from_fresh_samples(run) -> None:
    # Measured at seed 0: 1.000 and 1.000 (seeds 0-3 all 1.000): D at w = 0 faces chains
    # that are the net's gradient pattern plus noise, easy to tell from a photograph.
    # 50 warm-up steps, then one per 2 sampler steps in both runs once chains join the pool
    # (age 20): 190 at seed 0.
    assert run.d_steps >= 50 + 2 * 60, run.d_steps
    assert run.acc_real > 0.9 and run.acc_generated > 0.9, (run.acc_real, run.acc_generated)


def test_d_at_half_weight_moves_the_samples_spectrum_toward_the_photographs(run) -> None:
    # Measured over seeds 0-3: median high-frequency share of the final samples 0.64-0.65
    # at w = 0 and 0.49-0.57 at w = 0.5 (photographs: 0.056); the logit from about -6.9 at
    # the starts to 22.5 at w = 0 and 5-7 at w = 0.5.
    hf = run.hf_samples
    assert hf[0.5] < hf[0.0] - 0.04, hf
    assert run.hf_window_means[0.5] < run.hf_window_means[0.0], run.hf_window_means
    assert run.activation[0.5] > run.activation_start + 5.0, run.activation


def test_the_spectral_prior_smooths_a_trained_colour_network_s_samples_and_drives_it(net) -> None:
    """Issue 20's bar on a real trained colour network: at ldam sample's T and lambda (the
    unit scale, an adapted step; no replicas, to keep it short) the window means of the white
    prior are noise (their median high-frequency share as white noise's, ~0.8), those of the
    spectral prior (decay 1) put <= 35% of their power above half Nyquist while the logit is
    driven higher than under the white prior and far above its value at the starts."""
    from ldam.sampling.energy import ActivationTerm, L2Term
    from ldam.sampling.sampler import Sampler, SamplerConfig

    term = ActivationTerm(lambda x: net(x)[:, 0])
    with torch.no_grad():
        start = float(
            net(torch.randn(64, 3, 48, 48, generator=torch.Generator().manual_seed(1)))[:, 0].mean()
        )
    shares, drive = {}, {}
    for prior in ("white", "spectral"):
        cfg = SamplerConfig(
            chains=4,
            temperature=0.1,
            l2_weight=0.1,
            step_size=None,
            energy_scale="unit",
            prior=prior,
            prior_decay=1.0,
            window=100,
            seed=3,
        )
        sampler = Sampler([term, L2Term()], (3, 48, 48), cfg)
        for _ in range(400):
            sampler.step()
        means = sampler.window_mean()
        shares[prior] = float(high_frequency_share(means).median())
        with torch.no_grad():
            drive[prior] = float(net(means)[:, 0].mean())
    assert shares["white"] > 0.7
    assert shares["spectral"] <= 0.35
    assert drive["spectral"] > drive["white"] and drive["spectral"] > start + 10
