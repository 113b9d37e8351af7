"""Faults never stop the dashboard (issue 6): a killed worker, a diverging setting, clients
that stall or vanish, a failing discriminator thread, SIGTERM.

Every test runs against the real server: `python -m ldam serve` in a subprocess on a
free loopback port, with real websocket clients (`LiveServer`, `Viewer` and `RawClient` from
`tests.support`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from ldam.web.security import SEND_TIMEOUT_S
from tests.support import LiveServer, RawClient, Viewer, proc_alive, running_server


def worker_metrics(
    v: Viewer, timeout: float, what: str, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first ``metrics`` message satisfying `predicate`."""
    return v.wait_for(lambda m: m["type"] == "metrics" and predicate(m), timeout, what)


def fps(frames: list[dict[str, Any]], seconds: float) -> float:
    """Frames per second over a reading period."""
    return len(frames) / seconds


# --- the server for this module -----------------------------------------------------------


@pytest.fixture(scope="module")
def nan_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real images for the discriminator, one of 500 NaN: a D step that draws it (about 6% of
    steps, 32 real images each) gets a NaN loss and the training thread raises. A real fault in
    user data, not an injected one; and rare enough that a restarted D trains a while first."""
    path = tmp_path_factory.mktemp("data") / "nan_digits.npz"
    images = np.random.default_rng(0).random((500, 28, 28), dtype=np.float32)
    images[123] = np.nan
    np.savez(path, images=images)
    return path


@pytest.fixture(scope="module")
def server(nan_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One dashboard (the default model) for this module's tests; its discriminator, once the
    discriminator test turns it on, trains on `nan_data`. The SIGTERM test ends it."""
    yield from running_server(tmp_path_factory.mktemp("disc"), "--data", str(nan_data))


# --- worker killed ---------------------------------------------------------------------------


def test_worker_sigkill_restarts_with_last_parameters(server: LiveServer) -> None:
    with server.viewer() as v:
        version = v.set(temperature=0.37, l2_weight=0.21)
        before = server.state()
        old_pid = before["status"]["pid"]
        restarts = before["status"]["restarts"]
        assert proc_alive(old_pid)
        os.kill(old_pid, signal.SIGKILL)
        killed = time.monotonic()
        # The same websocket sees the worker come back: no reconnect, no reload.
        status = v.wait_for(
            lambda m: (
                m["type"] == "status"
                and m["worker"] == "running"
                and m["pid"] not in (None, old_pid)
            ),
            60,
            "status of a restarted worker",
        )
        frame = v.wait_for(
            lambda m: m["type"] == "frame" and m["received"] > killed, 60, "frame after restart"
        )
        restart_s = frame["received"] - killed
        print(
            f"worker SIGKILL -> first new frame on the same websocket after {restart_s:.2f} s (goal 5 s)"
        )
        assert status["restarts"] == restarts + 1
        assert frame["version"] == version  # made with the last parameters
        after = server.state()
        assert after["params"]["temperature"] == 0.37 and after["params"]["l2_weight"] == 0.21
        assert after["status"]["pid"] != old_pid and proc_alive(after["status"]["pid"])
        assert not proc_alive(old_pid)
        # A loose bound: the 5 s goal is measured (printed) here, but a shared CI core can be
        # slower to import torch; a restart that never happens fails above.
        assert restart_s < 30
        later = v.frames_for(2.0)
        assert len(later) >= 2 and later[-1]["seq"] > frame["seq"]


# --- diverging setting -----------------------------------------------------------------------


def test_diverging_step_size_resets_chains(server: LiveServer) -> None:
    with server.viewer() as v:
        v.set(step_size=0.1, temperature=0.1, normalize="none")
        first = worker_metrics(v, 30, "metrics", lambda m: "resets" in m)
        status = server.state()["status"]
        # 1000 times the step size, on raw gradients: x grows ~9-fold a step until it overflows
        # (with gradient normalization on, a step is bounded and x only drifts, see the report).
        v.set(step_size=100.0)
        diverged = worker_metrics(
            v,
            60,
            "metrics with more resets",
            lambda m: _total(m["resets"]) > _total(first["resets"]),
        )
        frames = v.frames_for(2.0)
        print(
            f"step size x1000: resets {_total(first['resets'])} -> {_total(diverged['resets'])} "
            f"after {diverged['step'] - first['step']} steps, {len(frames)} frames in the next 2 s"
        )
        assert len(frames) >= 2
        after = server.state()["status"]
        assert (after["worker"], after["pid"], after["restarts"]) == (
            "running",
            status["pid"],
            status["restarts"],
        )
        assert not any(m["type"] == "error" for m in v.texts)
        assert all(
            a is None or math.isfinite(a)
            for panel in v.latest["metrics"]["activation"]
            for a in panel
        ), "metrics stay JSON-safe"
        v.set(step_size=0.1, normalize="all")


def _total(resets: Any) -> int:
    # The worker may report resets as one count or one count per chain.
    return int(sum(resets)) if isinstance(resets, list) else int(resets)


# --- clients that stall or vanish ------------------------------------------------------------


@pytest.mark.slow
def test_stalled_and_vanished_clients_do_not_affect_others(server: LiveServer) -> None:
    with server.viewer() as reader:
        reader.set(paused=False)
        baseline_clients = server.state()["status"]["clients"]
        before = reader.frames_for(3.0)
        # A library client that never reads, a raw client that acknowledges everything but
        # never reads (the server's sends to it block), and two that vanish without closing.
        silent = server.viewer(ack=False)
        flooder = RawClient(server, rcvbuf=4096)
        flooder.send_text(json.dumps({"type": "ack", "seq": 2**53}))
        vanishers = [RawClient(server) for _ in range(2)]
        for raw in vanishers:
            raw.vanish()
        steps_before = reader.latest.get("metrics", {}).get("step")
        during = reader.frames_for(SEND_TIMEOUT_S + 3.0)
        print(
            f"reader: {fps(before, 3.0):.1f} frames/s alone, "
            f"{fps(during, SEND_TIMEOUT_S + 3.0):.1f} frames/s beside a stalled and vanished clients"
        )
        # The flooder's sends block for longer than the send timeout and the vanished ones are
        # gone: all three are dropped. (`silent` may be dropped too, once it misses a ping.)
        deadline = time.monotonic() + 30
        while (
            server.state()["status"]["clients"] > baseline_clients + 1
            and time.monotonic() < deadline
        ):
            reader.frames_for(0.5)
        dropped_s = time.monotonic() - (deadline - 30)
        print(f"stalled and vanished clients dropped within {dropped_s:.1f} s")
        assert server.state()["status"]["clients"] <= baseline_clients + 1
        assert len(during) >= 0.25 * len(before) * (SEND_TIMEOUT_S + 3.0) / 3.0
        assert during[-1]["seq"] > before[-1]["seq"]
        if steps_before is not None:
            assert reader.latest["metrics"]["step"] > steps_before
        silent.close()
        flooder.sock.close()
        deadline = time.monotonic() + 10
        while (
            server.state()["status"]["clients"] != baseline_clients and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert server.state()["status"]["clients"] == baseline_clients
        assert reader.frames_for(1.0), "the reader still gets frames"


# --- discriminator thread --------------------------------------------------------------------


def test_discriminator_failure_is_reported_and_restartable(server: LiveServer) -> None:
    live = server
    with live.viewer() as v:
        restarts = live.state()["status"]["restarts"]
        v.set(disc_training=True, disc_weight=0.5)
        failed = worker_metrics(
            v, 90, "metrics reporting the D failure", lambda m: bool(_disc_error(m))
        )
        print(
            f"discriminator thread failure reported after {_disc_steps(failed)} D steps: {_disc_error(failed)!r}"
        )
        frames = v.frames_for(2.0)
        assert len(frames) >= 2, "sampling goes on without D"
        assert v.latest["metrics"]["step"] > failed["step"]
        assert _disc_error(v.latest["metrics"]) == _disc_error(failed)  # stays reported
        status = live.state()["status"]
        assert status["worker"] == "running" and status["restarts"] == restarts
        # A restart may draw the NaN image at once (about 6%): allow a few tries.
        tries = 0
        while tries < 5:
            tries += 1
            v.send({"type": "disc_restart"})
            try:
                restarted = worker_metrics(
                    v, 15, "D training again", lambda m: _disc_steps(m) > _disc_steps(failed)
                )
            except AssertionError:
                continue
            break
        else:
            raise AssertionError("disc_restart never got D training again")
        print(
            f"disc_restart (try {tries}): D steps {_disc_steps(failed)} -> {_disc_steps(restarted)}"
        )
        assert live.state()["status"]["pid"] == status["pid"]


def _disc_error(metrics: dict[str, Any]) -> str | None:
    disc = metrics.get("disc") or {}
    return disc.get("error") if isinstance(disc, dict) else metrics.get("disc_error")


def _disc_steps(metrics: dict[str, Any]) -> int:
    disc = metrics.get("disc") or {}
    return (
        int(disc.get("steps", 0)) if isinstance(disc, dict) else int(metrics.get("disc_steps", 0))
    )


# --- SIGTERM ---------------------------------------------------------------------------------


def _sigterm_check(live: LiveServer) -> None:
    worker = live.state()["status"]["pid"]
    assert proc_alive(worker)
    live.http.close()
    start = time.monotonic()
    live.proc.send_signal(signal.SIGTERM)
    code = live.proc.wait(30)
    server_s = time.monotonic() - start
    while proc_alive(worker) and time.monotonic() - start < 30:
        time.sleep(0.05)
    worker_s = time.monotonic() - start
    print(
        f"SIGTERM: server exited in {server_s:.2f} s (code {code}), worker gone after {worker_s:.2f} s"
    )
    # uvicorn re-raises the signal after its graceful shutdown, so -15 is a clean exit too.
    assert code in (0, -signal.SIGTERM), live.output()
    assert not proc_alive(worker)
    assert "Traceback" not in live.output(), live.output()
    assert worker_s < 15


def test_sigterm_shuts_down_cleanly(server: LiveServer) -> None:
    # Last in this module: a worker with D's training thread (from the test above) to stop too.
    live = server
    with live.viewer() as v:
        v.set(disc_training=True, disc_weight=0.5)
        v.send({"type": "disc_restart"})
        v.frames_for(1.0)
        _sigterm_check(live)
        # The open websocket was closed by the server with a close frame, not left hanging.
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(1000):
                v.ws.recv(timeout=5)
        rcvd = closed.value.rcvd
        print(f"SIGTERM: the open websocket was closed with code {rcvd.code if rcvd else None}")
        assert rcvd is not None and rcvd.code in (1000, 1001, 1012)
