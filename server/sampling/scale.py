"""Settings that mean the same on every unit: the unit's energy scale, and a step size adapted
in burn-in.

**Energy scale.** Units of one network differ in scale by orders of magnitude (a logit against
the mean of a first-layer channel), so one temperature cannot serve them all. With
``energy_scale="unit"`` chain i of unit u samples

    p(x) ∝ exp((f_u(x) / sigma_u + sum_k lambda_k R_k(x)) / T),
    sigma_u = sqrt(mean over u's chains of ||grad_x f_u(x_0)||^2),

the RMS norm of the unit's input gradient at the chains' starts x_0 (draws of the init
distribution). `f_u / sigma_u` is, to first order around the starts, a signed distance in input
space, the quantity the L2 prior `-lambda/2 ||x||^2` also measures: T and lambda then read the
same on every unit. sigma_u is measured once, before the first step, and frozen: a constant
rescaling of the energy, so the law stays exactly `exp(E/T)`. For a linear unit `f = w.x + b`,
sigma_u = ||w|| exactly and the stationary law under L2 is `N(w / (||w|| lambda), T / lambda)`.

**Step size.** ``step_size=None`` (auto) adapts beta during the first `adapt_steps` steps,
which are burn-in (never kept), by the Metropolis-adjusted Langevin algorithm (MALA): propose
`x' = x + beta grad E(x) + sqrt(2 beta T) xi` and accept with probability

    min(1, exp((E(x') - E(x)) / T - (||x - x' - beta grad E(x')||^2
                                     - ||x' - x - beta grad E(x)||^2) / (4 beta T))),

while log beta moves toward an acceptance of 0.574 (the rate at which MALA's efficiency peaks,
Roberts and Rosenthal 1998) by a Robbins-Monro step, one beta per group of chains that share a
unit and settings. Then beta is frozen at the geometric mean of its second half: from there the
chain is a fixed (unadjusted) Langevin chain with that step, whose bias on a Gaussian is the
known `1 / (1 - beta lambda / 2)` on the variance. A MALA step costs one forward and backward,
like a Langevin step: the energy and gradient at an accepted proposal are those of the next
proposal's start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from ldam.sampling.energy import L2Term, Term, autograd_value_and_grad

# The acceptance rate adaptation aims at.
TARGET_ACCEPTANCE = 0.574
# Where adaptation starts: beta lambda = 0.2, a fifth of the prior's relaxation per step.
START_BETA_LAMBDA = 0.2
# Without L2 (lambda = 0) adaptation starts from this step.
START_STEP = 0.05


def chain_groups(keys: Sequence[tuple[float, ...]]) -> tuple[Tensor, int]:
    """Group ids `[N]` (int64, CPU) for per-chain `keys` (a unit and its settings): chains with
    equal keys share a group, numbered in order of first appearance; and the group count."""
    ids: dict[tuple[float, ...], int] = {}
    out = [ids.setdefault(key, len(ids)) for key in keys]
    return torch.tensor(out, dtype=torch.long), len(ids)


def group_mean(values: Tensor, groups: Tensor, count: int) -> Tensor:
    """The mean of `values [N]` over each group of `groups [N]`: `[count]`."""
    sums = torch.zeros(count, dtype=values.dtype, device=values.device)
    sums.index_add_(0, groups, values)
    sizes = torch.bincount(groups, minlength=count).to(values.dtype)
    return sums / sizes


def measure_scale(terms: Sequence[Term], x: Tensor, groups: Tensor, count: int) -> Tensor:
    """sigma per group `[count]`: the RMS over each group's chains of `||grad_x f(x_i)||`, f the
    sum of the activation terms, at the chains `x [N, C, H, W]`. Zero or not finite for a
    group whose unit has no gradient at any start (a dead unit)."""
    grad = torch.zeros_like(x)
    for term in terms:
        if term.group == "activation":
            grad.add_(autograd_value_and_grad(term, x)[1])
    # Per-chain sums in float64: a float32 reduction's order (and last bit) depends on the
    # batch's shape, and an atlas unit must get the same sigma in any batch.
    squared = grad.flatten(1).double().pow(2).sum(1)
    return group_mean(squared, groups.to(x.device), count).sqrt().to(x.dtype)


def mala_log_accept(
    x: Tensor,
    proposal: Tensor,
    grad: Tensor,
    proposal_grad: Tensor,
    energy: Tensor,
    proposal_energy: Tensor,
    step_size: Tensor,
    temperature: Tensor | float,
) -> Tensor:
    """log of MALA's acceptance ratio `[N]` for `proposal` from `x` (both `[N, C, H, W]`), with
    their energy gradients and energies `[N]` (maximized), `step_size [N]` and T:

        (E(x') - E(x)) / T - (||x - x' - b g'||^2 - ||x' - x - b g||^2) / (4 b T)

    NaN or infinite where a proposal left the finite numbers (the caller rejects it). In
    float64, like `energy_of`, so that a chain's decisions never depend on its batch."""
    b = step_size.view(-1, *([1] * (x.dim() - 1)))
    back = (x - proposal - b * proposal_grad).flatten(1).double().pow(2).sum(1)
    forth = (proposal - x - b * grad).flatten(1).double().pow(2).sum(1)
    t = temperature if isinstance(temperature, float) else temperature.double()
    beta = step_size.double()
    return (proposal_energy - energy) / t - (back - forth) / (4.0 * beta * t)


def start_step(l2_weight: Tensor) -> Tensor:
    """Where adaptation starts, per chain `[N]`: `START_BETA_LAMBDA / lambda`, or `START_STEP`
    without L2; within the step size's bounds."""
    start = torch.where(
        l2_weight > 0,
        START_BETA_LAMBDA / l2_weight.clamp_min(1e-12),
        torch.full_like(l2_weight, START_STEP),
    )
    return start.clamp(1e-6, 100.0)


class StepAdapter:
    """The state of step-size adaptation: the accepted chains `x`, their energy gradients `g`
    and energies `e`, log beta per group, and its history. `StepAdapter.update` takes one MALA
    outcome; `frozen` gives the final step per chain."""

    def __init__(
        self,
        x: Tensor,
        grad: Tensor,
        energy: Tensor,
        activation: Tensor,
        start: Tensor,
        groups: Tensor,
        count: int,
        steps: int,
    ) -> None:
        self.x, self.g, self.e, self.activation = (
            x.clone(),
            grad.clone(),
            energy.clone(),
            activation,
        )
        self.groups = groups.to(x.device)
        self.count = count
        self.log_beta = group_mean(start.log(), self.groups, count)
        self.steps = steps
        self.taken = 0
        self.history: list[Tensor] = []
        self.accepted = torch.zeros(count, dtype=torch.float64, device=x.device)

    def beta(self) -> Tensor:
        """This step's beta per chain `[N]`, in the chains' dtype."""
        return self.log_beta.exp()[self.groups].to(self.x.dtype)

    def update(
        self,
        proposal: Tensor,
        grad: Tensor,
        energy: Tensor,
        activation: Tensor,
        log_accept: Tensor,
        uniform: Tensor,
    ) -> Tensor:
        """Accept or reject each chain's proposal (`uniform [N]` in [0, 1)), move log beta
        toward `TARGET_ACCEPTANCE` by `(mean acceptance probability - target) / sqrt(k)`, and
        return the `[N]` bool accepted."""
        finite = torch.isfinite(log_accept)
        accept = finite & (torch.log(uniform) < log_accept)
        keep = accept.view(-1, *([1] * (self.x.dim() - 1)))
        self.x = torch.where(keep, proposal, self.x)
        self.g = torch.where(keep, grad, self.g)
        self.e = torch.where(accept, energy, self.e)
        self.activation = torch.where(accept, activation, self.activation)
        prob = torch.where(finite, log_accept.clamp(max=0.0).exp(), torch.zeros_like(log_accept))
        mean = group_mean(prob, self.groups, self.count)
        self.taken += 1
        self.accepted += group_mean(accept.to(prob.dtype), self.groups, self.count)
        self.log_beta = self.log_beta + (mean - TARGET_ACCEPTANCE) / math.sqrt(self.taken)
        self.history.append(self.log_beta)
        return accept

    @property
    def done(self) -> bool:
        """Whether every adaptation step was taken."""
        return self.taken >= self.steps

    def frozen(self) -> Tensor:
        """The frozen step per group `[count]` (float64): the geometric mean of the second
        half, within the step size's bounds."""
        half = self.history[len(self.history) // 2 :] or [self.log_beta]
        return torch.stack(half).mean(0).exp().clamp(1e-6, 100.0)

    def acceptance(self) -> Tensor:
        """The share of accepted proposals per group over the adaptation `[count]`."""
        return self.accepted / max(1, self.taken)


def energy_of(
    x: Tensor,
    terms: Sequence[Term],
    values: Mapping[str, Tensor],
    weights: Mapping[str, float | Tensor],
    activation: Tensor,
    scale: Tensor | float,
) -> Tensor:
    """E `[N]` in float64 at the chains `x`: the activation over its scale plus each
    regularizer's value times its weight (the energy MALA needs; a discriminator's mixed
    gradient is no energy's gradient, so adaptation does not run with one). L2's value is
    summed here in float64, so that it does not depend on the batch (see `mala_log_accept`)."""
    e = activation.double() / (scale.double() if isinstance(scale, Tensor) else scale)
    for term in terms:
        if term.group == "regularizer" and term.name in values:
            weight = weights[term.weight_param] if term.weight_param else 1.0
            weight = weight.double() if isinstance(weight, Tensor) else weight
            if isinstance(term, L2Term):
                value = x.flatten(1).double().pow(2).sum(1).mul_(-0.5)
            else:
                value = values[term.name].double()
            e = e + value * weight
    return e
