"""The spectral prior (`ldam.sampling.prior`) against its closed forms: the basis's algebra, a
linear unit's stationary law N(Sigma w / lambda, T Sigma / lambda) bin by bin in the frequency
domain, the T = 0 optimum Sigma w / lambda, and the refusals."""

from __future__ import annotations

import math

import pytest
import torch

from ldam.sampling.energy import ActivationTerm, L2Term
from ldam.sampling.prior import (
    PriorError,
    SpectralBasis,
    amplitude,
    colour_matrix,
    frequency_radius,
    high_frequency_share,
)
from ldam.sampling.sampler import Sampler, SamplerConfig, SamplerError
from tests.chains import stationary_variance


def _linear(w: torch.Tensor) -> ActivationTerm:
    return ActivationTerm(lambda x: (x * w).flatten(1).sum(1))


def _rfft(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.rfft2(x.double(), norm="ortho")


def test_the_amplitude_has_mean_square_one_and_falls_as_a_power_of_the_frequency() -> None:
    s = amplitude(8, 12, 1.5)
    assert s.shape == (8, 7)
    full = frequency_radius(8, 12).clamp_min(1 / 12).pow(-1.5)
    full = full / full.pow(2).mean().sqrt()
    assert torch.allclose(s, full[:, :7])
    assert float(full.pow(2).mean()) == pytest.approx(1.0)
    # DC and the lowest frequency 1/12 share the floor; the Nyquist corner is the smallest.
    assert float(s[0, 0]) == pytest.approx(float(s[0, 1]))
    assert float(s[4, 6] / s[0, 1]) == pytest.approx((1 / 12 / math.hypot(0.5, 0.5)) ** 1.5)
    assert torch.allclose(amplitude(8, 12, 0.0), torch.ones(8, 7, dtype=torch.float64))


def test_the_basis_is_l_its_adjoint_and_its_inverse_with_the_white_prior_s_trace() -> None:
    gen = torch.Generator().manual_seed(0)
    c = colour_matrix()
    assert float(torch.linalg.matrix_norm(c)) == pytest.approx(math.sqrt(3))
    for shape in [(3, 8, 8), (1, 7, 9), (2, 6, 10)]:
        basis = SpectralBasis(shape, 1.0, dtype=torch.float64)
        z = torch.randn(3, *shape, generator=gen, dtype=torch.float64)
        g = torch.randn(3, *shape, generator=gen, dtype=torch.float64)
        lhs = (basis.synthesize(z) * g).sum()
        assert float(lhs) == pytest.approx(float((z * basis.adjoint(g)).sum()), rel=1e-12)
        assert torch.allclose(basis.analyze(basis.synthesize(z)), z, atol=1e-12)
        leaf = z.clone().requires_grad_(True)
        (basis(leaf) * g).sum().backward()
        assert torch.allclose(leaf.grad, basis.adjoint(g))
        # trace(Sigma) = d: the columns of L, i.e. L applied to each basis vector, have
        # squared norms summing to the number of pixels times channels.
        eye = torch.eye(math.prod(shape), dtype=torch.float64).view(-1, *shape)
        assert float(basis.synthesize(eye).pow(2).sum()) == pytest.approx(math.prod(shape))


def test_a_linear_unit_samples_n_of_sigma_w_over_lambda_bin_by_bin() -> None:
    """Absolute scale, fixed step, colour: the window of every chain's draws has, in each
    rfft bin f and colour pair, mean `(Sigma w)^(f) / lambda` and covariance
    `T c s(f)^2 (C C^T) / lambda` within 5%, c = 1 / (1 - beta lambda / 2) the discrete
    chain's known factor (the white sampler's, in the coordinates z)."""
    torch.manual_seed(0)
    shape, lam, temperature, beta = (3, 8, 8), 1.0, 0.5, 0.05
    w = torch.randn(shape)
    cfg = SamplerConfig(
        chains=512,
        temperature=temperature,
        step_size=beta,
        l2_weight=lam,
        prior="spectral",
        prior_decay=1.0,
        burn_in=0,
        window=1,
    )
    sampler = Sampler([_linear(w), L2Term()], shape, cfg)
    for _ in range(150):
        sampler.step()
    draws = []
    for i in range(320):
        sampler.step()
        if i % 4 == 0:
            draws.append(sampler.x.clone())
    x = torch.stack(draws).reshape(-1, *shape).double()
    basis = SpectralBasis(shape, 1.0, dtype=torch.float64)
    mean = basis.synthesize(basis.adjoint(w.double()[None]))[0] / lam
    mean_hat = _rfft(mean)
    assert float((_rfft(x.mean(0)) - mean_hat).abs().max() / mean_hat.abs().max()) < 0.01
    d = _rfft(x - mean)
    cov = torch.einsum("mahw,mbhw->abhw", d, d.conj()).real / len(x)
    colour = basis.colour.double()
    variance = stationary_variance(beta, lam, 0.0, temperature)  # T c / lambda
    expected = torch.einsum("ab,hw->abhw", colour @ colour.T, basis.s[0, 0].double() ** 2)
    expected = expected * variance
    for a in range(3):
        ratio = cov[a, a] / expected[a, a]
        assert float(ratio.min()) > 0.95 and float(ratio.max()) < 1.05
    assert float((cov - expected).abs().max() / expected.abs().max()) < 0.05
    # The images are smooth: the prior's share of power above half Nyquist, far below white's.
    assert float(high_frequency_share(x[:256] - mean).median()) < 0.45


def test_at_zero_temperature_the_optimum_is_sigma_w_over_lambda() -> None:
    """The paper's section 4.1 check, smoothed by the prior: gradient ascent on
    `w.x - lambda/2 x^T Sigma^-1 x` ends at `Sigma w / lambda`, to 1e-3."""
    torch.manual_seed(1)
    shape, lam = (3, 10, 10), 0.5
    w = torch.randn(shape)
    cfg = SamplerConfig(
        chains=2, temperature=0.0, step_size=0.2, l2_weight=lam, prior="spectral", prior_decay=1.5
    )
    sampler = Sampler([_linear(w), L2Term()], shape, cfg)
    for _ in range(400):
        sampler.step()
    basis = SpectralBasis(shape, 1.5, dtype=torch.float64)
    optimum = basis.synthesize(basis.adjoint(w.double()[None]))[0] / lam
    err = (sampler.x.double() - optimum).abs().max() / optimum.abs().max()
    assert float(err) < 1e-3
    # The white prior's optimum is w / lambda itself: the two differ.
    assert float((optimum - w.double() / lam).abs().max()) > 0.1


def test_a_live_decay_change_keeps_the_images_and_then_samples_the_new_prior() -> None:
    torch.manual_seed(2)
    shape = (1, 8, 8)
    w = torch.randn(shape)
    cfg = SamplerConfig(
        chains=4,
        temperature=0.1,
        step_size=0.1,
        l2_weight=1.0,
        prior="spectral",
        prior_decay=[0.5, 1.0, 1.5, 2.0],
    )
    sampler = Sampler([_linear(w), L2Term()], shape, cfg)
    for _ in range(20):
        sampler.step()
    before = sampler.x.clone()
    sampler.set(prior_decay=2.5)
    sampler._apply_pending()
    assert torch.allclose(sampler.x, before, atol=1e-5)
    assert sampler.basis is not None and sampler.basis.decay == 2.5
    sampler.set(temperature=0.0)
    for _ in range(300):
        sampler.step()
    basis = SpectralBasis(shape, 2.5, dtype=torch.float64)
    optimum = basis.synthesize(basis.adjoint(w.double()[None]))[0]
    assert float((sampler.x.double() - optimum).abs().max() / optimum.abs().max()) < 1e-3


def test_the_white_prior_is_the_state_itself_and_ignores_the_decay() -> None:
    shape = (3, 8, 8)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    runs = []
    for decay in (0.5, 2.0):
        cfg = SamplerConfig(chains=3, temperature=0.1, prior_decay=decay)
        sampler = Sampler([_linear(w), L2Term()], shape, cfg)
        for _ in range(5):
            sampler.step()
        assert sampler.basis is None and sampler.x.data_ptr() == sampler._x.data_ptr()
        runs.append(sampler.x.clone())
    assert torch.equal(runs[0], runs[1])


def test_bad_priors_are_one_sentence_naming_the_field() -> None:
    term = [_linear(torch.ones(1, 1, 10)), L2Term()]
    with pytest.raises(PriorError) as err:
        Sampler(term, (1, 1, 10), SamplerConfig(prior="spectral"))
    assert str(err.value) == (
        "prior spectral needs images with two spatial axes of at least 2 pixels, got input "
        "shape [1, 1, 10]; use prior white for vector inputs."
    )
    assert err.value.field == "prior"
    with pytest.raises(SamplerError) as err:
        SamplerConfig(prior="spectral", prior_decay=3.5)
    assert str(err.value) == "prior_decay must be in [0, 3], got 3.5."
    assert err.value.field == "prior_decay"
    with pytest.raises(SamplerError) as err:
        SamplerConfig(prior="spectral", clamp=(0.0, 1.0))
    assert str(err.value) == (
        "clamp bounds pixels, and prior spectral samples the image's spectrum instead; use "
        "prior white with clamp."
    )
    assert err.value.field == "clamp"
    with pytest.raises(SamplerError) as err:
        SamplerConfig(prior="pink")
    assert str(err.value) == "prior must be one of white, spectral, got 'pink'."
