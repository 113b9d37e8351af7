"""`ldam atlas`: the manifest and files, unit results independent of batching and executor,
Ctrl-C and --resume, bad input, the static gallery in a real browser, and a real Ray cluster
(each in a network namespace of its own, so that nothing leaves loopback)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldam.atlas.plan import Job, Settings
from ldam.atlas.render import Renderer
from ldam.models.bundled import DEFAULT_CHECKPOINT
from ldam.sampling.diversity import BLOCKS
from ldam.sampling.images import display_grid, to_input_space
from tests.support import IMAGENET_NORMALIZATION, tiny_rgb_checkpoint

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("LDAM_CHROMIUM", "/usr/bin/chromium")
SAMPLE_KEYS = {
    "samples",
    "final",
    "mean",
    "window_mean",
    "activation",
    "burn_in_step",
    "resets",
    "params",
}
# Small and quick: 8 chains per unit, 120 steps.
QUICK = ("--steps", "120", "--chains", "8", "--window", "50", "--record-every", "20")


def atlas_argv(out: Path, *extra: str, layer: str = "fc1", units: str = "0-7") -> list[str]:
    return [
        sys.executable, "-m", "ldam", "atlas", str(DEFAULT_CHECKPOINT), "--layer", layer,
        "--units", units, "--out", str(out), *QUICK, *extra,
    ]  # fmt: skip


def run_atlas(out: Path, *extra: str, **kw: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        atlas_argv(out, *extra, **kw),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def in_netns(command: str) -> list[str]:
    """`command` in a network namespace of its own with only loopback up (Ray advertises the
    machine's interface address otherwise)."""
    return ["unshare", "-n", "sh", "-c", f"ip link set lo up && {command}"]


def unit_arrays(out: Path, unit: int) -> dict[str, np.ndarray]:
    with np.load(out / "units" / f"unit_{unit:05d}.npz") as data:
        return {k: data[k] for k in data.files}


def same_results(a: Path, b: Path, units: range) -> None:
    for unit in units:
        left, right = unit_arrays(a, unit), unit_arrays(b, unit)
        for key in SAMPLE_KEYS - {"params"}:
            assert np.array_equal(left[key], right[key]), (unit, key)
        assert (a / "units" / f"unit_{unit:05d}.png").read_bytes() == (
            b / "units" / f"unit_{unit:05d}.png"
        ).read_bytes()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Units 0-7 of fc1, in batches of 4 units (32 chains per sampler batch)."""
    out = tmp_path_factory.mktemp("atlas") / "local"
    result = run_atlas(out, "--batch-units", "4")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr and "8 units of fc1" in result.stderr
    return out


def test_the_manifest_lists_every_unit_with_its_files_and_figures(local: Path) -> None:
    manifest = json.loads((local / "atlas.json").read_text())
    assert manifest["layer"] == "fc1" and manifest["units_in_layer"] == 120
    assert manifest["checkpoint"]["path"] == str(DEFAULT_CHECKPOINT.resolve())
    import hashlib

    assert (
        manifest["checkpoint"]["sha256"]
        == hashlib.sha256(DEFAULT_CHECKPOINT.read_bytes()).hexdigest()
    )
    assert manifest["settings"]["chains"] == 8 and manifest["settings"]["steps"] == 120
    # --view auto (the default) keeps LeNet's 1 channel in the paper's symmetric view.
    assert (manifest["settings"]["view"], manifest["view"]) == ("auto", "symmetric")
    assert "grey = 0" in (local / "index.html").read_text()
    assert [e["unit"] for e in manifest["units"]] == list(range(8))
    for entry in manifest["units"]:
        assert entry["png"] == f"units/unit_{entry['unit']:05d}.png"
        arrays = unit_arrays(local, entry["unit"])
        assert set(arrays) == SAMPLE_KEYS
        assert arrays["final"].shape == (8, 1, 28, 28)
        assert arrays["activation"].shape == (120, 8)
        params = json.loads(str(arrays["params"]))
        assert (
            params["target"] == f"fc1:{entry['unit']}"
            and params["units_per_chain"] == [entry["unit"]] * 8
        )
        # The mean activation is over the unit's post-burn-in steps (or the last step).
        start = entry["record_from_step"]
        post = arrays["activation"][start:] if start is not None else arrays["activation"][-1:]
        assert entry["mean_activation"] == pytest.approx(float(post.mean()), rel=1e-6)
        assert entry["burn_in_steps"] == arrays["burn_in_step"].tolist()
        # Modes and Vendi over the window blocks of the unit's 8 chains, in the manifest and
        # in the npz's diagnostics; null for a unit with a chain whose window never filled.
        [diag] = params["diagnostics"]
        assert (entry["modes"], entry["vendi"]) == (diag["modes"], diag["vendi"])
        # (A chain burned in after step b keeps 120 - b samples, the window 50.)
        full = all(0 <= b <= 120 - 50 for b in entry["burn_in_steps"])
        assert (entry["modes"] is not None) == full
        # The PNG: window means over the last samples, 8 columns of 28 px and 2 px gaps.
        with Image.open(local / entry["png"]) as image:
            assert image.size == (8 * 30 + 2, 2 * 30 + 2)
            both = torch.from_numpy(np.concatenate([arrays["window_mean"], arrays["final"]]))
            assert np.array_equal(np.asarray(image), display_grid(both, 8, "symmetric")[0].numpy())
    # Different units give different images.
    assert not np.array_equal(unit_arrays(local, 0)["final"], unit_arrays(local, 1)["final"])


def test_each_units_modes_and_vendi_are_its_own_chains_in_any_batch() -> None:
    # Fixed burn-in and a window of 16: every chain's window fills within 60 steps.
    settings = Settings(chains=3, steps=60, step_size=0.05, window=16, burn_in=10, seed=2)
    job = Job(str(DEFAULT_CHECKPOINT), "fc3", [], settings)
    renderer = Renderer(job)
    together = {r.entry["unit"]: r.entry for r in renderer.render([2, 3])}
    alone = renderer.render([3])[0].entry
    for entry in (*together.values(), alone):
        assert isinstance(entry["modes"], int) and 1 <= entry["modes"] <= 3 * BLOCKS
        assert isinstance(entry["vendi"], float) and 1.0 <= entry["vendi"] <= 3 * BLOCKS
    assert (together[3]["modes"], together[3]["vendi"]) == pytest.approx(
        (alone["modes"], alone["vendi"])
    )
    assert together[2]["vendi"] != together[3]["vendi"]


def test_a_colour_networks_pngs_are_in_its_input_space_by_default(tmp_path: Path) -> None:
    normalization = (IMAGENET_NORMALIZATION["mean"], IMAGENET_NORMALIZATION["std"])
    checkpoint = tiny_rgb_checkpoint(tmp_path / "rgb.pt2", 6, 6)
    settings = Settings(chains=2, steps=8, window=4, burn_in=2, seed=1)
    assert settings.view == "auto"
    [rendered] = Renderer(Job(str(checkpoint), "flat", [], settings)).render([1])
    with np.load(io.BytesIO(rendered.files[rendered.entry["npz"]])) as data:
        both = torch.from_numpy(np.concatenate([data["window_mean"], data["final"]]))
    image = Image.open(io.BytesIO(rendered.files[rendered.entry["png"]]))
    # Chain 0's window mean, top left: de-normalized, in colour.
    assert image.mode == "RGB" and image.size == (2 * 8 + 2, 2 * 8 + 2)
    cell = np.asarray(image)[2:8, 2:8]
    expected = to_input_space(both[:1], normalization)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(cell, expected)


def test_a_units_result_does_not_depend_on_its_batch(local: Path, tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    result = run_atlas(alone, units="5")
    assert result.returncode == 0, result.stderr
    same_results(local, alone, range(5, 6))


def test_ctrl_c_leaves_a_valid_manifest_and_resume_finishes_without_rewriting(
    local: Path, tmp_path: Path
) -> None:
    out = tmp_path / "stopped"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A job started in the background of a shell without job control inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler: give the child Ctrl-C back.
    proc = subprocess.Popen(
        atlas_argv(out, "--batch-units", "1"),
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    manifest = out / "atlas.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if manifest.exists() and len(json.loads(manifest.read_text())["units"]) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run again with --resume to finish" in err
    finished = json.loads(manifest.read_text())["units"]
    assert 2 <= len(finished) < 8
    stamps = {e["unit"]: (out / e["npz"]).stat().st_mtime_ns for e in finished}

    again = run_atlas(out, "--batch-units", "1")
    assert again.returncode == 2
    assert f"{out} already holds an atlas; use --resume" in again.stderr

    resumed = run_atlas(out, "--batch-units", "1", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"({8 - len(finished)} rendered" in resumed.stderr
    units = json.loads(manifest.read_text())["units"]
    assert [e["unit"] for e in units] == list(range(8))
    for unit, stamp in stamps.items():
        assert (out / "units" / f"unit_{unit:05d}.npz").stat().st_mtime_ns == stamp
    same_results(local, out, range(8))

    other = run_atlas(out, "--resume", "--seed", "1")
    assert other.returncode == 2
    assert "was made with another settings; --resume continues only the same run" in other.stderr


@pytest.mark.parametrize(
    ("extra", "kw", "message"),
    [
        ((), {"layer": "fc9"}, "No layer named 'fc9'; the layers are: conv1, relu1"),
        (
            (),
            {"units": "118-130"},
            "--units 118-130 is out of range for layer 'fc1', which has units 0-119.",
        ),
        ((), {"units": "7-3"}, "--units must be K or A-B with A <= B, such as 0-63, not '7-3'."),
        (("--chains", "0"), {}, "chains must be in [1, 256], got 0."),
        (("--workers", "2"), {}, "--ray-address and --workers need --executor ray."),
    ],
)
def test_bad_input_is_one_sentence(
    tmp_path: Path, extra: tuple[str, ...], kw: dict[str, str], message: str
) -> None:
    result = run_atlas(tmp_path / "bad", *extra, **kw)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_the_gallery_opens_from_the_file_system_sorts_and_enlarges(local: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (make chromium installs it)")
    from playwright.sync_api import sync_playwright

    manifest = json.loads((local / "atlas.json").read_text())
    by_activation = [
        e["unit"]
        for e in sorted(manifest["units"], key=lambda e: (-e["mean_activation"], e["unit"]))
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto((local / "index.html").as_uri())
            figures = page.locator("figure")
            figures.first.wait_for()
            assert figures.count() == 8
            assert page.locator("#count").text_content() == "8 units"
            # Every thumbnail loaded from the folder (naturalWidth > 0).
            page.wait_for_function(
                "[...document.images].slice(0, 8).every(i => i.complete && i.naturalWidth > 0)"
            )
            assert [
                int(u) for u in figures.evaluate_all("fs => fs.map(f => f.dataset.unit)")
            ] == list(range(8))
            page.select_option("#sort", "activation")
            assert [
                int(u) for u in figures.evaluate_all("fs => fs.map(f => f.dataset.unit)")
            ] == by_activation
            figures.nth(2).click()
            big = page.locator("#big")
            assert "open" in (big.get_attribute("class") or "")
            assert (
                page.locator("#big img").get_attribute("src")
                == f"units/unit_{by_activation[2]:05d}.png"
            )
            assert (
                page.locator("#big-caption").text_content().startswith(f"unit {by_activation[2]} ")
            )
        finally:
            browser.close()


# --------------------------------------------------------------------------- Ray


needs_netns = pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0,
    reason="a network namespace of its own needs unshare as root",
)


@needs_netns
def test_ray_gives_the_local_results_and_survives_a_killed_worker(
    local: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    argv = " ".join(atlas_argv(out, "--executor", "ray", "--workers", "2", "--batch-units", "1"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(in_netns(argv), cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    manifest = out / "atlas.json"
    deadline = time.monotonic() + 180
    killed = None
    while time.monotonic() < deadline and proc.poll() is None and killed is None:
        if manifest.exists() and json.loads(manifest.read_text())["units"]:
            found = subprocess.run(
                ["pgrep", "-f", "ray::_ActorRenderer"], capture_output=True, text=True
            )
            pids = [int(p) for p in found.stdout.split()]
            if pids:
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert killed is not None, "no Ray worker was seen running"
    assert "Ray workers died and were replaced" in err
    units = json.loads(manifest.read_text())["units"]
    assert [e["unit"] for e in units] == list(range(8))  # nothing lost, nothing twice
    same_results(local, out, range(8))


@needs_netns
def test_an_existing_cluster_started_with_ray_start(local: Path, tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    ray = Path(sys.executable).with_name("ray")
    argv = " ".join(
        atlas_argv(
            out,
            "--executor",
            "ray",
            "--ray-address",
            "127.0.0.1:6391",
            "--workers",
            "1",
            units="2-3",
        )
    )
    script = (
        f"{ray} start --head --node-ip-address 127.0.0.1 --port 6391 --num-cpus 2 "
        f"--include-dashboard false --disable-usage-stats > /dev/null 2>&1 && "
        f"{argv}; status=$?; {ray} stop --force > /dev/null 2>&1; exit $status"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # the user sets nothing
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        in_netns(script), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 units of fc1" in result.stderr
    same_results(local, out, range(2, 4))


# --------------------------------------------------------------------------- the dashboard


def test_the_dashboard_shows_the_atlas_and_a_click_samples_the_unit_live(
    local: Path, tmp_path: Path
) -> None:
    from ldam.atlas.plan import unit_seed
    from tests.support import LiveServer

    server = LiveServer(tmp_path, "--atlas", str(local))
    try:
        server.wait_ready()
        assert server.http.get("/api/atlas").json() == {"atlas": {"layer": "fc1", "units": 8}}
        page = server.http.get("/atlas")
        assert page.status_code == 200 and '"base": "/atlas/"' in page.text
        png = server.http.get("/atlas/units/unit_00003.png")
        assert png.content == (local / "units" / "unit_00003.png").read_bytes()
        for bad in (
            "/atlas/units/unit_00099.png",
            "/atlas/units/atlas.json",
            "/atlas/units/..%2Fatlas.json",
        ):
            assert server.http.get(bad).status_code == 404, bad
        if not Path(CHROMIUM).exists():
            pytest.skip(f"no chromium at {CHROMIUM} (make chromium installs it)")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            try:
                tab = browser.new_page()
                tab.goto(server.base + "/")
                link = tab.locator("#atlas-link")
                link.wait_for()
                assert link.text_content() == "Atlas: 8 units of fc1"
                link.click()
                tab.wait_for_url(server.base + "/atlas")
                tab.wait_for_function(
                    "[...document.images].slice(0, 8).every(i => i.complete && i.naturalWidth > 0)"
                )
                tab.locator('figure[data-unit="3"] a.live').click()
                tab.wait_for_function(
                    "window.ldam && window.ldam.header && window.ldam.header.panels[0].target === 'fc1:3'",
                    timeout=60_000,
                )
            finally:
                browser.close()
        params = server.state()["params"]
        assert (params["layer"], params["unit"], params["layout"], params["chains"]) == (
            "fc1",
            3,
            "chains",
            8,
        )
        assert params["seed"] == unit_seed(0, 3)
        # The atlas's settings, by the one model's names: an adapted step stays auto.
        assert (params["temperature"], params["step_size"], params["window"]) == (0.01, None, 50)
        assert params["energy_scale"] == "unit"
    finally:
        server.stop()
