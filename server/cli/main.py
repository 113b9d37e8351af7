"""The `ldam` command: sample, inspect, train, bench and serve.

Every user error ends in one sentence on stderr and exit status 2; torch is imported only
by the subcommands that need it, so `ldam serve` keeps torch out of the web server's process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ldam.errors import UserError
from ldam.models.bundled import DEFAULT_CHECKPOINT
from ldam.wire.params import grid_columns

DEFAULT_DISC_STEPS = 100


class UsageError(UserError):
    """A bad command-line value; the message is one sentence for the user."""


# ----------------------------------------------------------------------------- parsing helpers


def per_chain(text: str, name: str) -> float | list[float]:
    """Parse `0.1` or a comma list `0,0.2,0.5` (one value per chain) into floats."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError(f"--{name} needs a number or a comma-separated list of numbers.")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UsageError(
            f"--{name} must be a number or a comma-separated list of numbers, not {text!r}."
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"--{name} must be finite, not {text!r}.")
    return values[0] if len(values) == 1 else values


def int_triple(text: str | None, name: str) -> tuple[int, int, int] | None:
    """Parse `C,H,W` into three positive ints."""
    if text is None:
        return None
    try:
        c, h, w = (int(p) for p in text.split(","))
    except ValueError:
        raise UsageError(
            f"--{name} must be three positive integers C,H,W such as 1,28,28, not {text!r}."
        ) from None
    if min(c, h, w) <= 0:
        raise UsageError(
            f"--{name} must be three positive integers C,H,W such as 1,28,28, not {text!r}."
        )
    return (c, h, w)


def float_tuple(text: str | None, name: str, n: int) -> tuple[float, ...] | None:
    """Parse `a,b[,c]` into exactly n floats."""
    if text is None:
        return None
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise UsageError(f"--{name} must be {n} comma-separated numbers, not {text!r}.")
    return values


def burn_in_value(text: str) -> int | None:
    """`auto` -> None (detected per chain), else a non-negative step count."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(
            f"--burn-in must be 'auto' or a whole number of steps, not {text!r}."
        ) from None
    if value < 0:
        raise UsageError(f"--burn-in must be 'auto' or a whole number of steps, not {text!r}.")
    return value


def pick_device(name: str) -> str:
    """`auto` picks CUDA when present; asking for CUDA without it is a usage error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda was asked for, but this machine has no CUDA device; use --device cpu."
        )
    return name


# ----------------------------------------------------------------------------- sample


def save_png(images: Any, units_per_chain: list[int], path: str) -> None:
    """Write images [N,C,H,W] as the paper's grid (grey = 0, one column per unit) to a PNG."""
    import torch

    from ldam.sampling.images import grid_order, tile, to_display, to_pil

    x = torch.as_tensor(images)
    units = list(dict.fromkeys(units_per_chain))
    order = grid_order(list(units_per_chain), units)
    to_pil(tile(to_display(x[order]), columns=grid_columns(x.shape[0], len(units)))).save(path)


def cmd_sample(args: argparse.Namespace) -> int:
    """Run LDAM headless and write the npz (and optionally the PNG grid)."""
    import numpy as np

    from ldam.cli.progress import Progress
    from ldam.models.loading import load_checkpoint
    from ldam.sampling.diagnostics import effective_sample_size, split_rhat
    from ldam.sampling.energy import ActivationTerm, L2Term
    from ldam.sampling.sampler import Sampler, SamplerConfig
    from ldam.sampling.targets import Target

    if args.chains < 1:
        raise UsageError("--chains must be at least 1.")
    if args.steps < 1:
        raise UsageError("--steps must be at least 1.")
    if args.record_every < 1:
        raise UsageError("--record-every must be at least 1.")
    if args.window < 1:
        raise UsageError("--window must be at least 1.")
    out = Path(args.out)
    if not out.parent.exists():
        raise UsageError(f"The folder for --out does not exist: {out.parent}.")

    device = pick_device(args.device)
    loaded = load_checkpoint(
        args.checkpoint,
        arch=args.arch,
        input_shape=int_triple(args.input_shape, "input-shape"),
        trust=args.trust_checkpoint,
    )
    module = loaded.module.to(device)
    target = Target(module, args.target, args.chains, batch_size=loaded.batch_size)
    terms: list[Any] = [ActivationTerm(target), L2Term()]

    disc_weight = per_chain(args.disc_weight, "disc-weight")
    trainer = None
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
        from ldam.sampling.discriminator import build_discriminator_for
        from ldam.sampling.energy import DiscriminatorTerm

        trainer = build_discriminator_for(
            loaded.input_shape,
            loaded.normalization,
            data=args.disc_data,
            device=device,
            checkpoint=args.disc_checkpoint,
        )
        terms.append(DiscriminatorTerm(trainer.current))

    config = SamplerConfig(
        chains=args.chains,
        temperature=per_chain(args.temperature, "temperature"),
        step_size=per_chain(args.step_size, "step-size"),
        step_decay=float_tuple(args.step_decay, "step-decay", 3),
        momentum=per_chain(args.momentum, "momentum"),
        l2_weight=per_chain(args.l2, "l2"),
        disc_weight=disc_weight,
        normalize=args.normalize,
        window=args.window,
        init_std=args.init_std,
        clamp=float_tuple(args.clamp, "clamp", 2),
        burn_in=burn_in_value(args.burn_in),
        seed=args.seed,
        device=device,
    )
    sampler = Sampler(terms, loaded.input_shape, config)

    if trainer is not None and disc_steps:
        trainer.warm_up(sampler.x.detach().clone(), steps=disc_steps)
        trainer.start()

    chains = args.chains
    activation = np.zeros((args.steps, chains), dtype=np.float32)
    recorded: list[np.ndarray] = []
    record_from: int | None = None
    progress = Progress(args.steps, "sampling")
    started = time.perf_counter()
    try:
        for t in range(args.steps):
            info = sampler.step()
            activation[t] = info.activation.detach().float().cpu().numpy()
            if trainer is not None and disc_steps:
                trainer.offer(sampler.x, sampler.age)
            if record_from is None:
                burned = sampler.burn_in_step >= 0
                if bool(burned.all()):
                    record_from = t
            if record_from is not None and (t - record_from) % args.record_every == 0:
                recorded.append(sampler.x.detach().float().cpu().numpy().copy())
            progress.update(t + 1)
    finally:
        progress.close()
        if trainer is not None:
            trainer.stop()
    elapsed = time.perf_counter() - started

    shape = (chains, *loaded.input_shape)
    samples = np.stack(recorded) if recorded else np.zeros((0, *shape), dtype=np.float32)
    burn_in_step = sampler.burn_in_step.cpu().numpy().astype(np.int64)
    diagnostics = chain_diagnostics(
        activation, burn_in_step, target.units_per_chain, split_rhat, effective_sample_size
    )
    params = {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "format": loaded.format,
        "input_shape": list(loaded.input_shape),
        "target": args.target,
        "units_per_chain": list(target.units_per_chain),
        "chains": chains,
        "steps": args.steps,
        "burn_in": args.burn_in,
        "temperature": config.temperature,
        "step_size": config.step_size,
        "step_decay": config.step_decay,
        "momentum": config.momentum,
        "l2_weight": config.l2_weight,
        "disc_weight": config.disc_weight,
        "disc_steps": disc_steps,
        "normalize": config.normalize,
        "window": config.window,
        "init_std": config.init_std,
        "clamp": config.clamp,
        "seed": config.seed,
        "record_every": args.record_every,
        "record_from_step": record_from,
        "device": device,
        "steps_per_second": args.steps / elapsed if elapsed > 0 else None,
        "seconds": elapsed,
        "diagnostics": diagnostics,
    }
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
            sampler.window_mean().detach().float().cpu(), list(target.units_per_chain), args.png
        )
    print_summary(params, burn_in_step, sampler.resets.cpu().numpy(), out, args.png)
    return 0


def chain_diagnostics(
    activation: Any, burn_in_step: Any, units_per_chain: Sequence[int], rhat_fn: Any, ess_fn: Any
) -> list[dict[str, Any]]:
    """Split R-hat and ESS of the activation, per group of chains sharing a unit.

    Uses the post-burn-in part common to every chain of the group; groups of one chain get
    ESS only (R-hat needs at least two chains after splitting, which one chain also gives).
    """
    import numpy as np

    out = []
    units = list(units_per_chain)
    for unit in dict.fromkeys(units):
        idx = [i for i, u in enumerate(units) if u == unit]
        starts = [int(burn_in_step[i]) for i in idx]
        entry: dict[str, Any] = {"unit": unit, "chains": idx}
        if min(starts) < 0:
            entry["note"] = "not every chain of this unit burned in"
            out.append(entry)
            continue
        start = max(starts)
        draws = np.asarray(activation[start:, idx]).T.astype(np.float64)
        if draws.shape[1] < 8:
            entry["note"] = "too few post-burn-in steps for diagnostics"
        else:
            entry["rhat"] = float(rhat_fn(draws))
            entry["ess"] = float(ess_fn(draws))
            entry["draws"] = int(draws.size)
        out.append(entry)
    return out


def print_summary(
    params: dict[str, Any], burn_in_step: Any, resets: Any, out: Path, png: str | None
) -> None:
    """One short report on stderr: speed, burn-in, resets, mixing."""
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
    for d in params["diagnostics"]:
        if "rhat" in d:
            lines.append(
                f"unit {d['unit']}: split R-hat {d['rhat']:.3f}, ESS {d['ess']:.0f} of {d['draws']} draws"
            )
        elif "note" in d:
            lines.append(f"unit {d['unit']}: {d['note']}")
    sys.stderr.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- inspect


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print the layers of a checkpoint with output shapes and unit counts."""
    from ldam.models.loading import load_checkpoint
    from ldam.sampling.targets import list_layers

    loaded = load_checkpoint(
        args.checkpoint,
        arch=args.arch,
        input_shape=int_triple(args.input_shape, "input-shape"),
        trust=args.trust_checkpoint,
    )
    layers = list_layers(loaded.module, loaded.input_shape, batch_size=loaded.batch_size)
    print(f"{args.checkpoint}: {loaded.format}, input {'x'.join(map(str, loaded.input_shape))}")
    width = max([len(layer.name or "output") for layer in layers] + [5])
    print(f"{'layer':<{width}}  {'output shape':<20} units")
    for layer in layers:
        shape = "x".join(str(s) for s in layer.shape)
        print(f"{(layer.name or 'output'):<{width}}  {shape:<20} {layer.units}")
    return 0


# ----------------------------------------------------------------------------- train, bench, serve


def cmd_train(args: argparse.Namespace) -> int:
    """Train the paper's LeNet on the bundled MNIST digits, plain and parameter-averaged."""
    from ldam.models.train import train_mnist

    if args.dataset != "mnist":
        raise UsageError(f"ldam train knows only 'mnist', not {args.dataset!r}.")
    result = train_mnist(args.out, steps=args.steps, seed=args.seed, progress=True)
    print(
        f"trained {result['steps']} steps in {result['seconds']:.0f} s; held-out accuracy on 2,000 digits:"
    )
    for key in ["plain", "averaged", "prediction_averaged"]:
        print(f"  {key:<20} {100 * float(result[key]):.2f}%")
    for path in result.get("files", []):
        print(f"wrote {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Time the sampler against a bare forward+backward loop and print the table."""
    from ldam.cli.bench import main as bench_main

    return bench_main(args)


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the dashboard server (the worker process does the torch work)."""
    from ldam.web.config import ServeConfig
    from ldam.web.serve import run_server

    run_server(
        ServeConfig(
            checkpoint=args.checkpoint,
            compare=args.compare,
            target=args.target,
            data=args.data,
            checkpoints_dir=args.checkpoints,
            host=args.host,
            port=args.port,
            device=args.device,
            trust_checkpoint=args.trust_checkpoint,
            token=args.token,
        )
    )
    return 0


# ----------------------------------------------------------------------------- argument parser


def add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--arch",
        help="built-in network for a state dict: lenet, a torchvision name, or package.module:factory",
    )
    p.add_argument("--input-shape", help="C,H,W when the checkpoint carries no metadata")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full pickles (runs code from the file)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldam", description="Langevin Dynamics Activation Maximization."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="sample images that drive a unit, headless")
    s.add_argument("checkpoint", nargs="?", default=str(DEFAULT_CHECKPOINT))
    s.add_argument("--target", default="fc3:0", help="LAYER:UNIT, LAYER:C@Y,X or LAYER:A-B")
    s.add_argument("--chains", type=int, default=16)
    s.add_argument("--steps", type=int, default=2000)
    s.add_argument("--burn-in", default="auto", help="'auto' or a number of steps")
    s.add_argument("--temperature", default="0.01", help="one value or one per chain (comma list)")
    s.add_argument("--step-size", default="0.05")
    s.add_argument("--step-decay", help="a,b,mu: step size a*(b+t)^-mu instead of a constant")
    s.add_argument("--momentum", default="0.0")
    s.add_argument("--l2", default="0.1", help="L2 weight lambda")
    s.add_argument("--normalize", default="none", choices=["none", "regularizers", "all"])
    s.add_argument("--window", type=int, default=200)
    s.add_argument("--init-std", type=float, default=1.0)
    s.add_argument("--clamp", help="lo,hi: clamp the input to this range after each step")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--record-every", type=int, default=10)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", default="run.npz")
    s.add_argument("--png")
    s.add_argument(
        "--disc-weight", default="0", help="discriminator weight w in [0, 1], or one per chain"
    )
    s.add_argument("--disc-data", help="real images for the discriminator: a folder or an .npz")
    s.add_argument(
        "--disc-steps",
        type=int,
        default=None,
        help=f"discriminator warm-up steps, then it trains online during the run (default "
        f"{DEFAULT_DISC_STEPS} with --disc-weight > 0 and no --disc-checkpoint; 0 keeps a loaded D frozen)",
    )
    s.add_argument("--disc-checkpoint", help="load a saved discriminator")
    s.add_argument("--save-disc", help="write the discriminator after the run")
    add_checkpoint_options(s)
    s.set_defaults(func=cmd_sample)

    i = sub.add_parser("inspect", help="list a checkpoint's layers, output shapes and unit counts")
    i.add_argument("checkpoint")
    add_checkpoint_options(i)
    i.set_defaults(func=cmd_inspect)

    t = sub.add_parser("train", help="train the bundled LeNet (plain and parameter-averaged)")
    t.add_argument("dataset", choices=["mnist"])
    t.add_argument("--out", default=str(DEFAULT_CHECKPOINT.parent))
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("bench", help="sampler steps/s against a bare forward+backward loop")
    b.add_argument("--quick", action="store_true", help="fewer rounds (for a smoke run)")
    b.add_argument("--device", default="auto")
    b.add_argument(
        "--cases",
        default="default",
        help="'default', 'gpu' (adds resnet50 at 224) or a comma list of names",
    )
    b.set_defaults(func=cmd_bench)

    v = sub.add_parser("serve", help="start the live dashboard")
    v.add_argument("checkpoint", nargs="?")
    v.add_argument("--compare")
    v.add_argument("--target")
    v.add_argument("--data", help="real images (folder or .npz) for the discriminator")
    v.add_argument("--checkpoints", default=str(DEFAULT_CHECKPOINT.parent))
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    v.add_argument(
        "--token",
        default=os.environ.get("LDAM_TOKEN"),
        help="access token for a non-loopback bind (default: $LDAM_TOKEN, else one is generated and printed)",
    )
    v.add_argument("--trust-checkpoint", action="store_true")
    v.set_defaults(func=cmd_serve)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    # Warnings from our modules are sentences for the user, not source locations.
    sys.stderr.write(f"ldam: warning: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ldam` console script."""
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("ldam: interrupted\n")
        return 130
    except UserError as exc:  # one sentence for the user; anything else is a bug
        sys.stderr.write(f"ldam: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
