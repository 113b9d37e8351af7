"""`ldam atlas`: every unit of a layer (or a range) rendered as a batch job into a folder:
`atlas.json`, one PNG and one npz per unit, and a static `index.html` gallery."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ldam.cli.options import (
    UsageError,
    add_checkpoint_options,
    add_layout_option,
    add_setting_flags,
    add_view_option,
    int_triple,
    metadata_option,
    settings_from_args,
)

# The most units one sampler batch holds with --batch-units auto (8 chains each: 512 chains).
MAX_BATCH_UNITS = 64


def add_atlas_parser(sub: Any) -> None:
    """The `atlas` subcommand's options."""
    a = sub.add_parser("atlas", help="render every unit of a layer into a browsable folder")
    a.add_argument("checkpoint")
    a.add_argument("--layer", required=True, help="the layer, as ldam inspect lists it")
    a.add_argument("--units", help="A-B or K (default: every unit of the layer)")
    a.add_argument(
        "--batch-units",
        default="auto",
        help="units per sampler batch: auto (as many as the window memory budget allows, at most "
        f"{MAX_BATCH_UNITS}) or a number",
    )
    a.add_argument("--threads", type=int, default=1, help="torch threads per worker (pinned)")
    a.add_argument("--out", required=True, help="the atlas folder")
    a.add_argument("--executor", default="local", choices=["local", "ray"])
    a.add_argument("--ray-address", help="a running Ray cluster (default: start a local one)")
    a.add_argument("--workers", type=int, default=None, help="Ray workers (default: one per CPU)")
    a.add_argument("--gpus-per-worker", type=float, default=0.0)
    a.add_argument("--device", default="auto", help="the local executor's device")
    a.add_argument("--resume", action="store_true", help="skip the units already finished")
    add_checkpoint_options(a)
    add_layout_option(a)
    add_view_option(a)
    add_setting_flags(a, "atlas")
    a.set_defaults(func=cmd_atlas)


def parse_units(text: str | None, count: int, layer: str) -> list[int]:
    """`A-B` or `K` -> the unit list, checked against the layer's `count` units."""
    if count < 1:
        raise UsageError(f"Layer {layer!r} has no units to render.")
    if text is None:
        return list(range(count))
    parts = text.strip().split("-")
    try:
        first, last = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (-1, -1)
    except ValueError:
        first = last = -1
    if first < 0 or last < first:
        raise UsageError(f"--units must be K or A-B with A <= B, such as 0-63, not {text!r}.")
    if last >= count:
        raise UsageError(
            f"--units {text} is out of range for layer {layer!r}, which has units 0-{count - 1}."
        )
    return list(range(first, last + 1))


def batch_units(text: str, settings: Any, input_shape: tuple[int, ...]) -> int:
    """`--batch-units`: a number >= 1, or `auto`: as many units as keep one batch's averaging
    window within the window memory budget, at most `MAX_BATCH_UNITS` (from the settings and
    the input shape alone, so every machine batches alike; results do not depend on it)."""
    if text != "auto":
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise UsageError(f"--batch-units must be auto or a whole number >= 1, not {text!r}.")
        return value
    import math

    from ldam.wire.limits import WINDOW_MEMORY_LIMIT_BYTES
    from ldam.wire.settings import AUTO_WINDOW_STEPS

    window = settings.window if settings.window is not None else AUTO_WINDOW_STEPS
    per_unit = settings.chains * window * math.prod(input_shape) * 4
    return max(1, min(MAX_BATCH_UNITS, WINDOW_MEMORY_LIMIT_BYTES // per_unit))


def _check_numbers(args: argparse.Namespace) -> None:
    if args.threads < 1:
        raise UsageError("--threads must be at least 1.")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1.")
    if args.gpus_per_worker < 0:
        raise UsageError("--gpus-per-worker must be 0 or more.")
    if args.executor == "local" and (args.ray_address or args.workers):
        raise UsageError("--ray-address and --workers need --executor ray.")


def cmd_atlas(args: argparse.Namespace) -> int:
    """Render the atlas; exit 0 when every unit is finished, 130 after Ctrl-C."""
    _check_numbers(args)
    from ldam.atlas.executors import run_local, run_ray
    from ldam.atlas.gallery import write_gallery
    from ldam.atlas.manifest import (
        AtlasError,
        check_resumable,
        new_manifest,
        read_manifest,
        write_manifest,
    )
    from ldam.atlas.plan import Job, Settings, file_sha256
    from ldam.atlas.render import Rendered, Renderer, write_rendered
    from ldam.cli.progress import Progress
    from ldam.sampling.device import pick_device
    from ldam.wire.views import resolve_view

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder.")
    settings = Settings(
        **settings_from_args(args, "atlas"),
        layout=args.layout,
        view=args.view,
        threads=args.threads,
        batch_units=1,
    )
    device = str(pick_device(args.device)) if args.executor == "local" else "cpu"
    job = Job(
        checkpoint=args.checkpoint,
        layer=args.layer,
        units=[],
        settings=settings,
        arch=args.arch,
        input_shape=int_triple(args.input_shape, "input-shape"),
        trust=args.trust_checkpoint,
        device=device,
        metadata=metadata_option(args),
    )
    # The driver loads the model too: a bad checkpoint, layer or range is one sentence here,
    # before any worker starts; the local executor renders with this same model.
    renderer = Renderer(job)
    count = renderer.check()
    units = parse_units(args.units, count, args.layer)
    per_batch = batch_units(args.batch_units, settings, renderer.loaded.input_shape)
    job = replace(job, units=units, settings=replace(settings, batch_units=per_batch))
    renderer.job = job
    loaded = renderer.loaded
    manifest = new_manifest(
        job,
        file_sha256(args.checkpoint),
        count,
        loaded.normalization,
        loaded.class_names,
        resolve_view(settings.view, loaded.input_shape[0]),
    )
    old = read_manifest(out)
    if old is not None and old["units"] and not args.resume:
        raise AtlasError(
            f"{out} already holds an atlas; use --resume to finish it or choose a new --out folder."
        )
    done: set[int] = set()
    if old is not None and args.resume:
        check_resumable(old, manifest, out)
        kept = [e for e in old["units"] if all((out / e[k]).exists() for k in ("png", "npz"))]
        manifest["units"] = kept
        done = {e["unit"] for e in kept}
    batches = [b for b in job.batches() if any(u not in done for u in b)]
    todo = sum(1 for u in units if u not in done)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, manifest)
    write_gallery(out, manifest)

    progress = Progress(len(units), "atlas", unit="units")
    progress.update(len(done))
    started = time.perf_counter()

    def on_done(results: list[Rendered]) -> None:
        for rendered in results:
            if rendered.entry["unit"] in done:
                continue  # resume rewrites nothing already finished
            write_rendered(out, rendered)
            manifest["units"].append(rendered.entry)
            done.add(rendered.entry["unit"])
        write_manifest(out, manifest)
        write_gallery(out, manifest)
        progress.update(len(done))

    # SIGTERM ends the run like Ctrl-C: the manifest already lists what is finished.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    replaced = 0
    try:
        if args.executor == "local":
            run_local(job, renderer, batches, on_done)
        else:
            replaced = run_ray(
                job,
                batches,
                on_done,
                args.ray_address,
                args.workers or os.cpu_count() or 1,
                args.gpus_per_worker,
            )
    except KeyboardInterrupt:
        progress.close()
        sys.stderr.write(
            f"stopped: {len(done)} of {len(units)} units finished and listed in "
            f"{out / 'atlas.json'}; run again with --resume to finish.\n"
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.close()
    elapsed = time.perf_counter() - started
    rate = todo / elapsed * 60 if elapsed > 0 else 0.0
    rhats = [e["rhat"] for e in manifest["units"] if e["rhat"] is not None]
    mixing = sum(1 for r in rhats if r < 1.1)
    lines = [
        f"wrote {out / 'index.html'}: {len(units)} units of {args.layer} "
        f"({todo} rendered in {elapsed:.1f} s, {rate:.1f} units/min, {args.executor})",
        f"split R-hat < 1.1 for {mixing} of {len(manifest['units'])} units",
    ]
    if replaced:
        lines.append(f"{replaced} Ray workers died and were replaced; their batches ran again")
    sys.stderr.write("\n".join(lines) + "\n")
    return 0
