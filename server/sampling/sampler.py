"""The LDAM sampler: Langevin dynamics with momentum over a batch of chains (paper Algorithm 1).

`langevin_step` is the update, one short function like `torch.optim.sgd`'s; `Sampler` owns the
state: chains `x [N, C, H, W]`, velocities, the RNGs, the step counter, the moving window and
running mean of post-burn-in samples, per-chain burn-in and divergence resets.

Exactness: with `normalize="none"` and no discriminator, chain i samples
`p(x) ∝ exp(E_i(x) / T)` up to the discretization error of the step size (for a linear unit
with L2 the stationary variance is `T / (lambda (1 - beta lambda / 2))` at momentum 0). Gradient
normalization (`regularizers`, `all`) and the discriminator mix rescale gradients per step, so
they no longer sample that distribution exactly: they are display aids, as in the paper.

Conventions:
- Energies are summed over chains, never averaged, so a chain's gradient does not depend on N.
  At T = 0 a chain's trajectory is independent of the batch; at T > 0 the noise of the whole
  batch comes from one generator (one draw per step, fast), so chain i's noise depends on N.
  Re-initializing diverged chains uses a second generator and does not shift anyone's noise.
- Step t (t = 1, 2, ...) evaluates the energy at x_{t-1} (reported as `StepInfo.activation`)
  and moves to x_t. A chain's `burn_in_step` b is the number of steps it discarded: samples
  x_t with t > b enter its window and running mean, and `burn_in_step >= 0` holds exactly
  when the current `x` is such a sample. Fixed `burn_in = N` discards x_1..x_N (b = N); auto
  burn-in waits until the activation is stable over `burn_in_window` steps (`SamplerConfig`).
- Hot path: no Python loop over chains, one host sync per step (the divergence check), noise
  and averaging buffers allocated once.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from ldam.errors import UserError
from ldam.sampling.energy import L2Term, Term, autograd_value_and_grad
from ldam.wire.limits import WINDOW_MEMORY_LIMIT_BYTES

PerChain = float | Sequence[float]
Scalar = float | Tensor  # a float, or a per-chain tensor [N] broadcast over C, H, W

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
# Auto burn-in also accepts a chain whose trend over the burn-in window is within this many
# standard errors of zero (a Geweke-style test): with noise, a relative change below epsilon
# may never happen for an activation that hovers near zero.
BURN_IN_Z = 2.0
# The running mean adds samples into a float32 partial sum that is folded into a float64 total
# this often, so a long run keeps full precision at one add per step.
MEAN_FOLD_STEPS = 1024
# The window's running sum (add new, subtract old) is re-summed exactly from the ring after at
# least this many steps, so rounding never accumulates; amortized well under one pass per step.
WINDOW_RESUM_STEPS = 4096


class SamplerError(UserError):
    """A bad sampler setting or input; the message is one sentence."""


def _bcast(s: Scalar, x: Tensor) -> Scalar:
    """A per-chain `[N]` tensor viewed as `[N, 1, 1, 1]` so it broadcasts over a chain's pixels."""
    if isinstance(s, Tensor):
        return s.view(-1, *([1] * (x.dim() - 1)))
    return float(s)


def _add_scaled(dst: Tensor, src: Tensor, scale: Scalar) -> None:
    """`dst += scale * src` in place, `scale` a float or a broadcastable tensor."""
    if isinstance(scale, Tensor):
        dst.addcmul_(src, scale)
    else:
        dst.add_(src, alpha=scale)


def langevin_step(
    x: Tensor,
    v: Tensor,
    grad: Tensor,
    noise: Tensor | None,
    step_size: Scalar,
    momentum: Scalar,
    temperature: Scalar,
) -> tuple[Tensor, Tensor]:
    """One Langevin step with momentum, noise scaled so the temperature is exact:

        v <- momentum * v + step_size * grad + sqrt(2 (1 - momentum) step_size T) * noise
        x <- x + v

    `x`, `v`, `grad`, `noise` are `[N, C, H, W]`; `x` and `v` are updated in place and returned.
    Every scalar is a float or a per-chain tensor `[N]`. `noise` is standard normal; it may be
    `None` only when `temperature` is the float 0, which is then plain (heavy-ball) gradient
    ascent, bit for bit. With momentum 0 this is the unadjusted Langevin algorithm.
    """
    gamma, beta, temp = _bcast(momentum, x), _bcast(step_size, x), _bcast(temperature, x)
    if isinstance(gamma, float) and gamma == 0.0:
        torch.mul(grad, beta, out=v)  # plain Langevin: the old velocity plays no part
    else:
        v.mul_(gamma)
        _add_scaled(v, grad, beta)
    if isinstance(temp, Tensor) or temp != 0.0:
        if noise is None:
            raise SamplerError("A positive temperature needs a noise tensor.")
        if isinstance(gamma, float) and isinstance(beta, float) and isinstance(temp, float):
            scale: Scalar = math.sqrt(2.0 * (1.0 - gamma) * beta * temp)
        else:
            scale = torch.sqrt(2.0 * (1.0 - gamma) * beta * temp)  # type: ignore[operator]
        _add_scaled(v, noise, scale)
    x.add_(v)
    return x, v


# ------------------------------------------------------------------------------- settings
def _number(name: str, value: Any) -> float:
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
        device: where chains live, e.g. "cpu" or "cuda".
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
    device: str | torch.device = field(default="cpu")

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
                    f"step_decay must be (a, b, mu) or None, got {self.step_decay!r}."
                )
            a, b, mu = (_number("step_decay", v) for v in self.step_decay)
            if a <= 0:
                raise SamplerError(f"step_decay a must be > 0, got {a}.")
            if b < 0:
                raise SamplerError(f"step_decay b must be >= 0, got {b}.")
            if not 0.5 < mu <= 1:
                raise SamplerError(f"step_decay mu must be in (0.5, 1], got {mu}.")
            self.step_decay = (a, b, mu)
        if self.normalize not in NORMALIZE_MODES:
            raise SamplerError(
                f"normalize must be one of none, regularizers, all, got {self.normalize!r}."
            )
        self.window = _int("window", self.window, 1)
        self.divergence_limit = _number("divergence_limit", self.divergence_limit)
        if not self.divergence_limit > 0:
            raise SamplerError(f"divergence_limit must be > 0, got {self.divergence_limit}.")
        self.init_std = _number("init_std", self.init_std)
        if self.init_std < 0:
            raise SamplerError(f"init_std must be >= 0, got {self.init_std}.")
        if self.clamp is not None:
            if not isinstance(self.clamp, Sequence) or len(self.clamp) != 2:
                raise SamplerError(f"clamp must be (low, high) or None, got {self.clamp!r}.")
            low, high = (_number("clamp", v) for v in self.clamp)
            if not low < high:
                raise SamplerError(
                    f"clamp must be (low, high) with low < high, got ({low}, {high})."
                )
            self.clamp = (low, high)
        if self.burn_in is not None and (
            isinstance(self.burn_in, bool) or not isinstance(self.burn_in, int) or self.burn_in < 0
        ):
            raise SamplerError(
                f"burn_in must be None (auto) or an integer >= 0, got {self.burn_in!r}."
            )
        self.burn_in_epsilon = _number("burn_in_epsilon", self.burn_in_epsilon)
        if self.burn_in_epsilon < 0:
            raise SamplerError(f"burn_in_epsilon must be >= 0, got {self.burn_in_epsilon}.")
        self.burn_in_window = _int("burn_in_window", self.burn_in_window, 2)
        self.seed = _int("seed", self.seed, 0)
        try:
            self.device = torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise SamplerError(f"device must name a torch device, got {self.device!r}.") from exc


@dataclass(frozen=True)
class StepInfo:
    """What one `Sampler.step()` reports; every tensor is detached and on the sampler's device.

    Attributes:
        step: steps taken so far, this one included.
        activation: `[N]` the activation (sum of activation terms) at the state the step started
            from, i.e. of the sample before this update.
        terms: per-term energies `[N]` at that state, by term name; a term whose weight is 0 for
            every chain, or that is inactive, is not evaluated and not listed.
        burned_in: `[N]` bool, whether each chain's new sample is a kept, post-burn-in one.
        reset: `[N]` bool, the chains re-initialized this step because they diverged.
        step_size: the step size used (float, or `[N]` when set per chain).
    """

    step: int
    activation: Tensor
    terms: dict[str, Tensor]
    burned_in: Tensor
    reset: Tensor
    step_size: Scalar


def _rms(g: Tensor) -> Tensor:
    """Per-chain RMS over pixels `[N, 1, 1, 1]`, with 0 replaced by 1 so dividing leaves 0 at 0."""
    flat = g.flatten(1)
    rms = torch.linalg.vector_norm(flat, dim=1).div_(math.sqrt(flat.shape[1]))
    return _bcast(torch.where(rms > 0, rms, torch.ones_like(rms)), g)  # type: ignore[return-value]


class Sampler:
    """LDAM chains: owns x `[N, C, H, W]`, velocities, RNGs, averaging and burn-in state.

    Attributes:
        x: `[N, C, H, W]` the current samples (updated in place each step).
        v: `[N, C, H, W]` the velocities.
        t: steps taken.
        age: `[N]` int64, steps since each chain was (re)initialized.
        resets: `[N]` int64, how many times each chain diverged (NaN/Inf) and was re-initialized.
        burn_in_step: `[N]` int64, the steps each chain discarded (the samples of later steps
            are averaged; for a re-initialized chain, counted from the start of the run), -1
            while its current sample is not yet a kept one.
        config: the effective settings (live changes from `set` included once applied).
    """

    def __init__(
        self,
        terms: Term | Sequence[Term],
        input_shape: Sequence[int],
        config: SamplerConfig | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        config = config if config is not None else SamplerConfig()
        if device is not None:
            config = dataclasses.replace(config, device=device)
        self.terms: list[Term] = [terms] if isinstance(terms, Term) else list(terms)
        self._check_terms(config)
        shape = tuple(input_shape)
        if len(shape) != 3 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
        ):
            raise SamplerError(
                f"input_shape must be three positive integers (C, H, W), got {tuple(input_shape)}."
            )
        self.input_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.config = config
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SamplerError(f"Device {str(self.device)!r} is not available on this machine.")
        n = config.chains
        full = (n, *shape)
        dev = self.device

        # Two generators: re-initializing a diverged chain must not shift the others' noise.
        seeder = torch.Generator().manual_seed(config.seed)
        init_seed, noise_seed = torch.randint(0, 2**62, (2,), generator=seeder).tolist()
        self._init_gen = torch.Generator(device=dev).manual_seed(init_seed)
        self._noise_gen = torch.Generator(device=dev).manual_seed(noise_seed)

        self.x = torch.empty(full, device=dev)
        self.v = torch.zeros(full, device=dev)
        self._noise = torch.empty(full, device=dev)
        self.t = 0
        self.age = torch.zeros(n, dtype=torch.long, device=dev)
        self.resets = torch.zeros(n, dtype=torch.long, device=dev)
        self.burn_in_step = torch.full((n,), -1, dtype=torch.long, device=dev)
        self._burned = torch.zeros(n, dtype=torch.bool, device=dev)
        self._all_burned = False
        # Running mean of all post-burn-in samples: float32 partial sum + float64 total.
        self._mean_partial = torch.zeros(full, device=dev)
        self._mean_total = torch.zeros(full, dtype=torch.float64, device=dev)
        self._mean_count = torch.zeros(n, dtype=torch.long, device=dev)
        # Auto burn-in: a ring of the last burn_in_window activations per chain.
        half = config.burn_in_window // 2
        self._hist = torch.zeros(2 * half, n, device=dev)
        ring = torch.arange(2 * half, device=dev)
        newest = (ring[:, None] - torch.arange(half, device=dev)[None, :]) % (2 * half)
        self._hist_new = newest  # [2h, h]: slots of the newest half when slot s was just written
        self._hist_old = (newest - half) % (2 * half)
        self._pending: SamplerConfig | None = None
        self._pending_lock = threading.Lock()  # set() may come from a control thread
        self._apply_config(config)
        self._alloc_window(config.window)
        self._reinit(torch.arange(n, device=dev))

    # ---------------------------------------------------------------------- construction
    def _check_terms(self, config: SamplerConfig) -> None:
        for term in self.terms:
            if not isinstance(term, Term):
                raise SamplerError(f"Energy terms must be Term objects, got {type(term).__name__}.")
        names = [t.name for t in self.terms]
        for term in self.terms:
            if names.count(term.name) > 1:
                raise SamplerError(
                    f"Two energy terms are both named {term.name!r}; give them different names."
                )
            if term.weight_param is not None and term.weight_param not in PER_CHAIN_SETTINGS:
                raise SamplerError(
                    f"Term {term.name!r} is weighted by {term.weight_param!r}, which is not a "
                    f"per-chain sampler setting ({', '.join(PER_CHAIN_SETTINGS)})."
                )
        if sum(t.group == "discriminator" for t in self.terms) > 1:
            raise SamplerError("Only one discriminator term is supported.")

    def _chain_value(self, value: float | list[float]) -> Scalar:
        if isinstance(value, list):
            return torch.tensor(value, dtype=self.x.dtype, device=self.device)
        return value

    def _apply_config(self, config: SamplerConfig) -> None:
        """Turn settings into floats or per-chain device tensors once, not every step."""
        self.config = config
        self._p: dict[str, Scalar] = {
            name: self._chain_value(getattr(config, name)) for name in PER_CHAIN_SETTINGS
        }
        # Host-side: a term whose weight is 0 on every chain is skipped without a device sync.
        self._zero = {
            name: all(v == 0 for v in (value if isinstance(value, list) else [value]))
            for name in PER_CHAIN_SETTINGS
            for value in [getattr(config, name)]
        }
        thr = config.burn_in_threshold
        self._threshold = None if thr is None else self._chain_value(thr)

    def _check_window_memory(self, window: int) -> None:
        check_window_memory(window, self.config.chains, self.input_shape, self.x.element_size())

    def _alloc_window(self, window: int) -> None:
        self._check_window_memory(window)
        n = self.config.chains
        self._window = torch.zeros((window, *self.x.shape), device=self.device)
        self._window_sum = torch.zeros_like(self.x)
        self._window_count = torch.zeros(n, dtype=torch.long, device=self.device)
        self._window_full_steps = 0  # steps every chain has been recorded: counts are K after K
        self._since_resum = 0

    # ------------------------------------------------------------------------ controls
    def set(self, **params: Any) -> None:
        """Change live settings; validated now, applied at the start of the next step.

        Accepts `temperature`, `step_size`, `step_decay`, `momentum`, `l2_weight`,
        `disc_weight`, `normalize`, `window` and `clamp`, each as in `SamplerConfig`.
        Changing `window` re-sizes the window and restarts it for every chain.
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
        with self._pending_lock:
            base = self._pending if self._pending is not None else self.config
            pending = dataclasses.replace(base, **params)
            self._check_window_memory(pending.window)
            self._pending = pending

    def _apply_pending(self) -> None:
        if self._pending is None:
            return
        with self._pending_lock:
            pending, self._pending = self._pending, None
        window_changed = pending.window != self.config.window
        self._apply_config(pending)
        if window_changed:
            self._alloc_window(pending.window)

    def reset(self, chains: Sequence[int] | Tensor | None = None) -> None:
        """Re-initialize all chains (None) or the given chain indices: fresh x0, v = 0, burn-in,
        window and mean restarted. Not counted in `resets` (that counts divergences)."""
        n = self.config.chains
        if chains is None:
            idx = torch.arange(n, device=self.device)
        else:
            idx = torch.as_tensor(chains, dtype=torch.long).reshape(-1)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise SamplerError(f"Chain indices must be in [0, {n - 1}], got {idx.tolist()}.")
            idx = idx.to(self.device)
        self._reinit(idx)

    def _reinit(self, idx: Tensor) -> None:
        if idx.numel() == 0:
            return
        cfg = self.config
        fresh = torch.randn(
            (idx.numel(), *self.input_shape), generator=self._init_gen, device=self.device
        ).mul_(cfg.init_std)
        if cfg.clamp is not None:
            fresh.clamp_(*cfg.clamp)
        self.x[idx] = fresh
        self.v[idx] = 0
        self.age[idx] = 0
        self._window[:, idx] = 0
        self._window_sum[idx] = 0
        self._window_count[idx] = 0
        self._window_full_steps = 0
        self._mean_partial[idx] = 0
        self._mean_total[idx] = 0
        self._mean_count[idx] = 0
        self._hist[:, idx] = 0
        self._burned[idx] = False
        self.burn_in_step[idx] = -1
        self._all_burned = False

    # -------------------------------------------------------------------------- reading
    def window_mean(self) -> Tensor:
        """`[N, C, H, W]` mean of each chain's last `window` post-burn-in samples; a chain with
        none yet shows its current sample."""
        count = _bcast(self._window_count, self.x)
        return torch.where(count > 0, self._window_sum / count.clamp(min=1), self.x)

    def mean(self) -> Tensor:
        """`[N, C, H, W]` mean of all of each chain's post-burn-in samples since its last
        (re)initialization; a chain with none yet shows its current sample."""
        count = _bcast(self._mean_count, self.x)
        total = (self._mean_total + self._mean_partial).div_(count.clamp(min=1)).to(self.x.dtype)
        return torch.where(count > 0, total, self.x)

    def step_size(self) -> Scalar:
        """The step size beta of the next step: constant, or `a (b + t)^(-mu)` with t = 1, 2, ..."""
        if self.config.step_decay is None:
            return self._p["step_size"]
        a, b, mu = self.config.step_decay
        return a * (b + self.t + 1) ** (-mu)

    # ----------------------------------------------------------------------------- step
    def _gradient(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The update direction g `[N, C, H, W]`, the activation `[N]` and per-term values."""
        cfg = self.config
        norm_act = cfg.normalize == "all"
        norm_reg = cfg.normalize in ("regularizers", "all")
        values: dict[str, Tensor] = {}
        g_act: Tensor | None = None
        g_disc: Tensor | None = None
        disc_weight: Scalar = 0.0
        regs: list[tuple[Tensor, Scalar]] = []
        activation: Tensor | None = None
        for term in self.terms:
            wp = term.weight_param
            if (wp is not None and self._zero[wp]) or not term.active():
                continue
            if type(term) is L2Term and wp is not None:
                # Fast path for the common regularizer: one pass for ||x_i||^2 gives the value
                # and the RMS, and -lam x is added straight into g with no -x tensor.
                flat = x.flatten(1)
                norm = torch.linalg.vector_norm(flat, dim=1)  # one reduction kernel
                values[term.name] = norm.square().mul_(-0.5)
                coef = -_bcast(self._p[wp], x)
                if norm_reg:
                    rms = norm.div(math.sqrt(flat.shape[1]))
                    coef = coef / _bcast(torch.where(rms > 0, rms, torch.ones_like(rms)), x)
                regs.append((x, coef))
                continue
            value, g = autograd_value_and_grad(term, x)
            values[term.name] = value
            if term.group == "activation":
                activation = value if activation is None else activation + value
                if norm_act:
                    g = g / _rms(g)
                g_act = g if g_act is None else g_act.add_(g)
            elif term.group == "discriminator":
                g_disc, disc_weight = g, self._p[wp] if wp else 1.0
            else:
                regs.append((g / _rms(g) if norm_reg else g, self._p[wp] if wp else 1.0))

        g_total = g_act if g_act is not None else torch.zeros_like(x)
        if g_disc is not None:
            # The lead's rule: g = (1 - w) g_a + w * rms(g_a) * g_D / rms(g_D), continuous in w;
            # with normalize="all" rms(g_a) = 1 and this is the paper's convex mix.
            w = _bcast(disc_weight, x)
            scale = _rms(g_total) / _rms(g_disc)
            g_total = g_total.mul(1.0 - w) if g_act is not None else g_total
            _add_scaled(g_total, g_disc * scale, w)
        for g, weight in regs:
            _add_scaled(g_total, g, _bcast(weight, x))
        if activation is None:
            activation = torch.zeros(x.shape[0], device=x.device)
        return g_total, activation, values

    def step(self) -> StepInfo:
        """One Langevin step of every chain; returns the activations, term values and burn-in.

        A chain whose activation or new sample is NaN/Inf is re-initialized and counted in
        `resets`; the run continues. The new sample of a burned-in chain enters the window and
        the running mean.
        """
        self._apply_pending()
        cfg = self.config
        x = self.x
        g, activation, values = self._gradient(x)
        temperature = self._p["temperature"]
        noise = None
        if isinstance(temperature, Tensor) or temperature != 0.0:
            noise = torch.randn(x.shape, generator=self._noise_gen, out=self._noise)
        beta = self.step_size()
        with torch.no_grad():
            langevin_step(x, self.v, g, noise, beta, self._p["momentum"], temperature)
            if cfg.clamp is not None:
                x.clamp_(*cfg.clamp)
            self.t += 1
            self.age += 1
            self._update_burn_in(activation)
            self._record(self._burned)
            # A chain diverged when its activation is NaN/Inf or any pixel is NaN/Inf or beyond
            # `divergence_limit`: a step size far too large under gradient normalization drifts
            # to huge but finite values (seen: activations ~1e8) that a finiteness test misses.
            # amax propagates NaN and `not (peak <= limit)` is True for NaN, so one comparison
            # covers all three cases.
            peak = x.flatten(1).abs().amax(1)
            bad = (peak <= cfg.divergence_limit).logical_and_(activation.isfinite()).logical_not_()
            # The one host sync per step: whether any chain diverged (and, until every chain
            # is burned in, whether all are now, so burn-in bookkeeping can stop).
            if self._all_burned:
                any_bad = bool(bad.any())
            else:
                any_bad, self._all_burned = torch.stack((bad.any(), self._burned.all())).tolist()
            if any_bad:
                idx = bad.nonzero().squeeze(1)
                self.resets[idx] += 1
                self._reinit(idx)
        return StepInfo(
            step=self.t,
            activation=activation,
            terms=values,
            burned_in=self._burned.clone(),
            reset=bad,
            step_size=beta,
        )

    def _record(self, recorded: Tensor) -> None:
        """Put the new samples of burned-in chains into the window (a ring + running sum,
        O(1) per step) and the running mean; other chains add zeros."""
        x = self.x
        k = self._window.shape[0]
        slot = (self.t - 1) % k
        old = self._window[slot]
        if self._all_burned:
            new = x
            if self._window_full_steps < k:
                self._window_count.add_(1).clamp_(max=k)
                self._mean_count.add_(1)
                self._window_full_steps += 1
            else:
                self._mean_count.add_(1)
        else:
            new = torch.where(_bcast(recorded, x), x, torch.zeros((), device=x.device))
            self._window_count.add_(recorded).clamp_(max=k)
            self._mean_count.add_(recorded)
            self._window_full_steps = 0
        self._window_sum.sub_(old).add_(new)
        old.copy_(new)
        self._since_resum += 1
        if slot == k - 1 and self._since_resum >= WINDOW_RESUM_STEPS:
            torch.sum(self._window, dim=0, out=self._window_sum)
            self._since_resum = 0
        self._mean_partial.add_(new)
        if self.t % MEAN_FOLD_STEPS == 0:
            self._mean_total.add_(self._mean_partial)
            self._mean_partial.zero_()

    def _update_burn_in(self, activation: Tensor) -> None:
        """Mark chains burned in: fixed, after `burn_in` steps; auto, once the activation is over
        the threshold and stable (paper section 3.2)."""
        if self._all_burned:
            return
        cfg = self.config
        if cfg.burn_in is not None:
            newly = ~self._burned & (self.age > cfg.burn_in)
        else:
            ring = self._hist.shape[0]
            half = ring // 2
            slot = (self.t - 1) % ring
            self._hist[slot] = activation
            new = self._hist.index_select(0, self._hist_new[slot])
            old = self._hist.index_select(0, self._hist_old[slot])
            m_new, m_old = new.mean(0), old.mean(0)
            diff = (m_new - m_old).abs()
            level = torch.maximum(m_new.abs(), m_old.abs())
            noise = ((new.var(0) + old.var(0)) / half).sqrt()
            stable = (diff <= cfg.burn_in_epsilon * level) | (diff <= BURN_IN_Z * noise)
            # age counts updates; the activations of states 0..age-1 are in the ring.
            newly = ~self._burned & stable & (self.age >= ring)
            if self._threshold is not None:
                newly &= activation >= self._threshold
        self._burned |= newly
        # burn_in_step counts the discarded steps: this step's new sample is the first kept.
        self.burn_in_step.masked_fill_(newly, self.t - 1)
