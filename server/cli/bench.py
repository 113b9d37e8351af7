"""`ldam bench`: ldam's steps/s against eager PyTorch and against Lucent, in one process.

Three loops per row, all on the same network, unit, batch (= chains), device and threads:

- **eager**: the bare loop a user would otherwise write on the network built in Python (an
  `nn.Module`): forward, backward to the input, an in-place update of x. An inner target is read
  with a forward hook while the whole network runs, as such a loop does.
- **ldam**: what `ldam sample` runs. The same network is exported with ldam's one exporter
  (`ldam.models.saving.export_checkpoint`: dynamic batch, `ldam.json` metadata), saved to a temporary `.pt2`, loaded with
  `ldam.models.loading.load_checkpoint` and sampled with `Target` + `ActivationTerm` + `L2Term` +
  `Sampler` at `ldam sample`'s defaults; `Sampler.step()` is timed. Only the public API is
  called, so a faster loader or sampler shows up here without changing this file.
- **Lucent** (torch-lucent 0.1.8, the peer tool): `lucent.optvis.render.render_vis` with a pixel
  parameterization (batch = chains), no transforms, no normalization, and the objective
  `objectives.channel(layer, unit)`. Lucent is never a dependency of ldam: it is imported only
  from the folder given with `--lucent DIR` (or `$LDAM_BENCH_LUCENT`), else from the
  environment if it happens to be there; if it cannot be imported its column says why.

Lucent's per-step time is read inside its own loop: the optimizer handed to `render_vis` is
Lucent's default (Adam, lr 0.05) behind a wrapper that notes the clock after warm-up step w and
after step w + n, so start-up (hooking every module, building the parameter, the first steps)
and the final image copy fall outside the timed span. Two things Lucent does that cannot be
switched off through its API are kept, since its users get them too: `render_vis` registers a
forward hook on every module (and never removes them, so each round runs on a fresh copy of
the network, or the hooks would pile up), and it always resamples an image smaller than 224
pixels: the benchmark passes `fixed_image_size` = the image's own size, which makes the
resample the identity in value but not free in time.

The loops run interleaved in rounds (eager, ldam, Lucent, eager, ...), so that load from other
processes on a shared machine hits them alike; the table reports each loop's median rate and the
median of the per-round ratios. It states ratios measured in one run, never a timed assertion.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from ldam.cli.options import UsageError

# The environment variable naming Lucent's folder when `--lucent` is not given.
LUCENT_ENV = "LDAM_BENCH_LUCENT"
# The torch-lucent release this comparison was written against.
LUCENT_VERSION = "0.1.8"
# Lucent's default optimizer in render_vis: torch.optim.Adam(params, lr=5e-2).
LUCENT_LR = 5e-2
# Lucent's pixel_image starts at N(0, 0.01^2).
LUCENT_INIT_STD = 0.01
# Lucent resamples images smaller than this (render_vis's rule).
LUCENT_NATIVE_SIZE = 224
# The eager loop's in-place update x += lr * grad (any small step: speed does not depend on it).
EAGER_LR = 1e-3


# ----------------------------------------------------------------------------- the rows


@dataclass(frozen=True)
class Case:
    """One benchmark row: how to build the eager network, one image's shape (C, H, W), the
    target (`LAYER:UNIT` in ldam's grammar, dotted module names) and the chain count."""

    label: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    target: str
    chains: int
    # ldam's hidden replicas per chain (replica exchange); the eager loop and Lucent then run
    # chains * (replicas + 1) plain chains, the batch the replicas cost.
    replicas: int = 0

    @property
    def rows(self) -> int:
        """The batch every loop evaluates per step."""
        return self.chains * (self.replicas + 1)


def _lenet() -> nn.Module:
    """The paper's LeNet with the bundled MNIST weights (read from the committed export's state
    dict; speed does not depend on the weights, but they are at hand)."""
    from ldam.models.bundled import DEFAULT_CHECKPOINT
    from ldam.models.lenet import LeNet

    model = LeNet()
    state = torch.export.load(str(DEFAULT_CHECKPOINT)).state_dict
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()})
    return model


def _torchvision(name: str) -> Callable[[], nn.Module]:
    """A torchvision classifier by name, random weights from seed 0."""

    def build() -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        return getattr(torchvision.models, name)(weights=None)

    return build


def _tiny_vit() -> nn.Module:
    """A ViT-Tiny-sized torchvision `VisionTransformer` (2 blocks, width 192, 3 heads, patch 16)
    at 224x224, random weights from seed 0; torchvision's vit_b_16 is 25x larger."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        image_size=224, patch_size=16, num_layers=2, num_heads=3, hidden_dim=192, mlp_dim=768
    )


ALL_CASES: dict[str, Case] = {
    "lenet-1": Case("LeNet 1x28x28, 1 chain", _lenet, (1, 28, 28), "fc3:3", 1),
    "lenet-16": Case("LeNet 1x28x28, 16 chains", _lenet, (1, 28, 28), "fc3:3", 16),
    "lenet-256": Case("LeNet 1x28x28, 256 chains", _lenet, (1, 28, 28), "fc3:3", 256),
    # For the GPU: enough chains that the device, not the launch of each op, sets the pace.
    "lenet-1024": Case("LeNet 1x28x28, 1024 chains", _lenet, (1, 28, 28), "fc3:3", 1024),
    # An inner conv channel: the unit Lucent targets natively.
    "lenet-16-rx7": Case(
        "LeNet, 16 chains with 7 replicas each, against 128 plain chains",
        _lenet,
        (1, 28, 28),
        "fc3:3",
        16,
        replicas=7,
    ),
    "resnet18-64": Case(
        "resnet18 (random) 3x64x64, 16 chains",
        _torchvision("resnet18"),
        (3, 64, 64),
        "layer3.0.conv1:5",
        16,
    ),
    # The logits of the same network: every layer runs in all three loops.
    "resnet18-64-fc": Case(
        "resnet18 (random) 3x64x64, 16 chains",
        _torchvision("resnet18"),
        (3, 64, 64),
        "fc:1",
        16,
    ),
    # Token layers are not targets yet, so the logits.
    "vit-224": Case(
        "ViT tiny (random) 3x224x224, 4 chains", _tiny_vit, (3, 224, 224), "heads.head:1", 4
    ),
    "resnet50-224": Case(
        "resnet50 (random) 3x224x224, 16 chains",
        _torchvision("resnet50"),
        (3, 224, 224),
        "layer3.0.conv1:5",
        16,
    ),
}
DEFAULT_CASES = ["lenet-1", "lenet-16", "lenet-256", "resnet18-64", "resnet18-64-fc", "vit-224"]


def cases(which: str) -> list[Case]:
    """The rows asked for: `default`, `gpu` (default plus LeNet with 1024 chains and resnet50 at
    224x224 with 16 chains) or a
    comma list of case names; raises `UsageError` naming the first unknown one."""
    if which == "default":
        names = DEFAULT_CASES
    elif which == "gpu":
        names = [*DEFAULT_CASES, "lenet-1024", "resnet50-224"]
    else:
        names = [n.strip() for n in which.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_CASES]
    if unknown or not names:
        bad = unknown[0] if unknown else which
        raise UsageError(f"Unknown benchmark case {bad!r}; known cases: {', '.join(ALL_CASES)}.")
    return [ALL_CASES[n] for n in names]


# ----------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rate(step: Callable[[], object], n: int, device: str) -> float:
    """Steps per second of `n` calls of `step`, the device drained before and after."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(n):
        step()
    _sync(device)
    return n / (time.perf_counter() - start)


def _steps_for(rate: float, seconds: float) -> int:
    """How many steps fill about `seconds` at `rate` steps/s (at least 3)."""
    return max(3, int(rate * seconds))


def _split_target(spec: str) -> tuple[str, int]:
    layer, _, unit = spec.rpartition(":")
    return layer, int(unit)


# ----------------------------------------------------------------------------- eager


def eager_step(model: nn.Module, target: str, x: Tensor) -> Callable[[], None]:
    """The bare loop's step on `model` for images `x [N, C, H, W]` (updated in place): forward,
    the target unit summed over chains (and its positions, for a conv channel), backward to x
    only, `x += EAGER_LR * grad`. An inner layer is read by a forward hook; the network runs to
    the end, as a hand-written loop that does not cut the network does."""
    layer, unit = _split_target(target)
    box: list[Tensor] = []
    if layer not in ("", "output"):

        def keep(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            box.append(output)

        model.get_submodule(layer).register_forward_hook(keep)

    def step() -> None:
        box.clear()
        xg = x.detach().requires_grad_(True)
        out = model(xg)
        act = box[0] if box else out
        (grad,) = torch.autograd.grad(act[:, unit].sum(), xg)
        x.add_(grad, alpha=EAGER_LR)

    return step


# ----------------------------------------------------------------------------- ldam


def export_for_ldam(model: nn.Module, input_shape: tuple[int, int, int], path: Path) -> Path:
    """Save `model` (on the CPU) as the `.pt2` a user hands to `ldam sample`: ldam's one
    exporter (`ldam.models.saving.export_checkpoint`: a dynamic batch, `ldam.json` with
    `input_shape`)."""
    from ldam.models.saving import export_checkpoint

    return export_checkpoint(model, path, input_shape)


def ldam_sampler(path: Path, target: str, chains: int, device: str, replicas: int = 0) -> Any:
    """The sampler `ldam sample PATH --target TARGET --chains N` runs, at its defaults (the
    settings model's, `ldam.wire.settings`), past the steps that adapt its step size: the
    rows time sampling after burn-in."""
    from ldam.models.loading import load_checkpoint
    from ldam.sampling.energy import ActivationTerm, L2Term
    from ldam.sampling.sampler import Sampler, SamplerConfig
    from ldam.sampling.targets import Target
    from ldam.wire.settings import defaults, for_sampler

    loaded = load_checkpoint(path)
    module = loaded.module.to(device)
    unit = Target(module, target, chains, batch_size=loaded.batch_size)
    settings = for_sampler(defaults("sample"))
    # A speed row needs no scale: a unit with no gradient at its starts (the zero-initialized
    # head of a random-weight torchvision ViT) gets sigma 1 instead of a refusal.
    settings["replicas"] = replicas
    config = SamplerConfig(chains=chains, device=device, dead_scale=1.0, **settings)
    sampler = Sampler([ActivationTerm(unit), L2Term()], loaded.input_shape, config)
    for _ in range(config.adapt_steps if config.step_size is None else 0):
        sampler.step()
    return sampler


# ----------------------------------------------------------------------------- Lucent


@dataclass
class Lucent:
    """Lucent's modules once imported (`render`, `objectives`, `get_model_layers`), or why
    not (`missing`, one phrase for the table); `version` is the installed torch-lucent's."""

    render: ModuleType | None = None
    objectives: ModuleType | None = None
    get_model_layers: Callable[[nn.Module], list[str]] | None = None
    version: str = ""
    missing: str = ""
    where: str = ""


def import_lucent(folder: str | None) -> Lucent:
    """Import Lucent for the benchmark only: from `folder` (appended to `sys.path`, so the
    environment's own packages keep precedence), or from the environment when `folder` is
    None; `folder == "off"` skips it. Never raises: a failure is recorded in `missing`."""
    if folder == "off":
        return Lucent(missing="not run (--lucent off)")
    if folder is not None:
        where = str(Path(folder).expanduser().resolve())
        if not Path(where).is_dir():
            return Lucent(missing=f"not installed: no folder {folder}")
        if where not in sys.path:
            sys.path.append(where)
    else:
        where = "the environment"
    try:
        # render imports lucent.misc.io, which imports IPython.display (for notebooks).
        render = importlib.import_module("lucent.optvis.render")
        objectives = importlib.import_module("lucent.optvis.objectives")
        util = importlib.import_module("lucent.modelzoo.util")
    except ImportError as error:
        return Lucent(missing=f"not installed: {error}", where=where)
    except Exception as error:  # a broken install, e.g. an incompatible kornia
        return Lucent(missing=f"not importable: {type(error).__name__}: {error}", where=where)
    try:
        from importlib.metadata import version

        found = version("torch-lucent")
    except Exception:
        found = "unknown version"
    # Where it really came from: an environment that has Lucent wins over an appended folder.
    where = str(Path(render.__file__).resolve().parents[2])
    return Lucent(render, objectives, util.get_model_layers, found, where=where)


class _ClockedOptimizer:
    """Lucent's default optimizer (Adam, lr 0.05) that notes the time after optimizer step
    `warmup` and after step `warmup + n` (the device drained at both), so `rate` covers exactly
    n of `render_vis`'s loop iterations and none of its start-up."""

    def __init__(self, params: list[Tensor], warmup: int, n: int, device: str) -> None:
        self.inner = torch.optim.Adam(params, lr=LUCENT_LR)
        self.warmup, self.n, self.device = warmup, n, device
        self.calls = 0
        self.start = self.end = math.nan

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Adam's `zero_grad` (render_vis calls it inside its closure)."""
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        """Adam's step on `closure` (Lucent's forward + objective + backward), then the clock."""
        loss = self.inner.step(closure)
        self.calls += 1
        if self.calls in (self.warmup, self.warmup + self.n):
            _sync(self.device)
            now = time.perf_counter()
            if self.calls == self.warmup:
                self.start = now
            else:
                self.end = now
        return loss

    def rate(self) -> float:
        """Steps per second over the timed n steps."""
        return self.n / (self.end - self.start)


@dataclass
class LucentRun:
    """How to run Lucent on one row: its layer name (module names joined with `_`), the unit,
    and the `fixed_image_size` that keeps the image at its own size (None at >= 224)."""

    lucent: Lucent
    model: nn.Module
    layer: str
    unit: int
    shape: tuple[int, int, int, int]
    device: str
    fixed_size: tuple[int, int] | None
    warmup: int = 2
    seed: int = 0
    rounds_run: int = field(default=0)

    def rate(self, n: int) -> float:
        """Steps/s of one `render_vis` call timed over n steps after `warmup` steps."""
        assert self.lucent.render is not None and self.lucent.objectives is not None
        # render_vis hooks every module and never removes the hooks: a fresh copy per call.
        model = copy.deepcopy(self.model)
        gen = torch.Generator().manual_seed(self.seed + self.rounds_run)
        self.rounds_run += 1
        clock: list[_ClockedOptimizer] = []

        def param_f() -> tuple[list[Tensor], Callable[[], Tensor]]:
            # lucent.optvis.param.pixel_image, but on our device (Lucent picks cuda:0 if any).
            image = (torch.randn(self.shape, generator=gen) * LUCENT_INIT_STD).to(self.device)
            image.requires_grad_(True)
            return [image], lambda: image

        def optimizer(params: list[Tensor]) -> _ClockedOptimizer:
            clock.append(_ClockedOptimizer(params, self.warmup, n, self.device))
            return clock[0]

        self.lucent.render.render_vis(
            model,
            self.lucent.objectives.channel(self.layer, self.unit),
            param_f=param_f,
            optimizer=optimizer,
            transforms=[],
            thresholds=(self.warmup + n,),
            preprocess=False,  # no ImageNet normalization: the same input as the other loops
            progress=False,
            show_image=False,
            fixed_image_size=self.fixed_size,
        )
        return clock[0].rate()


def lucent_run(
    lucent: Lucent, model: nn.Module, case: Case, device: str
) -> tuple[LucentRun | None, str]:
    """A `LucentRun` for `case` on the eager `model`, or None and the reason for the table."""
    if lucent.missing:
        return None, lucent.missing
    assert lucent.get_model_layers is not None
    layer, unit = _split_target(case.target)
    name = layer.replace(".", "_")
    if name not in lucent.get_model_layers(model):
        return None, f"n/a: Lucent has no layer {name!r}"
    c, h, w = case.input_shape
    fixed = (h, w) if min(h, w) < LUCENT_NATIVE_SIZE else None
    return LucentRun(lucent, model, name, unit, (case.rows, c, h, w), device, fixed), ""


# ----------------------------------------------------------------------------- one row


@dataclass
class Row:
    """One row's medians (steps/s) and median paired ratios; `lucent_note` says why the Lucent
    figures are missing (then they are NaN)."""

    case: Case
    eager: float
    ldam: float
    lucent: float = math.nan
    ldam_eager: float = math.nan
    lucent_eager: float = math.nan
    ldam_lucent: float = math.nan
    lucent_note: str = ""
    steps: dict[str, int] = field(default_factory=dict)


def run_case(case: Case, device: str, rounds: int, seconds: float, lucent: Lucent) -> Row:
    """Measure one row: warm up and size each loop to about `seconds` per round, then `rounds`
    rounds of eager, ldam, Lucent; medians of the rates and of the per-round ratios."""
    model = case.build().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with tempfile.TemporaryDirectory(prefix="ldam-bench-") as folder:
        path = export_for_ldam(model, case.input_shape, Path(folder) / "model.pt2")
        sampler = ldam_sampler(path, case.target, case.chains, device, case.replicas)
    model = model.to(device)

    # Lucent gets its own pristine copy: the eager loop's hook must not ride along.
    run, note = lucent_run(lucent, copy.deepcopy(model), case, device)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((case.rows, *case.input_shape), generator=gen, device=device)
    eager = eager_step(model, case.target, x)

    def ldam() -> None:
        sampler.step()

    # Warm up (allocator, kernels, first-call costs), then size each loop's round on its own.
    for _ in range(3):
        eager()
        ldam()
    n_eager = _steps_for(_rate(eager, 3, device), seconds)
    n_ldam = _steps_for(_rate(ldam, 3, device), seconds)
    n_lucent = _steps_for(run.rate(3), seconds) if run is not None else 0

    eager_rates: list[float] = []
    ldam_rates: list[float] = []
    lucent_rates: list[float] = []
    for _ in range(rounds):
        eager_rates.append(_rate(eager, n_eager, device))
        ldam_rates.append(_rate(ldam, n_ldam, device))
        if run is not None:
            lucent_rates.append(run.rate(n_lucent))

    def paired(a: list[float], b: list[float]) -> float:
        return statistics.median(p / q for p, q in zip(a, b, strict=True))

    row = Row(
        case,
        statistics.median(eager_rates),
        statistics.median(ldam_rates),
        ldam_eager=paired(ldam_rates, eager_rates),
        lucent_note=note,
        steps={"eager": n_eager, "ldam": n_ldam, "lucent": n_lucent},
    )
    if lucent_rates:
        row.lucent = statistics.median(lucent_rates)
        row.lucent_eager = paired(lucent_rates, eager_rates)
        row.ldam_lucent = paired(ldam_rates, lucent_rates)
    return row


# ----------------------------------------------------------------------------- the table

HEADER = (
    "| case | target | eager steps/s | ldam steps/s | Lucent steps/s "
    "| ldam/eager | Lucent/eager | ldam/Lucent |"
)
RULE = "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def format_row(row: Row) -> str:
    """One markdown table line: rates with one decimal, ratios with two, `-` where missing."""
    lucent = row.lucent_note or f"{row.lucent:,.1f}"
    return (
        f"| {row.case.label} | `{row.case.target}` | {row.eager:,.1f} | {row.ldam:,.1f} "
        f"| {lucent} | {_ratio(row.ldam_eager)} | {_ratio(row.lucent_eager)} "
        f"| {_ratio(row.ldam_lucent)} |"
    )


def main(args: argparse.Namespace) -> int:
    """Run the benchmark and print one markdown table (plus a line saying what ran)."""
    from ldam.sampling.device import pick_device

    chosen = cases(args.cases)  # an unknown name fails before anything slow
    device = str(pick_device(args.device))
    rounds = 3 if args.quick else 7
    seconds = 0.3 if args.quick else 1.5
    folder = args.lucent if args.lucent is not None else os.environ.get(LUCENT_ENV) or None
    lucent = import_lucent(folder)
    if lucent.missing:
        about = f"Lucent {lucent.missing}"
    else:
        about = f"Lucent {lucent.version} from {lucent.where}"
        if lucent.version != LUCENT_VERSION:
            about += f" (written against {LUCENT_VERSION})"
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{rounds} rounds of ~{seconds:g} s per loop, {_load()} at start; {about}"
    )
    print(HEADER)
    print(RULE, flush=True)
    for case in chosen:
        print(format_row(run_case(case, device, rounds, seconds, lucent)), flush=True)
    # Other processes' load is what makes figures on a shared machine swing: say how much.
    print(f"{_load()} at end")
    return 0


def _load() -> str:
    """The 1-minute load average, as a phrase (the machine's, not only this process's)."""
    try:
        return f"load average {os.getloadavg()[0]:.1f}"
    except OSError:  # not available on this platform
        return "load average unknown"
