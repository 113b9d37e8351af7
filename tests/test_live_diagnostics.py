"""The dashboard's live diagnostics (`ldam.worker.live_diagnostics`): per unit the split R-hat
and ESS of the activation over its chains, against `ldam.sampling.diagnostics` on known chains,
the plain-words states and their thresholds, and the worker's metrics on a real LeNet."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldam.sampling import diagnostics
from ldam.sampling.diagnostics import MIN_DRAWS, effective_sample_size, split_rhat
from ldam.sampling.diversity import BLOCKS, unit_diversity
from ldam.wire.events import SetParams
from ldam.wire.params import SamplerParams
from ldam.worker.live_diagnostics import (
    ESS_PER_CHAIN_MIXING,
    MIXING,
    NOT_BURNED_IN,
    RHAT_MIXING,
    STUCK,
    ActivationHistory,
    unit_diagnostics,
    verdict,
)
from ldam.worker.process import SWEEP_NOTE
from tests.support import PAIR, in_process_worker, lenet_folder

CPU = torch.device("cpu")


def ar1(
    chains: int, steps: int, rho: float, seed: int, means: list[float] | None = None
) -> np.ndarray:
    """`[chains, steps]` AR(1) chains x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t (unit variance),
    each around its mean."""
    rng = np.random.default_rng(seed)
    x = np.zeros((chains, steps))
    x[:, 0] = rng.standard_normal(chains)
    for t in range(1, steps):
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho**2) * rng.standard_normal(chains)
    return x + np.asarray(means if means is not None else [0.0] * chains)[:, None]


def fill(draws: np.ndarray, capacity: int = 1000) -> ActivationHistory:
    """A history holding `draws [chains, steps]` as the activations of steps 1..steps."""
    history = ActivationHistory(draws.shape[0], CPU, capacity)
    for t in range(draws.shape[1]):
        history.add(t + 1, torch.tensor(draws[:, t], dtype=torch.float32))
    return history


def test_rhat_and_ess_are_those_of_diagnostics_py_on_the_kept_draws() -> None:
    draws = ar1(4, 300, rho=0.6, seed=1)
    history = fill(draws)
    # Chains burned in after steps 10, 20, 5 and 40: the unit's draws start at step 42 (the
    # activation reported at step t is that of sample t - 1, kept once t - 1 > 40).
    [entry] = unit_diagnostics(history, [10, 20, 5, 40], [7, 7, 7, 7])
    kept = draws.astype(np.float32).astype(np.float64)[:, 41:]
    assert entry["draws"] == 300 - 41 == kept.shape[1]
    assert entry["rhat"] == pytest.approx(split_rhat(kept), rel=1e-12)
    assert entry["ess"] == pytest.approx(effective_sample_size(kept), rel=1e-12)
    # Unit-variance AR(1) with rho 0.6: ESS about M n (1 - rho) / (1 + rho) = 0.25 M n.
    assert 0.15 * kept.size < entry["ess"] < 0.4 * kept.size
    assert entry["rhat"] < 1.05 and entry["state"] == MIXING
    assert (entry["unit"], entry["label"], entry["chains"]) == (7, "7", 4)


def test_the_ring_keeps_the_newest_steps_and_restart_forgets_older_ones() -> None:
    draws = ar1(3, 250, rho=0.3, seed=2)
    history = fill(draws, capacity=100)
    [entry] = unit_diagnostics(history, [0, 0, 0], [0, 0, 0])
    newest = draws.astype(np.float32).astype(np.float64)[:, -100:]
    assert entry["draws"] == 100
    assert entry["rhat"] == pytest.approx(split_rhat(newest), rel=1e-12)
    assert entry["ess"] == pytest.approx(effective_sample_size(newest), rel=1e-12)
    history.restart(200)  # a checkpoint swap at step 200: only steps 201..250 count
    [after] = unit_diagnostics(history, [0, 0, 0], [0, 0, 0])
    assert after["draws"] == 50
    assert after["rhat"] == pytest.approx(split_rhat(newest[:, -50:]), rel=1e-12)


def test_units_take_their_own_chains_in_grid_order() -> None:
    # Grid order of a range layout with 3 units and 2 rows: chains 0,3 -> unit 0, 1,4 -> 1, ...
    mixing = ar1(2, 400, rho=0.2, seed=3)
    modes = ar1(2, 400, rho=0.2, seed=4, means=[0.0, 10.0])  # two chains, two modes
    flat = np.zeros((6, 400))
    flat[[0, 3]] = mixing
    flat[[1, 4]] = modes
    flat[[2, 5]] = ar1(2, 400, rho=0.2, seed=5)
    history = fill(flat)
    burn = [0, 0, -1, 0, 0, 0]  # chain 2 (unit 2) still burns in
    labels = {0: "zero", 1: "one", 2: "two"}
    out = unit_diagnostics(history, burn, [0, 1, 2, 0, 1, 2], labels)
    assert [e["label"] for e in out] == ["zero", "one", "two"]
    kept = flat.astype(np.float32).astype(np.float64)[:, 1:]
    assert out[0]["rhat"] == pytest.approx(split_rhat(kept[[0, 3]]), rel=1e-12)
    assert out[0]["state"] == MIXING
    assert out[1]["rhat"] == pytest.approx(split_rhat(kept[[1, 4]]), rel=1e-12)
    assert out[1]["rhat"] > 5 and out[1]["state"] == STUCK == "stuck in separate modes"
    assert out[2] == {
        "unit": 2,
        "label": "two",
        "chains": 2,
        "draws": 0,
        "rhat": None,
        "ess": None,
        "state": NOT_BURNED_IN,
    }
    assert NOT_BURNED_IN == "not burned in yet" and MIXING == "mixing"


def test_the_statistics_are_the_one_per_unit_functions() -> None:
    # The live entries are `ldam.sampling.diagnostics.unit_diagnostics` over the ring's window,
    # the same draws `ldam sample` and the atlas count, with a verdict and a label added.
    draws = ar1(4, 300, rho=0.4, seed=7)
    history = fill(draws, capacity=120)  # the ring holds steps 181..300
    burn, units = [170, 200, 100, 0], [3, 1, 3, 1]
    shared = diagnostics.unit_diagnostics(
        draws.astype(np.float32).astype(np.float64)[:, 180:].T, burn, units, first_step=181
    )
    live = unit_diagnostics(history, burn, units)
    assert [e["unit"] for e in live] == [e["unit"] for e in shared] == [3, 1]
    for mine, theirs in zip(live, shared, strict=True):
        assert (mine["draws"], mine["rhat"], mine["ess"]) == (
            theirs["draws"],
            theirs["rhat"],
            theirs["ess"],
        )
        assert mine["chains"] == len(theirs["chains"]) == 2
    assert live[1]["draws"] == 300 - 201  # unit 1 counts from step 202


def test_verdict_thresholds() -> None:
    assert (RHAT_MIXING, ESS_PER_CHAIN_MIXING, MIN_DRAWS) == (1.1, 10.0, 40)
    assert verdict(1.05, 40.0, 4) == MIXING
    assert verdict(1.1, 400.0, 4) == STUCK  # R-hat at the limit: the chains disagree
    assert verdict(1.01, 39.9, 4) == STUCK  # under 10 effective draws per chain: they stand still
    assert verdict(math.nan, 1000.0, 4) == STUCK  # no variation at all within the chains
    # Too few kept draws is no verdict yet, whatever they say.
    history = fill(ar1(2, MIN_DRAWS, rho=0.0, seed=6))
    [entry] = unit_diagnostics(history, [0, 0], [0, 0])
    assert (entry["draws"], entry["state"], entry["rhat"]) == (MIN_DRAWS - 1, NOT_BURNED_IN, None)


def test_the_worker_reports_the_diagnostics_of_its_own_chains() -> None:
    # A real LeNet, 8 chains over fc3:0-3, warm enough to burn in within a hundred steps.
    folder = lenet_folder()
    # A window of 40 (8 blocks of 5) fills within the run, so the modes and Vendi are due.
    params = SamplerParams(
        layout="range",
        unit=0,
        unit_end=3,
        chains=8,
        temperature=1.0,
        l2_weight=1.0,
        window=40,
        replicas=0,
    )
    with in_process_worker(params, folder / PAIR[0], folder) as worker:
        sampler = worker.panels[0].sampler
        seen = []
        for _ in range(260):
            worker.step_all()
            seen.append(worker.panels[0].last_activation.clone())
        burn = sampler.burn_in_step.tolist()
        assert min(burn) >= 0, burn
        [panel] = worker.live_diagnostics()
        assert panel["note"] is None
        activations = torch.stack(seen, 1).double().numpy()  # [chains, steps 1..260]
        units = params.grid()[0]
        assert [e["unit"] for e in panel["units"]] == [0, 1, 2, 3]
        assert [e["label"] for e in panel["units"]] == ["0", "1", "2", "3"]  # class names
        for entry in panel["units"]:
            idx = [i for i, u in enumerate(units) if u == entry["unit"]]
            first = max(burn[i] for i in idx) + 2
            kept = activations[idx, first - 1 :]
            assert entry["draws"] == kept.shape[1] >= MIN_DRAWS
            assert entry["rhat"] == pytest.approx(split_rhat(kept), rel=1e-9)
            assert entry["ess"] == pytest.approx(effective_sample_size(kept), rel=1e-9)
            assert entry["state"] == verdict(entry["rhat"], entry["ess"], len(idx))
            # Its modes and Vendi score are those of its chains' window blocks.
            assert isinstance(entry["modes"], int) and 1 <= entry["modes"] <= len(idx) * BLOCKS
            assert isinstance(entry["vendi"], float)
            assert 1.0 <= entry["vendi"] <= len(idx) * BLOCKS
        blocks = sampler.window_blocks(BLOCKS)
        assert not blocks.isnan().any()
        for entry, mine in zip(panel["units"], unit_diversity(blocks, units), strict=True):
            assert (entry["modes"], entry["vendi"]) == (mine["modes"], mine["vendi"])
        # A sweep's rows run different settings: nothing is compared, and the page says why.
        sweep = {**worker.params.model_dump(), "layout": "sweep", "sweep_values": [0.5, 1.0]}
        worker.handle(SetParams(worker.version + 1, sweep, dict(worker.sources)))
        worker.step_all()
        assert worker.live_diagnostics() == [{"units": [], "note": SWEEP_NOTE}]
