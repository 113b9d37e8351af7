"""Energy terms: analytic values and gradients, composition, registry, one-sentence errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ldam.sampling.energy import (
    ActivationTerm,
    DiscriminatorTerm,
    L2Term,
    TermError,
    autograd_value_and_grad,
)


def frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def test_l2_value_and_analytic_grad_match_autograd() -> None:
    x = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]], [[[3.0, 0.0], [0.0, 4.0]]]])
    term = L2Term()
    value, grad = autograd_value_and_grad(term, x)
    assert torch.equal(value, torch.tensor([-0.5 * (1 + 4 + 0.25), -0.5 * 25.0]))
    assert torch.equal(grad, -x)
    leaf = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(term.value(leaf).sum(), leaf)
    assert torch.equal(auto, grad)


def test_activation_of_one_conv_unit_has_the_filter_as_gradient() -> None:
    conv = frozen(nn.Conv2d(1, 2, 3, bias=True))
    with torch.no_grad():
        conv.weight.copy_(torch.arange(18.0).reshape(2, 1, 3, 3))
        conv.bias.copy_(torch.tensor([0.5, -1.0]))
    term = ActivationTerm(lambda x: conv(x)[:, 1, 1, 2])
    x = torch.randn(3, 1, 5, 6, generator=torch.Generator().manual_seed(0))
    value, grad = autograd_value_and_grad(term, x)
    expected_value = (x[:, 0, 1:4, 2:5] * conv.weight[1, 0]).sum((1, 2)) - 1.0
    torch.testing.assert_close(value, expected_value)
    expected_grad = torch.zeros_like(x)
    expected_grad[:, 0, 1:4, 2:5] = conv.weight[1, 0]
    assert torch.equal(grad, expected_grad)
    assert conv.weight.grad is None  # autograd.grad on x only, never .backward()


def test_a_chains_gradient_does_not_depend_on_how_many_chains_run() -> None:
    lin = frozen(nn.Linear(4, 1))
    term = ActivationTerm(lambda x: torch.tanh(lin(x.flatten(1)))[:, 0])
    x = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    _, grad_all = autograd_value_and_grad(term, x)
    _, grad_one = autograd_value_and_grad(term, x[:1])
    torch.testing.assert_close(grad_all[:1], grad_one, rtol=0, atol=0)


def test_discriminator_term_is_log_sigmoid_of_the_logit() -> None:
    lin = frozen(nn.Linear(4, 1))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0, 2.0, 0.0]]))
        lin.bias.fill_(0.25)
    disc = nn.Sequential(nn.Flatten(), lin)
    term = DiscriminatorTerm(lambda: disc)
    x = torch.tensor([[[[1.0, 2.0], [0.0, 5.0]]], [[[0.0, 0.0], [-1.0, 0.0]]]])
    value, grad = autograd_value_and_grad(term, x)
    logits = torch.tensor([1.0 - 2.0 + 0.25, -2.0 + 0.25])
    torch.testing.assert_close(value, torch.log(torch.sigmoid(logits)))
    # d/dx log sigmoid(w.x + b) = sigmoid(-(w.x + b)) w
    expected = torch.sigmoid(-logits)[:, None] * lin.weight
    torch.testing.assert_close(grad.flatten(1), expected)
    assert term.active()
    assert not DiscriminatorTerm(lambda: None).active()
    with pytest.raises(TermError, match=r"^No discriminator has been published yet\.$"):
        DiscriminatorTerm(lambda: None).value(x)


def test_terms_have_names_weights_and_groups() -> None:
    a, b, c = ActivationTerm(lambda x: x.sum((1, 2, 3))), L2Term(), DiscriminatorTerm(lambda: None)
    assert [a.name, b.name, c.name] == ["activation", "l2", "discriminator"]
    assert [a.weight_param, b.weight_param, c.weight_param] == [None, "l2_weight", "disc_weight"]
    assert [a.group, b.group, c.group] == ["activation", "regularizer", "discriminator"]
    assert repr(b) == "L2Term(name='l2', weight=l2_weight)"


def test_activation_of_the_wrong_shape_is_one_sentence() -> None:
    term = ActivationTerm(lambda x: x.flatten(1))
    with pytest.raises(
        TermError,
        match=r"^The activation function must return one value per chain, shape \[2\], got \[2, 4\]\.$",
    ):
        term.value(torch.zeros(2, 1, 2, 2))


def test_an_activation_without_autograd_is_one_sentence() -> None:
    def detached(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return x.sum((1, 2, 3))

    with pytest.raises(TermError, match=r"does not depend on the input through autograd"):
        autograd_value_and_grad(ActivationTerm(detached), torch.zeros(2, 1, 2, 2))


def test_disc_withdrawn_between_active_and_value_does_not_fail_the_step() -> None:
    from ldam.sampling.sampler import Sampler, SamplerConfig

    torch.manual_seed(0)
    disc = nn.Sequential(nn.Flatten(), nn.Linear(4, 1)).eval()
    for p in disc.parameters():
        p.requires_grad_(False)
    calls = []

    def published() -> nn.Module | None:
        # Published when asked in active(), withdrawn (trainer error) by the time value() runs.
        calls.append(1)
        return disc if len(calls) % 2 == 1 else None

    terms = [ActivationTerm(lambda x: x.flatten(1).sum(1)), DiscriminatorTerm(published)]
    s = Sampler(terms, (1, 2, 2), SamplerConfig(chains=2, disc_weight=0.5, burn_in=0, seed=0))
    info = s.step()
    assert "discriminator" in info.terms
    assert info.terms["discriminator"].shape == (2,)
    assert len(calls) == 1  # fetched once per step


def test_a_broadcast_gradient_is_usable_in_place() -> None:
    from ldam.sampling.sampler import Sampler, SamplerConfig

    # d/dx of a plain sum is an expanded view of ones; the sampler adds into it in place.
    s = Sampler(
        [ActivationTerm(lambda x: x.flatten(1).sum(1)), L2Term()],
        (1, 2, 2),
        SamplerConfig(chains=3, temperature=0.0, step_size=0.1, l2_weight=1.0, burn_in=0),
    )
    x0 = s.x.clone()
    s.step()
    # x <- x + beta * (1 - lambda x) at T = 0, gamma = 0.
    torch.testing.assert_close(s.x, x0 + 0.1 * (1.0 - x0))
