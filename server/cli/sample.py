"""`ldam sample`: run LDAM headless and write the npz (and optionally the PNG grid)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ldam.cli.options import UsageError, load_from_args, settings_from_args
from ldam.metadata import normalization_json
from ldam.wire.params import grid_columns
from ldam.wire.settings import for_sampler
from ldam.wire.views import DEFAULT_VIEW

# Discriminator warm-up steps when --disc-weight > 0 and no --disc-checkpoint is given.
DEFAULT_DISC_STEPS = 100


def save_png(
    images: Any,
    units_per_chain: list[int],
    path: str,
    view: str = DEFAULT_VIEW,
    normalization: Any = None,
) -> None:
    """Write images [N,C,H,W], chains in grid order (`Target.units_per_chain`), as the paper's
    grid to a PNG: one column per unit (`grid_columns`, the dashboard's rule), in `view`:
    ``symmetric`` (grey = 0), ``input`` (de-normalized with `normalization`, clipped) or
    ``auto`` (input for 3 channels, else symmetric: `ldam.wire.views.resolve_view`)."""
    import torch

    from ldam.sampling.images import display_grid, to_pil

    x = torch.as_tensor(images)
    columns = grid_columns(len(units_per_chain), len(set(units_per_chain)))
    to_pil(display_grid(x, columns, view, normalization)).save(path)


def cmd_sample(args: argparse.Namespace) -> int:
    """Run LDAM headless and write the npz (and optionally the PNG grid)."""
    import numpy as np

    from ldam.cli.progress import Progress
    from ldam.sampling.diagnostics import unit_diagnostics
    from ldam.sampling.diversity import BLOCKS, unit_diversity
    from ldam.sampling.energy import ActivationTerm, L2Term
    from ldam.sampling.recorder import Recorder
    from ldam.sampling.sampler import Sampler, SamplerConfig
    from ldam.sampling.targets import Target

    given = settings_from_args(args, "sample")
    # How many chains, how long and how often to record are the run's; the rest is the
    # sampler's config.
    chains, steps, record_every = given["chains"], given["steps"], given["record_every"]
    settings = for_sampler(given)
    out = Path(args.out)
    if not out.parent.exists():
        raise UsageError(f"The folder for --out does not exist: {out.parent}.")

    from ldam.sampling.device import pick_device

    device = str(pick_device(args.device))
    loaded = load_from_args(args)
    module = loaded.module.to(device)
    target = Target(module, args.target, chains, batch_size=loaded.batch_size, layout=args.layout)
    terms: list[Any] = [ActivationTerm(target), L2Term()]

    disc_weight = settings["disc_weight"]
    trainer = loop = None
    uses_disc = any(
        w > 0 for w in (disc_weight if isinstance(disc_weight, list) else [disc_weight])
    )
    disc_steps = args.disc_steps
    if disc_steps is None:
        # A loaded D is used as it is; otherwise D must learn before it can regularize.
        disc_steps = 0 if args.disc_checkpoint or not uses_disc else DEFAULT_DISC_STEPS
    if disc_steps < 0:
        raise UsageError("--disc-steps must be 0 or more.")
    if uses_disc and not args.disc_checkpoint and not disc_steps:
        raise UsageError(
            "--disc-weight above 0 needs a trained discriminator: give --disc-steps N or --disc-checkpoint FILE."
        )
    if uses_disc or args.disc_checkpoint or args.save_disc:
        from ldam.sampling.discriminator import DiscriminatorLoop, build_discriminator_for
        from ldam.sampling.energy import DiscriminatorTerm

        trainer = build_discriminator_for(
            loaded.input_shape,
            loaded.normalization,
            data=args.disc_data,
            device=device,
            checkpoint=args.disc_checkpoint,
        )
        loop = DiscriminatorLoop(trainer)  # the worker's driver and cadence
        terms.append(DiscriminatorTerm(loop.current))

    config = SamplerConfig(chains=chains, device=device, **settings)
    sampler = Sampler(terms, loaded.input_shape, config)

    if trainer is not None and disc_steps:
        trainer.warm_up(sampler.x.detach().clone(), steps=disc_steps)
        trainer.start()

    # The loop only enqueues device work: the recorder keeps each step's activation and
    # burn-in flags, and the samples from the first step after which every chain is burned
    # in, on the device, and copies them to the host in blocks; the progress bar counts steps
    # on the host.
    recorder = Recorder(
        chains, sampler.device, sample_shape=loaded.input_shape, sample_every=record_every
    )
    progress = Progress(steps, "sampling")
    started = time.perf_counter()
    try:
        for t in range(steps):
            info = sampler.step()
            recorder.add(info, sampler.x)
            if loop is not None:  # offers only while D's thread runs (trained, not loaded)
                loop.after_step(sampler.x, sampler.age)
            progress.update(t + 1)
        recording = recorder.finish()  # waits for the device: part of the run's time
    finally:
        progress.close()
        if trainer is not None:
            trainer.stop()
    elapsed = time.perf_counter() - started

    activation = recording.activation.numpy()
    record_from = recording.record_from
    samples = recording.samples.numpy()
    burn_in_step = sampler.burn_in_step.cpu().numpy().astype(np.int64)
    diagnostics = unit_diagnostics(activation, burn_in_step, target.units_per_chain)
    # Each unit's modes and Vendi score over its chains' window blocks (None: a chain's window
    # never filled).
    blocks = sampler.window_blocks(BLOCKS)
    for entry, diverse in zip(
        diagnostics, unit_diversity(blocks, target.units_per_chain), strict=True
    ):
        entry["modes"], entry["vendi"] = diverse["modes"], diverse["vendi"]
    params = {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "format": loaded.format,
        "input_shape": list(loaded.input_shape),
        "normalization": normalization_json(loaded.normalization),
        "class_names": loaded.class_names,
        "target": args.target,
        "units_per_chain": list(target.units_per_chain),
        "chains": chains,
        "steps": steps,
        # Every setting of the one model by its name, as the sampler ran it (an auto window
        # resolved; burn_in null = auto).
        **{name: getattr(sampler.config, name) for name in settings},
        "disc_steps": disc_steps,
        # Each unit's own scale sigma_u and adapted step (`ldam.sampling.scale`), and how the
        # step was adapted.
        "tuning": {str(u): t for u, t in sampler.unit_tuning().items()},
        "adaptation": sampler.adaptation,
        "record_every": record_every,
        "record_from_step": record_from,
        "device": device,
        "steps_per_second": steps / elapsed if elapsed > 0 else None,
        "seconds": elapsed,
        "diagnostics": diagnostics,
    }
    if trainer is not None:
        params["disc"] = trainer.metrics()  # D's figures at the end: steps, offers, accuracy
    np.savez(
        out,
        samples=samples.astype(np.float32),
        final=sampler.x.detach().float().cpu().numpy(),
        mean=sampler.mean().detach().float().cpu().numpy(),
        window_mean=sampler.window_mean().detach().float().cpu().numpy(),
        activation=activation,
        burn_in_step=burn_in_step,
        resets=sampler.resets.cpu().numpy().astype(np.int64),
        params=np.array(json.dumps(params, default=float)),
    )
    if trainer is not None and args.save_disc:
        trainer.save(args.save_disc)
    if args.png:
        save_png(
            sampler.window_mean().detach().float().cpu(),
            list(target.units_per_chain),
            args.png,
            args.view,
            loaded.normalization,
        )
    print_summary(params, burn_in_step, sampler.resets.cpu().numpy(), out, args.png)
    return 0


def print_summary(
    params: dict[str, Any], burn_in_step: Any, resets: Any, out: Path, png: str | None
) -> None:
    """One short report on stderr: speed, burn-in, resets, mixing and diversity per unit."""
    rate = params.get("steps_per_second") or 0.0
    lines = [
        f"wrote {out} ({params['steps']} steps x {params['chains']} chains, {rate:,.1f} steps/s)"
    ]
    if png:
        lines.append(f"wrote {png}")
    lines.append("burn-in step per chain: " + " ".join(str(int(b)) for b in burn_in_step))
    if int(sum(int(r) for r in resets)):
        lines.append(
            "resets per chain (diverged and re-initialized): "
            + " ".join(str(int(r)) for r in resets)
        )
    tuning = params.get("tuning", {})
    for d in params["diagnostics"]:
        if d["note"] is None:
            line = (
                f"unit {d['unit']}: split R-hat {d['rhat']:.3f}, ESS {d['ess']:.0f} of "
                f"{len(d['chains'])} x {d['draws']} draws"
            )
        else:
            line = f"unit {d['unit']}: {d['note']}"
        swaps = tuning.get(str(d["unit"]), {}).get("swap_acceptance")
        if swaps:
            accepted = " ".join("-" if a is None else f"{a:.2f}" for a in swaps)
            trips = tuning[str(d["unit"])]["round_trips"]
            line += f"; swap acceptance per pair {accepted}; {trips} round trips"
        if d.get("modes") is None:
            line += "; modes and Vendi: the window never filled"
        else:
            line += f"; {d['modes']} modes, Vendi {d['vendi']:.1f}"
        lines.append(line)
    sys.stderr.write("\n".join(lines) + "\n")
