"""The LDAM sampler against analytic answers: stationary Gaussians, the paper's section 4.1
filter check, plain gradient ascent at T = 0, and the bookkeeping (burn-in, windows, resets)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from ldam.sampling import averaging
from ldam.sampling.diagnostics import effective_sample_size
from ldam.sampling.energy import ActivationTerm, DiscriminatorTerm, L2Term
from ldam.sampling.sampler import Sampler, SamplerConfig, SamplerError, langevin_step
from tests.chains import frozen, linear_unit, run, stationary_variance


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These tensors are tiny: a second intra-op thread only adds barrier waits, which on a
    shared, loaded machine cost milliseconds per op. Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_net(seed: int = 0) -> nn.Module:
    """A nonlinear, batch-independent net: conv -> tanh -> linear, 1x4x4 -> 1."""
    torch.manual_seed(seed)
    return frozen(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 1)))


# --------------------------------------------------------------------------- analytic


@pytest.mark.parametrize("momentum, burn_in", [(0.0, 60), (0.9, 400)])
def test_linear_unit_with_l2_samples_the_exact_gaussian(momentum: float, burn_in: int) -> None:
    step, lam, temperature, chains, recorded = 0.2, 1.0, 0.5, 500, 300
    w = torch.tensor([1.0, -2.0, 0.5, 0.0])
    config = SamplerConfig(
        chains=chains,
        temperature=temperature,
        step_size=step,
        momentum=momentum,
        l2_weight=lam,
        burn_in=burn_in,
        window=1,
        seed=0,
    )
    sampler = Sampler([linear_unit(w, 3.0), L2Term()], (1, 2, 2), config)
    run(sampler, burn_in)
    draws = torch.stack(run(sampler, recorded)).flatten(1).T.numpy()  # [chains*4 series, n]
    draws = draws.reshape(chains, 4, recorded).transpose(1, 0, 2)  # [pixel, chain, n]

    var = stationary_variance(step, lam, momentum, temperature)
    if momentum == 0.0:
        assert var == pytest.approx(temperature / (lam * (1 - step * lam / 2)))
    for pixel in range(4):
        d = draws[pixel].astype(np.float64)
        mean_target = float(w[pixel]) / lam
        ess = effective_sample_size(d)
        assert abs(d.mean() - mean_target) < 5 * math.sqrt(var / ess)
        sq = (d - mean_target) ** 2
        ess_sq = effective_sample_size(sq)
        assert abs(sq.mean() - var) < 5 * sq.std() / math.sqrt(ess_sq)
        # The test can tell the exact variance from the continuous-time T / lambda.
        assert 5 * sq.std() / math.sqrt(ess_sq) < abs(var - temperature / lam)


def test_first_layer_unit_at_t0_reproduces_its_filter_over_lambda() -> None:
    """Paper section 4.1: argmax f(x) - lam/2 |x|^2 for a linear unit is w / lam at its field."""
    torch.manual_seed(0)
    conv = frozen(nn.Conv2d(1, 3, 5))
    c, y, x0, lam = 1, 2, 1, 1.25
    term = ActivationTerm(lambda x: conv(x)[:, c, y, x0])
    # x_t - w / lam shrinks by 1 - beta lam = 0.5 per step.
    config = SamplerConfig(
        chains=2, temperature=0.0, step_size=0.4, l2_weight=lam, burn_in_window=10
    )
    sampler = Sampler([term, L2Term()], (1, 9, 9), config)
    run(sampler, 60)
    expected = torch.zeros(2, 1, 9, 9)
    expected[:, 0, y : y + 5, x0 : x0 + 5] = conv.weight[c, 0] / lam
    torch.testing.assert_close(sampler.x, expected, rtol=0, atol=1e-5)
    assert (sampler.burn_in_step >= 10).all()
    torch.testing.assert_close(sampler.mean(), expected, rtol=0, atol=0.01)


def test_t0_is_plain_gradient_ascent() -> None:
    net = small_net()
    lam, step, gamma = 0.1, 0.05, 0.5
    config = SamplerConfig(chains=3, temperature=0.0, step_size=step, momentum=gamma, l2_weight=lam)
    sampler = Sampler([ActivationTerm(lambda x: net(x)[:, 0]), L2Term()], (1, 4, 4), config)
    x = sampler.x.clone()
    v = torch.zeros_like(x)
    for _ in range(20):
        leaf = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(leaf).sum(), leaf)
        v = gamma * v + step * (g - lam * x)
        x = x + v
        sampler.step()
    torch.testing.assert_close(sampler.x, x)
    assert not torch.equal(x, sampler.mean())  # it moved


def test_langevin_step_equation_with_per_chain_scalars() -> None:
    x = torch.ones(2, 1, 1, 2)
    v = torch.full_like(x, 2.0)
    grad = torch.full_like(x, 3.0)
    noise = torch.full_like(x, 1.0)
    temperature = torch.tensor([0.0, 4.0])
    langevin_step(x, v, grad, noise, 0.5, torch.tensor([0.5, 0.0]), temperature)
    # chain 0: v = 0.5*2 + 0.5*3 + 0 = 2.5; chain 1: v = 0 + 1.5 + sqrt(2*1*0.5*4) = 3.5
    assert v[:, 0, 0, 0].tolist() == [2.5, 3.5]
    assert x[:, 0, 0, 0].tolist() == [3.5, 4.5]
    with pytest.raises(SamplerError, match=r"^A positive temperature needs a noise tensor\.$"):
        langevin_step(x, v, grad, None, 0.5, 0.0, 1.0)


# ------------------------------------------------------------------- independence, seeds
def test_a_chains_trajectory_does_not_depend_on_the_batch() -> None:
    net = small_net()
    terms = [ActivationTerm(lambda x: net(x)[:, 0]), L2Term()]
    base = dict(temperature=0.0, step_size=0.1, momentum=0.9, l2_weight=0.1, normalize="all")
    four = Sampler(terms, (1, 4, 4), SamplerConfig(chains=4, **base))
    one = Sampler(terms, (1, 4, 4), SamplerConfig(chains=1, **base))
    one.x.copy_(four.x[:1])
    run(four, 15)
    run(one, 15)
    torch.testing.assert_close(one.x, four.x[:1], rtol=1e-6, atol=1e-6)


def test_same_seed_same_samples_other_seed_other_samples() -> None:
    net = small_net()
    terms = [ActivationTerm(lambda x: net(x)[:, 0]), L2Term()]

    def final(seed: int) -> torch.Tensor:
        sampler = Sampler(terms, (1, 4, 4), SamplerConfig(chains=3, temperature=0.1, seed=seed))
        run(sampler, 10)
        return sampler.x

    assert torch.equal(final(7), final(7))
    assert not torch.equal(final(7), final(8))


# ------------------------------------------------------------------------- divergence
def test_a_nan_activation_resets_only_that_chain() -> None:
    net = small_net()
    calls = {"n": 0}

    def poisoned(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = net(x)[:, 0]
        if calls["n"] == 3:
            out = torch.where(torch.arange(4) == 1, torch.nan, out)
        return out

    config = SamplerConfig(chains=4, temperature=0.1, burn_in=0, seed=3)
    good = Sampler([ActivationTerm(lambda x: net(x)[:, 0]), L2Term()], (1, 4, 4), config)
    bad = Sampler([ActivationTerm(poisoned), L2Term()], (1, 4, 4), config)
    infos = [bad.step() for _ in range(6)]
    run(good, 6)
    assert infos[2].reset.tolist() == [False, True, False, False]
    assert bad.resets.tolist() == [0, 1, 0, 0]
    assert bad.age.tolist() == [6, 3, 6, 6]
    keep = torch.tensor([0, 2, 3])
    assert torch.equal(bad.x[keep], good.x[keep])
    assert torch.equal(bad.mean()[keep], good.mean()[keep])
    assert not torch.equal(bad.x[1], good.x[1])
    assert bad.burn_in_step.tolist() == [0, 3, 0, 0]


@pytest.mark.parametrize("sync_free", [False, True])
def test_a_chain_that_overflows_is_reset_every_time_and_never_crashes(sync_free: bool) -> None:
    scale = torch.tensor([1.0, 1e38])
    term = ActivationTerm(lambda x: scale * x.flatten(1).sum(1))
    config = SamplerConfig(
        chains=2, temperature=0.0, step_size=10.0, l2_weight=0.0, burn_in=0, sync_free=sync_free
    )
    sampler = Sampler([term], (1, 2, 2), config)
    x0 = sampler.x[0].clone()
    run(sampler, 5)
    assert sampler.resets.tolist() == [0, 5]
    assert torch.isfinite(sampler.x).all()
    torch.testing.assert_close(sampler.x[0], x0 + 50.0)


# ------------------------------------------------------------------------ per chain
def test_per_chain_temperatures_give_per_chain_variances() -> None:
    temps = [0.1, 0.4] * 100
    config = SamplerConfig(
        chains=200, temperature=temps, step_size=0.2, l2_weight=1.0, burn_in=50, window=1
    )
    sampler = Sampler([L2Term()], (1, 2, 2), config)
    run(sampler, 50)
    draws = torch.stack(run(sampler, 200)).numpy()  # [n, chains, 1, 2, 2]
    for parity, temperature in enumerate((0.1, 0.4)):
        var = float((draws[:, parity::2] ** 2).mean())
        assert var == pytest.approx(temperature / 0.9, rel=0.1)


def test_settings_take_one_value_or_one_per_chain() -> None:
    config = SamplerConfig(chains=3, temperature=[0.1, 0.1, 0.1], step_size=[0.1, 0.2, 0.3])
    assert config.temperature == 0.1
    assert config.step_size == [0.1, 0.2, 0.3]
    # Per-chain step sizes at T = 0 with only L2: x1 = (1 - beta_i lam) x0.
    config = SamplerConfig(chains=3, temperature=0.0, step_size=[0.1, 0.2, 0.3], l2_weight=1.0)
    sampler = Sampler([L2Term()], (1, 1, 3), config)
    x0 = sampler.x.clone()
    sampler.step()
    torch.testing.assert_close(sampler.x, x0 * torch.tensor([0.9, 0.8, 0.7]).view(3, 1, 1, 1))


# --------------------------------------------------------------- window, mean, burn-in
def test_window_mean_is_the_mean_of_the_last_k_samples() -> None:
    net = small_net()
    config = SamplerConfig(chains=3, temperature=0.2, window=3, burn_in=0)
    sampler = Sampler([ActivationTerm(lambda x: net(x)[:, 0]), L2Term()], (1, 4, 4), config)
    xs = run(sampler, 2)
    torch.testing.assert_close(sampler.window_mean(), torch.stack(xs).mean(0))
    xs += run(sampler, 5)
    torch.testing.assert_close(sampler.window_mean(), torch.stack(xs[-3:]).mean(0))
    torch.testing.assert_close(sampler.mean(), torch.stack(xs).mean(0))
    sampler.set(window=2)
    xs = run(sampler, 3)
    torch.testing.assert_close(sampler.window_mean(), torch.stack(xs[-2:]).mean(0))
    assert sampler.config.window == 2


def test_window_and_mean_stay_exact_across_folds_resums_and_resets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(averaging, "MEAN_FOLD_STEPS", 4)
    monkeypatch.setattr(averaging, "WINDOW_RESUM_STEPS", 5)
    config = SamplerConfig(chains=2, temperature=0.3, step_size=0.1, window=3, burn_in=2)
    sampler = Sampler([L2Term()], (1, 2, 2), config)
    xs = run(sampler, 9)
    torch.testing.assert_close(sampler.mean(), torch.stack(xs[2:]).mean(0))
    sampler.reset([0])
    ys = run(sampler, 13)
    torch.testing.assert_close(sampler.mean()[0], torch.stack(ys[2:])[:, 0].mean(0))
    torch.testing.assert_close(sampler.mean()[1], torch.stack(xs[2:] + ys)[:, 1].mean(0))
    torch.testing.assert_close(sampler.window_mean(), torch.stack(ys[-3:]).mean(0))
    assert sampler.burn_in_step.tolist() == [11, 2]


def test_fixed_burn_in_discards_exactly_n_steps() -> None:
    config = SamplerConfig(chains=2, temperature=0.3, step_size=0.1, window=100, burn_in=4)
    sampler = Sampler([L2Term()], (1, 2, 2), config)
    xs = run(sampler, 10)
    assert sampler.burn_in_step.tolist() == [4, 4]
    torch.testing.assert_close(sampler.mean(), torch.stack(xs[4:]).mean(0))
    torch.testing.assert_close(sampler.window_mean(), torch.stack(xs[4:]).mean(0))


def test_auto_burn_in_waits_until_the_activation_is_stable() -> None:
    w = torch.tensor([1.0, -1.0, 2.0, 0.5])
    limit = float(w @ w) + 1.0  # f(w / lam) at lam = 1, approached as 0.95^t at T = 0
    config = SamplerConfig(
        chains=3,
        temperature=0.0,
        step_size=0.05,
        l2_weight=1.0,
        burn_in_window=20,
        burn_in_epsilon=0.01,
        window=500,
    )
    sampler = Sampler([linear_unit(w, 1.0), L2Term()], (1, 2, 2), config)
    activations, xs = [], []
    for _ in range(200):
        activations.append(sampler.step().activation)
        xs.append(sampler.x.clone())
    gap = (torch.stack(activations) - limit).abs() / limit
    steps = sampler.burn_in_step.tolist()
    assert all(19 < s < 200 for s in steps)
    for chain, s in enumerate(steps):
        assert gap[19, chain] > 0.05  # unstable when the window first fills
        assert gap[s, chain] < 0.02  # 1% change between the halves: about 1% from the limit
        torch.testing.assert_close(sampler.mean()[chain], torch.stack(xs[s:])[:, chain].mean(0))


def test_auto_burn_in_respects_the_threshold_and_noise() -> None:
    w = torch.tensor([1.0, -1.0, 2.0, 0.5])
    base = dict(chains=4, step_size=0.1, l2_weight=1.0, burn_in_window=20)
    never = Sampler(
        [linear_unit(w, 1.0), L2Term()],
        (1, 2, 2),
        SamplerConfig(temperature=0.0, burn_in_threshold=[100.0, 100.0, 0.0, 0.0], **base),
    )
    run(never, 100)
    assert [s >= 0 for s in never.burn_in_step.tolist()] == [False, False, True, True]
    # With noise and an activation hovering near 0 the relative change never gets small;
    # the trend test still declares the chains burned in.
    noisy = Sampler(
        [linear_unit(torch.zeros(4), 0.0), L2Term()],
        (1, 2, 2),
        SamplerConfig(temperature=0.5, **base),
    )
    run(noisy, 200)
    assert (noisy.burn_in_step >= 0).all()


# ------------------------------------------------------------------- normalization
@pytest.mark.parametrize("normalize", ["none", "regularizers", "all"])
def test_normalization_modes(normalize: str) -> None:
    w = torch.tensor([300.0, -400.0, 0.0, 0.0])
    lam, step = 0.5, 0.1
    config = SamplerConfig(
        chains=2, temperature=0.0, step_size=step, l2_weight=lam, normalize=normalize
    )
    sampler = Sampler([linear_unit(w, 0.0), L2Term()], (1, 2, 2), config)
    x0 = sampler.x.clone()
    info = sampler.step()
    torch.testing.assert_close(info.terms["l2"], -0.5 * x0.pow(2).sum((1, 2, 3)))
    torch.testing.assert_close(info.activation, (x0.flatten(1) * w).sum(1))
    g_act = w.view(1, 1, 2, 2).expand_as(x0)
    g_l2 = -x0
    rms = lambda g: g.pow(2).mean((1, 2, 3), keepdim=True).sqrt()  # noqa: E731
    if normalize in ("regularizers", "all"):
        g_l2 = g_l2 / rms(g_l2)
    if normalize == "all":
        g_act = g_act / rms(g_act)  # rms(w) = 250
    torch.testing.assert_close(sampler.x, x0 + step * (g_act + lam * g_l2))


# ---------------------------------------------------------------------- discriminator
class CountingDisc(nn.Module):
    """A small real conv discriminator (one logit per image) that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.net = frozen(
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1))
        )
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


def test_zero_disc_weight_never_runs_d_and_is_bit_identical() -> None:
    net, disc = small_net(), CountingDisc()
    act = ActivationTerm(lambda x: net(x)[:, 0])
    config = SamplerConfig(chains=3, temperature=0.1, disc_weight=0.0, seed=4)
    with_d = Sampler([act, L2Term(), DiscriminatorTerm(lambda: disc)], (1, 4, 4), config)
    without = Sampler([act, L2Term()], (1, 4, 4), config)
    infos = [with_d.step() for _ in range(8)]
    run(without, 8)
    assert torch.equal(with_d.x, without.x)
    assert disc.calls == 0
    assert sorted(infos[-1].terms) == ["activation", "l2"]


@pytest.mark.parametrize("normalize", ["none", "all"])
def test_disc_mixing_rule(normalize: str) -> None:
    net, disc = small_net(), CountingDisc()
    lam, step = 0.2, 0.1
    weights = [0.0, 0.5, 1.0]
    config = SamplerConfig(
        chains=3,
        temperature=0.0,
        step_size=step,
        l2_weight=lam,
        disc_weight=weights,
        normalize=normalize,
    )
    sampler = Sampler(
        [ActivationTerm(lambda x: net(x)[:, 0]), L2Term(), DiscriminatorTerm(lambda: disc)],
        (1, 4, 4),
        config,
    )
    x0 = sampler.x.clone()
    info = sampler.step()
    leaf = x0.clone().requires_grad_(True)
    (g_a,) = torch.autograd.grad(net(leaf).sum(), leaf)
    (g_d,) = torch.autograd.grad(nn.functional.logsigmoid(disc.net(leaf)).sum(), leaf)
    rms = lambda g: g.pow(2).mean((1, 2, 3), keepdim=True).sqrt()  # noqa: E731
    g_l2 = -x0
    if normalize == "all":
        g_a, g_l2 = g_a / rms(g_a), g_l2 / rms(g_l2)
    w = torch.tensor(weights).view(3, 1, 1, 1)
    g = (1 - w) * g_a + w * rms(g_a) * g_d / rms(g_d) + lam * g_l2
    torch.testing.assert_close(sampler.x, x0 + step * g)
    assert disc.calls == 1
    torch.testing.assert_close(
        info.terms["discriminator"], nn.functional.logsigmoid(disc.net(x0))[:, 0]
    )


# ------------------------------------------------------------------------ step size
def test_step_size_decay_follows_a_b_plus_t_to_minus_mu() -> None:
    a, b, mu = 0.5, 10.0, 0.75
    config = SamplerConfig(chains=2, temperature=0.0, step_decay=(a, b, mu), l2_weight=1.0)
    sampler = Sampler([L2Term()], (1, 1, 2), config)
    x = sampler.x.clone()
    for t in range(1, 6):
        beta = a * (b + t) ** -mu
        assert sampler.step_size() == pytest.approx(beta)
        info = sampler.step()
        assert info.step_size == pytest.approx(beta)
        x = x * (1 - beta)
    torch.testing.assert_close(sampler.x, x)


# ----------------------------------------------------------------- live settings
def test_live_settings_apply_at_the_next_step() -> None:
    config = SamplerConfig(chains=2, temperature=0.5, l2_weight=1.0, step_size=0.1)
    sampler = Sampler([L2Term()], (1, 1, 2), config)
    sampler.set(temperature=0.0, l2_weight=[1.0, 2.0])
    assert sampler.config.temperature == 0.5  # not yet
    x0 = sampler.x.clone()
    sampler.step()
    assert sampler.config.temperature == 0.0
    torch.testing.assert_close(sampler.x, x0 * torch.tensor([0.9, 0.8]).view(2, 1, 1, 1))
    sampler.reset([1])
    assert sampler.age.tolist() == [1, 0]
    assert sampler.resets.tolist() == [0, 0]


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-1), "temperature must be in [0, 100], got -1."),
        (dict(temperature=150), "temperature must be in [0, 100], got 150."),
        (dict(temperature=float("nan")), "temperature must be a finite number, got nan."),
        (dict(temperature="hot"), "temperature must be a number, got 'hot'."),
        (
            dict(chains=3, temperature=[0.1, 0.2]),
            "temperature has 2 values but there are 3 chains; give one value or one per chain.",
        ),
        (dict(step_size=0), "step_size must be in [1e-06, 100], got 0."),
        (dict(step_size=1e-7), "step_size must be in [1e-06, 100], got 1e-07."),
        (dict(momentum=1.0), "momentum must be in [0, 0.999], got 1."),
        (dict(momentum=0.9995), "momentum must be in [0, 0.999], got 0.9995."),
        (dict(l2_weight=150), "l2_weight must be in [0, 100], got 150."),
        (dict(disc_weight=1.5), "disc_weight must be in [0, 1], got 1.5."),
        (dict(step_decay=(1.0, 1.0, 0.5)), "step_decay mu must be in (0.5, 1], got 0.5."),
        (dict(step_decay=(1.0, 1.0, 1.2)), "step_decay mu must be in (0.5, 1], got 1.2."),
        (dict(step_decay=(0.0, 1.0, 1.0)), "step_decay a must be > 0, got 0."),
        (dict(normalize="foo"), "normalize must be one of none, regularizers, all, got 'foo'."),
        (dict(window=0), "window must be in [1, 100000], got 0."),
        (dict(window=2.0), "window must be a whole number, got 2.0."),
        (dict(chains=0), "chains must be an integer >= 1, got 0."),
        (dict(clamp=(1.0, 0.0)), "clamp must be lo,hi with lo < hi, got (1, 0)."),
        (dict(burn_in=-3), "burn_in must be in [0, 10000000], got -3."),
    ],
)
def test_bad_settings_are_one_sentence(kwargs: dict, message: str) -> None:
    with pytest.raises(SamplerError) as err:
        SamplerConfig(**kwargs)
    assert str(err.value) == message


def test_bad_sampler_input_is_one_sentence() -> None:
    sampler = Sampler([L2Term()], (1, 2, 2), SamplerConfig(chains=2))
    cases = [
        (
            lambda: sampler.set(chains=3),
            "Setting 'chains' cannot be changed while sampling; create a new sampler.",
        ),
        (
            lambda: sampler.set(heat=3),
            "Unknown setting 'heat'; live settings are temperature, "
            "step_size, step_decay, momentum, l2_weight, disc_weight, normalize, prior_decay, window, clamp.",
        ),
        (lambda: sampler.set(temperature=-2.0), "temperature must be in [0, 100], got -2."),
        (
            lambda: Sampler([L2Term()], (1, 28), SamplerConfig()),
            "input_shape must be three positive integers (C, H, W), got (1, 28).",
        ),
        (
            lambda: Sampler([L2Term(), L2Term()], (1, 2, 2)),
            "Two energy terms are both named 'l2'; give them different names.",
        ),
        (
            lambda: Sampler([L2Term()], (3, 224, 224), SamplerConfig(chains=16, window=200)),
            "A window of 200 samples for 16 chains of shape (3, 224, 224) needs 1838 MiB, more "
            "than the 1024 MiB limit; use a smaller window or fewer chains.",
        ),
        (lambda: sampler.reset([5]), "Chain indices must be in [0, 1], got [5]."),
        (
            lambda: sampler.set(window=10**8),
            "window must be in [1, 100000], got 100000000.",
        ),
        (
            lambda: Sampler(
                [DiscriminatorTerm(lambda: None), DiscriminatorTerm(lambda: None, "d2")], (1, 2, 2)
            ),
            "Only one discriminator term is supported.",
        ),
    ]
    for call, message in cases:
        with pytest.raises(SamplerError) as err:
            call()
        assert str(err.value) == message
    assert sampler.config.temperature == 0.01  # the failed set changed nothing
    sampler.step()
    assert sampler.config.temperature == 0.01


def test_clamp_keeps_samples_in_range() -> None:
    config = SamplerConfig(
        chains=4, temperature=1.0, step_size=0.5, clamp=(-0.5, 0.25), init_std=3.0
    )
    sampler = Sampler([L2Term()], (1, 3, 3), config)
    assert float(sampler.x.min()) == -0.5 and float(sampler.x.max()) == 0.25
    run(sampler, 5)
    assert float(sampler.x.min()) >= -0.5 and float(sampler.x.max()) <= 0.25


@pytest.mark.parametrize("sync_free", [False, True])
def test_a_huge_but_finite_chain_counts_as_diverged(sync_free: bool) -> None:
    # Under gradient normalization a step size far too large never overflows: x drifts to
    # huge finite values. Past divergence_limit the chain is reset like a NaN one.
    term = ActivationTerm(lambda x: x.flatten(1).sum(1))
    config = SamplerConfig(
        chains=3,
        temperature=0.0,
        step_size=[1e-3, 40, 1e-3],
        l2_weight=0.0,
        normalize="all",
        divergence_limit=100,
        burn_in=0,
        seed=0,
        sync_free=sync_free,
    )
    s = Sampler([term], (1, 2, 2), config)
    for _ in range(10):
        s.step()
    # Chain 1 moves 40 per pixel and step: beyond 100 on its 3rd step, so reset on steps 3, 6, 9.
    assert s.resets.tolist() == [0, 3, 0]
    assert float(s.x.abs().max()) < 100


def test_divergence_limit_must_be_positive() -> None:
    with pytest.raises(SamplerError, match=r"^divergence_limit must be > 0, got 0.$"):
        SamplerConfig(divergence_limit=0)


# -------------------------------------------------------------- host syncs (sync_free)
def poisoned_net(calls_to_poison: set[int], chain: int, seed: int = 0):
    """The activation of `small_net`, NaN for `chain` on the listed calls (1, 2, ...)."""
    net = small_net(seed)
    calls = {"n": 0}

    def activation(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = net(x)[:, 0]
        if calls["n"] in calls_to_poison:
            out = torch.where(torch.arange(x.shape[0]) == chain, torch.nan, out)
        return out

    return activation


def trace(sampler: Sampler, steps: int, actions: dict | None = None) -> dict[str, torch.Tensor]:
    """Everything observable of `steps` steps, with `actions[t](sampler)` run before step t."""
    rows: dict[str, list[torch.Tensor]] = {"activation": [], "burned_in": [], "reset": [], "x": []}
    for t in range(steps):
        if actions and t in actions:
            actions[t](sampler)
        info = sampler.step()
        rows["activation"].append(info.activation.clone())
        rows["burned_in"].append(info.burned_in.clone())
        rows["reset"].append(info.reset.clone())
        rows["x"].append(sampler.x.clone())
    out = {name: torch.stack(values) for name, values in rows.items()}
    out.update(
        mean=sampler.mean(),
        window_mean=sampler.window_mean(),
        burn_in_step=sampler.burn_in_step.clone(),
        resets=sampler.resets.clone(),
        age=sampler.age.clone(),
    )
    return out


SCENARIOS = {
    # Auto burn-in; chain 2 diverges before, while and after every chain is burned in, twice
    # in a row, and again within one check period.
    "auto": (
        dict(chains=5, temperature=0.05, window=5, burn_in_window=6, seed=8),
        {3, 4, 40, 41, 42, 90, 100},
        2,
        160,
        {},
    ),
    # Fixed burn-in of 0 (a reset chain is burned in again at once), a clamp changed live.
    "fixed": (
        dict(chains=4, temperature=0.05, window=6, burn_in=0, clamp=(-2.0, 2.0), seed=9),
        {10, 11, 12, 13, 70},
        1,
        120,
        {50: lambda s: s.set(clamp=(-1.0, 1.5))},
    ),
    # reset() and a window resize between steps, momentum and per-chain temperatures.
    "controls": (
        dict(
            chains=4,
            temperature=[0.0, 0.05, 0.1, 0.2],
            momentum=0.5,
            window=4,
            burn_in_window=8,
            seed=10,
        ),
        {5, 60, 61, 62},
        3,
        150,
        {30: lambda s: s.reset([0, 3]), 80: lambda s: s.set(window=9), 81: lambda s: s.reset()},
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sync_free_steps_give_the_same_run_as_host_checks(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small fold and re-sum periods, so the window re-sums over the stale slots of resets.
    monkeypatch.setattr(averaging, "MEAN_FOLD_STEPS", 5)
    monkeypatch.setattr(averaging, "WINDOW_RESUM_STEPS", 6)
    settings, poison, chain, steps, actions = SCENARIOS[name]
    runs = {}
    for sync_free in (False, True):
        config = SamplerConfig(**settings, sync_free=sync_free)
        sampler = Sampler(
            [ActivationTerm(poisoned_net(poison, chain)), L2Term()], (1, 4, 4), config
        )
        assert sampler.sync_free is sync_free
        runs[sync_free] = trace(sampler, steps, actions)
    for key, value in runs[False].items():  # bit for bit; the poisoned activations are NaN
        torch.testing.assert_close(value, runs[True][key], rtol=0, atol=0, equal_nan=True)
    resets = runs[True]["resets"]
    assert resets[chain] > 0 and resets.sum() == resets[chain]
    # Every poisoned step resets the chain, and no other step does.
    assert runs[True]["reset"].nonzero()[:, 0].add(1).tolist() == sorted(poison)


def test_sync_free_is_off_on_the_cpu_unless_asked() -> None:
    assert not Sampler([L2Term()], (1, 2, 2), SamplerConfig(chains=2)).sync_free
    assert Sampler([L2Term()], (1, 2, 2), SamplerConfig(chains=2, sync_free=True)).sync_free
    with pytest.raises(SamplerError, match=r"^sync_free must be True, False or None, got 1\.$"):
        SamplerConfig(sync_free=1)


@pytest.mark.parametrize("sync_free", [False, True])
def test_a_diverged_chain_takes_a_fresh_start_that_shifts_no_other_chain(sync_free: bool) -> None:
    # The NaN activation test again, with and without host checks: chain 1 restarts from its
    # spare start (init_std-scaled, clamped), the others go on exactly as without the NaN.
    net = small_net()
    config = SamplerConfig(
        chains=4, temperature=0.1, burn_in=0, init_std=5.0, clamp=(-2.0, 2.0), sync_free=sync_free
    )
    good = Sampler([ActivationTerm(lambda x: net(x)[:, 0]), L2Term()], (1, 4, 4), config)
    bad = Sampler([ActivationTerm(poisoned_net({3}, 1)), L2Term()], (1, 4, 4), config)
    spare = bad.spare.starts[1].clone()
    run(good, 2)
    run(bad, 2)
    info = bad.step()
    good.step()
    assert info.reset.tolist() == [False, True, False, False]
    assert torch.equal(bad.x[1], spare)
    assert float(spare.abs().max()) == 2.0  # clamped: init_std 5 puts pixels beyond 2
    assert bad.resets.tolist() == [0, 1, 0, 0] and bad.age.tolist() == [3, 0, 3, 3]
    keep = torch.tensor([0, 2, 3])
    run(good, 3)
    run(bad, 3)
    assert torch.equal(bad.x[keep], good.x[keep])
    assert torch.equal(bad.mean()[keep], good.mean()[keep])
    assert bad.burn_in_step.tolist() == [0, 3, 0, 0]


@pytest.mark.parametrize("sync_free", [False, True])
def test_used_spare_starts_are_redrawn_within_two_check_periods(sync_free: bool) -> None:
    # A chain that overflows every step uses its spare start every step; the host redraws it
    # from the copy of the reset counts it reads every CHECK_STEPS steps, a period late.
    from ldam.sampling.sampler import CHECK_STEPS

    scale = torch.tensor([1.0, 1e38])
    term = ActivationTerm(lambda x: scale * x.flatten(1).sum(1))
    config = SamplerConfig(
        chains=2, temperature=0.0, step_size=10.0, l2_weight=0.0, burn_in=0, sync_free=sync_free
    )
    sampler = Sampler([term], (1, 2, 2), config)
    starts = []
    for _ in range(4 * CHECK_STEPS):
        sampler.step()
        starts.append(sampler.x[1].clone())
    assert sampler.resets.tolist() == [0, 4 * CHECK_STEPS]
    distinct = {tuple(s.flatten().tolist()) for s in starts}
    # Redrawn at steps 2K (for resets up to K), 3K and 4K (the 4K draw is not used yet).
    assert len(distinct) == 3
    assert all(torch.equal(starts[i], starts[0]) for i in range(2 * CHECK_STEPS))
    assert not torch.equal(starts[2 * CHECK_STEPS], starts[0])


def test_group_seeds_give_each_group_the_chains_it_would_have_alone() -> None:
    """Chains split by `group_seeds` draw their starts, noise and spare starts from streams of
    their own: group g of a batch is bit-identical to a sampler of its chains alone, seeded
    `group_seeds[g]`, whatever the other groups are (`ldam atlas` relies on this)."""
    w = torch.tensor([1.0, -2.0, 0.5, 0.0])

    def run_with(chains: int, **seeding: object) -> Sampler:
        config = SamplerConfig(
            chains=chains, temperature=0.5, step_size=0.1, l2_weight=1.0, window=5, **seeding
        )
        sampler = Sampler([linear_unit(w, 0.0), L2Term()], (1, 2, 2), config)
        run(sampler, 40)
        return sampler

    batch = run_with(9, group_seeds=[11, 22, 33])
    for g, seed in enumerate([11, 22, 33]):
        alone = run_with(3, seed=seed)
        assert torch.equal(batch.x[3 * g : 3 * g + 3], alone.x)
        assert torch.equal(batch.window_mean()[3 * g : 3 * g + 3], alone.window_mean())
        assert torch.equal(batch.spare.starts[3 * g : 3 * g + 3], alone.spare.starts)
    # The groups really differ, and one group is the plain seed's sampler.
    assert not torch.equal(batch.x[0:3], batch.x[3:6])
    assert torch.equal(run_with(3, group_seeds=[5]).x, run_with(3, seed=5).x)
    with pytest.raises(SamplerError) as info:
        SamplerConfig(chains=4, group_seeds=[1, 2, 3])
    assert str(info.value) == "4 chains cannot be split into 3 equal groups of group_seeds."
