"""Targets: parsing, analytic activations and gradients, chain groups, hooks, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from ldam.models.lenet import LeNet
from ldam.sampling.targets import (
    LayerInfo,
    Target,
    TargetError,
    TargetSpec,
    list_layers,
    parse_target,
)
from ldam.wire.targets import ChainTargets, chain_targets

LENET_LAYERS = (
    "conv1, relu1, pool1, conv2, relu2, pool2, flatten, fc1, relu3, fc2, relu4, fc3, output"
)


class Tiny(nn.Module):
    """x [N,1,2,2] -> conv (1x1, two channels with known weights) -> flatten -> linear (3 units)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        self.flat = nn.Flatten()
        self.head = nn.Linear(8, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.5, 0.0]))
            self.head.weight.copy_(torch.arange(24, dtype=torch.float32).view(3, 8) / 10)
            self.head.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flat(self.conv(x)))


class Exploding(nn.Module):
    """Raises if it ever runs: proves the forward stops after the target layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the layers after the target ran")


def all_hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in module.modules())


@pytest.fixture(scope="module")
def lenet() -> nn.Module:
    torch.manual_seed(0)
    model = LeNet().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("fc3:7", TargetSpec("fc3", 7, 7), "fc3:7"),
        ("fc3:0-9", TargetSpec("fc3", 0, 9), "fc3:0-9"),
        ("conv1:3", TargetSpec("conv1", 3, 3), "conv1:3"),
        ("conv1:3@12,4", TargetSpec("conv1", 3, 3, (12, 4)), "conv1:3@12,4"),
        ("conv2:0-3@1,2", TargetSpec("conv2", 0, 3, (1, 2)), "conv2:0-3@1,2"),
        ("layer1.0.conv1:5", TargetSpec("layer1.0.conv1", 5, 5), "layer1.0.conv1:5"),
        (":4", TargetSpec("", 4, 4), "output:4"),
        ("output:2-3", TargetSpec("", 2, 3), "output:2-3"),
    ],
)
def test_parse_target(text: str, expected: TargetSpec, canonical: str) -> None:
    spec = parse_target(text)
    assert spec == expected
    assert str(spec) == canonical
    assert parse_target(canonical) == expected


@given(
    layer=st.from_regex(r"[a-z_][a-z0-9_]{0,6}(\.[0-9a-z_]{1,4}){0,3}", fullmatch=True),
    first=st.integers(0, 5000),
    extra=st.integers(0, 50),
    position=st.none() | st.tuples(st.integers(0, 300), st.integers(0, 300)),
)
def test_parse_target_round_trips(
    layer: str, first: int, extra: int, position: tuple[int, int] | None
) -> None:
    spec = TargetSpec("" if layer == "output" else layer, first, first + extra, position)
    assert parse_target(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fc3", "A target is LAYER:UNIT, such as fc3:7 or conv1:3@12,12; got 'fc3'."),
        (
            "fc3:x",
            "The unit in 'fc3:x' must be K, A-B, C@Y,X or A-B@Y,X with whole numbers, such as 7, 0-9 or 3@12,12.",
        ),
        (
            "fc3:-1",
            "The unit in 'fc3:-1' must be K, A-B, C@Y,X or A-B@Y,X with whole numbers, such as 7, 0-9 or 3@12,12.",
        ),
        ("fc3:5-2", "The unit range in 'fc3:5-2' runs backwards; write it as 2-5."),
    ],
)
def test_parse_target_errors(text: str, message: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_target(text)
    assert str(info.value) == message


def test_analytic_values_and_gradients() -> None:
    model = Tiny().eval()
    x = torch.randn(2, 1, 2, 2, requires_grad=True)
    # conv channel 0 at (1, 0): 2*x + 0.5
    value = Target(model, "conv:0@1,0", 2)(x)
    torch.testing.assert_close(value, 2 * x[:, 0, 1, 0] + 0.5)
    (grad,) = torch.autograd.grad(value.sum(), x)
    expected = torch.zeros_like(x)
    expected[:, 0, 1, 0] = 2.0
    torch.testing.assert_close(grad, expected)
    # conv channel 1, mean over positions: -mean(x)
    torch.testing.assert_close(Target(model, "conv:1", 2)(x), -x.mean(dim=(1, 2, 3)))
    # output unit 2: w2 . flatten(conv(x)) + b2
    conv = torch.cat([2 * x + 0.5, -x], dim=1).flatten(1)
    w = torch.arange(24, dtype=torch.float32).view(3, 8) / 10
    torch.testing.assert_close(Target(model, "output:2", 2)(x), conv @ w[2] + 3.0)
    torch.testing.assert_close(Target(model, "head:2", 2)(x), conv @ w[2] + 3.0)


def test_range_lays_the_chains_out_in_grid_order(lenet: nn.Module) -> None:
    target = Target(lenet, "fc3:0-9", 20)
    # One column per unit, the rows in turn: chain r * 10 + c targets unit c.
    assert target.units_per_chain == [k % 10 for k in range(20)]
    x = torch.randn(20, 1, 28, 28)
    logits = lenet(x)
    torch.testing.assert_close(target(x), logits[torch.arange(20), torch.arange(20) % 10])
    assert Target(lenet, "conv2:4-6", 3).units_per_chain == [4, 5, 6]
    with pytest.raises(TargetError) as info:
        Target(lenet, "fc3:0-9", 15)
    assert str(info.value) == (
        "15 chains cannot be split evenly over the 10 units 0-9; use a multiple of 10 chains."
    )
    assert info.value.field == "chains"
    with pytest.raises(TargetError) as info:
        Target(lenet, "fc3:1", 0)
    assert str(info.value) == "The number of chains must be at least 1, got 0."


def test_a_unit_list_gives_the_string_forms_activations(lenet: nn.Module) -> None:
    x = torch.randn(6, 1, 28, 28)
    for text, layer in (("fc3:2-4", "fc3"), ("conv2:1-3@2,1", "conv2"), ("output:0-2", "output")):
        spec = parse_target(text)
        units = spec.units * 2  # the grid the string lays out: 2 rows of its units
        listed = Target(lenet, ChainTargets.on_layer(layer, units, spec.position))
        parsed = Target(lenet, text, 6)
        assert listed.units_per_chain == parsed.units_per_chain == units
        torch.testing.assert_close(listed(x), parsed(x), rtol=0, atol=0)
    assert chain_targets(parse_target("attn[1]:3-4@0"), 4) == ChainTargets(
        "attn", (3, 4, 3, 4), (0,), (1,)
    )


def test_a_grid_of_repeated_and_unsorted_units(lenet: nn.Module) -> None:
    units = [7, 2, 7, 9, 2, 2]
    target = Target(lenet, ChainTargets.on_layer("fc3", units), 6)
    x = torch.randn(6, 1, 28, 28, requires_grad=True)
    value = target(x)
    logits = lenet(x)
    torch.testing.assert_close(value, logits[torch.arange(6), torch.tensor(units)])
    # Each chain's gradient is its own unit's, whatever the order: no permutation anywhere.
    (grad,) = torch.autograd.grad(value.sum(), x)
    for chain, unit in enumerate(units):
        xi = x[chain : chain + 1].detach().requires_grad_(True)
        (own,) = torch.autograd.grad(lenet(xi)[0, unit], xi)
        torch.testing.assert_close(grad[chain : chain + 1], own)
    on_conv = Target(lenet, ChainTargets.on_layer("conv2", [5, 0, 5], (3, 1)))
    out = lenet.conv2(lenet.pool1(lenet.relu1(lenet.conv1(x[:3]))))
    torch.testing.assert_close(on_conv(x[:3]), out[torch.arange(3), torch.tensor([5, 0, 5]), 3, 1])
    with pytest.raises(TargetError) as info:
        Target(lenet, ChainTargets.on_layer("fc3", [3, 10, 1]), input_shape=(1, 28, 28))
    assert str(info.value) == "Unit 10 is out of range for fc3 (units 0-9)."
    with pytest.raises(TargetError) as info:
        Target(lenet, ChainTargets.on_layer("fc3", units), 4)
    assert str(info.value) == "The target names the units of 6 chains, not 4."
    with pytest.raises(TargetError) as info:
        ChainTargets.on_layer("fc3", [])
    assert str(info.value) == "The number of chains must be at least 1, got 0."
    with pytest.raises(TargetError) as info:
        ChainTargets.on_layer("fc3", [1, -2])
    assert str(info.value) == "A unit is a whole number >= 0, got -2."
    with pytest.raises(TargetError) as info:
        Target(lenet, "fc3:1")
    assert str(info.value) == "A target string needs the number of chains."


def test_chains_must_match_batch(lenet: nn.Module) -> None:
    with pytest.raises(TargetError) as info:
        Target(lenet, "fc3:1", 4)(torch.zeros(3, 1, 28, 28))
    assert str(info.value) == "The target was set up for 4 chains but got a batch of 3."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fc9:1", f"No layer named 'fc9'; the layers are: {LENET_LAYERS}."),
        ("fc3:10", "Unit 10 is out of range for fc3 (units 0-9)."),
        ("output:12", "Unit 12 is out of range for the output (units 0-9)."),
        ("conv1:6", "Channel 6 is out of range for conv1 (channels 0-5)."),
        ("conv1:2@24,0", "Position 24,0 is out of range for conv1 (rows 0-23, columns 0-23)."),
        ("fc2:3@1,1", "fc2 has a 2-D output with 84 units, so its unit takes no @Y,X position."),
    ],
)
def test_target_errors(lenet: nn.Module, text: str, message: str) -> None:
    # With input_shape the check happens at construction; without it, at the first call.
    with pytest.raises(TargetError) as info:
        Target(lenet, text, 1, input_shape=(1, 28, 28))
    assert str(info.value) == message
    if not text.startswith("fc9"):
        target = Target(lenet, text, 1)
        with pytest.raises(TargetError) as info:
            target(torch.zeros(1, 1, 28, 28))
        assert str(info.value) == message
    assert all_hooks(lenet) == 0


def test_layer_with_other_rank_is_refused() -> None:
    model = nn.Sequential(nn.Flatten(0), nn.Identity())  # [N,1,2,2] -> 1-D
    with pytest.raises(TargetError) as info:
        Target(model, "1:0", 1)(torch.zeros(1, 1, 2, 2))
    assert str(info.value) == (
        "Layer '1' gives one number per image (output shape [4]), so it has no units; target a "
        "layer whose output per image is [K], [T, D] or [C, H, W], as ldam inspect lists them."
    )


def test_hooks_removed_after_run_and_after_error(lenet: nn.Module) -> None:
    target = Target(lenet, "conv2:3", 2)
    target(torch.randn(2, 1, 28, 28))
    assert all_hooks(lenet) == 0
    with pytest.raises(RuntimeError):
        target(torch.randn(2, 3, 28, 28))  # wrong channel count: conv1 raises inside the forward
    assert lenet.conv2._forward_hooks == {}
    assert all_hooks(lenet) == 0
    list_layers(lenet, (1, 28, 28))
    assert all_hooks(lenet) == 0
    with pytest.raises(TargetError):
        list_layers(lenet, (1, 5, 5))
    assert all_hooks(lenet) == 0


def test_forward_stops_after_target_layer() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), Exploding())
    value = Target(model, "0:1@0,0", 3)(torch.ones(3, 1, 4, 4))
    conv = model[0]
    expected = conv.weight[1].sum() + conv.bias[1]
    torch.testing.assert_close(value, expected.expand(3))


def test_chunked_fixed_batch_equals_one_batch(lenet: nn.Module) -> None:
    x = torch.randn(7, 1, 28, 28, requires_grad=True)
    whole = Target(lenet, "fc3:2", 7)(x)
    chunked = Target(lenet, "fc3:2", 7, batch_size=3)(x)
    torch.testing.assert_close(chunked, whole)
    (grad,) = torch.autograd.grad(chunked.sum(), x)
    (grad_whole,) = torch.autograd.grad(whole.sum(), x)
    torch.testing.assert_close(grad, grad_whole)


def test_list_layers_lenet(lenet: nn.Module) -> None:
    layers = list_layers(lenet, (1, 28, 28))
    assert [layer.name for layer in layers] == [*LENET_LAYERS.split(", ")[:-1], ""]
    table = {layer.name: layer for layer in layers}
    assert table["conv1"] == LayerInfo("conv1", (6, 24, 24), 6, "channels")
    assert table["pool2"] == LayerInfo("pool2", (16, 4, 4), 16, "channels")
    assert table["flatten"] == LayerInfo("flatten", (256,), 256, "vector")
    assert table["fc2"] == LayerInfo("fc2", (84,), 84, "vector")
    assert table[""] == LayerInfo("", (10,), 10, "vector")


def test_torchscript_allows_output_targets_only(lenet: nn.Module) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        scripted = torch.jit.trace(lenet, torch.zeros(1, 1, 28, 28))
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(Target(scripted, "output:3", 2)(x), lenet(x)[:, 3])
    with pytest.raises(TargetError) as info:
        Target(scripted, "conv1:0", 2)
    assert str(info.value) == (
        "A TorchScript model allows only output targets (such as output:7); export it with "
        "torch.export (.pt2) to target inner layers."
    )
    assert list_layers(scripted, (1, 28, 28)) == [LayerInfo("", (10,), 10, "vector")]


# ----------------------------------------------------------------------------- flat graph = hooks


def _activation_and_gradient(target: Target, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    activation = target(x)
    (grad,) = torch.autograd.grad(activation.sum(), x)
    return activation.detach(), grad


@pytest.mark.parametrize(
    "arch, shape, specs",
    [
        (
            "lenet",
            (1, 28, 28),
            ["conv1:2", "relu1:5@3,4", "pool2:7", "fc1:0-3", "fc3:0-9", "output:4"],
        ),
        (
            "resnet18",
            (3, 32, 32),
            # a stem conv, a ReLU called twice per block (read at its first call), a whole
            # block, a stage, the shortcut, a position, the logits
            [
                "conv1:3",
                "layer1.0.relu:7",
                "layer1.0:2",
                "layer2:5",
                "layer3.0.downsample:9@1,1",
                "layer4.1.bn2:11",
                "fc:0-3",
            ],
        ),
    ],
)
def test_the_flat_graph_path_gives_the_hook_paths_values_and_gradients(
    tmp_path: Path, arch: str, shape: tuple[int, int, int], specs: list[str]
) -> None:
    from ldam.models.loading import load_checkpoint
    from ldam.models.saving import export_checkpoint
    from ldam.sampling import graph

    torch.manual_seed(0)
    if arch == "lenet":
        model = LeNet().eval()
    else:
        torchvision = pytest.importorskip("torchvision")
        model = torchvision.models.resnet18(weights=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    loaded = load_checkpoint(export_checkpoint(model, tmp_path / f"{arch}.pt2", shape))
    assert graph.is_flat_export(loaded.module)
    # The old path: the same program unflattened into modules, read with hooks.
    program = torch.export.load(tmp_path / f"{arch}.pt2")
    unflat = torch.export.unflatten(program)
    x = torch.randn(4 if arch == "resnet18" else 20, *shape)
    for spec in specs:
        chains = x.shape[0]
        flat = Target(loaded.module, spec, chains)
        assert flat.cut is not None and flat.layer is None
        eager = Target(model, spec, chains)
        hooked = Target(unflat, spec, chains)
        assert eager.cut is None and hooked.cut is None
        a_flat, g_flat = _activation_and_gradient(flat, x)
        for other in (eager, hooked):
            a, g = _activation_and_gradient(other, x)
            torch.testing.assert_close(a_flat, a, rtol=1e-5, atol=1e-5, msg=spec)
            torch.testing.assert_close(g_flat, g, rtol=1e-4, atol=1e-6, msg=spec)
        assert float(g_flat.abs().sum()) > 0, spec


def test_the_cut_graph_runs_nothing_above_the_target(tmp_path: Path) -> None:
    from ldam.models.loading import load_checkpoint
    from ldam.models.saving import export_checkpoint
    from ldam.sampling import graph

    torch.manual_seed(0)
    loaded = load_checkpoint(export_checkpoint(LeNet().eval(), tmp_path / "l.pt2", (1, 28, 28)))
    cut = Target(loaded.module, "conv2:1", 2).cut
    assert isinstance(cut, torch.fx.GraphModule)
    ops = [str(n.target) for n in cut.graph.nodes if n.op == "call_function"]
    assert any("conv2d" in op for op in ops)
    assert not any("linear" in op or "addmm" in op for op in ops), ops
    # The layers are the same as the eager model's, in the order their outputs are computed.
    assert list(graph.regions(loaded.module)) == [n for n, _ in LeNet().named_modules() if n]


def test_unknown_layer_of_an_export_lists_the_layers(tmp_path: Path) -> None:
    from ldam.models.loading import load_checkpoint
    from ldam.models.saving import export_checkpoint

    loaded = load_checkpoint(export_checkpoint(LeNet().eval(), tmp_path / "l.pt2", (1, 28, 28)))
    with pytest.raises(TargetError) as info:
        Target(loaded.module, "fc9:1", 2)
    assert str(info.value) == f"No layer named 'fc9'; the layers are: {LENET_LAYERS}."
    assert info.value.field == "layer"


def test_the_flat_graph_path_gives_the_same_samples_as_the_hook_path(tmp_path: Path) -> None:
    # The whole sampler on the two paths of one checkpoint: same seed, same chains after 30
    # steps of Langevin dynamics at T > 0.
    from ldam.models.loading import load_checkpoint
    from ldam.models.saving import export_checkpoint
    from ldam.sampling.energy import ActivationTerm, L2Term
    from ldam.sampling.sampler import Sampler, SamplerConfig

    torch.manual_seed(0)
    path = export_checkpoint(LeNet().eval(), tmp_path / "l.pt2", (1, 28, 28))
    flat = load_checkpoint(path).module
    unflat = torch.export.unflatten(torch.export.load(path))
    finals = []
    for module in (flat, unflat):
        target = Target(module, "conv2:0-3", 8)
        config = SamplerConfig(chains=8, temperature=0.05, step_size=0.05, seed=3, window=10)
        sampler = Sampler([ActivationTerm(target), L2Term()], (1, 28, 28), config)
        for _ in range(30):
            sampler.step()
        finals.append((sampler.x.clone(), sampler.window_mean().clone()))
    assert (Target(flat, "conv2:0-3", 8).cut is not None) and Target(
        unflat, "conv2:0", 8
    ).cut is None
    torch.testing.assert_close(finals[0][0], finals[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(finals[0][1], finals[1][1], rtol=1e-4, atol=1e-5)
    assert float((finals[0][0] - finals[0][0].mean()).abs().max()) > 0.1  # the chains moved


# --------------------------------------------------------------------------- tokens, channels last,
# elements of tuple and dict outputs


class Tokens(nn.Module):
    """x [N, 1, 4, 4] -> 4 tokens (the image rows) of 4 pixels -> linear to D = 3 channels:
    tokens [N, T=4, D=3], `mix.weight` W [3, 4], bias b. Channel d of token t is W[d] . row_t + b[d]."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(4, 3)
        with torch.no_grad():
            self.mix.weight.copy_(
                torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, 0.0, 1.0], [3.0, 0.0, -1.0, 2.0]])
            )
            self.mix.bias.copy_(torch.tensor([0.5, -1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x.reshape(x.shape[0], 4, 4))


class ChannelsLast(nn.Module):
    """x [N, 1, 3, 5] -> conv to 2 channels -> permute to [N, H, W, C] -> linear to 4 channels,
    so `mlp` outputs [N, 3, 5, 4] with the channels last, the way a Swin or ConvNeXt block does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        self.mlp = nn.Linear(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.conv(x).permute(0, 2, 3, 1))


class Pair(nn.Module):
    """Returns a tuple (conv, its negative) and, as a network, a dict {"logits", "features"}."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        self.head = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.conv(x)
        return {"logits": self.head(features.flatten(1)), "features": features}


class Split(nn.Module):
    """An inner layer that returns a tuple: (x * 2, x * 3)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x * 3


class UsesSplit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.split = Split()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double, triple = self.split(self.conv(x))
        return double - triple


def frozen_eval(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def exported(
    module: nn.Module, tmp_path: Path, shape: tuple[int, int, int], name: str
) -> nn.Module:
    from ldam.models.loading import load_checkpoint
    from ldam.models.saving import export_checkpoint

    return load_checkpoint(export_checkpoint(module, tmp_path / f"{name}.pt2", shape)).module


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        (
            "blocks.5.mlp.fc1:7@0",
            TargetSpec("blocks.5.mlp.fc1", 7, 7, (0,)),
            "blocks.5.mlp.fc1:7@0",
        ),
        ("blocks.5.mlp.fc1:0-3@196", TargetSpec("blocks.5.mlp.fc1", 0, 3, (196,)), None),
        ("attn[0]:5", TargetSpec("attn", 5, 5, None, (0,)), None),
        ("output[logits]:3", TargetSpec("", 3, 3, None, ("logits",)), None),
        ("[logits]:3", TargetSpec("", 3, 3, None, ("logits",)), "output[logits]:3"),
        ("head[1][aux_0]:2@1,2", TargetSpec("head", 2, 2, (1, 2), (1, "aux_0")), None),
    ],
)
def test_parse_token_positions_and_elements(
    text: str, expected: TargetSpec, canonical: str | None
) -> None:
    spec = parse_target(text)
    assert spec == expected
    assert str(spec) == (canonical or text)
    assert parse_target(str(spec)) == expected


def test_parse_malformed_element() -> None:
    with pytest.raises(TargetError) as info:
        parse_target("attn[0:5")
    assert str(info.value) == (
        "The layer 'attn[0' must be a dotted name with optional [element] parts, such as "
        "attn[0] or output[logits]."
    )


@pytest.mark.parametrize("path", ["eager", "export"])
def test_token_channels_are_the_mean_over_tokens_or_one_token(path: str, tmp_path: Path) -> None:
    model = frozen_eval(Tokens())
    if path == "export":
        model = exported(model, tmp_path, (1, 4, 4), "tokens")
    w, b = Tokens().mix.weight, Tokens().mix.bias
    x = torch.randn(3, 1, 4, 4, requires_grad=True)
    rows = x.detach().reshape(3, 4, 4)
    mean = Target(model, "mix:2", 3)(x)
    torch.testing.assert_close(mean, (rows @ w[2]).mean(1) + b[2])
    (grad,) = torch.autograd.grad(mean.sum(), x)
    torch.testing.assert_close(grad, w[2].repeat(4).view(1, 1, 4, 4).expand(3, -1, -1, -1) / 4)
    one = Target(model, "mix:0@3", 3)(x)
    torch.testing.assert_close(one, rows[:, 3] @ w[0] + b[0])
    (grad,) = torch.autograd.grad(one.sum(), x)
    expected = torch.zeros(3, 1, 4, 4)
    expected[:, 0, 3] = w[0]
    torch.testing.assert_close(grad, expected)
    # A range over token channels, in grid order: chains 0 and 2 on channel 0, 1 and 3 on 1.
    x4 = torch.randn(4, 1, 4, 4)
    ranged = Target(model, "mix:0-1@1", 4)(x4)
    rows4 = x4.reshape(4, 4, 4)
    torch.testing.assert_close(
        ranged, torch.stack([rows4[i, 1] @ w[i % 2] + b[i % 2] for i in range(4)])
    )
    assert list_layers(model, (1, 4, 4))[0] == LayerInfo("mix", (4, 3), 3, "tokens")


@pytest.mark.parametrize(("spec", "tokens"), [("mix:1", [0, 1, 2, 3]), ("mix:1@2", [2])])
def test_zero_temperature_token_optimum_is_the_gradient_over_lambda(
    spec: str, tokens: list[int]
) -> None:
    """E(x) = f(x) - lambda/2 |x|^2 with f linear has its maximum at grad f / lambda: for the
    mean over 4 tokens, W[d] / (4 lambda) in every row; for one token, W[d] / lambda in its row."""
    from ldam.sampling.energy import ActivationTerm, L2Term
    from ldam.sampling.sampler import Sampler, SamplerConfig

    lam = 0.5
    model = frozen_eval(Tokens())
    w = model.mix.weight[1]
    config = SamplerConfig(
        chains=2, temperature=0.0, step_size=0.5, l2_weight=lam, seed=0, window=1
    )
    sampler = Sampler([ActivationTerm(Target(model, spec, 2)), L2Term()], (1, 4, 4), config)
    for _ in range(200):
        sampler.step()
    expected = torch.zeros(4, 4)
    for t in tokens:
        expected[t] = w / (len(tokens) * lam)
    for chain in range(2):
        torch.testing.assert_close(sampler.x[chain, 0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", ["eager", "export"])
def test_channels_last_layers_are_read_along_the_last_axis(path: str, tmp_path: Path) -> None:
    model = frozen_eval(ChannelsLast())
    eager = model
    if path == "export":
        model = exported(model, tmp_path, (1, 3, 5), "nhwc")
    x = torch.randn(2, 1, 3, 5)
    with torch.no_grad():
        nhwc = eager.mlp(eager.conv(x).permute(0, 2, 3, 1))  # [2, 3, 5, 4]
    torch.testing.assert_close(Target(model, "mlp:3", 2)(x), nhwc[..., 3].mean(dim=(1, 2)))
    torch.testing.assert_close(Target(model, "mlp:1@2,4", 2)(x), nhwc[:, 2, 4, 1])
    table = {info.name: info for info in list_layers(model, (1, 3, 5))}
    assert table["conv"] == LayerInfo("conv", (2, 3, 5), 2, "channels")
    assert table["mlp"] == LayerInfo("mlp", (3, 5, 4), 4, "channels_last")
    with pytest.raises(TargetError) as info:
        Target(model, "mlp:4", 2, input_shape=(1, 3, 5))
    assert str(info.value) == (
        "Channel 4 is out of range for mlp, which outputs channels last [3, 5, 4] "
        "(rows, columns, channels) (channels 0-3)."
    )
    with pytest.raises(TargetError) as info:
        Target(model, "mlp:0@3,0", 2, input_shape=(1, 3, 5))
    assert str(info.value) == "Position 3,0 is out of range for mlp (rows 0-2, columns 0-4)."


def test_a_stated_layout_overrides_what_the_model_shows(tmp_path: Path) -> None:
    # The permute is a plain function in the eager module: its type cannot tell. Stating the
    # layout reads the channels last; an export's graph shows it by itself.
    class Permuted(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 2, 3, 1) * 2

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, kernel_size=1)
            self.perm = Permuted()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.perm(self.conv(x))

    model = frozen_eval(Net())
    x = torch.randn(2, 1, 4, 6)
    with torch.no_grad():
        nhwc = model(x)
    eager_default = {i.name: i for i in list_layers(model, (1, 4, 6))}["perm"]
    assert eager_default == LayerInfo("perm", (4, 6, 3), 4, "channels")
    stated = {i.name: i for i in list_layers(model, (1, 4, 6), layout="channels-last")}["perm"]
    assert stated == LayerInfo("perm", (4, 6, 3), 3, "channels_last")
    torch.testing.assert_close(
        Target(model, "perm:2", 2, layout="channels-last")(x), nhwc[..., 2].mean(dim=(1, 2))
    )
    flat = exported(model, tmp_path, (1, 4, 6), "perm")
    assert {i.name: i for i in list_layers(flat, (1, 4, 6))}["perm"] == stated
    with pytest.raises(TargetError) as info:
        Target(model, "perm:2", 2, layout="nhwc")
    assert str(info.value) == (
        "The layout must be one of auto, channels-first, channels-last, got 'nhwc'."
    )


@pytest.mark.parametrize("path", ["eager", "export"])
def test_elements_of_dict_and_tuple_outputs(path: str, tmp_path: Path) -> None:
    model = frozen_eval(Pair())
    eager = model
    if path == "export":
        model = exported(model, tmp_path, (1, 4, 4), "pair")
    x = torch.randn(2, 1, 4, 4)
    with torch.no_grad():
        out = eager(x)
    torch.testing.assert_close(Target(model, "output[logits]:2", 2)(x), out["logits"][:, 2])
    torch.testing.assert_close(
        Target(model, "output[features]:1@3,0", 2)(x), out["features"][:, 1, 3, 0]
    )
    names = [(i.name, i.units, i.kind) for i in list_layers(model, (1, 4, 4))]
    assert names[-2:] == [("output[logits]", 3, "vector"), ("output[features]", 2, "channels")]
    with pytest.raises(TargetError) as info:
        Target(model, "output:2", 2, input_shape=(1, 4, 4))
    assert str(info.value) == (
        "output returns a dict with keys logits, features, not one tensor; name one, such as "
        "output[logits]:2."
    )
    with pytest.raises(TargetError) as info:
        Target(model, "output[aux]:2", 2, input_shape=(1, 4, 4))
    assert str(info.value) == "output returns a dict with keys logits, features; it has no [aux]."

    base = frozen_eval(UsesSplit())
    split = exported(base, tmp_path, (1, 4, 4), "split") if path == "export" else base
    x = torch.randn(2, 1, 4, 4)
    with torch.no_grad():
        c = base.conv(x)
    torch.testing.assert_close(Target(split, "split[1]:0@1,1", 2)(x), 3 * c[:, 0, 1, 1])
    torch.testing.assert_close(Target(split, "split[0]:1", 2)(x), 2 * c[:, 1].mean(dim=(1, 2)))
    listed = {i.name: i for i in list_layers(split, (1, 4, 4))}
    assert listed["split[0]"] == LayerInfo("split[0]", (2, 4, 4), 2, "channels")
    with pytest.raises(TargetError) as info:
        Target(split, "split:0", 2, input_shape=(1, 4, 4))
    if path == "eager":
        assert str(info.value) == (
            "split returns a tuple of 2 values, not one tensor; name one, such as split[0]:0."
        )
    else:
        assert str(info.value) == (
            "Layer 'split' returns 2 values, not one tensor; name one, such as split[0]:0."
        )


def test_a_layer_that_gives_one_number_per_image_is_refused_with_what_would_work() -> None:
    class Score(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1).sum(1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.score = Score()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.score(x)

    with pytest.raises(TargetError) as info:
        Target(Net(), "score:0", 2, input_shape=(1, 2, 2))
    assert str(info.value) == (
        "Layer 'score' gives one number per image (output shape [1]), so it has no units; "
        "target a layer whose output per image is [K], [T, D] or [C, H, W], as ldam inspect "
        "lists them."
    )
    assert list_layers(Net(), (1, 2, 2))[0] == LayerInfo("score", (), 0, "")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "mix:3",
            "Channel 3 is out of range for mix, which outputs 4 tokens of 3 channels (channels 0-2).",
        ),
        (
            "mix:0@4",
            "Token 4 is out of range for mix, which outputs 4 tokens of 3 channels (tokens 0-3).",
        ),
        (
            "mix:0@1,1",
            "mix outputs 4 tokens of 3 channels, so a position is one number (a token), such as "
            "0@0; got @1,1.",
        ),
    ],
)
def test_token_targets_out_of_range(spec: str, message: str) -> None:
    with pytest.raises(TargetError) as info:
        Target(frozen_eval(Tokens()), spec, 2, input_shape=(1, 4, 4))
    assert str(info.value) == message


def test_the_cut_graph_keeps_in_place_writes_into_what_it_reads(tmp_path: Path) -> None:
    """A mask filled in place (`mask[0:2] = 1`, as Swin builds its window mask) is a `fill_`
    node nothing uses: the cut keeps it, and an in-place op after the cut point does not count."""

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, kernel_size=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros(x.shape[-2], x.shape[-1])
            mask[0:2, :] = 1.0
            mask[:, 3] = 2.0
            return self.conv(x) * mask

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Masked()
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu_(self.bn(self.block(x))) + 1

    model = frozen_eval(Net())
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.tensor([0.3, -0.2]))
    flat = exported(model, tmp_path, (1, 4, 5), "masked")
    x = torch.randn(3, 1, 4, 5)
    with torch.no_grad():
        block = model.block(x)
        bn = model.bn(block)
    assert block[:, :, 2:, :3].abs().max() == 0  # the mask is really in the values
    torch.testing.assert_close(Target(flat, "block:1", 3)(x), block[:, 1].mean(dim=(1, 2)))
    torch.testing.assert_close(Target(flat, "block:0@0,4", 3)(x), block[:, 0, 0, 4])
    # The batch norm's output as the hook saw it: before the in-place ReLU after it.
    torch.testing.assert_close(Target(flat, "bn:0", 3)(x), bn[:, 0].mean(dim=(1, 2)))
    torch.testing.assert_close(Target(model, "bn:0", 3)(x), bn[:, 0].mean(dim=(1, 2)))
