"""Streaming benchmark: real websocket clients on loopback against the dashboard.

    python -m benchmarks.bench_stream [--quick] [--checkpoint PATH | --model NAME] [--chains 16]
        [--target LAYER:UNIT] [--device cpu|cuda] [--clients 8,1,8,32] [--period S]

Starts the dashboard (the default LeNet, one panel of 16 chains) in a subprocess and measures:

- latency from a ``set`` message to the first frame made with it (p50, p95; goal p95 < 100 ms);
- frames per second per client with 1, 8 and 32 clients that read and acknowledge every frame
  (goal at least 25 with 8);
- the sampler's steps per second while streaming to 8 clients against no client (goal >= 0.9).

Prints a markdown table. Bounded: about 60 s (35 s with --quick) after the server is up.

`--model resnet18` (torchvision, weights=None) or `--model vit_tiny` (timm
`vit_tiny_patch16_224`, pretrained=False) builds a network of today's size itself: random
weights from seed 0, exported with `export_checkpoint` at 3x224x224 with ImageNet's
normalization into a temporary folder, and sampled on its logits (unit 0). Nothing is
downloaded. `--clients` lists the client counts of the streaming periods (each after an idle
period), `--period` their seconds: a network whose step takes a good part of a second needs
longer periods and fewer clients to say anything (`--clients 1,8 --period 12`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180.0
# ImageNet's normalization, as torchvision's and timm's networks expect their input.
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
MODELS = {
    "resnet18": "torchvision resnet18 (weights=None)",
    "vit_tiny": "timm vit_tiny_patch16_224 (pretrained=False)",
}


def build_model(name: str, folder: Path) -> Path:
    """Export network `name` of `MODELS` (random weights, seed 0) at 3x224x224 into `folder`."""
    import torch

    from ldam.models.saving import export_checkpoint

    torch.manual_seed(0)
    if name == "resnet18":
        import torchvision

        net = torchvision.models.resnet18(weights=None)
    else:
        import timm

        net = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    return export_checkpoint(
        net, folder / f"{name}.pt2", (3, 224, 224), {"normalization": IMAGENET}
    )


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, checkpoint: str | None, chains: int, target: str | None, device: str) -> None:
    """The server side (run in its own process): the dashboard with `chains` chains."""
    import uvicorn

    from ldam.web.app import create_app
    from ldam.web.config import ServeConfig
    from ldam.web.serve import uvicorn_config

    app = create_app(
        ServeConfig(
            checkpoint=checkpoint,
            target=target,
            port=port,
            device=device,
            params={"layout": "chains", "chains": chains},
            default_compare=False,
        )
    )
    uvicorn.Server(uvicorn_config(app, "127.0.0.1", port)).run()


class Client:
    """A websocket client like the page: acknowledges every frame as soon as it has it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames = 0
        self.version = -1
        self.state_version = -1
        self.new_frame = asyncio.Event()

    async def read(self) -> None:
        async for message in self.ws:
            if isinstance(message, bytes):
                (length,) = struct.unpack_from(">I", message, 0)
                header = json.loads(message[4 : 4 + length])
                self.frames += 1
                self.version = header["version"]
                self.new_frame.set()
                await self.ws.send(json.dumps({"type": "ack", "seq": header["seq"]}))
            else:
                data = json.loads(message)
                if data["type"] == "state":
                    self.state_version = data["version"]


async def open_clients(port: int, n: int) -> tuple[list[Client], list[asyncio.Task[None]]]:
    clients = []
    for _ in range(n):
        ws = await connect(
            f"ws://127.0.0.1:{port}/ws",
            origin=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
            compression=None,
            max_size=2**24,
            proxy=None,
        )
        clients.append(Client(ws))
    return clients, [asyncio.create_task(c.read()) for c in clients]


async def close_clients(clients: list[Client], tasks: list[asyncio.Task[None]]) -> None:
    for c in clients:
        await c.ws.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def worker_step(http: httpx.AsyncClient) -> tuple[float, int]:
    """The worker's step counter and the time it was reported (from /api/state's metrics)."""
    metrics = (await http.get("/api/state")).json()["metrics"]
    return float(metrics["time"]), int(metrics["step"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CPU: dict[str, list[float]] = {}


async def steps_per_s(http: httpx.AsyncClient, seconds: float, phase: str = "") -> float:
    """The worker's steps per second over `seconds`, from its step counter; the CPU share of
    the server and worker processes in that time goes to CPU[phase]."""
    pids = {
        "server": SERVER_PID,
        "worker": (await http.get("/api/state")).json()["status"]["pid"],
        "benchmark clients": os.getpid(),
    }
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    w0 = time.monotonic()
    t0, s0 = await worker_step(http)
    await asyncio.sleep(seconds)
    t1, s1 = await worker_step(http)
    wall = time.monotonic() - w0
    if phase:
        for k, p in pids.items():
            CPU.setdefault(f"{phase} {k}", []).append((cpu_seconds(p) - cpu0[k]) / wall)
    return (s1 - s0) / (t1 - t0) if t1 > t0 else float("nan")


SERVER_PID = 0


async def measure(
    port: int, quick: bool, counts: list[int], period: float | None = None
) -> dict[str, Any]:
    period = period or (3.0 if quick else 6.0)
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
        await asyncio.sleep(2.0)  # the worker's speed settles after start
        idle: list[float] = []
        streaming: list[float] = []
        fps: dict[int, tuple[float, float]] = {}
        # Idle and streaming periods alternate, so a neighbour's load on this shared machine
        # falls on both alike.
        for n in counts:
            idle.append(await steps_per_s(http, period / 2, "idle"))
            clients, tasks = await open_clients(port, n)
            await asyncio.sleep(1.0)  # warm-up: connection set-up and the first frames
            start = [c.frames for c in clients]
            t0 = time.monotonic()
            steps = await steps_per_s(http, period, f"{n} clients")
            elapsed = time.monotonic() - t0
            rates = [(c.frames - s) / elapsed for c, s in zip(clients, start, strict=True)]
            if n not in fps or statistics.fmean(rates) < fps[n][0]:
                fps[n] = (statistics.fmean(rates), min(rates))
            if n == 8:
                streaming.append(steps)
            await close_clients(clients, tasks)
            await asyncio.sleep(1.5)  # the worker drops to the idle frame rate
        out["fps"] = dict(sorted(fps.items()))
        out["steps_idle"] = statistics.fmean(idle)
        out["steps_streaming"] = statistics.fmean(streaming) if streaming else float("nan")

        clients, tasks = await open_clients(port, 1)
        client = clients[0]
        await asyncio.sleep(1.0)
        latencies = []
        for i in range(15 if quick else 40):
            version = client.state_version
            client.new_frame.clear()
            t0 = time.perf_counter()
            await client.ws.send(
                json.dumps({"type": "set", "temperature": 0.01 if i % 2 else 0.02})
            )
            deadline = t0 + max(5.0, period)
            while client.version <= version and time.perf_counter() < deadline:
                client.new_frame.clear()
                try:
                    await asyncio.wait_for(client.new_frame.wait(), deadline - time.perf_counter())
                except TimeoutError:
                    break
            if client.version > version:
                latencies.append((time.perf_counter() - t0) * 1e3)
            await asyncio.sleep(0.15)
        await close_clients(clients, tasks)
        out["latency_ms"] = latencies
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def report(
    r: dict[str, Any],
    chains: int,
    what: str = "LeNet",
    device: str = "cpu",
    counts: tuple[int, ...] = (8, 1, 8, 32),
) -> str:
    lat = r["latency_ms"]
    ratio = r["steps_streaming"] / r["steps_idle"] if r["steps_idle"] else float("nan")
    rows = [
        "| measure | value | goal |",
        "| --- | --- | --- |",
        f"| slider -> first frame made with it, p50 | {percentile(lat, 0.5):.1f} ms ({len(lat)} changes) | |",
        f"| slider -> first frame made with it, p95 | {percentile(lat, 0.95):.1f} ms | < 100 ms |",
    ]
    for n, (mean, low) in r["fps"].items():
        goal = ">= 25" if n == 8 else ""
        rows.append(
            f"| frames/s per client, {n} client{'s' if n > 1 else ''} (mean, min) | {mean:.1f}, {low:.1f} | {goal} |"
        )
    eights = counts.count(8)
    digits = 0 if r["steps_idle"] >= 20 else 2  # a big network's steps/s need decimals
    rows += [
        f"| sampler steps/s, no client (mean of {len(counts)} periods) | {r['steps_idle']:.{digits}f} | |",
        f"| sampler steps/s, 8 clients streaming (mean of {eights} periods) | {r['steps_streaming']:.{digits}f} | |",
        f"| ratio streaming / not streaming | {ratio:.2f} | >= 0.9 |",
    ]
    # Neighbours' load changes how much CPU the worker gets from period to period; steps per
    # CPU-second of the worker itself show what streaming costs the sampler.
    idle_cpu = statistics.fmean(CPU.get("idle worker", [float("nan")]))
    stream_cpu = statistics.fmean(CPU.get("8 clients worker", [float("nan")]))
    per_cpu_idle = r["steps_idle"] / idle_cpu
    per_cpu_stream = r["steps_streaming"] / stream_cpu
    rows += [
        f"| worker steps per CPU-second, no client / 8 clients | {per_cpu_idle:.{digits}f} / {per_cpu_stream:.{digits}f} | |",
        f"| ratio per CPU-second streaming / not streaming | {per_cpu_stream / per_cpu_idle:.2f} | >= 0.9 |",
    ]
    for phase, shares in CPU.items():
        rows.append(
            f"| CPU share of one core, {phase} process | {100 * statistics.fmean(shares):.0f}% | |"
        )
    load = os.getloadavg()[0]
    head = (
        f"{what}, {chains} chains, {device}, {os.cpu_count()} cores (load average {load:.1f}), "
        "loopback websockets\n\n"
    )
    return head + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter periods (a smoke run)")
    parser.add_argument("--checkpoint", help="a checkpoint (default: the bundled LeNet)")
    parser.add_argument(
        "--model", choices=sorted(MODELS), help="build and export this network (see above)"
    )
    parser.add_argument(
        "--clients", default="8,1,8,32", help="client counts of the streaming periods"
    )
    parser.add_argument("--period", type=float, help="seconds of each streaming period")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--target", help="LAYER:UNIT (default: the model's last layer, unit 0)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.clients.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        parser.error("--clients takes client counts of at least 1, such as 1,8")
    if args.model and args.checkpoint:
        parser.error("give --checkpoint or --model, not both")
    if args.target is None and args.checkpoint is None and args.model is None:
        args.target = "fc3:0"
    if args.serve is not None:
        serve(args.serve, args.checkpoint, args.chains, args.target, args.device)
        return 0

    temporary = None
    what = "LeNet"
    if args.model:
        import tempfile

        temporary = tempfile.TemporaryDirectory(prefix="ldam-bench-")
        args.checkpoint = str(build_model(args.model, Path(temporary.name)))
        what = MODELS[args.model]
    elif args.checkpoint:
        what = Path(args.checkpoint).name
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_stream",
        "--serve",
        str(port),
        "--chains",
        str(args.chains),
        "--device",
        args.device,
    ]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    if args.target:
        cmd += ["--target", args.target]
    proc = subprocess.Popen(cmd, cwd=REPO)
    global SERVER_PID
    SERVER_PID = proc.pid
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                print(f"the server exited with {proc.returncode}", file=sys.stderr)
                return 1
            try:
                state = httpx.get(f"http://127.0.0.1:{port}/api/state", trust_env=False).json()
                if state["status"]["worker"] == "running" and state["frame_seq"] >= 0:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                print("the server did not start in time", file=sys.stderr)
                return 1
            time.sleep(0.3)
        result = asyncio.run(measure(port, args.quick, counts, args.period))
        print(report(result, args.chains, what, args.device, tuple(counts)))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if temporary is not None:
            temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
