"""Helpers for the sampler's tests: a linear unit, a run that keeps every state, and the
closed-form stationary variance of the discrete chain on a linear unit with L2."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ldam.sampling.energy import ActivationTerm
from ldam.sampling.sampler import Sampler


def frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def linear_unit(w: torch.Tensor, b: float) -> ActivationTerm:
    """f(x) = w.x + b over a chain's flattened pixels."""
    lin = frozen(nn.Linear(w.numel(), 1))
    with torch.no_grad():
        lin.weight.copy_(w.reshape(1, -1))
        lin.bias.fill_(b)
    return ActivationTerm(lambda x: lin(x.flatten(1))[:, 0])


def run(sampler: Sampler, steps: int) -> list[torch.Tensor]:
    """Step and return a copy of x after every step."""
    out = []
    for _ in range(steps):
        sampler.step()
        out.append(sampler.x.clone())
    return out


def stationary_variance(step: float, lam: float, momentum: float, temperature: float) -> float:
    """Exact stationary var of x for the discrete chain on a linear unit with L2 weight lam.

    Centered state s = (x, v): s' = A s + (1, 1) sigma xi, A = [[1 - b lam, g], [-b lam, g]],
    sigma^2 = 2 (1 - g) b T; the covariance solves P = A P A^T + Q (discrete Lyapunov).
    """
    a = np.array([[1 - step * lam, momentum], [-step * lam, momentum]])
    q = 2 * (1 - momentum) * step * temperature * np.ones((2, 2))
    p = np.linalg.solve(np.eye(4) - np.kron(a, a), q.reshape(-1)).reshape(2, 2)
    return float(p[0, 0])


def assert_gaussian_draws(draws: np.ndarray, means: list[float], var: float) -> None:
    """Each pixel's draws `[pixel, chain, n]` have mean `means[pixel]` and variance `var`
    within 5 standard errors (the errors from each series' effective sample size)."""
    from ldam.sampling.diagnostics import effective_sample_size

    for pixel, mean_target in enumerate(means):
        d = draws[pixel].astype(np.float64)
        ess = effective_sample_size(d)
        assert abs(d.mean() - mean_target) < 5 * np.sqrt(var / ess)
        sq = (d - mean_target) ** 2
        ess_sq = effective_sample_size(sq)
        assert abs(sq.mean() - var) < 5 * sq.std() / np.sqrt(ess_sq)
