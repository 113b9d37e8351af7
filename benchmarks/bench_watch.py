"""Following a training run: how soon a new checkpoint shows, and what an unwatched worker costs.

    python -m benchmarks.bench_watch [--checkpoints 5] [--settle 2] [--idle-pause 5]
        [--first-after 10]

Starts ``ldam serve --watch DIR`` (the LeNet, CPU) in a subprocess, then in this process writes
`--checkpoints` LeNets with ``ldam.save_checkpoint`` one after another and measures:

- seconds from each file's rename to the page's main panel showing it (``/api/state``); the
  first one, written `--first-after` seconds after the server is up (as a run's first save
  comes after some training), starts the worker from the standby the server keeps warm while
  it waits, so it is listed apart (goal: within 5 s of being complete);
- the worker process's CPU use (cores, from /proc) while it samples for one browser, and once
  the idle pause has passed with no browser connected; the web server's beside it.

Prints a markdown table. Bounded: about 70 s with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 120.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far, in seconds (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cores(pid: int, seconds: float, during: Any = None) -> float:
    """The cores `pid` used over `seconds` (while `during(seconds)` runs, if given)."""
    start, t0 = cpu_seconds(pid), time.monotonic()
    if during is None:
        time.sleep(seconds)
    else:
        during(seconds)
    return (cpu_seconds(pid) - start) / (time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--idle-pause", type=float, default=5.0)
    parser.add_argument("--first-after", type=float, default=10.0)
    args = parser.parse_args()

    import torch

    import ldam
    from ldam.models.lenet import LeNet

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="ldam-bench-watch-"))
    port = free_port()
    command = [sys.executable, "-m", "ldam", "serve", "--watch", str(folder), "--port", str(port)]
    command += ["--device", "cpu", "--watch-settle", str(args.settle)]
    command += ["--idle-pause", str(args.idle_pause)]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10)

    def state() -> dict[str, Any]:
        return http.get("/api/state").json()

    def shown() -> str | None:
        info = state().get("info") or {}
        return (info.get("panels") or [{}])[0].get("label")

    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                state()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(args.first_after)
        latencies = []
        for step in range(1, args.checkpoints + 1):
            torch.manual_seed(step)
            name = f"step_{step:04d}.pt2"
            ldam.save_checkpoint(LeNet(), torch.zeros(2, 1, 28, 28), folder / name, step=step)
            renamed = time.monotonic()
            while shown() != name:
                if time.monotonic() - renamed > TIMEOUT_S:
                    raise SystemExit(f"{name} was not shown within {TIMEOUT_S} s")
                time.sleep(0.05)
            latencies.append(time.monotonic() - renamed)
        worker = state()["status"]["pid"]
        with connect(f"ws://127.0.0.1:{port}/ws", proxy=None, max_size=2**24) as ws:

            def read(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    try:
                        message = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    if isinstance(message, bytes):  # acknowledge as the page does
                        header_length = int.from_bytes(message[:4], "big")
                        seq = json.loads(message[4 : 4 + header_length])["seq"]
                        ws.send(json.dumps({"type": "ack", "seq": seq}))

            read(2.0)
            watched = cores(worker, 5.0, read)
        while not (state()["metrics"] or {}).get("idle"):
            time.sleep(0.2)
        web_before, t0 = cpu_seconds(server.pid), time.monotonic()
        idle = cores(worker, 10.0)
        web = (cpu_seconds(server.pid) - web_before) / (time.monotonic() - t0)
    finally:
        http.close()
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(folder, ignore_errors=True)

    later = latencies[1:]
    print("| figure | value |")
    print("| --- | --- |")
    print(f"| first checkpoint shown after its rename (starts the worker) | {latencies[0]:.2f} s |")
    if later:
        print(
            f"| later checkpoints shown after their rename ({len(later)}, settle {args.settle:g} s)"
            f" | {min(later):.2f}-{max(later):.2f} s (mean {sum(later) / len(later):.2f}) |"
        )
    print(f"| worker CPU while one browser watches | {watched:.2f} cores |")
    print(
        f"| worker CPU after the idle pause, no browser | {idle:.3f} cores (web server {web:.3f}) |"
    )


if __name__ == "__main__":
    main()
