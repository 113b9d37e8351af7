"""Units per minute of `ldam atlas` on the bundled LeNet: one process (batched), Ray with one
worker and Ray with two workers, for `conv2` (16 channels of 8x8) and `fc1` (120 units).

Every run is the real command in a subprocess; the Ray runs start a local cluster in a network
namespace of their own (`unshare -n`, loopback only), so run this as root. Two figures per run:
`total` is units over the command's whole wall time (Python start, model load, Ray start,
actors loading the model), what a user waits for; `rendering` is units over the time from the
first finished batch to the last, the rate once workers run, which is what scales to a big
layer. Scaling efficiency = rendering rate with 2 workers / (2 x rate with 1 worker). Run:

    .venv/bin/python -m benchmarks.bench_atlas [--units 32] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ldam.models.bundled import DEFAULT_CHECKPOINT


def run(layer: str, units: int, steps: int, executor: str, workers: int) -> dict[str, float]:
    """One `ldam atlas` run; returns its total and rendering rates in units per minute."""
    out = Path(tempfile.mkdtemp(prefix="bench-atlas-"))
    argv = [
        sys.executable, "-m", "ldam", "atlas", str(DEFAULT_CHECKPOINT), "--layer", layer,
        "--units", f"0-{units - 1}", "--steps", str(steps), "--chains", "8",
        "--batch-units", "2", "--out", str(out / "a"),
    ]  # fmt: skip
    if executor == "ray":
        argv += ["--executor", "ray", "--workers", str(workers)]
        argv = ["unshare", "-n", "sh", "-c", "ip link set lo up && " + " ".join(argv)]
    # Watch the manifest for the time of each finished batch.
    seen: list[tuple[float, int]] = []
    stop = threading.Event()

    def watch() -> None:
        manifest = out / "a" / "atlas.json"
        last = -1
        while not stop.is_set():
            try:
                n = len(json.loads(manifest.read_text())["units"])
            except (OSError, ValueError):
                n = -1
            if n > last:
                seen.append((time.perf_counter(), n))
                last = n
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    started = time.perf_counter()
    watcher.start()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    total = time.perf_counter() - started
    stop.set()
    watcher.join()
    shutil.rmtree(out, ignore_errors=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    done = [(t, n) for t, n in seen if n > 0]
    (t0, n0), (t1, n1) = done[0], done[-1]
    rendering = (n1 - n0) / (t1 - t0) * 60 if t1 > t0 else float("nan")
    return {"total": units / total * 60, "rendering": rendering, "seconds": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    print(f"ldam atlas on LeNet, {args.steps} steps x 8 chains per unit, 2 units per batch")
    print(
        f"{'layer':<6} {'run':<14} {'units/min total':>16} {'units/min rendering':>20} {'wall s':>7}"
    )
    for layer, units in (("conv2", min(16, args.units)), ("fc1", args.units)):
        rates = {}
        for name, executor, workers in (
            ("1 process", "local", 1),
            ("Ray 1 worker", "ray", 1),
            ("Ray 2 workers", "ray", 2),
        ):
            r = run(layer, units, args.steps, executor, workers)
            rates[name] = r
            print(
                f"{layer:<6} {name:<14} {r['total']:>16.1f} {r['rendering']:>20.1f} {r['seconds']:>7.1f}"
            )
        eff = rates["Ray 2 workers"]["rendering"] / (2 * rates["Ray 1 worker"]["rendering"])
        print(f"{layer:<6} scaling efficiency, 2 workers: {eff:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
