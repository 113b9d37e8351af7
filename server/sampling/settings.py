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

from ldam.wire.limits import WINDOW_MEMORY_LIMIT_BYTES
from ldam.wire.settings import (
    AUTO_WINDOW_STEPS,
    LIVE_SETTINGS,
    MAX_ROWS,
    PER_CHAIN_SETTINGS,
    SETTINGS,
    SettingError,
    check_replica_temperature,
)

# Images each hidden replica keeps beside the window: state, velocity, noise, spare start,
# gradient and the swap's copy (`replica_bytes`).
REPLICA_BUFFERS = 6

# Re-exported: the sampler reads them here, beside `SamplerConfig`.
__all__ = [
    "LIVE_SETTINGS",
    "NORMALIZE_MODES",
    "PER_CHAIN_SETTINGS",
    "PerChain",
    "SamplerConfig",
    "SamplerError",
    "check_window_memory",
    "fitted_window",
    "live_replace",
]

PerChain = float | Sequence[float]

NORMALIZE_MODES = SETTINGS["normalize"].choices


class SamplerError(SettingError):
    """A bad sampler setting or input; the message is one sentence."""


def _int(name: str, value: Any, low: int) -> int:
    """`value` as an integer >= `low`; a bool or a float is refused (field `name`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SamplerError(f"{name} must be an integer >= {low}, got {value!r}.", name)
    return value


def check_rows(chains: int, replicas: int) -> None:
    """Refuse (field ``replicas``) a batch of more than `MAX_ROWS` rows, `chains * (replicas + 1)`."""
    rows = chains * (replicas + 1)
    if rows > MAX_ROWS:
        raise SamplerError(
            f"{chains} chains with {replicas} replicas each make {rows} rows, more than the "
            f"{MAX_ROWS} one batch may hold; use fewer replicas or chains.",
            "replicas",
        )


def replica_bytes(
    chains: int, replicas: int, input_shape: Sequence[int], bytes_per_value: int = 4
) -> int:
    """The memory the hidden replicas of `chains` chains take: `REPLICA_BUFFERS` images per
    replica (state, velocity, noise, spare start, gradient, the swap's copy)."""
    return REPLICA_BUFFERS * chains * replicas * math.prod(input_shape) * bytes_per_value


def check_window_memory(
    window: int,
    chains: int,
    input_shape: Sequence[int],
    bytes_per_value: int = 4,
    replicas: int = 0,
) -> None:
    """Raise `SamplerError` when `chains` chains of `input_shape` with a window of `window`
    samples, and `replicas` hidden replicas each, would take more than
    `WINDOW_MEMORY_LIMIT_BYTES`: field ``replicas`` when the window alone fits, else ``window``.

    The dashboard passes the chains of all its panels together: one budget for one run.
    """
    need = window * chains * math.prod(input_shape) * bytes_per_value
    extra = replica_bytes(chains, replicas, input_shape, bytes_per_value)
    if need <= WINDOW_MEMORY_LIMIT_BYTES < need + extra:
        raise SamplerError(
            f"{replicas} replicas of {chains} chains of shape {tuple(input_shape)} need "
            f"{extra / 2**20:.0f} MiB beside the window's {need / 2**20:.0f} MiB, more than the "
            f"{WINDOW_MEMORY_LIMIT_BYTES // 2**20} MiB limit; use fewer replicas or chains.",
            "replicas",
        )
    if need > WINDOW_MEMORY_LIMIT_BYTES:
        raise SamplerError(
            f"A window of {window} samples for {chains} chains of shape {tuple(input_shape)} "
            f"needs {need / 2**20:.0f} MiB, more than the {WINDOW_MEMORY_LIMIT_BYTES // 2**20} "
            "MiB limit; use a smaller window or fewer chains.",
            "window",
        )


_DEFAULT = {name: s.default_on("config") for name, s in SETTINGS.items()}


@dataclass
class SamplerConfig:
    """Every setting of a sampler run, in the paper's words. Defaults, bounds and the
    sentences that refuse a value come from the one settings model, `ldam.wire.settings`.

    Numeric settings marked per-chain take one value or a list with one value per chain, so
    one batch can hold a sweep (rows of the paper's Figure 1).

    Attributes:
        chains: number of chains N.
        temperature: T >= 0 (per-chain); 0 is deterministic gradient ascent.
        step_size: beta > 0 (per-chain), used when `step_decay` is None; None (auto) =
            adapted per group of chains during the first `adapt_steps` steps by MALA, then
            frozen (`ldam.sampling.scale`); `Sampler.config.step_size` then holds the values.
        step_decay: `(a, b, mu)` for `beta_t = a (b + t)^(-mu)`, t = 1, 2, ... the step being
            taken, a > 0, b >= 0, mu in (0.5, 1]; None = constant `step_size`.
        momentum: gamma in [0, 1) (per-chain); 0 = plain Langevin.
        l2_weight: lambda of the L2 term (per-chain).
        disc_weight: w in [0, 1] of the discriminator mix (per-chain).
        normalize: gradient normalization (Algorithm 1 line 6), per term and per chain by the
            gradient's RMS over the chain's pixels: `none` (the only mode that keeps the exact
            stationary distribution), `regularizers` (regularizer terms only) or `all`.
        window: K, the moving window of the last K post-burn-in samples per chain; None
            (auto) = the longest that fits the memory budget, up to `AUTO_WINDOW_STEPS`
            (`fitted_window`); `Sampler` resolves it when it starts.
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
        energy_scale: "unit": the activation term is divided by the unit's own scale sigma_u,
            measured once at the chains' starts (`ldam.sampling.scale`); "absolute": not.
        adapt_steps: the burn-in steps that adapt an auto step size.
        replicas: K hidden replicas per chain at hotter rungs of the activation, swapped
            with their neighbours every step (`ldam.sampling.tempering`); 0 = off. The batch
            then holds `chains * (K + 1)` rows.
        ladder_end: beta_K in (0, 1], the hottest rung's weight on the activation.
        ladder_steps: with replicas, the burn-in steps (after step adaptation) that adapt the
            ladder; no sample is kept before it is frozen.
        prior: the prior over images (`ldam.sampling.prior`): "white", the paper's L2
            `-lambda/2 ||x||^2`, or "spectral", `-lambda/2 x^T Sigma^-1 x` with the covariance
            of 1/|f|^prior_decay amplitudes over colour-decorrelated channels, sampled with the
            matched preconditioner Sigma.
        prior_decay: alpha in [0, 3] (per-chain) of the spectral prior.
        transforms: "on": each step evaluates the terms at a random small affine transform of
            each chain's image (`ldam.sampling.transforms`), so the chains sample the unit's
            mean over transforms; "off".
        scale: sigma per chain set by hand (one value or one per chain); overrides
            `energy_scale`. A sampler made with the sigma and step another one measured and
            adapted runs its chains bit for bit from the same state.
        dead_scale: None: a unit whose sigma is zero or not finite (a dead unit) is refused
            with a sentence; a number: such a unit gets this sigma and is listed in
            `Sampler.dead_units` (the atlas marks it and goes on).
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
    temperature: PerChain = _DEFAULT["temperature"]
    step_size: PerChain | None = _DEFAULT["step_size"]
    step_decay: tuple[float, float, float] | None = _DEFAULT["step_decay"]
    momentum: PerChain = _DEFAULT["momentum"]
    l2_weight: PerChain = _DEFAULT["l2_weight"]
    disc_weight: PerChain = _DEFAULT["disc_weight"]
    normalize: Literal["none", "regularizers", "all"] = _DEFAULT["normalize"]
    window: int | None = _DEFAULT["window"]
    init_std: float = _DEFAULT["init_std"]
    clamp: tuple[float, float] | None = _DEFAULT["clamp"]
    burn_in: int | None = _DEFAULT["burn_in"]
    burn_in_threshold: PerChain | None = None
    burn_in_epsilon: float = _DEFAULT["burn_in_epsilon"]
    burn_in_window: int = _DEFAULT["burn_in_window"]
    divergence_limit: float = _DEFAULT["divergence_limit"]
    seed: int = _DEFAULT["seed"]
    energy_scale: Literal["unit", "absolute"] = _DEFAULT["energy_scale"]
    adapt_steps: int = _DEFAULT["adapt_steps"]
    replicas: int = _DEFAULT["replicas"]
    ladder_end: float = _DEFAULT["ladder_end"]
    ladder_steps: int = _DEFAULT["ladder_steps"]
    prior: Literal["white", "spectral"] = _DEFAULT["prior"]
    prior_decay: PerChain = _DEFAULT["prior_decay"]
    transforms: Literal["off", "on"] = _DEFAULT["transforms"]
    scale: PerChain | None = None
    dead_scale: float | None = None
    group_seeds: list[int] | None = None
    device: str | torch.device = field(default="cpu")
    sync_free: bool | None = None

    def __post_init__(self) -> None:
        # `chains` is the batch (an atlas batch holds many units' chains), so it is checked
        # here as a count only; the user's `chains` setting is bounded where it is given.
        self.chains = _int("chains", self.chains, 1)
        try:
            for name in _CHECKED:
                value = getattr(self, name)
                setattr(self, name, SETTINGS[name].check(value, self.chains))
        except SettingError as err:
            raise SamplerError(str(err), err.field) from None
        check_rows(self.chains, self.replicas)
        temps = self.temperature if isinstance(self.temperature, list) else [self.temperature]
        try:
            check_replica_temperature(self.replicas, temps)
        except SettingError as err:
            raise SamplerError(str(err), err.field) from None
        if self.prior == "spectral" and self.clamp is not None:
            raise SamplerError(
                "clamp bounds pixels, and prior spectral samples the image's spectrum instead; "
                "use prior white with clamp.",
                "clamp",
            )
        if self.burn_in_threshold is not None:
            self.burn_in_threshold = _threshold(self.burn_in_threshold, self.chains)
        if self.scale is not None:
            self.scale = _positive("scale", self.scale, self.chains)
        if self.dead_scale is not None:
            self.dead_scale = _positive("dead_scale", self.dead_scale, 1)
        if self.group_seeds is not None:
            seeds = list(self.group_seeds)
            if not seeds or self.chains % len(seeds):
                raise SamplerError(
                    f"{self.chains} chains cannot be split into {len(seeds)} equal groups of "
                    "group_seeds.",
                    "group_seeds",
                )
            self.group_seeds = [_int("group_seeds", v, 0) for v in seeds]
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


# The settings of the one model that `SamplerConfig` holds and checks with the model's rules.
_CHECKED = tuple(name for name, s in SETTINGS.items() if "config" in s.surfaces)


def _threshold(value: Any, chains: int) -> float | list[float]:
    """`burn_in_threshold`: one finite number or one per chain (any sign: activation scales
    differ between networks)."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise SamplerError(
                f"burn_in_threshold must be a finite number or one per chain, got {v!r}.",
                "burn_in_threshold",
            )
    if len(values) not in (1, chains):
        raise SamplerError(
            f"burn_in_threshold has {len(values)} values but there are {chains} chains; "
            "give one value or one per chain.",
            "burn_in_threshold",
        )
    values = [float(v) for v in values]
    return values[0] if all(v == values[0] for v in values) else values


def _positive(name: str, value: Any, chains: int) -> float | list[float]:
    """A positive finite number, or one per chain (`scale`: sigma set by hand)."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v < math.inf:
            raise SamplerError(
                f"{name} must be a positive number or one per chain, got {v!r}.", name
            )
    if len(values) not in (1, chains):
        raise SamplerError(
            f"{name} has {len(values)} values but there are {chains} chains; give one value or "
            "one per chain.",
            name,
        )
    values = [float(v) for v in values]
    return values[0] if all(v == values[0] for v in values) else values


def fitted_window(
    chains: int, input_shape: Sequence[int], wanted: int = AUTO_WINDOW_STEPS, replicas: int = 0
) -> tuple[int, str | None]:
    """The longest window, at most `wanted` steps, whose samples of `chains` chains of
    `input_shape` (float32) fit in `WINDOW_MEMORY_LIMIT_BYTES`, and the sentence that says so
    when it is shorter than `wanted` (None otherwise). At least 1: a single sample that does
    not fit is refused by `check_window_memory`. This is what ``window=None`` (auto) means:
    20 chains of a 3x224x224 network fit 89 steps, not 200."""
    per_step = chains * math.prod(input_shape) * 4
    budget = max(0, WINDOW_MEMORY_LIMIT_BYTES - replica_bytes(chains, replicas, input_shape))
    window = max(1, min(wanted, budget // per_step))
    if window >= wanted:
        return wanted, None
    if replicas:
        return window, (
            f"The averaging window is {window} steps instead of {wanted}, the most that fits the "
            f"{WINDOW_MEMORY_LIMIT_BYTES // 2**20} MiB budget for {chains} chains of shape "
            f"{tuple(input_shape)} with {replicas} replicas each; fewer chains or replicas "
            "allow a longer one."
        )
    return window, (
        f"The averaging window is {window} steps instead of {wanted}, the most that fits the "
        f"{WINDOW_MEMORY_LIMIT_BYTES // 2**20} MiB budget for {chains} chains of shape "
        f"{tuple(input_shape)}; fewer chains allow a longer one."
    )


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
