"""``ldam serve --watch DIR``: following a training run's checkpoints.

The file rules (`ldam.web.watch.Watcher`) on real files with a hand-driven clock; the warm swap
in an in-process worker (the chains carry on, the next step reads the new model); and real
servers following a run written as training writes it (``ldam.save_checkpoint``, a separate
writer process for a slow write, atomic copies): each behaviour (the first file, a slow write,
a broken file later mended, a refused first file, a PyTorch Lightning ``.ckpt``, a pin and
following again, the idle pause) with its own run folder and server.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ldam.cli.main import main
from ldam.models.loading import load_checkpoint
from ldam.web.config import ServeConfig, ServeError
from ldam.web.serve import run_server
from ldam.web.watch import Watcher, step_in_name
from ldam.wire.events import SetParams
from ldam.wire.params import SamplerParams
from tests.checkpoint_writer import save
from tests.support import (
    PAIR,
    REPO,
    START_TIMEOUT_S,
    LiveServer,
    Viewer,
    free_port,
    in_process_worker,
    lenet_folder,
)

LIGHTNING = REPO / "tests" / "data" / "epoch=0-step=4.ckpt"
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NOT_READABLE = (
    "{} is not a checkpoint ldam can read (a torch.export .pt2, TorchScript, a state dict "
    ".pt/.pth, or .safetensors)."
)


# --- the file rules ------------------------------------------------------------------------


def test_step_in_name() -> None:
    assert step_in_name("step_0004.pt2") == 4
    assert step_in_name("epoch=3-step=1200.ckpt") == 1200
    assert step_in_name("epoch=3-step=1200-v1.ckpt") == 1200
    assert step_in_name("ckpt-1200.pt") == 1200
    assert step_in_name("STEP1500.pth") == 1500
    assert step_in_name("epoch7.pt") == 7
    assert step_in_name("last.ckpt") is None
    assert step_in_name("model.pt2") is None  # the 2 of .pt2 is no step


class Clock:
    """A monotonic clock and a wall clock that move only when told."""

    def __init__(self) -> None:
        self.now = 100.0
        self.wall = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


def write(path: Path, data: bytes, mtime: float) -> None:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def states(watcher: Watcher) -> dict[str, str]:
    return {c["name"]: c["state"] for c in watcher.timeline(None, None, True, None)["checkpoints"]}


def test_a_file_counts_only_once_it_has_settled(tmp_path: Path) -> None:
    clock = Clock()
    watcher = Watcher(tmp_path, settle_s=1.0, clock=lambda: clock.now, wall=lambda: clock.wall)
    write(tmp_path / "step_1.pt2", b"x" * 10, clock.wall)
    for name in (".step_2.pt2.123.tmp", "step_2.pt2.tmp", "step_2.pt2.part", "notes.txt"):
        write(tmp_path / name, b"y", clock.wall - 100)  # never candidates, however old
    (tmp_path / "runs").mkdir()
    assert watcher.scan() is True
    assert states(watcher) == {"step_1.pt2": "writing"}
    clock.advance(0.6)
    watcher.scan()
    assert states(watcher) == {"step_1.pt2": "writing"}
    # Written again 0.6 s later: the quiet time starts over.
    write(tmp_path / "step_1.pt2", b"x" * 20, clock.wall)
    clock.advance(0.9)
    watcher.scan()
    assert states(watcher) == {"step_1.pt2": "writing"} and watcher.newest() is None
    clock.advance(0.2)
    assert watcher.scan() is True
    assert states(watcher) == {"step_1.pt2": "ready"}
    assert watcher.newest().name == "step_1.pt2"
    # A file that was already quiet for the settle time when first seen counts at once.
    write(tmp_path / "step_0.pt2", b"z", clock.wall - 5)
    watcher.scan()
    assert states(watcher) == {"step_0.pt2": "ready", "step_1.pt2": "ready"}
    assert watcher.scan() is False  # nothing changed


def test_order_failures_and_what_to_follow(tmp_path: Path) -> None:
    clock = Clock()
    watcher = Watcher(tmp_path, settle_s=1.0, clock=lambda: clock.now, wall=lambda: clock.wall)
    old = clock.wall - 60
    # By step: step 10 is newer than step 9 although written earlier.
    write(tmp_path / "ckpt-10.pt", b"a", old)
    write(tmp_path / "ckpt-9.pt", b"b", old + 30)
    watcher.scan()
    assert watcher.by_step() and [e.name for e in watcher.ordered()] == ["ckpt-9.pt", "ckpt-10.pt"]
    first = watcher.to_follow()
    assert first is not None and first.name == "ckpt-10.pt"
    watcher.loaded(first)
    assert watcher.to_follow() is None
    # A newer step that fails to load is skipped while the shown one stays; mended, it is next.
    write(tmp_path / "ckpt-11.pt", b"broken", old + 40)
    watcher.scan()
    broken = watcher.to_follow()
    assert broken is not None and broken.name == "ckpt-11.pt"
    watcher.failed(broken, "ckpt-11.pt is broken.")
    assert watcher.to_follow() is None and watcher.newest().name == "ckpt-10.pt"
    assert states(watcher)["ckpt-11.pt"] == "failed"
    timeline = watcher.timeline(str(tmp_path / "ckpt-10.pt"), None, True, None)
    assert timeline["checkpoints"][-1]["error"] == "ckpt-11.pt is broken."
    assert (timeline["main"], timeline["newest"], timeline["order"]) == (
        "ckpt-10.pt",
        "ckpt-10.pt",
        "step",
    )
    write(tmp_path / "ckpt-11.pt", b"mended", old + 50)
    watcher.scan()
    mended = watcher.to_follow()
    assert mended is not None and mended.name == "ckpt-11.pt" and mended.error is None
    watcher.loaded(mended)
    # An older step written again is not followed; the shown file written again is.
    write(tmp_path / "ckpt-9.pt", b"again", old + 55)
    watcher.scan()
    assert watcher.to_follow() is None
    write(tmp_path / "ckpt-11.pt", b"newer weights", old + 58)
    watcher.scan()
    again = watcher.to_follow()
    assert again is not None and again.name == "ckpt-11.pt"
    # A name without a step: every file is ordered by its time, and the newest one wins.
    write(tmp_path / "last.ckpt", b"c", old + 59)
    watcher.scan()
    assert not watcher.by_step() and watcher.newest().name == "last.ckpt"
    assert watcher.timeline(None, None, True, None)["order"] == "time"


def test_bad_watch_starts_get_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    missing = tmp_path / "no-run"
    with pytest.raises(ServeError) as err:
        run_server(ServeConfig(watch=str(missing), port=port))
    assert str(err.value) == f"The folder to watch {missing} does not exist."
    with pytest.raises(ServeError) as err:
        run_server(ServeConfig(watch=str(tmp_path), checkpoint=str(tmp_path / "a.pt2"), port=port))
    assert str(err.value) == (
        "--watch follows the newest checkpoint in its folder; name no checkpoint with it."
    )
    other = str(lenet_folder())
    with pytest.raises(ServeError) as err:
        run_server(ServeConfig(watch=str(tmp_path), checkpoints_dir=other, port=port))
    assert str(err.value) == "--watch DIR is also the picker's folder; leave out --checkpoints."
    assert main(["serve", "--watch", str(tmp_path), "--idle-pause", "-1"]) == 2
    assert capsys.readouterr().err == (
        "ldam: --idle-pause must be a number of seconds of at least 0, not -1.0.\n"
    )


# --- the warm swap, in-process ---------------------------------------------------------------


def test_a_warm_swap_keeps_the_chains_and_reads_the_new_model(tmp_path: Path) -> None:
    folder = lenet_folder()
    first, second = folder / PAIR[0], folder / PAIR[1]
    last = tmp_path / "last.pt2"  # a file the run writes again and again
    shutil.copyfile(first, last)
    params = SamplerParams(layout="chains", unit=3, chains=4, temperature=0.1)
    with in_process_worker(params, first, folder) as worker:
        for _ in range(20):
            worker.step_all()
        sampler = worker.panels[0].sampler
        x, v, t = sampler.x.clone(), sampler.v.clone(), sampler.t
        sources = {"checkpoint": str(second), "compare": None}
        worker.handle(SetParams(worker.version + 1, worker.params.model_dump(), sources, warm=True))
        panel = worker.panels[0]
        assert panel.sampler is sampler and panel.label == PAIR[1]
        assert torch.equal(sampler.x, x) and torch.equal(sampler.v, v) and sampler.t == t
        assert worker.swaps == 1
        # The next step's activation is unit 3 of the new model at the kept chains.
        expected = load_checkpoint(second).module(x)[:, 3]
        worker.step_all()
        assert torch.allclose(panel.last_activation, expected, atol=1e-5)
        assert not torch.allclose(expected, load_checkpoint(first).module(x)[:, 3], atol=1e-3)
        # The same change without `warm` (a pick on the page) starts the chains afresh.
        sources = {"checkpoint": str(last), "compare": None}
        worker.handle(SetParams(worker.version + 1, worker.params.model_dump(), sources))
        assert worker.panels[0].sampler is not sampler and worker.swaps == 1
        # The shown file written again in place: the same name, the new weights, warm.
        sampler = worker.panels[0].sampler
        worker.step_all()
        shutil.copyfile(second, last)
        worker.handle(SetParams(worker.version + 1, worker.params.model_dump(), sources, warm=True))
        assert worker.panels[0].sampler is sampler and worker.swaps == 2
        x = sampler.x.clone()
        worker.step_all()
        expected = load_checkpoint(second).module(x)[:, 3]
        assert torch.allclose(worker.panels[0].last_activation, expected, atol=1e-5)


# --- a real server following a run ------------------------------------------------------------
# Each test has its own run folder and server. Files are written as training writes them:
# by ``ldam.save_checkpoint`` (atomically), by a separate writer process for a slow write, by
# an atomic copy of the bundled LeNets or of a PyTorch Lightning ``.ckpt``.


class Writer:
    """`tests.checkpoint_writer` in its own process, writing into `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.checkpoint_writer", str(folder)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    def start(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        assert self.proc.stdout is not None
        answer = self.proc.stdout.readline()
        assert answer.startswith("ok"), answer

    def close(self) -> None:
        if self.proc.poll() is None:
            self.start("quit")
            self.proc.wait(30)


class Run:
    """A training run's folder, and the ``ldam serve --watch`` that follows it (`serve`)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.folder = (tmp / "run").resolve()
        self.folder.mkdir()
        self.live: LiveServer | None = None

    def save(self, name: str, seed: int, step: int) -> None:
        """A LeNet with seed `seed`, saved by ``ldam.save_checkpoint`` with the class names."""
        save(self.folder, name, seed, step)

    def copy(self, source: Path, name: str, age_s: float = 0.0) -> None:
        """`source` copied in atomically as `name`, last written `age_s` seconds ago."""
        scratch = self.tmp / name
        shutil.copyfile(source, scratch)
        written = time.time() - age_s
        os.utime(scratch, (written, written))
        os.replace(scratch, self.folder / name)

    def serve(self) -> LiveServer:
        """Start the server (settle time 1 s, idle pause 2 s) on the folder as it is now."""
        self.live = LiveServer(
            self.tmp / "serve",
            "--watch",
            str(self.folder),
            "--watch-settle",
            "1",
            "--idle-pause",
            "2",
            "--arch",
            "lenet",
            "--device",
            "cpu",
        )
        return self.live


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    the_run = Run(tmp_path)
    try:
        yield the_run
    finally:
        if the_run.live is not None:
            the_run.live.stop()


def poll(live: LiveServer, predicate: Any, what: str, timeout: float = START_TIMEOUT_S) -> dict:
    """``/api/state`` once `predicate(state)` holds; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert live.proc.poll() is None, live.output()[-3000:]
        try:
            state = live.state()
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.2)
            continue
        if predicate(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout} s; last state: {state}")


def main_label(state: dict[str, Any]) -> str | None:
    info = state.get("info") or {}
    return (info.get("panels") or [{}])[0].get("label")


def entry(state: dict[str, Any], name: str) -> dict[str, Any] | None:
    timeline = state.get("timeline") or {}
    return next((c for c in timeline.get("checkpoints", []) if c["name"] == name), None)


def shows(live: LiveServer, name: str) -> dict[str, Any]:
    """``/api/state`` once the main panel runs `name` and the worker is ready."""
    return poll(
        live,
        lambda s: main_label(s) == name and s["status"]["worker"] == "running",
        f"{name} in the main panel",
    )


def test_the_first_complete_checkpoint_starts_the_worker(run: Run) -> None:
    live = run.serve()
    state = poll(live, lambda s: s["timeline"] is not None, "timeline")
    assert state["status"]["worker"] == "waiting"
    assert state["timeline"]["note"] == (
        f"Waiting for the first complete checkpoint in {run.folder}."
    )
    assert state["timeline"]["checkpoints"] == [] and state["info"] is None
    # The start was settled at once: nothing to start yet, and the operator is told so.
    waiting = f"ldam: following {run.folder} (waiting for its first complete checkpoint)"
    poll(live, lambda s: waiting in live.output(), "the waiting line", 30)
    with Viewer(live) as viewer:
        run.save("step_0001.pt2", 1, 1)
        state = shows(live, "step_0001.pt2")
        panel = state["info"]["panels"][0]
        assert panel["step"] == 1 and list(panel["unit_labels"].values()) == CLASS_NAMES
        assert state["timeline"]["following"] is True and state["params"]["checkpoint"] is None
        assert state["timeline"]["note"] is None
        assert (state["timeline"]["main"], state["timeline"]["newest"]) == ("step_0001.pt2",) * 2
        metrics = viewer.wait_for(
            lambda m: m["type"] == "metrics" and m["diagnostics"][0]["units"], 60, "diagnostics"
        )
        units = metrics["diagnostics"][0]["units"]
        assert [u["label"] for u in units] == CLASS_NAMES
        assert {u["state"] for u in units} <= {
            "mixing",
            "stuck in separate modes",
            "not burned in yet",
        }
        # The file the worker started with is not swapped in again once it runs.
        assert metrics["swaps"] == 0


def test_a_file_still_being_written_is_never_loaded(run: Run) -> None:
    run.copy(lenet_folder() / PAIR[0], "step_0001.pt2", age_s=60)
    live = run.serve()
    writer = Writer(run.folder)
    try:
        shows(live, "step_0001.pt2")
        # 10 pieces, 0.1 s apart, straight into the file (the settle time is 1 s).
        writer.start("slow step_0002.pt2 2 2 10 0.1")
        seen = set()
        while True:
            state = live.state()
            seen.add((entry(state, "step_0002.pt2") or {}).get("state"))
            assert main_label(state) == "step_0001.pt2"
            if select.select([writer.proc.stdout], [], [], 0)[0]:
                break  # the writer said "ok": the last piece is written
            time.sleep(0.05)
        writer.finish()
    finally:
        writer.close()
    assert "writing" in seen and "failed" not in seen and "ready" not in seen
    state = shows(live, "step_0002.pt2")
    assert entry(state, "step_0002.pt2")["state"] == "ready"
    assert state["info"]["panels"][0]["step"] == 2
    # The chains carried on under the new model: one swap, not a rebuild.
    state = poll(live, lambda s: s["metrics"]["version"] == s["version"], "metrics", 30)
    assert state["metrics"]["swaps"] == 1


def test_a_broken_file_is_skipped_until_it_is_written_again(run: Run) -> None:
    run.copy(lenet_folder() / PAIR[0], "step_0001.pt2", age_s=60)
    live = run.serve()
    shows(live, "step_0001.pt2")
    with Viewer(live) as viewer:
        (run.folder / "step_0002.pt2").write_bytes(b"not a checkpoint, only a mess\n" * 50)
        sentence = NOT_READABLE.format(run.folder / "step_0002.pt2")
        error = viewer.wait_for(lambda m: m["type"] == "error", 60, "the broken file's error")
        assert (error["field"], error["message"]) == ("checkpoint", sentence)
    state = poll(live, lambda s: entry(s, "step_0002.pt2")["state"] == "failed", "failed")
    assert entry(state, "step_0002.pt2")["error"] == sentence
    assert (main_label(state), state["timeline"]["newest"]) == ("step_0001.pt2",) * 2
    step = state["metrics"]["step"]
    poll(live, lambda s: s["metrics"]["step"] > step + 20, "steps after the broken file")
    # Written again (by ldam.save_checkpoint): tried again, and shown.
    run.save("step_0002.pt2", 2, 2)
    state = shows(live, "step_0002.pt2")
    assert entry(state, "step_0002.pt2") | {"time": 0} == {
        "name": "step_0002.pt2",
        "step": 2,
        "time": 0,
        "state": "ready",
        "error": None,
    }
    poll(live, lambda s: s["metrics"]["swaps"] == 1, "the swap", 30)


def test_a_refused_first_file_waits_for_the_next_one(run: Run) -> None:
    (run.folder / "step_0001.pt2").write_bytes(b"not a checkpoint\n" * 50)
    live = run.serve()
    sentence = NOT_READABLE.format(run.folder / "step_0001.pt2")
    # The refusal does not end the start: the server goes on and names the file.
    state = poll(live, lambda s: (entry(s, "step_0001.pt2") or {}).get("error"), "refusal")
    assert entry(state, "step_0001.pt2")["error"] == sentence
    assert state["status"]["worker"] == "failed" and state["status"]["error"] == sentence
    poll(live, lambda s: "ldam: following" in live.output(), "the following line", 30)
    run.save("step_0002.pt2", 2, 2)
    state = shows(live, "step_0002.pt2")
    assert state["status"]["error"] is None and state["timeline"]["note"] is None
    assert [c["state"] for c in state["timeline"]["checkpoints"]] == ["failed", "ready"]


def test_a_lightning_checkpoint_is_followed(run: Run) -> None:
    run.copy(lenet_folder() / PAIR[0], "step_0001.pt2", age_s=60)
    live = run.serve()
    # One version per file followed: the file the worker starts with is asked for once.
    shows(live, "step_0001.pt2")
    state = poll(live, lambda s: s["metrics"] is not None, "metrics", 30)
    assert (state["version"], state["metrics"]["version"]) == (1, 1)
    # A state dict under "state_dict" with keys "model.*", read with --arch lenet.
    run.copy(LIGHTNING, "epoch=0-step=4.ckpt")
    shows(live, "epoch=0-step=4.ckpt")
    state = poll(live, lambda s: s["metrics"]["version"] == 2, "the swap's metrics", 30)
    assert (state["version"], state["metrics"]["swaps"]) == (2, 1)
    assert state["info"]["panels"][0]["format"] == "state_dict"
    assert [c["step"] for c in state["timeline"]["checkpoints"]] == [1, 4]
    assert state["timeline"]["order"] == "step"


def test_a_pinned_file_stays_and_following_again_shows_the_newest(run: Run) -> None:
    run.copy(lenet_folder() / PAIR[0], "step_0001.pt2", age_s=60)
    run.copy(lenet_folder() / PAIR[1], "step_0002.pt2", age_s=50)
    run.copy(LIGHTNING, "epoch=0-step=4.ckpt", age_s=40)
    live = run.serve()
    shows(live, "epoch=0-step=4.ckpt")
    with Viewer(live) as viewer:
        viewer.set(checkpoint="step_0001.pt2")
        state = shows(live, "step_0001.pt2")
        assert state["timeline"]["following"] is False
        assert state["params"]["checkpoint"] == "step_0001.pt2"
        # A pick starts afresh with the same seed: a rebuild, no swap.
        state = poll(live, lambda s: s["metrics"]["version"] == s["version"], "metrics", 30)
        assert state["metrics"]["swaps"] == 0
        # A newer file of the run does not move a pinned panel.
        run.copy(lenet_folder() / PAIR[1], "step_0005.pt2")
        poll(live, lambda s: (entry(s, "step_0005.pt2") or {}).get("state") == "ready", "step 5")
        # Follow the run again, with step 2 in the compare panel.
        viewer.send({"type": "set", "checkpoint": "", "compare": "step_0002.pt2"})
        state = poll(
            live,
            lambda s: (
                [p["label"] for p in (s["info"] or {}).get("panels", [])]
                == ["step_0005.pt2", "step_0002.pt2"]
            ),
            "the newest against step 2",
        )
    timeline = state["timeline"]
    assert timeline["following"] is True and state["params"]["checkpoint"] is None
    assert (timeline["main"], timeline["compare"], timeline["newest"]) == (
        "step_0005.pt2",
        "step_0002.pt2",
        "step_0005.pt2",
    )
    assert state["params"]["seed"] == 0


def test_a_start_no_file_can_mend_ends_with_the_workers_sentence(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.copy(lenet_folder() / PAIR[0], "step_0001.pt2", age_s=60)
    with pytest.raises(ServeError) as err:
        run_server(
            ServeConfig(
                watch=str(run.folder),
                arch="lenet",
                device="cpu",
                port=free_port(),
                worker_entry="tests.support:crashing_worker",
                standby=False,
            )
        )
    assert str(err.value) == (
        "The worker stopped 3 times before it was ready "
        "(last error: RuntimeError: no accelerator found for this test)."
    )


CHROMIUM = os.environ.get("LDAM_CHROMIUM", "/usr/bin/chromium")


@pytest.mark.browser
def test_the_timeline_and_the_diagnostics_in_a_browser(run: Run) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (make chromium installs it)")
    from playwright.sync_api import sync_playwright

    for step in (1, 2, 3):
        run.save(f"step_000{step}.pt2", step, step)
    run.copy(LIGHTNING, "epoch=0-step=4.ckpt")
    live = run.serve()
    shows(live, "epoch=0-step=4.ckpt")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(live.base + "/")
        page.wait_for_function("window.ldam && window.ldam.framesShown >= 2", timeout=60_000)
        # Newest first, each with its step; the main panel's file and the newest are marked.
        rows = page.locator("#timeline li")
        page.wait_for_function("document.querySelectorAll('#timeline li').length === 4")
        names = [rows.nth(k).get_attribute("data-name") for k in range(4)]
        assert names == ["epoch=0-step=4.ckpt", "step_0003.pt2", "step_0002.pt2", "step_0001.pt2"]
        assert page.locator("#timeline li .step").all_text_contents() == [
            "step 4",
            "step 3",
            "step 2",
            "step 1",
        ]
        assert rows.nth(0).locator(".marks").text_content() == "main · newest"
        picker = page.locator("#checkpoint option[value='']").text_content()
        assert picker == "newest (follow the run)"
        # "Compare" on step 2: the newest against it, each caption naming file and step.
        page.get_by_role("button", name="Compare with step 2 (step_0002.pt2)").click()
        page.wait_for_function("document.querySelectorAll('#panels canvas').length === 2")
        captions = page.locator("#panels figcaption")
        page.wait_for_function(
            "[...document.querySelectorAll('#panels figcaption')].map(c => c.textContent)"
            ".join('|') === 'epoch=0-step=4.ckpt · step 4 (newest) · fc3:0-9|"
            "step_0002.pt2 · step 2 · fc3:0-9'",
            timeout=60_000,
        )
        # Column labels: the class names each checkpoint carries (save_checkpoint's for step 2,
        # --arch lenet's digits for the Lightning file); per column the live diagnostics.
        labels = page.locator("#panels figure").nth(1).locator(".columns span")
        assert labels.all_text_contents() == CLASS_NAMES
        first = page.locator("#panels figure").nth(0).locator(".columns span")
        assert first.all_text_contents() == [str(k) for k in range(10)]
        page.wait_for_function(
            "document.querySelectorAll('#panels figure:nth-child(2) .unit-diag').length === 10"
        )
        cells = page.locator("#panels figure").nth(1).locator(".unit-diag")
        states = {cells.nth(k).get_attribute("data-state") for k in range(10)}
        assert states <= {"mixing", "stuck", "burn-in"}
        text = cells.nth(0).text_content()
        assert text.startswith("R̂ ") and "\nESS " in text
        summary = page.locator("#panels figure").nth(1).locator(".diag-summary").text_content()
        assert summary.startswith("10 units: ") and summary.endswith(".")
        # "Show" on step 3 pins it (the same seeds); "Follow newest" follows the run again.
        page.get_by_role("button", name="No compare").click()
        page.get_by_role("button", name="Show step 3 (step_0003.pt2) in the main panel").click()
        page.wait_for_function(
            "document.querySelector('#panels figcaption').textContent === "
            "'step_0003.pt2 · step 3 · fc3:0-9' && "
            "document.querySelectorAll('#panels canvas').length === 1",
            timeout=60_000,
        )
        assert page.locator("#timeline-mode").text_content() == "showing step_0003.pt2 (pinned)"
        page.get_by_role("button", name="Follow newest").click()
        page.wait_for_function(
            "document.querySelector('#panels figcaption').textContent."
            "startsWith('epoch=0-step=4.ckpt')",
            timeout=60_000,
        )
        assert page.locator("#timeline-mode").text_content() == "following the newest"
        assert captions.count() == 1
        assert errors == []
        browser.close()


def test_the_worker_rests_without_a_browser_and_wakes_for_one(run: Run) -> None:
    run.copy(lenet_folder() / PAIR[0], "step_0001.pt2", age_s=60)
    live = run.serve()
    live.wait_ready()
    # No browser is connected: after the idle pause (2 s) the steps stop, the state is kept.
    state = poll(live, lambda s: (s["metrics"] or {}).get("idle") is True, "idle worker", 60)
    step, times = state["metrics"]["step"], {state["metrics"]["time"]}
    while len(times) < 6:  # five more metrics messages: over a second without a step
        state = poll(live, lambda s: s["metrics"]["time"] not in times, "metrics", 30)
        times.add(state["metrics"]["time"])
        assert state["metrics"]["idle"] is True and state["metrics"]["step"] == step
    assert state["metrics"]["steps_per_s"] == 0.0
    # A browser connects: the chains go on from where they were.
    with Viewer(live) as viewer:
        metrics = viewer.wait_for(
            lambda m: m["type"] == "metrics" and m["step"] > step, 60, "steps again"
        )
        assert metrics["idle"] is False
