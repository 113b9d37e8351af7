"""The LDAM sampler: Langevin dynamics with momentum over a batch of chains (paper Algorithm 1).

`langevin_step` is the update, one short function like `torch.optim.sgd`'s, and
`update_direction` the gradient it follows; `Sampler` owns the state, chains `x [N, C, H, W]`,
velocities, the RNGs and the step counter, and calls the pieces: the averages of kept samples
(`ldam.sampling.averaging`), per-chain burn-in (`ldam.sampling.burn_in`) and the settings
(`ldam.sampling.settings`, whose names are importable from here too).

Exactness: with `normalize="none"` and no discriminator, chain i samples
`p(x) ∝ exp(E_i(x) / T)` up to the discretization error of the step size (for a linear unit
with L2 the stationary variance is `T / (lambda (1 - beta lambda / 2))` at momentum 0). Gradient
normalization (`regularizers`, `all`) and the discriminator mix rescale gradients per step, so
they no longer sample that distribution exactly: they are display aids, as in the paper.

Priors (`ldam.sampling.prior`): with ``prior="spectral"`` the chains' states are the
coordinates `z = L^{-1} x` of the spectral prior and every term but L2 sees the image `L z`
(`energy.ImageTerm`), so the step below, unchanged, is the Langevin step preconditioned by the
prior's covariance `Sigma = L L^T` (exact: a constant preconditioner); `Sampler.x`, the
window and the means are images. With ``transforms="on"`` the image each term sees is
`tau(L z)`, one random tau per row and step (`ldam.sampling.transforms`).

Conventions:
- Energies are summed over chains, never averaged, so a chain's gradient does not depend on N.
  At T = 0 a chain's trajectory is independent of the batch; at T > 0 the noise of the whole
  batch comes from one generator (one draw per step, fast), so chain i's noise depends on N.
  Initial states and `reset()` draw from a second generator; a chain that diverges takes the
  fresh start waiting for it in a spare batch drawn ahead from a third one (see "Host syncs"),
  so neither shifts anyone's noise.
- Step t (t = 1, 2, ...) evaluates the energy at x_{t-1} (reported as `StepInfo.activation`)
  and moves to x_t. A chain's `burn_in_step` b is the number of steps it discarded: samples
  x_t with t > b enter its window and running mean, and `burn_in_step >= 0` holds exactly
  when the current `x` is such a sample. Fixed `burn_in = N` discards x_1..x_N (b = N); auto
  burn-in waits until the activation is stable over `burn_in_window` steps (`SamplerConfig`).
- Hot path: no Python loop over chains, noise and averaging buffers allocated once.

Host syncs: a step only enqueues device work (`SamplerConfig.sync_free`, on by default off the
CPU). Every step decides on the device which chains diverged and resets them under that mask:
a diverged chain takes its row of a spare batch of fresh starts, drawn ahead. Every
`CHECK_STEPS` steps the sampler copies the burn-in flags and reset counts to the host, and
reads the copy made the period before (`ldam.sampling.transfer.HostCopy`), which the device
has long finished: from it the host redraws the spare rows that were used and learns when
every chain is burned in, so burn-in bookkeeping can stop. A chain that diverges twice within
about two periods starts from the same spare row both times. On the CPU, where reading a value
waits for nothing, the sampler instead reads each step whether any chain diverged and skips the
masked reset when none did; the samples are the same either way.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ldam.sampling.averaging import MovingWindow, RunningMean
from ldam.sampling.burn_in import BurnIn
from ldam.sampling.energy import ImageTerm, L2Term, Term, autograd_value_and_grad
from ldam.sampling.prior import SpectralBasis, check_prior
from ldam.sampling.scale import (
    START_STEP,
    StepAdapter,
    chain_groups,
    energy_of,
    mala_log_accept,
    measure_scale,
    start_step,
)
from ldam.sampling.settings import (
    LIVE_SETTINGS,
    NORMALIZE_MODES,
    PER_CHAIN_SETTINGS,
    PerChain,
    SamplerConfig,
    SamplerError,
    check_window_memory,
    fitted_window,
    live_replace,
)
from ldam.sampling.streams import ChainStreams, derived_seeds
from ldam.sampling.tempering import ReplicaExchange
from ldam.sampling.transfer import HostCopy, to_device
from ldam.sampling.transforms import RandomTransforms

__all__ = [
    "CHECK_STEPS",
    "LIVE_SETTINGS",
    "NORMALIZE_MODES",
    "PER_CHAIN_SETTINGS",
    "PerChain",
    "Sampler",
    "SamplerConfig",
    "SamplerError",
    "Scalar",
    "StepInfo",
    "check_window_memory",
    "fitted_window",
    "langevin_step",
    "live_replace",
    "update_direction",
]

Scalar = float | Tensor  # a float, or a per-chain tensor [N] broadcast over C, H, W

# How often (in steps) the host reads the device's burn-in flags and reset counts, from the copy
# it made one period before; with auto burn-in at most half the burn-in window (see `_check`).
CHECK_STEPS = 32


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


@dataclass(frozen=True)
class StepInfo:
    """What one `Sampler.step()` reports; every tensor is detached and on the sampler's device,
    and read-only: consecutive steps may share one (`burned_in`, while no chain changes).

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


@dataclass
class Direction:
    """The pieces of the update direction at chains `x`, before they are summed (see
    `update_direction`): kept apart so that replica exchange can move states between rows and
    re-temper their activation gradient without another forward and backward.

    Attributes:
        g_act: the activation terms' summed gradient `[N, C, H, W]` (None: none evaluated).
        g_disc: the discriminator's gradient, mixed by `disc_weight` (None: not evaluated).
        regs: each regularizer's gradient (L2's is `x` itself) and its per-chain weight.
        activation: `[N]` the sum of the activation terms.
        values: each evaluated term's value `[N]` by name.
    """

    g_act: Tensor | None
    g_disc: Tensor | None
    disc_weight: Scalar
    regs: list[tuple[Tensor, Scalar]]
    activation: Tensor
    values: dict[str, Tensor]

    def permute(self, perm: Tensor, x: Tensor) -> None:
        """Follow a permutation `perm [N]` of the rows of `x` (applied to `x` in place by the
        caller: row r now holds what row perm[r] held): every per-row piece moves along."""

        def move(t: Scalar | None) -> Scalar | None:
            return (
                t.index_select(0, perm)
                if isinstance(t, Tensor) and t.dim() and t.shape[0] > 1
                else t
            )

        self.g_act = move(self.g_act)  # type: ignore[arg-type,assignment]
        self.g_disc = move(self.g_disc)  # type: ignore[arg-type,assignment]
        self.disc_weight = move(self.disc_weight)
        self.regs = [(g if g is x else move(g), move(w)) for g, w in self.regs]  # type: ignore[misc]
        self.activation = move(self.activation)  # type: ignore[assignment]
        self.values = {k: move(v) for k, v in self.values.items()}  # type: ignore[misc]

    def total(self, x: Tensor, activation_scale: Scalar = 1.0) -> Tensor:
        """The direction `[N, C, H, W]`: the activation gradient over `activation_scale` (a
        float or `[N]`), mixed with the discriminator's, plus the weighted regularizers.
        Consumes the pieces (the activation gradient is divided in place)."""
        g_act, g_disc = self.g_act, self.g_disc
        if g_act is not None and not (
            isinstance(activation_scale, float) and activation_scale == 1.0
        ):
            g_act = g_act.div_(_bcast(activation_scale, x))
        g_total = g_act if g_act is not None else torch.zeros_like(x)
        if g_disc is not None:
            # The lead's rule: g = (1 - w) g_a + w * rms(g_a) * g_D / rms(g_D), continuous in w;
            # with normalize="all" rms(g_a) = 1 and this is the paper's convex mix.
            w = _bcast(self.disc_weight, x)
            scale = _rms(g_total) / _rms(g_disc)
            g_total = g_total.mul(1.0 - w) if g_act is not None else g_total
            _add_scaled(g_total, g_disc * scale, w)
        for g, weight in self.regs:
            _add_scaled(g_total, g, _bcast(weight, x))
        return g_total


def direction_parts(
    terms: Sequence[Term],
    x: Tensor,
    weights: Mapping[str, Scalar],
    skip: Mapping[str, bool],
    normalize: str,
) -> Direction:
    """Evaluate the terms at `x [N, C, H, W]` (arguments as in `update_direction`) and return
    the direction's pieces, not yet summed."""
    norm_act = normalize == "all"
    norm_reg = normalize in ("regularizers", "all")
    values: dict[str, Tensor] = {}
    g_act: Tensor | None = None
    g_disc: Tensor | None = None
    disc_weight: Scalar = 0.0
    regs: list[tuple[Tensor, Scalar]] = []
    activation: Tensor | None = None
    for term in terms:
        wp = term.weight_param
        if (wp is not None and skip[wp]) or not term.active():
            continue
        if type(term) is L2Term and wp is not None:
            # Fast path for the common regularizer: one pass for ||x_i||^2 gives the value
            # and the RMS, and -lam x is added straight into g with no -x tensor.
            # One reduction kernel over a chain's pixels (no flatten view: the same sums).
            norm = torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())))
            values[term.name] = norm.square().mul_(-0.5)
            coef = -_bcast(weights[wp], x)
            if norm_reg:
                rms = norm.div(math.sqrt(math.prod(x.shape[1:])))
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
            g_disc, disc_weight = g, weights[wp] if wp else 1.0
        else:
            regs.append((g / _rms(g) if norm_reg else g, weights[wp] if wp else 1.0))
    if activation is None:
        activation = torch.zeros(x.shape[0], device=x.device)
    return Direction(g_act, g_disc, disc_weight, regs, activation, values)


def update_direction(
    terms: Sequence[Term],
    x: Tensor,
    weights: Mapping[str, Scalar],
    skip: Mapping[str, bool],
    normalize: str,
    activation_scale: Scalar = 1.0,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The direction g `[N, C, H, W]` the chains at `x [N, C, H, W]` move along, the activation
    `[N]` (sum of the activation terms) and each evaluated term's value `[N]` by name.

    `weights` maps each per-chain setting a term may be weighted by to a float or `[N]` tensor;
    a term whose weight setting is True in `skip` (0 on every chain), or that is inactive, is
    not evaluated. `normalize` (one of `NORMALIZE_MODES`) divides the gradients of the
    regularizers, or of every term, by their per-chain RMS over pixels (Algorithm 1 line 6).
    `activation_scale` (a float or `[N]`) divides the activation terms' gradient: the energy
    is `f / sigma` (`ldam.sampling.scale`); the activation reported stays `f`.
    A discriminator term's gradient is mixed with the activation's by its weight w:
    `g = (1 - w) g_a + w rms(g_a) g_D / rms(g_D)`.
    """
    parts = direction_parts(terms, x, weights, skip, normalize)
    return parts.total(x, activation_scale), parts.activation, parts.values


def _chain_value(value: float | list[float], like: Tensor) -> Scalar:
    """A per-chain list as an `[N]` tensor with `like`'s dtype and device; a float as it is."""
    if isinstance(value, list):
        # Made on the host and sent without waiting: a blocking host-to-device copy (what
        # torch.tensor(..., device=) does) would wait for the device's queue on every `set`.
        return to_device(torch.tensor(value, dtype=like.dtype), like.device)
    return value


def _per_chain_list(value: float | list[float], chains: int) -> list[float]:
    """A per-chain setting as one float per chain."""
    return list(value) if isinstance(value, list) else [value] * chains


def _diverged(x: Tensor, activation: Tensor, limit: float, zero: Tensor) -> Tensor:
    """`[N]` bool: the chains whose activation `[N]` is NaN/Inf or whose sample in `x` has a
    pixel that is NaN/Inf or beyond `limit` in absolute value; `zero` is a 0-dim 0 on x's
    device."""
    # The limit matters: a step size far too large under gradient normalization drifts to huge
    # but finite values (seen: activations ~1e8) that a finiteness test misses. amax propagates
    # NaN; adding `activation * 0` adds 0 to a finite activation's chain and NaN to a NaN/Inf
    # one (Inf * 0 is NaN), and `not (score <= limit)` is True for NaN, so one comparison
    # covers every case: 5 small kernels, where a separate finiteness test took 9.
    score = x.abs().amax(tuple(range(1, x.dim()))).addcmul_(activation, zero)
    return score.le(limit).logical_not_()


def _check_terms(terms: Term | Sequence[Term]) -> list[Term]:
    """The terms as a list, refused when one is not a `Term`, names clash, a weight setting is
    not per-chain, or there is more than one discriminator."""
    terms = [terms] if isinstance(terms, Term) else list(terms)
    for term in terms:
        if not isinstance(term, Term):
            raise SamplerError(f"Energy terms must be Term objects, got {type(term).__name__}.")
    names = [t.name for t in terms]
    for term in terms:
        if names.count(term.name) > 1:
            raise SamplerError(
                f"Two energy terms are both named {term.name!r}; give them different names."
            )
        if term.weight_param is not None and term.weight_param not in PER_CHAIN_SETTINGS:
            raise SamplerError(
                f"Term {term.name!r} is weighted by {term.weight_param!r}, which is not a "
                f"per-chain sampler setting ({', '.join(PER_CHAIN_SETTINGS)})."
            )
    if sum(t.group == "discriminator" for t in terms) > 1:
        raise SamplerError("Only one discriminator term is supported.")
    return terms


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """`input_shape` as a `(C, H, W)` tuple of positive integers, else `SamplerError`."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise SamplerError(
            f"input_shape must be three positive integers (C, H, W), got {tuple(input_shape)}."
        )
    return shape  # type: ignore[return-value]


class SpareStarts:
    """Each chain's next start should it diverge, drawn ahead of need, so that a reset under a
    mask reads nothing on the host.

    `starts` `[N, C, H, W]` is `init_std` times a standard normal from the spare streams of
    `streams`, clamped by the current `clamp`; `refill` redraws the rows that were used.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        init_std: float,
        clamp: tuple[float, float] | None,
        streams: ChainStreams,
        device: torch.device,
    ) -> None:
        self.init_std = init_std
        self._streams = streams
        self._device = device
        everyone = torch.arange(shape[0], device=device)
        self._raw = streams.draw("spare", everyone, tuple(shape[1:]), device).mul_(init_std)
        self._clamp: tuple[float, float] | None = None
        self.starts = self._raw
        self.set_clamp(clamp)

    def set_clamp(self, clamp: tuple[float, float] | None) -> None:
        """Clamp the starts to `clamp` (they are drawn before the clamp that applies when they
        are used is known), or leave them raw (None)."""
        self._clamp = clamp
        self.starts = self._raw if clamp is None else self._raw.clamp(*clamp)

    def refill(self, idx: Tensor) -> None:
        """Draw new starts for the chains with indices `idx [M]` (their rows were used)."""
        fresh = self._streams.draw("spare", idx, tuple(self._raw.shape[1:]), self._device).mul_(
            self.init_std
        )
        self._raw[idx] = fresh
        if self._clamp is not None:
            self.starts[idx] = fresh.clamp(*self._clamp)


class Sampler:
    """LDAM chains: owns x `[N, C, H, W]`, velocities, the RNGs and the step counter, and steps
    them with `langevin_step` along `update_direction`, feeding burn-in and the averages.

    Attributes:
        x: `[N, C, H, W]` the current samples, as images (under the white prior the states
            themselves, updated in place each step; under the spectral prior `L z`).
        basis: the spectral prior's `SpectralBasis`, None under the white prior.
        transforms: the `RandomTransforms` of ``transforms="on"``, else None.
        v: `[N, C, H, W]` the velocities.
        t: steps taken.
        age: `[N]` int64, steps since each chain was (re)initialized.
        resets: `[N]` int64, how many times each chain diverged (NaN/Inf) and was re-initialized.
        config: the effective settings (live changes from `set` included once applied).
        terms: the energy terms, in the order given.
        input_shape: `(C, H, W)` of one chain.
        device: where the chains live.
        sync_free: whether a step never reads the device on the host (`SamplerConfig.sync_free`
            resolved for this device).
        spare: `SpareStarts`, each chain's next start should it diverge.
    """

    def __init__(
        self,
        terms: Term | Sequence[Term],
        input_shape: Sequence[int],
        config: SamplerConfig | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        """Chains for `terms` (one or a list) over samples of `input_shape` `(C, H, W)`, set by
        `config` (default `SamplerConfig()`), on `device` if given (else `config.device`); raises
        `SamplerError` for bad terms or shape, a missing device or a window over the budget."""
        config = config if config is not None else SamplerConfig()
        if device is not None:
            config = dataclasses.replace(config, device=device)
        self.terms: list[Term] = _check_terms(terms)
        self.input_shape = _check_input_shape(input_shape)
        check_prior(config.prior, input_shape)
        # window=None (auto) becomes the longest window that fits the memory budget, once;
        # `window_note` says so when that is shorter than the auto window.
        config, self.window_note = _resolve_window(config, self.input_shape)
        self.device = dev = torch.device(config.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SamplerError(f"Device {str(dev)!r} is not available on this machine.")
        self.sync_free = config.sync_free if config.sync_free is not None else dev.type != "cpu"
        n = config.chains
        full = (n, *self.input_shape)
        # Replica exchange (`ldam.sampling.tempering`): every chain has K hidden replicas, and
        # the batch holds rows = N (K + 1) states, chain-major (row i (K + 1) + k is rung k of
        # chain i); the chains shown are the cold rung, `rows[:: K + 1]`. Without replicas rows
        # and chains are the same and every view below is the tensor itself.
        self.replicas = k = config.replicas
        self.rows = rows = n * (k + 1)
        full_rows = (rows, *self.input_shape)
        # Three streams: initial states and resets, the noise, and the spare starts of
        # diverged chains, so re-initializing one chain never shifts another's noise; one set
        # per group of chains when `group_seeds` splits them (`ldam.sampling.streams`).
        seeds = config.group_seeds if config.group_seeds is not None else [config.seed]
        self.streams = ChainStreams(list(seeds), rows, dev)
        self._x = torch.empty(full_rows, device=dev)
        self.v = torch.zeros(full_rows, device=dev)
        self._noise = torch.empty(full_rows, device=dev)
        self._zero0 = torch.zeros((), device=dev)
        self.t = 0
        self._age = torch.zeros(rows, dtype=torch.long, device=dev)
        self._resets = torch.zeros(rows, dtype=torch.long, device=dev)
        # The shown chains' views: their states [N, C, H, W], age and resets [N].
        self._x_shown = self._shown(self._x)
        # The prior's coordinates (`ldam.sampling.prior`): with the spectral prior the state
        # is z = L^{-1} x and the terms but the prior see the image L z (and, with transforms,
        # tau(L z)); `x` is then the shown chains' images, made when read (`_version` counts
        # the changes of the state).
        self.basis: SpectralBasis | None = None
        if config.prior == "spectral":
            self.basis = SpectralBasis(self.input_shape, self._row_list(config.prior_decay), dev)
        self.transforms: RandomTransforms | None = None
        if config.transforms == "on":
            gen = torch.Generator(device=dev).manual_seed(derived_seeds(config.seed)[3] ^ 0x7A0)
            self.transforms = RandomTransforms(rows, self.input_shape, gen, dev)
        self._terms: list[Term] = self.terms
        if self.basis is not None or self.transforms is not None:
            self._terms = [
                t if type(t) is L2Term else ImageTerm(t, self._to_image) for t in self.terms
            ]
        self._image = torch.empty(full, device=dev) if self.basis is not None else self._x_shown
        self._version, self._image_at = 0, -1
        self.age = self._shown(self._age)
        self.resets = self._shown(self._resets)
        self._row_step: Tensor | None = None  # adapted steps per row, rungs apart
        self._pending: SamplerConfig | None = None
        self._pending_lock = threading.Lock()  # set() may come from a control thread
        self._step_auto = False  # whether the step came from adaptation (`step_size` auto)
        self._apply_config(config)
        thr = config.burn_in_threshold
        self._burn_in = BurnIn(
            n,
            dev,
            config.burn_in,
            config.burn_in_window,
            config.burn_in_epsilon,
            None if thr is None else _chain_value(thr, self._x),
        )
        self._check_window_memory(config.window)
        self._window = MovingWindow(config.window, full, dev)
        self._mean = RunningMean(full, dev)
        self.spare = SpareStarts(full_rows, config.init_std, config.clamp, self.streams, dev)
        # Host checks: every `_period` steps post a copy of (burned, resets) and read the one
        # posted the period before. With auto burn-in the period is at most half the burn-in
        # window: a chain reset under a mask while the host believes every chain burned in is
        # then known within 2 periods, before its age reaches the window (`BurnIn.record`).
        self._period = CHECK_STEPS
        if config.burn_in is None:
            self._period = max(1, min(CHECK_STEPS, config.burn_in_window // 2))
        self._copy = HostCopy(dev)
        self._resets_seen = torch.zeros(rows, dtype=torch.long)  # host: resets as of the last read
        # Host: resets the host itself made (`reset()`, and divergences when not sync-free), in
        # all and as of the posted copy; a copy older than one of them no longer shows burn-in.
        self._host_resets = 0
        self._copy_host_resets = 0
        self._burned_in: Tensor | None = None  # the clone of `burned` reported while unchanged
        self._reinit(torch.arange(rows, device=dev))
        # Settings that mean the same on every unit (`ldam.sampling.scale`): sigma per chain,
        # measured once at the starts and frozen; an auto step adapted in the first steps.
        self.dead_units: list[int] = []
        self.unit_scale: dict[int, float] = {}  # unit -> sigma_u, in the unit scale
        self._sigma: Scalar = self._measure_scale(config)  # per row, untempered
        self.exchange: ReplicaExchange | None = None
        if k:
            keys = self._chain_keys()
            groups, count = chain_groups(keys)
            self._exchange_units = [key[0] for key in dict.fromkeys(keys)]
            gen = torch.Generator(device=dev).manual_seed(derived_seeds(config.seed)[3] ^ 0x5EED)
            self.exchange = ReplicaExchange(
                n, k, config.ladder_end, config.ladder_steps, groups, count, gen, dev
            )
        # The energy each row samples: its activation over sigma times its rung's beta.
        self.scale: Scalar = self._tempered_scale()
        self._adapter: StepAdapter | None = None
        self._uniform = torch.empty(rows, device=dev)
        self.adaptation: dict[str, Any] | None = None
        if config.step_size is None:
            self._start_adaptation()

    @property
    def x(self) -> Tensor:
        """`[N, C, H, W]` the shown chains' current images: the states themselves under the white
        prior (a view, updated in place each step), `L z` under the spectral one (made when
        read, into one buffer that later reads overwrite)."""
        basis = self.basis
        if basis is None:
            return self._x_shown
        if self._image_at != self._version:
            rows = slice(None, None, self.replicas + 1) if self.replicas else None
            with torch.no_grad():
                self._image.copy_(basis.synthesize(self._x_shown, rows))
            self._image_at = self._version
        return self._image

    def _to_image(self, z: Tensor) -> Tensor:
        """The image every term but the prior sees at the states `z [rows, C, H, W]`:
        `tau(L z)` (L under the spectral prior, tau with transforms), differentiable."""
        x = self.basis(z) if self.basis is not None else z
        return self.transforms(x) if self.transforms is not None else x

    def _row_list(self, value: float | list[float]) -> list[float]:
        """A per-chain setting as one float per row (a chain's value on every rung)."""
        k1 = self.replicas + 1
        return [v for v in _per_chain_list(value, self.rows // k1) for _ in range(k1)]

    @property
    def burn_in_step(self) -> Tensor:
        """`[N]` int64, the steps each chain discarded (the samples of later steps are averaged;
        for a re-initialized chain, counted from the start of the run), -1 while its current
        sample is not yet a kept one."""
        return self._burn_in.steps

    def _shown(self, rows: Tensor) -> Tensor:
        """The shown chains' view of a per-row tensor (the tensor itself without replicas)."""
        return rows if not self.replicas else rows[:: self.replicas + 1]

    def _row_value(self, value: float | list[float]) -> Scalar:
        """A per-chain setting per row: a chain's value on every rung of the chain."""
        if isinstance(value, list) and self.replicas:
            value = self._row_list(value)
        return _chain_value(value, self._x)

    def _chain_rows(self, chains: Tensor) -> Tensor:
        """The rows `[M (K + 1)]` of the chains with indices `chains [M]`."""
        if not self.replicas:
            return chains
        k1 = self.replicas + 1
        return (chains.view(-1, 1) * k1 + torch.arange(k1, device=chains.device)).reshape(-1)

    def _tempered_scale(self) -> Scalar:
        """Each row's activation scale: sigma over its rung's beta (sigma without replicas)."""
        if self.exchange is None:
            return self._sigma
        return self._sigma / self.exchange.row_betas().to(self._x.dtype)

    def _apply_config(self, config: SamplerConfig) -> None:
        """Turn settings into floats or per-row device tensors once, not every step."""
        self.config = config
        # An auto step size (None) is adapted before any Langevin step uses it; until then
        # the placeholder is where adaptation starts without L2.
        self._p: dict[str, Scalar] = {
            name: self._row_value(
                START_STEP
                if name == "step_size" and config.step_size is None
                else getattr(config, name)
            )
            for name in PER_CHAIN_SETTINGS
        }
        if self.replicas:  # the swaps' T per chain, made once here rather than every step
            self._chain_temperature = torch.as_tensor(
                _per_chain_list(config.temperature, config.chains), device=self._x.device
            )
        if self._row_step is not None:  # adapted per rung: the config holds the cold rung's
            self._p["step_size"] = self._row_step
        if self._step_auto and not isinstance(self._p["step_size"], Tensor):
            # An adapted step is applied per chain whatever its values, so a unit's chains do
            # not depend on whether the other units of its batch froze at the same step (the
            # float and the per-chain paths of `langevin_step` round differently).
            self._p["step_size"] = torch.full(
                (self.rows,),
                float(self._p["step_size"]),
                dtype=self._x.dtype,
                device=self._x.device,
            )
        # Host-side: a term whose weight is 0 on every chain is skipped without a device sync.
        self._zero = {
            name: value is not None
            and all(v == 0 for v in (value if isinstance(value, list) else [value]))
            for name in PER_CHAIN_SETTINGS
            for value in [getattr(config, name)]
        }

    def _check_window_memory(self, window: int | None) -> None:
        assert window is not None  # resolved by `_resolve_window`
        check_window_memory(
            window,
            self.config.chains,
            self.input_shape,
            self._x.element_size(),
            self.config.replicas,
        )

    # ------------------------------------------------------------------------ controls
    def set(self, **params: Any) -> None:
        """Change live settings; validated now, applied at the start of the next step.

        Accepts `temperature`, `step_size`, `step_decay`, `momentum`, `l2_weight`,
        `disc_weight`, `normalize`, `window` and `clamp`, each as in `SamplerConfig`.
        Changing `window` re-sizes the window and restarts it for every chain.
        """
        with self._pending_lock:
            base = self._pending if self._pending is not None else self.config
            pending = live_replace(base, params)
            pending, _ = _resolve_window(pending, self.input_shape)
            self._check_window_memory(pending.window)
            self._pending = pending

    def _apply_pending(self) -> None:
        if self._pending is None:
            return
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if self.basis is not None and pending.prior_decay != self.config.prior_decay:
            self._change_decay(pending.prior_decay)
        window_changed = pending.window != self.config.window
        clamp_changed = pending.clamp != self.config.clamp
        readapt = False
        if pending.step_size is None:
            if self._step_auto:  # still auto: the adapted (or adapting) step stays
                pending = dataclasses.replace(pending, step_size=self.config.step_size)
            else:  # auto asked for again: adapt from the current chains
                readapt = True
        else:
            self._adapter = None  # a step the user sets is kept: adaptation stops
            self._step_auto = False
            self._row_step = None
        self._apply_config(pending)
        if readapt:
            self._start_adaptation()
        else:
            self._refresh_adapter()  # lambda or T may have changed the energy it compares
        if window_changed:  # its memory was checked by `set`
            self._window.resize(pending.window)
        if clamp_changed:
            self.spare.set_clamp(pending.clamp)

    def _change_decay(self, decay: float | list[float]) -> None:
        """A live change of the spectral prior's decay: the images and velocities stay as they
        are, their coordinates z = L^{-1} x and v_z = L^{-1} v_x follow the new L."""
        basis = self.basis
        assert basis is not None
        with torch.no_grad():
            images, velocities = basis.synthesize(self._x), basis.synthesize(self.v)
            basis.set_decay(self._row_list(decay))
            self._x.copy_(basis.analyze(images))
            self.v.copy_(basis.analyze(velocities))
        self._version += 1

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
        self._reinit(self._chain_rows(idx))
        self._refresh_adapter()  # an adaptation in progress goes on from the fresh starts

    def start_from(self, x0: Tensor) -> None:
        """Restart every chain from the images `x0 [N, C, H, W]` (all rungs of a chain from
        its image; velocities 0, burn-in, window and mean restarted); an adaptation in
        progress goes on from there. Refused when the shape is not the chains'."""
        if tuple(x0.shape) != tuple(self.x.shape):
            raise SamplerError(
                f"Start images must have the chains' shape {list(self.x.shape)}, got "
                f"{list(x0.shape)}."
            )
        self._reinit(torch.arange(self.rows, device=self.device))
        z0 = x0.to(self._x)
        if self.basis is not None:  # the states are the prior's coordinates z = L^{-1} x
            z0 = self.basis.analyze(
                z0, slice(None, None, self.replicas + 1) if self.replicas else None
            )
        with torch.no_grad():
            self._x.view(self.config.chains, self.replicas + 1, *self.input_shape).copy_(
                z0.unsqueeze(1)
            )
        self._version += 1
        self._refresh_adapter()

    def _reinit(self, idx: Tensor) -> None:
        """Fresh starts for the rows with indices `idx [M]` (every rung of the chains reset),
        drawn from the init generator (the host knows M: this is `reset()` and the first
        start, never a divergence)."""
        if idx.numel() == 0:
            return
        cfg = self.config
        fresh = self.streams.draw("init", idx, self.input_shape, self.device).mul_(cfg.init_std)
        if cfg.clamp is not None:
            fresh.clamp_(*cfg.clamp)
        self._x[idx] = fresh
        self._version += 1
        self.v[idx] = 0
        self._age[idx] = 0
        chains = idx if not self.replicas else torch.unique(idx // (self.replicas + 1))
        self._window.reset(chains)
        self._mean.reset(chains)
        self._burn_in.reset(chains)
        self._burned_in = None
        self._host_resets += 1

    def _reset_where(self, bad: Tensor) -> None:
        """Re-initialize the chains where `bad [N]` bool is True from their spare starts and
        count them in `resets`, all under the mask: nothing here reads the device."""
        bad4 = _bcast(bad, self._x)
        self._resets.add_(bad)
        torch.where(bad4, self.spare.starts, self._x, out=self._x)  # type: ignore[arg-type]
        self._version += 1
        self.v.masked_fill_(bad4, 0)  # type: ignore[arg-type]
        self._age.masked_fill_(bad, 0)
        # A hidden replica that diverged restarts alone; the shown chain's averages go on.
        shown = self._shown(bad)
        self._window.reset_mask(shown)
        self._mean.reset_mask(shown)
        self._burn_in.reset_mask(shown)
        self._burned_in = None
        if not self.sync_free:  # the host looked: some chain was reset
            self._burn_in.set_done(False)
            self._host_resets += 1

    def _check(self) -> None:
        """Read the copy of (burned, resets) posted one period ago and post a new one.

        From the copy: redraw the spare rows of the chains reset since the copy before (only
        those rows, in chain order, so the draws do not depend on timing), and mark burn-in
        done when every chain was burned in then, unless the host has reset a chain since.
        The copy is a period old, so reading it normally waits for nothing.
        """
        burn_in = self._burn_in
        if self._copy.posted:
            burned, resets = self._copy.wait()
            changed = (resets != self._resets_seen).nonzero().squeeze(1)
            if changed.numel():
                self.spare.refill(to_device(changed, self.device))
            self._resets_seen = resets.clone()
            burn_in.set_done(bool(burned.all()) and self._host_resets == self._copy_host_resets)
        self._copy.post(burn_in.burned, self._resets)
        self._copy_host_resets = self._host_resets

    # ----------------------------------------------------- scale and step adaptation
    def _chain_keys(self) -> list[tuple[float, ...]]:
        """Each chain's (unit, T, lambda), and its prior decay under the spectral prior: chains
        with equal keys share an adapted step and a ladder."""
        n = self.config.chains
        decays = _per_chain_list(self.config.prior_decay, n) if self.basis is not None else []
        return [
            (u, float(t), float(lam), *([float(decays[i])] if decays else []))
            for i, (u, t, lam) in enumerate(
                zip(
                    self._unit_keys(),
                    _per_chain_list(self.config.temperature, n),
                    _per_chain_list(self.config.l2_weight, n),
                    strict=True,
                )
            )
        ]

    def _row_keys(self) -> list[int]:
        """Each row's unit (its chain's, on every rung)."""
        return [u for u in self._unit_keys() for _ in range(self.replicas + 1)]

    def _unit_keys(self) -> list[int]:
        """Each chain's unit: the activation target's `units_per_chain` when it has one, else
        one unit for every chain."""
        for term in self.terms:
            units = getattr(getattr(term, "activation_fn", None), "units_per_chain", None)
            if (
                term.group == "activation"
                and units is not None
                and len(units) == self.config.chains
            ):
                return [int(u) for u in units]
        return [0] * self.config.chains

    def _measure_scale(self, config: SamplerConfig) -> Scalar:
        """sigma per row (`ldam.sampling.scale.measure_scale`, one per unit, over the starts
        of all its rows), the hand-set `scale`, or 1.0 for the absolute scale."""
        if config.scale is not None:
            return self._row_value(config.scale)
        if config.energy_scale == "absolute":
            return 1.0
        units = self._row_keys()
        groups, count = chain_groups([(u,) for u in units])
        first = {int(g): u for g, u in zip(groups.tolist(), units, strict=True)}
        sigma = measure_scale(self._terms, self._x, groups, count)
        dead = ~(torch.isfinite(sigma) & (sigma > 0))
        if bool(dead.any()):
            names = [first[g] for g in dead.nonzero().flatten().tolist()]
            if config.dead_scale is None:
                which = (
                    f"Unit {names[0]}" if len(names) == 1 else f"Units {', '.join(map(str, names))}"
                )
                raise SamplerError(
                    f"{which} has no gradient at any chain's start (a dead unit), so its energy "
                    "scale cannot be measured; start the chains elsewhere (a larger init_std) "
                    "or use energy_scale absolute.",
                    "energy_scale",
                )
            self.dead_units = names
            sigma = torch.where(dead, torch.full_like(sigma, float(config.dead_scale)), sigma)
        self.unit_scale = {first[g]: float(v) for g, v in enumerate(sigma.tolist())}
        return sigma[groups.to(sigma.device)]

    def _adaptable(self) -> str | None:
        """Why MALA cannot adapt the step here (None: it can)."""
        cfg = self.config
        temperature = cfg.temperature if isinstance(cfg.temperature, list) else [cfg.temperature]
        if min(temperature) <= 0:
            return "a temperature of 0 has no Metropolis test"
        if cfg.normalize != "none":
            return "normalized gradients are no energy's gradient"
        if cfg.clamp is not None or cfg.step_decay is not None:
            return "clamp and step_decay change the proposal"
        if (
            any(t.group == "discriminator" and t.active() for t in self.terms)
            and not self._zero["disc_weight"]
        ):
            return "the discriminator's mixed gradient is no energy's gradient"
        return None

    def _start_adaptation(self) -> None:
        """Begin adapting an auto step size from the current chains (or, where MALA cannot
        run, freeze it where adaptation would start)."""
        self._step_auto = True
        if self.transforms is not None:  # MALA compares energies of one f: no random tau
            self.transforms.identity()
        lam = torch.as_tensor(self._p["l2_weight"], dtype=self._x.dtype, device=self._x.device)
        start = start_step(lam.expand(self.rows).clone())
        why = self._adaptable()
        if why is not None:
            self._freeze(start, None, why)
            return
        # One step per unit and settings, and with replicas per rung: a hot rung's energy is
        # flatter than the cold one's and takes a longer step.
        keys = [
            (*key, *((rung,) if self.replicas else ()))
            for key in self._chain_keys()
            for rung in range(self.replicas + 1)
        ]
        groups, count = chain_groups(keys)
        g, activation, values = update_direction(
            self._terms, self._x, self._p, self._zero, "none", self.scale
        )
        energy = energy_of(self._x, self._terms, values, self._p, activation, self.scale)
        self._adapter = StepAdapter(
            self._x, g, energy, activation, start, groups, count, self.config.adapt_steps
        )
        self._adapt_keys = list(dict.fromkeys(keys))

    def energy_changed(self) -> None:
        """Tell the sampler its terms now compute another energy at the same chains (a warm
        swap of the model under running chains): an adaptation in progress re-evaluates its
        accepted state, so its next Metropolis test compares energies of one model. sigma
        stays as measured: a constant of the run."""
        self._refresh_adapter()

    def _refresh_adapter(self) -> None:
        """An adaptation in progress takes the chains as they are now and evaluates their
        energy and gradient again (after a reset, a live change of lambda, a new model)."""
        ad = self._adapter
        if ad is None:
            return
        g, activation, values = update_direction(
            self._terms, self._x, self._p, self._zero, "none", self.scale
        )
        ad.x, ad.g, ad.activation = self._x.clone(), g, activation
        ad.e = energy_of(self._x, self._terms, values, self._p, activation, self.scale)

    def _adapt_step(self, ad: StepAdapter) -> StepInfo:
        """One MALA step of adaptation: discarded burn-in, nothing recorded. Reports, like a
        Langevin step, the activation at the state the step started from."""
        start_activation = ad.activation
        beta = ad.beta()
        temperature = torch.as_tensor(
            self._p["temperature"], dtype=self._x.dtype, device=self._x.device
        ).expand(self.rows)
        noise = self.streams.fill_noise(self._noise)
        with torch.no_grad():
            spread = _bcast(torch.sqrt(2.0 * beta * temperature), ad.x)
            proposal = ad.x + _bcast(beta, ad.x) * ad.g + spread * noise
        g, activation, values = update_direction(
            self._terms, proposal, self._p, self._zero, "none", self.scale
        )
        energy = energy_of(proposal, self._terms, values, self._p, activation, self.scale)
        log_accept = mala_log_accept(ad.x, proposal, ad.g, g, ad.e, energy, beta, temperature)
        ad.update(proposal, g, energy, activation, log_accept, self.streams.uniform(self._uniform))
        with torch.no_grad():
            self._x.copy_(ad.x)
        self._version += 1
        self.t += 1
        self._age.add_(1)
        self._burn_in.observe(self._shown(ad.activation), self.t)
        if ad.done:
            self._freeze(ad.frozen()[ad.groups], ad, None)
        no = torch.zeros(self.config.chains, dtype=torch.bool, device=self._x.device)
        shown = self._shown
        return StepInfo(
            self.t,
            shown(start_activation),
            {name: shown(v) for name, v in values.items()},
            no,
            no,
            shown(beta),
        )

    def _freeze(self, step: Tensor, ad: StepAdapter | None, why: str | None) -> None:
        """Fix the step at `step [rows]`: from here the chain is a fixed Langevin chain. With
        replicas each rung keeps its own step; the config holds the shown (cold) rung's."""
        # In the chains' dtype: the value reported is the value used, bit for bit.
        step = step.to(self._x.dtype)
        values = [float(v) for v in self._shown(step).tolist()]
        frozen = values[0] if all(v == values[0] for v in values) else values
        self._row_step = step.to(self._x.device) if self.replicas else None
        self._apply_config(dataclasses.replace(self.config, step_size=frozen))
        self.v.zero_()
        self._adapter = None
        report: dict[str, Any] = {"adapted": ad is not None, "steps": ad.taken if ad else 0}
        if ad is not None:
            report["step_size"] = [
                {
                    "unit": key[0],
                    **({"rung": key[-1]} if self.replicas else {}),
                    "step_size": float(b),
                    "acceptance": float(a),
                }
                for key, b, a in zip(
                    self._adapt_keys,
                    ad.frozen().to(self._x.dtype).tolist(),
                    ad.acceptance().tolist(),
                    strict=True,
                )
            ]
        else:
            report["why_not"] = why
        self.adaptation = report

    def unit_tuning(self) -> dict[int, dict[str, Any]]:
        """Per unit: ``scale`` (sigma_u, None in the absolute scale), ``step_size`` (the
        frozen step, the mean over the unit's chains; the current one while ``adapting``) and
        ``dead`` (sigma could not be measured)."""
        units = self._unit_keys()
        step = self._adapter.beta() if self._adapter is not None else self._p["step_size"]
        steps = _per_chain_list(
            self._shown(step).tolist() if isinstance(step, Tensor) else float(step),
            self.config.chains,
        )
        out: dict[int, dict[str, Any]] = {}
        for unit, beta in zip(units, steps, strict=True):
            entry = out.setdefault(unit, {"betas": []})
            entry["betas"].append(beta)
        scales = self.unit_scale
        for unit, entry in out.items():
            betas = entry.pop("betas")
            entry["scale"] = scales.get(unit) if self.config.scale is None else None
            entry["step_size"] = sum(betas) / len(betas)
            entry["adapting"] = self._adapter is not None
            entry["dead"] = unit in self.dead_units
        if self.exchange is not None:
            # The first group of each unit (a sweep of T or lambda has several per unit).
            for unit, stats in zip(self._exchange_units, self.exchange.stats(), strict=True):
                entry = out[unit]
                if "swap_acceptance" in entry:
                    continue
                entry["ladder"] = stats.betas
                entry["swap_acceptance"] = stats.acceptance
                entry["round_trips"] = stats.round_trips
                entry["adapting"] = entry["adapting"] or stats.adapting
        return out

    # -------------------------------------------------------------------------- reading
    def window_mean(self) -> Tensor:
        """`[N, C, H, W]` mean of each chain's last `window` post-burn-in samples; a chain with
        none yet shows its current sample."""
        return self._window.mean(self.x)

    def mean(self) -> Tensor:
        """`[N, C, H, W]` mean of all of each chain's post-burn-in samples since its last
        (re)initialization; a chain with none yet shows its current sample."""
        return self._mean.mean(self.x)

    def step_size(self) -> Scalar:
        """The step size beta of the next step: constant, or `a (b + t)^(-mu)` with t = 1, 2, ..."""
        if self.config.step_decay is None:
            return self._p["step_size"]
        a, b, mu = self.config.step_decay
        return a * (b + self.t + 1) ** (-mu)

    # ----------------------------------------------------------------------------- step
    def step(self) -> StepInfo:
        """One Langevin step of every chain; returns the activations, term values and burn-in.

        A chain whose activation or new sample is NaN/Inf is re-initialized and counted in
        `resets`; the run continues. The new sample of a burned-in chain enters the window and
        the running mean. With `sync_free` nothing here waits for the device.
        """
        self._apply_pending()
        if self._adapter is not None:
            return self._adapt_step(self._adapter)
        cfg, x, burn_in = self.config, self._x, self._burn_in
        if self.transforms is not None:  # one tau per row and step, shared by its terms
            self.transforms.draw()
        if self.exchange is None:
            g, activation, values = update_direction(
                self._terms, x, self._p, self._zero, cfg.normalize, self.scale
            )
        else:
            g, activation, values = self._exchange_direction(x)
        temperature = self._p["temperature"]
        noise = None
        if isinstance(temperature, Tensor) or temperature != 0.0:
            # What torch.randn(..., out=) does, minus its resize: the same draws.
            noise = self.streams.fill_noise(self._noise)
        beta = self.step_size()
        sync_free = self.sync_free
        with torch.no_grad():
            langevin_step(x, self.v, g, noise, beta, self._p["momentum"], temperature)
            self._version += 1
            if cfg.clamp is not None:
                x.clamp_(*cfg.clamp)
            self.t += 1
            self._age.add_(1)
            shown_activation = self._shown(activation)
            # Once every chain is burned in, burn-in bookkeeping stops and every sample counts.
            # Without host reads a chain may have been reset since the host learned that, so
            # burn-in does what `record` says and the averages keep their mask. While the
            # ladder adapts nothing is kept: burn-in only watches.
            if self.exchange is not None and self.exchange.adapting:
                burn_in.observe(shown_activation, self.t)
            elif not burn_in.done:
                burn_in.update(shown_activation, self.age, self.t)
                self._burned_in = None
            elif sync_free:
                burn_in.record(shown_activation, self.age, self.t)
                self._burned_in = None
            recording = burn_in.burned if sync_free or not burn_in.done else None
            self._window.add(self.x, recording)
            self._mean.add(self.x, recording)
            bad = _diverged(x, activation, cfg.divergence_limit, self._zero0)
            # Not sync-free (the CPU's default, where reading `bad.any()` waits for nothing):
            # skip the masked reset (a dozen kernels) on the steps no chain diverged, nearly all.
            if sync_free or bool(bad.any()):
                self._reset_where(bad)
            if self.t % self._period == 0:
                self._check()
        burned_in = self._burned_in
        if burned_in is None:  # `burned` may have changed: report a copy of it
            burned_in = self._burned_in = burn_in.burned.clone()
        if self.replicas:
            shown = self._shown
            values = {name: shown(v) for name, v in values.items()}
            activation, bad = shown(activation), shown(bad)
            beta = shown(beta) if isinstance(beta, Tensor) else beta
        return StepInfo(
            step=self.t,
            activation=activation,
            terms=values,
            burned_in=burned_in,
            reset=bad,
            step_size=beta,
        )

    def _exchange_direction(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Replica exchange's part of a step: evaluate the terms at the rows `x`, swap states
        between neighbouring rungs (`ReplicaExchange.swap`, on each row's untempered energy
        f / sigma), move x and every evaluated piece along (velocities stay in their rung's
        slot), and return the direction at the swapped states with each row's beta."""
        exchange = self.exchange
        assert exchange is not None
        parts = direction_parts(self._terms, x, self._p, self._zero, self.config.normalize)
        adapting = exchange.adapting
        perm = exchange.swap(parts.activation / self._sigma, self._chain_temperature)
        with torch.no_grad():
            x.copy_(x.index_select(0, perm))
        parts.permute(perm, x)
        if adapting:  # the ladder may have moved: each row's scale follows its beta
            self.scale = self._tempered_scale()
        return parts.total(x, self.scale), parts.activation, parts.values

    def window_blocks(self, blocks: int) -> Tensor:
        """`[blocks, N, C, H, W]`: each chain's window cut into `blocks` consecutive blocks,
        oldest first, and their means (`MovingWindow.block_means`; NaN for a young chain)."""
        return self._window.block_means(blocks)


def _resolve_window(
    config: SamplerConfig, input_shape: Sequence[int]
) -> tuple[SamplerConfig, str | None]:
    """`config` with ``window=None`` (auto) replaced by the fitted window, and the sentence
    that says when it is shorter than the auto window (`fitted_window`)."""
    if config.window is not None:
        return config, None
    window, note = fitted_window(config.chains, input_shape)
    return dataclasses.replace(config, window=window), note
