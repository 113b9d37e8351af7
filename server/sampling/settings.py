"""The sampler's settings: `SamplerConfig`, their validation, and the window's memory budget.

Every check raises `SamplerError` with one sentence and, where one setting is at fault, that
setting's name as `field`. The same checks run when a config is made and when `Sampler.set`
changes it live (`live_replace`), so a live change can never reach a state a new config could
not.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ldam.errors import UserError
from ldam.wire.limits import WINDOW_MEMORY_LIMIT_BYTES

PerChain = float | Sequence[float]

NORMALIZE_MODES = ("none", "regularizers", "all")
# Settings that take one value or one value per chain.
PER_CHAIN_SETTINGS = ("temperature", "step_size", "momentum", "l2_weight", "disc_weight")
# Settings `Sampler.set` may change between steps.
LIVE_SETTINGS = (
    "temperature",
    "step_size",
    "step_decay",
    "momentum",
    "l2_weight",
    "disc_weight",
    "normalize",
    "window",
    "clamp",
)


class SamplerError(UserError):
    """A bad sampler setting or input; the message is one sentence."""


def _number(name: str, value: Any) -> float:
    """`value` as a finite float; a bool or a non-number is refused (field `name`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SamplerError(f"{name} must be a number or a list of numbers, got {value!r}.", name)
    value = float(value)
    if not math.isfinite(value):
        raise SamplerError(f"{name} must be a finite number, got {value}.", name)
    return value


_RULES = {
    "temperature": (">= 0", lambda v: v >= 0),
    "step_size": ("> 0", lambda v: v > 0),
    "momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
    "l2_weight": (">= 0", lambda v: v >= 0),
    "disc_weight": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "burn_in_threshold": ("a finite number", lambda v: True),
}


def _per_chain_setting(name: str, value: Any, chains: int) -> float | list[float]:
    """Validate one value or one per chain; a list of equal values collapses to one float."""
    rule, ok = _RULES[name]
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = [_number(name, v) for v in value]
        if len(values) != chains:
            raise SamplerError(
                f"{name} has {len(values)} values but there are {chains} chains; "
                "give one value or one per chain.",
                name,
            )
    else:
        values = [_number(name, value)]
    for v in values:
        if not ok(v):
            raise SamplerError(f"{name} must be {rule}, got {v}.", name)
    if all(v == values[0] for v in values):
        return values[0]
    return values


def _int(name: str, value: Any, low: int) -> int:
    """`value` as an integer >= `low`; a bool or a float is refused (field `name`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SamplerError(f"{name} must be an integer >= {low}, got {value!r}.", name)
    return value


def check_window_memory(
    window: int, chains: int, input_shape: Sequence[int], bytes_per_value: int = 4
) -> None:
    """Raise `SamplerError` (field ``window``) when `chains` chains of `input_shape` with a
    window of `window` samples would take more than `WINDOW_MEMORY_LIMIT_BYTES`.

    The dashboard passes the chains of all its panels together: one budget for one run.
    """
    need = window * chains * math.prod(input_shape) * bytes_per_value
    if need > WINDOW_MEMORY_LIMIT_BYTES:
        raise SamplerError(
            f"A window of {window} samples for {chains} chains of shape {tuple(input_shape)} "
            f"needs {need / 2**20:.0f} MiB, more than the {WINDOW_MEMORY_LIMIT_BYTES // 2**20} "
            "MiB limit; use a smaller window or fewer chains.",
            "window",
        )


@dataclass
class SamplerConfig:
    """Every setting of a sampler run, in the paper's words.

    Numeric settings marked per-chain take one value or a list with one value per chain, so
    one batch can hold a sweep (rows of the paper's Figure 1).

    Attributes:
        chains: number of chains N.
        temperature: T >= 0 (per-chain); 0 is deterministic gradient ascent.
        step_size: beta > 0 (per-chain), used when `step_decay` is None.
        step_decay: `(a, b, mu)` for `beta_t = a (b + t)^(-mu)`, t = 1, 2, ... the step being
            taken, a > 0, b >= 0, mu in (0.5, 1]; None = constant `step_size`.
        momentum: gamma in [0, 1) (per-chain); 0 = plain Langevin.
        l2_weight: lambda of the L2 term (per-chain).
        disc_weight: w in [0, 1] of the discriminator mix (per-chain).
        normalize: gradient normalization (Algorithm 1 line 6), per term and per chain by the
            gradient's RMS over the chain's pixels: `none` (the only mode that keeps the exact
            stationary distribution), `regularizers` (regularizer terms only) or `all`.
        window: K, the moving window of the last K post-burn-in samples per chain.
        init_std: x0 ~ N(0, init_std^2).
        clamp: `(low, high)` value range x is clamped to after each step, or None.
        burn_in: steps discarded per chain; None = auto (see `burn_in_threshold`).
        burn_in_threshold: auto burn-in needs the activation >= this (per-chain); None = no
            threshold, because activation scales differ between networks.
        burn_in_epsilon: auto burn-in needs the relative change of the activation, between the
            means of the two halves of the last `burn_in_window` steps, below this (or that
            change within 2 standard errors of zero, for activations near zero under noise).
        burn_in_window: the number of recent steps the auto burn-in test looks at (>= 2).
        divergence_limit: a chain with any |pixel| above this (in input units) or a NaN/Inf
            pixel or activation has diverged: it is re-initialized and counted in `resets`.
        seed: seeds the init and noise generators: same seed, same device -> same samples.
        group_seeds: None, or one seed per group of chains: the chains split into
            `len(group_seeds)` equal contiguous groups and each group draws from streams of
            its own, as a sampler of that group's chains with that seed would
            (`ldam.sampling.streams`); `seed` is then unused.
        device: where chains live, e.g. "cpu" or "cuda".
        sync_free: True: a step never waits for the device; diverged chains are reset under a
            device-side mask every step, and the host reads device flags only from copies it
            made some steps before. False: the host reads each step whether any chain
            diverged and skips the reset work when none did, the cheaper choice where reading
            a device value waits for nothing. None (default): True on an accelerator, False on
            the CPU. Both give the same samples.
    """

    chains: int = 16
    temperature: PerChain = 0.01
    step_size: PerChain = 0.05
    step_decay: tuple[float, float, float] | None = None
    momentum: PerChain = 0.0
    l2_weight: PerChain = 0.1
    disc_weight: PerChain = 0.0
    normalize: Literal["none", "regularizers", "all"] = "none"
    window: int = 200
    init_std: float = 1.0
    clamp: tuple[float, float] | None = None
    burn_in: int | None = None
    burn_in_threshold: PerChain | None = None
    burn_in_epsilon: float = 0.02
    burn_in_window: int = 50
    divergence_limit: float = 1e6
    seed: int = 0
    group_seeds: list[int] | None = None
    device: str | torch.device = field(default="cpu")
    sync_free: bool | None = None

    def __post_init__(self) -> None:
        self.chains = _int("chains", self.chains, 1)
        for name in PER_CHAIN_SETTINGS:
            setattr(self, name, _per_chain_setting(name, getattr(self, name), self.chains))
        if self.burn_in_threshold is not None:
            self.burn_in_threshold = _per_chain_setting(
                "burn_in_threshold", self.burn_in_threshold, self.chains
            )
        if self.step_decay is not None:
            if not isinstance(self.step_decay, Sequence) or len(self.step_decay) != 3:
                raise SamplerError(
                    f"step_decay must be (a, b, mu) or None, got {self.step_decay!r}.", "step_decay"
                )
            a, b, mu = (_number("step_decay", v) for v in self.step_decay)
            if a <= 0:
                raise SamplerError(f"step_decay a must be > 0, got {a}.", "step_decay")
            if b < 0:
                raise SamplerError(f"step_decay b must be >= 0, got {b}.", "step_decay")
            if not 0.5 < mu <= 1:
                raise SamplerError(f"step_decay mu must be in (0.5, 1], got {mu}.", "step_decay")
            self.step_decay = (a, b, mu)
        if self.normalize not in NORMALIZE_MODES:
            raise SamplerError(
                f"normalize must be one of none, regularizers, all, got {self.normalize!r}.",
                "normalize",
            )
        self.window = _int("window", self.window, 1)
        if self.group_seeds is not None:
            seeds = list(self.group_seeds)
            if not seeds or self.chains % len(seeds):
                raise SamplerError(
                    f"{self.chains} chains cannot be split into {len(seeds)} equal groups of "
                    "group_seeds.",
                    "group_seeds",
                )
            self.group_seeds = [_int("group_seeds", v, 0) for v in seeds]
        self.divergence_limit = _number("divergence_limit", self.divergence_limit)
        if not self.divergence_limit > 0:
            raise SamplerError(
                f"divergence_limit must be > 0, got {self.divergence_limit}.", "divergence_limit"
            )
        self.init_std = _number("init_std", self.init_std)
        if self.init_std < 0:
            raise SamplerError(f"init_std must be >= 0, got {self.init_std}.", "init_std")
        if self.clamp is not None:
            if not isinstance(self.clamp, Sequence) or len(self.clamp) != 2:
                raise SamplerError(
                    f"clamp must be (low, high) or None, got {self.clamp!r}.", "clamp"
                )
            low, high = (_number("clamp", v) for v in self.clamp)
            if not low < high:
                raise SamplerError(
                    f"clamp must be (low, high) with low < high, got ({low}, {high}).", "clamp"
                )
            self.clamp = (low, high)
        if self.burn_in is not None and (
            isinstance(self.burn_in, bool) or not isinstance(self.burn_in, int) or self.burn_in < 0
        ):
            raise SamplerError(
                f"burn_in must be None (auto) or an integer >= 0, got {self.burn_in!r}.", "burn_in"
            )
        self.burn_in_epsilon = _number("burn_in_epsilon", self.burn_in_epsilon)
        if self.burn_in_epsilon < 0:
            raise SamplerError(
                f"burn_in_epsilon must be >= 0, got {self.burn_in_epsilon}.", "burn_in_epsilon"
            )
        self.burn_in_window = _int("burn_in_window", self.burn_in_window, 2)
        self.seed = _int("seed", self.seed, 0)
        if self.sync_free is not None and not isinstance(self.sync_free, bool):
            raise SamplerError(
                f"sync_free must be True, False or None, got {self.sync_free!r}.", "sync_free"
            )
        try:
            self.device = torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise SamplerError(
                f"device must name a torch device, got {self.device!r}.", "device"
            ) from exc


def live_replace(config: SamplerConfig, params: Mapping[str, Any]) -> SamplerConfig:
    """A copy of `config` with the live settings `params` changed and every setting validated
    again; `config` itself is left as it is.

    Raises `SamplerError` for a name that is not in `LIVE_SETTINGS` (a setting fixed for the
    run, or no setting at all) and for a value `SamplerConfig` refuses.
    """
    for name in params:
        if name not in LIVE_SETTINGS:
            if name in {f.name for f in dataclasses.fields(SamplerConfig)}:
                raise SamplerError(
                    f"Setting {name!r} cannot be changed while sampling; create a new sampler."
                )
            raise SamplerError(
                f"Unknown setting {name!r}; live settings are {', '.join(LIVE_SETTINGS)}."
            )
    return dataclasses.replace(config, **params)
