"""The per-unit energy scale and the step size adapted in burn-in (`ldam.sampling.scale`):
closed forms first, then bit-identity of the frozen chain, then the bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ldam.cli.main import main
from ldam.models.loading import load_checkpoint
from ldam.models.saving import export_checkpoint
from ldam.sampling.energy import ActivationTerm, L2Term
from ldam.sampling.sampler import Sampler, SamplerConfig, SamplerError
from ldam.sampling.scale import (
    TARGET_ACCEPTANCE,
    chain_groups,
    group_mean,
    mala_log_accept,
)
from tests.chains import assert_gaussian_draws, linear_unit, run, stationary_variance


def test_groups_and_their_means() -> None:
    groups, count = chain_groups([(3,), (5,), (3,), (7,)])
    assert groups.tolist() == [0, 1, 0, 2] and count == 3
    means = group_mean(torch.tensor([1.0, 2.0, 3.0, 4.0]), groups, count)
    assert means.tolist() == [2.0, 2.0, 4.0]


def test_mala_ratio_is_the_closed_form_on_a_gaussian() -> None:
    # E(x) = -x^2 / 2 in 1-D at T = 1: the ratio is p(x') q(x | x') / (p(x) q(x' | x)).
    x, xp, b = torch.tensor([[0.3]]), torch.tensor([[1.1]]), torch.tensor([0.4])
    e = lambda v: -(v**2).sum(1) / 2  # noqa: E731
    g = lambda v: -v  # noqa: E731
    got = mala_log_accept(x, xp, g(x), g(xp), e(x), e(xp), b, 1.0)
    log_q = lambda to, frm: -((to - frm - b * g(frm)) ** 2).sum(1) / (4 * b)  # noqa: E731
    want = e(xp) - e(x) + log_q(x, xp) - log_q(xp, x)
    torch.testing.assert_close(got, want.double())


def test_the_scale_of_a_linear_unit_is_the_norm_of_its_weights() -> None:
    w = torch.tensor([3.0, -4.0, 0.0, 12.0])  # ||w|| = 13
    config = SamplerConfig(chains=6, energy_scale="unit", seed=0)
    sampler = Sampler([linear_unit(w, 1.0), L2Term()], (1, 2, 2), config)
    assert sampler.unit_scale == {0: pytest.approx(13.0, rel=1e-6)}
    assert sampler.unit_tuning()[0]["scale"] == pytest.approx(13.0, rel=1e-6)
    # The absolute scale (the paper's, SamplerConfig's default) measures nothing.
    assert Sampler([linear_unit(w, 1.0), L2Term()], (1, 2, 2)).scale == 1.0


@pytest.mark.parametrize("weights", [(1.0, -2.0, 0.5, 0.0), (100.0, -200.0, 50.0, 0.0)])
def test_a_linear_unit_samples_the_exact_gaussian_of_its_own_scale(
    weights: tuple[float, ...],
) -> None:
    """Unit scale and an adapted step: the law is N(w / (||w|| lam), T / (lam (1 - b lam / 2)))
    with the frozen step b, the same for w and for 100 w (T reads the same on both units)."""
    lam, temperature, chains, recorded = 1.0, 0.5, 400, 300
    w = torch.tensor(weights)
    norm = float(w.norm())
    config = SamplerConfig(
        chains=chains,
        temperature=temperature,
        step_size=None,
        energy_scale="unit",
        l2_weight=lam,
        burn_in=0,
        window=1,
        seed=0,
    )
    sampler = Sampler([linear_unit(w, 3.0), L2Term()], (1, 2, 2), config)
    run(sampler, config.adapt_steps + 50)  # adaptation (discarded), then 50 more to settle
    assert sampler.adaptation is not None and sampler.adaptation["adapted"]
    (entry,) = sampler.adaptation["step_size"]
    assert abs(entry["acceptance"] - TARGET_ACCEPTANCE) < 0.1
    step = float(sampler.config.step_size)  # frozen: one value for the one unit
    assert 0 < step * lam < 2  # a stable step was found
    draws = torch.stack(run(sampler, recorded)).flatten(1).T.numpy()
    draws = draws.reshape(chains, 4, recorded).transpose(1, 0, 2)  # [pixel, chain, n]
    var = stationary_variance(step, lam, 0.0, temperature)
    assert_gaussian_draws(draws, [float(v) / (norm * lam) for v in w], var)


def test_the_frozen_scale_and_step_give_the_chains_set_by_hand_bit_for_bit() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh())
    for p in net.parameters():
        p.requires_grad_(False)
    units = [0, 3, 0, 3]
    term = lambda: ActivationTerm(  # noqa: E731
        _PerChain(lambda x: net(x)[torch.arange(4), torch.tensor(units)], units)
    )
    auto = Sampler(
        [term(), L2Term()],
        (1, 4, 4),
        SamplerConfig(chains=4, energy_scale="unit", step_size=None, temperature=0.1, seed=3),
    )
    run(auto, auto.config.adapt_steps)
    assert auto._adapter is None  # frozen after exactly adapt_steps steps
    scale = auto.scale.tolist()
    step = auto.config.step_size
    assert scale[0] == scale[2] and scale[1] == scale[3]  # one sigma per unit
    hand = Sampler(
        [term(), L2Term()],
        (1, 4, 4),
        SamplerConfig(chains=4, scale=scale, step_size=step, temperature=0.1, seed=3),
    )
    # The same state: the adapted chains, their velocity (0 at the freeze) and their noise.
    hand.x.copy_(auto.x)
    hand.v.copy_(auto.v)
    for mine, theirs in zip(hand.streams.noise, auto.streams.noise, strict=True):
        mine.set_state(theirs.get_state())
    a = torch.stack(run(auto, 40))
    b = torch.stack(run(hand, 40))
    assert torch.equal(a, b)


class _PerChain:
    """An activation function that says which unit each chain samples."""

    def __init__(self, fn, units: list[int]) -> None:  # noqa: ANN001
        self.fn, self.units_per_chain = fn, units

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def test_a_dead_unit_is_one_sentence_or_marked() -> None:
    dead = ActivationTerm(_PerChain(lambda x: torch.relu(x.flatten(1).sum(1) - 1e6), [4, 4]))
    config = SamplerConfig(chains=2, energy_scale="unit", seed=0)
    with pytest.raises(SamplerError) as err:
        Sampler([dead, L2Term()], (1, 2, 2), config)
    assert str(err.value) == (
        "Unit 4 has no gradient at any chain's start (a dead unit), so its energy scale cannot "
        "be measured; start the chains elsewhere (a larger init_std) or use energy_scale "
        "absolute."
    )
    assert err.value.field == "energy_scale"
    marked = Sampler(
        [dead, L2Term()], (1, 2, 2), SamplerConfig(chains=2, energy_scale="unit", dead_scale=1.0)
    )
    assert marked.dead_units == [4] and marked.unit_tuning()[4]["dead"]
    marked.step()  # sampling goes on at sigma 1


def test_a_step_the_user_sets_is_kept_and_auto_again_readapts() -> None:
    w = torch.tensor([1.0, 2.0, 0.0, -1.0])
    config = SamplerConfig(chains=4, step_size=None, temperature=0.1, adapt_steps=20, seed=0)
    sampler = Sampler([linear_unit(w, 0.0), L2Term()], (1, 2, 2), config)
    run(sampler, 5)
    sampler.set(step_size=0.01)
    run(sampler, 3)
    assert sampler.config.step_size == 0.01 and sampler.unit_tuning()[0]["adapting"] is False
    sampler.set(step_size=None)
    sampler.step()
    assert sampler.unit_tuning()[0]["adapting"] is True
    run(sampler, 20)
    assert sampler.config.step_size != 0.01 and not sampler.unit_tuning()[0]["adapting"]
    # A live change of another setting keeps the adapted step.
    adapted = sampler.config.step_size
    sampler.set(temperature=0.2, step_size=None)
    sampler.step()
    assert sampler.config.step_size == adapted


def test_without_a_metropolis_test_the_step_starts_where_adaptation_would() -> None:
    w = torch.tensor([1.0, 2.0, 0.0, -1.0])
    config = SamplerConfig(chains=2, step_size=None, temperature=0.0, l2_weight=0.5)
    sampler = Sampler([linear_unit(w, 0.0), L2Term()], (1, 2, 2), config)
    assert sampler.config.step_size == pytest.approx(0.2 / 0.5)
    assert sampler.adaptation == {
        "adapted": False,
        "steps": 0,
        "why_not": "a temperature of 0 has no Metropolis test",
    }


# ------------------------------------------------------------------ commands, end to end


def dead_unit_checkpoint(folder: Path) -> Path:
    """A tiny exported network whose layer `fc` has 3 units, unit 1 with zero weights: no
    input moves it, so its scale cannot be measured."""
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("flat", torch.nn.Flatten())
    net.add_module("fc", torch.nn.Linear(16, 3))
    with torch.no_grad():
        net.fc.weight[1] = 0.0
    return export_checkpoint(net.eval(), folder / "dead.pt2", (1, 4, 4))


def test_ldam_sample_names_a_dead_unit_in_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = dead_unit_checkpoint(tmp_path)
    argv = ["sample", str(path), "--target", "fc:1", "--steps", "5", "--chains", "2"]
    assert main([*argv, "--out", str(tmp_path / "run.npz")]) == 2
    assert capsys.readouterr().err == (
        "ldam: Unit 1 has no gradient at any chain's start (a dead unit), so its energy scale "
        "cannot be measured; start the chains elsewhere (a larger init_std) or use "
        "energy_scale absolute.\n"
    )
    # The absolute scale samples it (the L2 prior alone).
    assert main([*argv, "--energy-scale", "absolute", "--out", str(tmp_path / "run.npz")]) == 0


def test_the_atlas_marks_a_dead_unit_and_renders_the_others(tmp_path: Path) -> None:
    path = dead_unit_checkpoint(tmp_path)
    out = tmp_path / "atlas"
    argv = ["atlas", str(path), "--layer", "fc", "--out", str(out), "--steps", "150"]
    assert main([*argv, "--chains", "4", "--device", "cpu"]) == 0
    manifest = json.loads((out / "atlas.json").read_text())
    entries = {e["unit"]: e for e in manifest["units"]}
    assert sorted(entries) == [0, 1, 2]
    assert [entries[u]["dead"] for u in (0, 1, 2)] == [False, True, False]
    # The live units have their own scale: the norm of their weights (a linear unit).
    weights = load_checkpoint(path).module.state_dict()
    for unit in (0, 2):
        norm = float(weights["fc.weight"][unit].norm())
        assert entries[unit]["scale"] == pytest.approx(norm, rel=1e-5)
        assert 1e-6 <= entries[unit]["step_size"] <= 100
    # The gallery's data marks it too (its caption then reads "dead: no gradient at any start").
    page = (out / "index.html").read_text()
    data = page.split('<script id="atlas-data" type="application/json">', 1)[1].split("</script>")[
        0
    ]
    shown = {e["unit"]: e["dead"] for e in json.loads(data)["units"]}
    assert shown == {0: False, 1: True, 2: False}


def test_a_reset_during_adaptation_restarts_the_chains_it_adapts() -> None:
    w = torch.tensor([1.0, 2.0, 0.0, -1.0])
    config = SamplerConfig(chains=3, step_size=None, temperature=0.1, adapt_steps=50, seed=0)
    sampler = Sampler([linear_unit(w, 0.0), L2Term()], (1, 2, 2), config)
    run(sampler, 10)
    sampler.reset()
    fresh = sampler.x.clone()
    info = sampler.step()
    # The step starts from the fresh chains (its activation is theirs), not from the old ones.
    torch.testing.assert_close(info.activation, fresh.flatten(1) @ w)
    assert sampler.unit_tuning()[0]["adapting"]
