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
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ldam.sampling.averaging import MovingWindow, RunningMean
from ldam.sampling.burn_in import BurnIn
from ldam.sampling.energy import L2Term, Term, autograd_value_and_grad
from ldam.sampling.settings import (
    LIVE_SETTINGS,
    NORMALIZE_MODES,
    PER_CHAIN_SETTINGS,
    PerChain,
    SamplerConfig,
    SamplerError,
    check_window_memory,
    live_replace,
)

__all__ = [
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
    "langevin_step",
    "live_replace",
    "update_direction",
]

Scalar = float | Tensor  # a float, or a per-chain tensor [N] broadcast over C, H, W


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


def update_direction(
    terms: Sequence[Term],
    x: Tensor,
    weights: Mapping[str, Scalar],
    skip: Mapping[str, bool],
    normalize: str,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The direction g `[N, C, H, W]` the chains at `x [N, C, H, W]` move along, the activation
    `[N]` (sum of the activation terms) and each evaluated term's value `[N]` by name.

    `weights` maps each per-chain setting a term may be weighted by to a float or `[N]` tensor;
    a term whose weight setting is True in `skip` (0 on every chain), or that is inactive, is
    not evaluated. `normalize` (one of `NORMALIZE_MODES`) divides the gradients of the
    regularizers, or of every term, by their per-chain RMS over pixels (Algorithm 1 line 6).
    A discriminator term's gradient is mixed with the activation's by its weight w:
    `g = (1 - w) g_a + w rms(g_a) g_D / rms(g_D)`.
    """
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
            flat = x.flatten(1)
            norm = torch.linalg.vector_norm(flat, dim=1)  # one reduction kernel
            values[term.name] = norm.square().mul_(-0.5)
            coef = -_bcast(weights[wp], x)
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
            g_disc, disc_weight = g, weights[wp] if wp else 1.0
        else:
            regs.append((g / _rms(g) if norm_reg else g, weights[wp] if wp else 1.0))

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


def _chain_value(value: float | list[float], like: Tensor) -> Scalar:
    """A per-chain list as an `[N]` tensor with `like`'s dtype and device; a float as it is."""
    if isinstance(value, list):
        return torch.tensor(value, dtype=like.dtype, device=like.device)
    return value


def _diverged(x: Tensor, activation: Tensor, limit: float) -> Tensor:
    """`[N]` bool: the chains whose activation `[N]` is NaN/Inf or whose sample in `x` has a
    pixel that is NaN/Inf or beyond `limit` in absolute value."""
    # The limit matters: a step size far too large under gradient normalization drifts to huge
    # but finite values (seen: activations ~1e8) that a finiteness test misses. amax propagates
    # NaN and `not (peak <= limit)` is True for NaN, so one comparison covers all three cases.
    peak = x.flatten(1).abs().amax(1)
    return (peak <= limit).logical_and_(activation.isfinite()).logical_not_()


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


class Sampler:
    """LDAM chains: owns x `[N, C, H, W]`, velocities, the RNGs and the step counter, and steps
    them with `langevin_step` along `update_direction`, feeding burn-in and the averages.

    Attributes:
        x: `[N, C, H, W]` the current samples (updated in place each step).
        v: `[N, C, H, W]` the velocities.
        t: steps taken.
        age: `[N]` int64, steps since each chain was (re)initialized.
        resets: `[N]` int64, how many times each chain diverged (NaN/Inf) and was re-initialized.
        config: the effective settings (live changes from `set` included once applied).
        terms: the energy terms, in the order given.
        input_shape: `(C, H, W)` of one chain.
        device: where the chains live.
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
        self.device = dev = torch.device(config.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SamplerError(f"Device {str(dev)!r} is not available on this machine.")
        n = config.chains
        full = (n, *self.input_shape)
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
        self._pending: SamplerConfig | None = None
        self._pending_lock = threading.Lock()  # set() may come from a control thread
        self._apply_config(config)
        thr = config.burn_in_threshold
        self._burn_in = BurnIn(
            n,
            dev,
            config.burn_in,
            config.burn_in_window,
            config.burn_in_epsilon,
            None if thr is None else _chain_value(thr, self.x),
        )
        self._check_window_memory(config.window)
        self._window = MovingWindow(config.window, full, dev)
        self._mean = RunningMean(full, dev)
        self._reinit(torch.arange(n, device=dev))

    @property
    def burn_in_step(self) -> Tensor:
        """`[N]` int64, the steps each chain discarded (the samples of later steps are averaged;
        for a re-initialized chain, counted from the start of the run), -1 while its current
        sample is not yet a kept one."""
        return self._burn_in.steps

    def _apply_config(self, config: SamplerConfig) -> None:
        """Turn settings into floats or per-chain device tensors once, not every step."""
        self.config = config
        self._p: dict[str, Scalar] = {
            name: _chain_value(getattr(config, name), self.x) for name in PER_CHAIN_SETTINGS
        }
        # Host-side: a term whose weight is 0 on every chain is skipped without a device sync.
        self._zero = {
            name: all(v == 0 for v in (value if isinstance(value, list) else [value]))
            for name in PER_CHAIN_SETTINGS
            for value in [getattr(config, name)]
        }

    def _check_window_memory(self, window: int) -> None:
        check_window_memory(window, self.config.chains, self.input_shape, self.x.element_size())

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
            self._check_window_memory(pending.window)
            self._pending = pending

    def _apply_pending(self) -> None:
        if self._pending is None:
            return
        with self._pending_lock:
            pending, self._pending = self._pending, None
        window_changed = pending.window != self.config.window
        self._apply_config(pending)
        if window_changed:  # its memory was checked by `set`
            self._window.resize(pending.window)

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
        self._window.reset(idx)
        self._mean.reset(idx)
        self._burn_in.reset(idx)

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
        the running mean.
        """
        self._apply_pending()
        cfg, x, burn_in = self.config, self.x, self._burn_in
        g, activation, values = update_direction(self.terms, x, self._p, self._zero, cfg.normalize)
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
            burn_in.update(activation, self.age, self.t)
            recording = None if burn_in.done else burn_in.burned
            self._window.add(x, recording)
            self._mean.add(x, recording)
            bad = _diverged(x, activation, cfg.divergence_limit)
            # The one host sync per step: whether any chain diverged (and, until every chain
            # is burned in, whether all are now, so burn-in bookkeeping can stop).
            if burn_in.done:
                any_bad = bool(bad.any())
            else:
                any_bad, all_burned = torch.stack((bad.any(), burn_in.burned.all())).tolist()
                burn_in.set_done(all_burned)
            if any_bad:
                idx = bad.nonzero().squeeze(1)
                self.resets[idx] += 1
                self._reinit(idx)
        return StepInfo(
            step=self.t,
            activation=activation,
            terms=values,
            burned_in=burn_in.burned.clone(),
            reset=bad,
            step_size=beta,
        )
