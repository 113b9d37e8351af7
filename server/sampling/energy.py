"""Energy terms of LDAM: the chain for `x_i` targets `p(x_i) ∝ exp(E_i(x_i) / T)` with

    E_i(x) = f_target(x) + sum_k lambda_k * R_k(x)          (paper eq. 6)

Each term maps a batch of chains `x [N, C, H, W]` to one energy per chain `[N]` (higher =
more probable). Terms never average over chains: the sampler differentiates `sum_i E_i`, so a
chain's gradient does not depend on how many chains run beside it.

A term names the sampler setting that weights it (`weight_param`), so its weight can be one
value or one per chain and can change live; the sampler owns the weights, the term only the
energy. A `Sampler` takes a list of terms, e.g. `[ActivationTerm(target), L2Term()]`, and sums
them with their weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ldam.errors import UserError

TermGroup = Literal["activation", "regularizer", "discriminator"]


class TermError(UserError):
    """A term was given or produced something unusable; the message is one sentence."""


class Term:
    """One named energy term `[N, C, H, W] -> [N]`.

    Attributes:
        name: what the UI prints and the key of this term's values in `StepInfo.terms`.
        group: `activation` (the target, weight 1), `regularizer` (weighted by `weight_param`,
            normalized under `normalize="regularizers"`) or `discriminator` (mixed with the
            activation gradient by the sampler's discriminator rule).
        weight_param: the `SamplerConfig` setting that scales the term, `None` for weight 1.
    """

    name: str = "term"
    group: TermGroup = "regularizer"
    weight_param: str | None = None

    def value(self, x: Tensor) -> Tensor:
        """Per-chain energy `[N]` of chains `x [N, C, H, W]`, differentiable w.r.t. `x`."""
        raise NotImplementedError

    def grad(self, x: Tensor) -> Tensor | None:
        """The analytic gradient `dE_i/dx_i [N, C, H, W]` when cheap; `None` means use autograd."""
        return None

    def active(self) -> bool:
        """Whether the term can be evaluated now (a discriminator may not be published yet)."""
        return True

    def __repr__(self) -> str:
        weight = self.weight_param or "1"
        return f"{type(self).__name__}(name={self.name!r}, weight={weight})"


def _per_chain(out: Tensor, n: int, what: str) -> Tensor:
    """`out` as `[n]`, accepting `[n, 1]`; anything else is a one-sentence error."""
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (n,):
        raise TermError(
            f"The {what} must return one value per chain, shape [{n}], got {list(out.shape)}."
        )
    return out


class ActivationTerm(Term):
    """`f_target(x_i)`: the activation of the chain's target unit (paper eq. 3).

    `activation_fn(x [N, C, H, W]) -> [N]` is any callable: a `ldam.sampling.targets.Target`, or a
    closure such as `lambda x: conv(x)[:, c, y, x0]` (one first-layer unit at one position).
    """

    group: TermGroup = "activation"
    weight_param: str | None = None

    def __init__(self, activation_fn: Callable[[Tensor], Tensor], name: str = "activation") -> None:
        self.activation_fn = activation_fn
        self.name = name

    def value(self, x: Tensor) -> Tensor:
        """Activation per chain `[N]`."""
        return _per_chain(self.activation_fn(x), x.shape[0], "activation function")


class L2Term(Term):
    """`R(x_i) = -1/2 ||x_i||^2` (paper section 4.1), weighted by `l2_weight`.

    With weight lambda and a linear unit, the stationary mean is `w / lambda`: the sample shows
    the unit's weights, which is why the paper calls L2 the pixel-interpretable regularizer.
    """

    group: TermGroup = "regularizer"
    weight_param: str | None = "l2_weight"

    def __init__(self, name: str = "l2") -> None:
        self.name = name

    def value(self, x: Tensor) -> Tensor:
        """`-1/2 ||x_i||^2` per chain `[N]`."""
        return x.flatten(1).pow(2).sum(1).mul_(-0.5)

    def grad(self, x: Tensor) -> Tensor:
        """`-x` (exact, no autograd)."""
        return -x


class DiscriminatorTerm(Term):
    """`log sigmoid(D(x_i))`: the log-probability that a discriminator calls `x_i` real (section 4.2).

    `get_discriminator()` returns the currently published discriminator (an `nn.Module`
    mapping `[N, C, H, W]` to one logit per image, `[N]` or `[N, 1]`), or `None` while none is
    published; it is called at every evaluation, so a newly published D is used at the next
    step. The module should be in eval mode (dropout would make the energy random).
    """

    group: TermGroup = "discriminator"
    weight_param: str | None = "disc_weight"

    def __init__(
        self, get_discriminator: Callable[[], nn.Module | None], name: str = "discriminator"
    ) -> None:
        self.get_discriminator = get_discriminator
        self.name = name
        self._pinned: nn.Module | None = None

    def active(self) -> bool:
        """False while no discriminator is published.

        The D seen here is pinned for the `value` call that follows in the same step: the
        trainer may withdraw D (after an error) in between, and the step must not then fail.
        """
        self._pinned = self.get_discriminator()
        return self._pinned is not None

    def value(self, x: Tensor) -> Tensor:
        """`log sigmoid(D(x_i))` per chain `[N]`, always <= 0."""
        disc, self._pinned = (self._pinned or self.get_discriminator()), None
        if disc is None:
            raise TermError("No discriminator has been published yet.")
        logits = _per_chain(disc(x), x.shape[0], "discriminator")
        return F.logsigmoid(logits)


class ImageTerm(Term):
    """A term of the image `x = to_image(z)` evaluated at the chains' coordinates z: the
    wrapper the sampler puts around every term but the prior when it samples in other
    coordinates than pixels (the spectral prior's `z = L^{-1} x`, transforms' random `tau`).
    Its gradient is `J^T grad_x E` by autograd through `to_image`. The wrapped term stays the
    one the caller holds and may change (a warm swap sets its `activation_fn`)."""

    def __init__(self, term: Term, to_image: Callable[[Tensor], Tensor]) -> None:
        self.term, self.to_image = term, to_image
        self.name, self.group, self.weight_param = term.name, term.group, term.weight_param

    @property
    def activation_fn(self) -> Callable[[Tensor], Tensor] | None:
        """The wrapped term's activation function, where it has one."""
        return getattr(self.term, "activation_fn", None)

    def active(self) -> bool:
        """The wrapped term's."""
        return self.term.active()

    def value(self, x: Tensor) -> Tensor:
        """The wrapped term at the image of the coordinates `x [N, C, H, W]`."""
        return self.term.value(self.to_image(x))

    def __repr__(self) -> str:
        return f"ImageTerm({self.term!r})"


def autograd_value_and_grad(term: Term, x: Tensor) -> tuple[Tensor, Tensor]:
    """A term's per-chain value `[N]` (detached) and `d(sum_i E_i)/dx [N, C, H, W]`.

    Uses the term's analytic gradient when it has one, else `torch.autograd.grad` on a leaf
    view of `x` (never `.backward()`, so model parameters never accumulate `.grad`).
    """
    analytic = term.grad(x)
    if analytic is not None:
        with torch.no_grad():
            return term.value(x), analytic
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        value = term.value(leaf)
        if not value.requires_grad:
            raise TermError(
                f"The energy term {term.name!r} does not depend on the input through autograd, "
                "so it has no gradient (was the model run under torch.no_grad?)."
            )
        (grad,) = torch.autograd.grad(value.sum(), leaf, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(x)
    # The sampler adds into this tensor in place; autograd may hand back a broadcast view
    # (e.g. for a plain sum), which in-place ops refuse, so make it a real tensor.
    return value.detach(), grad.contiguous()
