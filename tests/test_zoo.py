"""The zoo: real torchvision and timm architectures, exported with `torch.export`.

Random weights and no downloads (`weights=None`, `pretrained=False`). Each network is exported
twice, with a dynamic batch and with a fixed batch of 1, and loaded back; then
- `ldam inspect` lists every layer with units, each with the shape, unit count and kind an
  independent reference gives (below), the same for both exports;
- one inner target of each kind the network has (a convolution channel, a vector unit, a token
  channel and the class token, a channels-last channel, a position) reads the value the eager
  network computes, the same through both exports, and rises at T = 0 over a few steps of the
  real sampler.

The reference layout comes from the eager network, not from the graph: each module's output is
recorded by a forward hook at two input sizes. The axes whose size follows the input are
positions (tokens, or rows and columns), the axis that stays is the channel axis: [T, D] with T
changing is tokens, [C, H, W] with H, W changing is channels first, [H, W, C] is channels last.

Inputs are as small as each network allows: 32x32 for the convolutional networks and Swin,
which downsample by 32; the ViTs run at their native 224x224 (197 tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import torchvision
from torch import Tensor, nn

from ldam.cli.main import main
from ldam.models.loading import (
    IMAGENET_NORMALIZATION,
    FixedBatchWarning,
    LoadedModel,
    load_checkpoint,
)
from ldam.models.saving import export_checkpoint
from ldam.sampling.energy import ActivationTerm, L2Term
from ldam.sampling.sampler import Sampler, SamplerConfig
from ldam.sampling.targets import LayerInfo, Target, list_layers
from ldam.wire.targets import parse_target

UNIT_KINDS = ("vector", "channels", "channels_last", "tokens")
STEPS = 3  # sampler steps per target; each must raise the activation
CHAINS = 2


def torchvision_model(name: str, **kwargs: Any) -> Callable[[int], nn.Module]:
    """A torchvision network by name; its input size is not part of its construction."""
    return lambda _size: torchvision.models.get_model(name, weights=None, **kwargs)


def timm_model(name: str, sized: bool = False, **kwargs: Any) -> Callable[[int], nn.Module]:
    """A timm network by name; `sized`: its position embeddings are built for `img_size`."""

    def build(size: int) -> nn.Module:
        extra = {"img_size": size} if sized else {}
        return timm.create_model(name, pretrained=False, **kwargs, **extra)

    return build


def torchvision_vit_tiny(size: int) -> nn.Module:
    # torchvision's own VisionTransformer class in the ViT-Ti/16 configuration (DeiT-tiny's):
    # the module tree and the 197 tokens of vit_b_16, at a sixteenth of its time. vit_b_16 itself
    # exports fine but takes 1.3 s per forward and backward of 2 chains at block 5 on this
    # CPU (ViT-Ti: 0.08 s) and writes 348 MB per export.
    return torchvision.models.VisionTransformer(
        image_size=size, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768
    )


@dataclass(frozen=True)
class Architecture:
    """One network of the zoo: `build(size)` makes it for `size` x `size` RGB input, `targets`
    are the inner targets it is sampled at (one of each kind its layers have, at least)."""

    name: str
    build: Callable[[int], nn.Module]
    size: int
    targets: tuple[str, ...]
    classes: int = 1000


ZOO = [
    Architecture(
        "torchvision-resnet18",
        torchvision_model("resnet18"),
        32,
        ("layer3.0.conv1:3", "layer2.0.conv1:5@1,2"),
    ),
    Architecture(
        "torchvision-mobilenet_v3_small",
        torchvision_model("mobilenet_v3_small"),
        32,
        ("features.4.block.0:5", "features.4.block.2.fc1:3", "classifier.0:3"),
    ),
    Architecture(
        "torchvision-efficientnet_b0",
        torchvision_model("efficientnet_b0"),
        32,
        ("features.3.0.block.0:5@2,3", "features.3.0.block.3:4", "classifier.1:3"),
    ),
    Architecture(
        "torchvision-convnext_tiny",
        torchvision_model("convnext_tiny"),
        32,
        (
            "features.1.0.block.0:3",  # the depthwise convolution, channels first
            "features.1.0.block.2:5",  # LayerNorm over [N, H, W, C]
            "features.1.0.block.3:7@2,3",  # Linear over [N, H, W, C], one position
            "classifier.2:3",
        ),
    ),
    Architecture(
        "torchvision-swin_t",
        torchvision_model("swin_t"),
        32,
        (
            "features.0.0:3",  # the patch convolution, channels first
            "features.1.0:5",  # a whole Swin block, [N, H, W, C]
            "features.3.0.mlp.0:7@1,2",
            "features.2:6",  # patch merging
            "flatten:5",
        ),
    ),
    Architecture(
        "torchvision-vit_ti_16",
        torchvision_vit_tiny,
        224,
        (
            "conv_proj:4",
            "encoder.layers.encoder_layer_5.mlp.0:7",
            "encoder.layers.encoder_layer_5.mlp.0:7@0",  # the class token
            "encoder.layers.encoder_layer_2.self_attention:11",
        ),
    ),
    Architecture(
        "timm-vit_tiny_patch16_224",
        timm_model("vit_tiny_patch16_224", sized=True),
        224,
        ("patch_embed.proj:4", "blocks.5.mlp.fc1:7", "blocks.5.mlp.fc1:7@0", "head_drop:5"),
    ),
    Architecture(
        "timm-deit_tiny_patch16_224",
        timm_model("deit_tiny_patch16_224", sized=True),
        224,
        (
            "patch_embed.proj:2@3,4",
            "blocks.3.attn.qkv:300-301",
            "blocks.3.norm1:2@0",
            "head_drop:5",
        ),
    ),
    Architecture(
        # convnext_atto is built with conv_mlp=True: LayerNorm2d and 1x1 convolutions, all
        # channels first (LayerNorm2d permutes to channels last and back inside itself).
        "timm-convnext_atto",
        timm_model("convnext_atto"),
        32,
        ("stages.0.blocks.0.norm:5", "stages.0.blocks.0.mlp.fc1:7@3,4", "head.flatten:5"),
    ),
    Architecture(
        # The same network with timm's default ConvNeXt block: the block permutes to channels
        # last in its own forward (no module does it), then LayerNorm and Linear layers.
        "timm-convnext_atto-channels_last",
        timm_model("convnext_atto", conv_mlp=False),
        32,
        (
            "stages.0.blocks.0.conv_dw:3",
            "stages.0.blocks.0.norm:5",
            "stages.0.blocks.0.mlp.fc1:7@3,4",
            "head.flatten:5",
        ),
    ),
    Architecture(
        "timm-efficientnet_b0",
        timm_model("efficientnet_b0"),
        32,
        ("blocks.2.0.conv_pw:5", "blocks.2.0.se.conv_reduce:2", "global_pool:5"),
    ),
    Architecture(
        "timm-regnetx_002",
        timm_model("regnetx_002"),
        32,
        ("s2.b1.conv2.conv:3", "s2.b1.conv3.conv:4@1,1", "head.global_pool:5"),
    ),
]


# ----------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class Reference:
    """What one layer outputs per image in the eager network: `shape` at the zoo's input size,
    the `kind` and `units` its layout gives ("" and 0 when it has no units, or cannot tell),
    whether the module returned its input tensor itself (`passthrough`: an Identity, an
    eval-mode Dropout, an in-place ReLU; such a layer may have no ops in an export), and
    whether what it returned is the network's output (`is_output`: a classifier head)."""

    shape: tuple[int, ...]
    kind: str
    units: int
    passthrough: bool
    is_output: bool


def first_outputs(module: nn.Module, size: int) -> dict[str, tuple[Any, bool]]:
    """Each module's output at its first call in one forward of a [1, 3, size, size] input,
    with whether it is the module's input itself."""
    found: dict[str, tuple[Any, bool]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if name not in found:
                found[name] = (output, bool(inputs) and output is inputs[0])

        return hook

    handles = [sub.register_forward_hook(record(name)) for name, sub in module.named_modules()]
    try:
        with torch.no_grad():
            found[""] = (module(torch.zeros(1, 3, size, size)), False)
    finally:
        for handle in handles:
            handle.remove()
    return found


def single_tensor(value: Any) -> Tensor | None:
    """`value` if a tensor, the one tensor in a tuple or list (MultiheadAttention returns
    (output, None); a flat export graph keeps only the tensor), else None."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)):
        tensors = [v for v in value if isinstance(v, Tensor)]
        return tensors[0] if len(tensors) == 1 else None
    return None


def layout(small: tuple[int, ...], large: tuple[int, ...]) -> tuple[str, int]:
    """(kind, units) of a per-image shape seen at two input sizes; ("", 0) if it has none."""
    if len(small) == 1:
        return "vector", small[0]
    if len(small) == 2 and small[0] != large[0] and small[1] == large[1]:
        return "tokens", small[1]
    if len(small) == 3:
        # A channel axis keeps its size; position axes follow the input (or are 1 at both).
        first = small[0] == large[0] and (small[1:] != large[1:] or small[1:] == (1, 1))
        last = small[2] == large[2] and (small[:2] != large[:2] or small[:2] == (1, 1))
        if first != last:
            return ("channels", small[0]) if first else ("channels_last", small[2])
    return "", 0


def reference_layers(arch: Architecture, module: nn.Module) -> dict[str, Reference]:
    """The reference of every layer of `module` (name "" = the output), from forwards at the
    zoo's input size and at another one (a second network for a ViT, whose position
    embeddings fix the size)."""
    other = arch.size // 2 if arch.size >= 224 else arch.size * 2
    resized = arch.build(other).eval() if arch.size >= 224 else module
    small, large = first_outputs(module, arch.size), first_outputs(resized, other)
    output = small[""][0]
    found = {}
    for name, (value, passthrough) in small.items():
        tensor, bigger = single_tensor(value), single_tensor(large[name][0])
        if tensor is None or bigger is None:
            continue
        shape = tuple(tensor.shape[1:])
        kind, units = layout(shape, tuple(bigger.shape[1:]))
        found[name] = Reference(shape, kind, units, passthrough, tensor is output)
    return found


class Captured(Exception):
    """Ends an eager forward once the target layer has run."""


def eager_activation(module: nn.Module, kind: str, target: Target, x: Tensor) -> Tensor:
    """Each chain's activation `[N]` read from the eager network by a hook, by the layout the
    reference gives (the check of how `Target` reads the exported graph)."""
    spec = target.spec
    box: list[Tensor | None] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        box.append(single_tensor(output))
        raise Captured  # before a later layer can write into the output in place

    handle = module.get_submodule(spec.layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            module(x)
    except Captured:
        pass
    finally:
        handle.remove()
    out = box[0]
    assert out is not None
    chain, unit = torch.arange(x.shape[0]), torch.tensor(target.units_per_chain)
    if kind == "vector":
        return out[chain, unit]
    # One unit per chain, over its positions: [N, T] or [N, H, W].
    picked = {
        "tokens": lambda: out[chain, :, unit],
        "channels": lambda: out[chain, unit],
        "channels_last": lambda: out[chain, :, :, unit],
    }[kind]()
    if spec.position is None:
        return picked.flatten(1).mean(1)
    return picked[(slice(None), *spec.position)]


# ----------------------------------------------------------------------------- the fixture


@dataclass
class Exported:
    """One zoo network: the eager module, both exports loaded, and the reference layers."""

    arch: Architecture
    eager: nn.Module
    dynamic: LoadedModel
    fixed: LoadedModel
    fixed_warning: str
    reference: dict[str, Reference]
    paths: dict[str, Path]


@pytest.fixture(scope="module", params=ZOO, ids=[arch.name for arch in ZOO])
def zoo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exported]:
    arch: Architecture = request.param
    torch.manual_seed(0)
    eager = arch.build(arch.size).eval()
    for parameter in eager.parameters():
        parameter.requires_grad_(False)
    shape = (3, arch.size, arch.size)
    mean, std = IMAGENET_NORMALIZATION
    metadata = {"normalization": {"mean": mean, "std": std}}
    folder = tmp_path_factory.mktemp(arch.name)
    paths = {
        "dynamic": export_checkpoint(
            eager, folder / "dynamic.pt2", shape, metadata, dynamic_batch=True
        ),
        "fixed": export_checkpoint(
            eager, folder / "fixed.pt2", shape, metadata, dynamic_batch=False
        ),
    }
    dynamic = load_checkpoint(paths["dynamic"])
    with pytest.warns(FixedBatchWarning) as warned:
        fixed = load_checkpoint(paths["fixed"])
    yield Exported(
        arch, eager, dynamic, fixed, str(warned[0].message), reference_layers(arch, eager), paths
    )
    for path in paths.values():
        path.unlink()  # the largest are 115 MB each


# ----------------------------------------------------------------------------- the tests


def test_both_exports_load_and_compute_the_eager_network(zoo: Exported) -> None:
    size = zoo.arch.size
    mean, std = IMAGENET_NORMALIZATION
    for loaded, batch in ((zoo.dynamic, None), (zoo.fixed, 1)):
        assert loaded.format == "export"
        assert loaded.batch_size == batch
        assert loaded.input_shape == (3, size, size)
        assert loaded.normalization == (mean, std)
    assert zoo.fixed_warning.startswith(
        f"{zoo.paths['fixed']} was exported with a fixed batch of 1, so chains run in chunks of 1;"
    )
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = zoo.eager(x)
        assert expected.shape == (3, zoo.arch.classes)
        torch.testing.assert_close(zoo.dynamic.module(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(zoo.fixed.module(x[:1]), expected[:1], rtol=1e-4, atol=1e-4)


def inspect_rows(path: Path, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str, int, str]]:
    """`ldam inspect PATH` run in this process: (layer, shape, units, kind) per printed layer."""
    assert main(["inspect", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["layer"])
    rows = []
    for line in lines[header + 1 :]:
        name, shape, *rest = line.split()
        units = next(int(word) for word in rest if word.isdigit())
        kind = next((word for word in rest if word in UNIT_KINDS), "")
        rows.append((name, shape, units, kind))
    return rows


def as_row(layer: LayerInfo) -> tuple[str, str, int, str]:
    return (layer.name or "output", "x".join(map(str, layer.shape)), layer.units, layer.kind)


def test_inspect_lists_every_layer_with_its_units(
    zoo: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    dynamic = list_layers(zoo.dynamic.module, zoo.dynamic.input_shape, zoo.dynamic.batch_size)
    fixed = list_layers(zoo.fixed.module, zoo.fixed.input_shape, zoo.fixed.batch_size)
    # The printed table is list_layers, and a fixed-batch export lists what a dynamic one does.
    assert inspect_rows(zoo.paths["dynamic"], capsys) == [as_row(layer) for layer in dynamic]
    assert [as_row(layer) for layer in fixed] == [as_row(layer) for layer in dynamic]

    reference = zoo.reference
    listed = {layer.name: layer for layer in dynamic}
    assert listed.pop("") == LayerInfo("", (zoo.arch.classes,), zoo.arch.classes, "vector")
    unknown = sorted(set(listed) - set(reference))
    assert not unknown, f"listed layers the network does not have: {unknown[:10]}"
    wrong = [
        f"{name}: {layer.shape} {layer.kind} {layer.units}, expected "
        f"{reference[name].shape} {reference[name].kind} {reference[name].units}"
        for name, layer in listed.items()
        if (layer.shape, layer.kind, layer.units)
        != (reference[name].shape, reference[name].kind, reference[name].units)
    ]
    assert not wrong, f"{len(wrong)} layers read wrongly: " + "; ".join(wrong[:10])
    # Every layer with units is listed, but one that hands back its input unchanged (it may
    # leave no op in the graph: an Identity, an eval-mode Dropout or StochasticDepth).
    missing = [
        name
        for name, ref in reference.items()
        if name and ref.units and not ref.passthrough and name not in listed
    ]
    assert not missing, f"{len(missing)} layers with units are not listed: {missing[:10]}"


def target_kind(zoo: Exported, spec: str) -> str:
    """The reference kind of a target's layer, with `@` for one position or token."""
    parsed = parse_target(spec)
    return zoo.reference[parsed.layer].kind + ("@" if parsed.position else "")


def test_the_targets_cover_every_kind_of_layer(zoo: Exported) -> None:
    present = {ref.kind for ref in zoo.reference.values() if ref.kind and not ref.is_output}
    covered = {target_kind(zoo, spec).rstrip("@") for spec in zoo.arch.targets}
    assert covered == present
    if "tokens" in present:  # a ViT: the class token too
        assert any(spec.endswith("@0") for spec in zoo.arch.targets)


def check_target(zoo: Exported, spec: str) -> str | None:
    """None if the target reads the eager network's value through both exports and rises at
    T = 0 over `STEPS` sampler steps; else what went wrong, in one line."""
    shape = zoo.dynamic.input_shape
    try:
        target = Target(zoo.dynamic.module, spec, CHAINS, input_shape=shape)
        chunked = Target(zoo.fixed.module, spec, CHAINS, batch_size=1, input_shape=shape)
    except Exception as error:  # collected per target, so one failure hides no other
        return f"{type(error).__name__}: {error}"
    x = torch.randn(CHAINS, *shape, generator=torch.Generator().manual_seed(2))
    x.requires_grad_(True)
    value = target(x)
    (grad,) = torch.autograd.grad(value.sum(), x)
    value = value.detach()
    expected = eager_activation(zoo.eager, target_kind(zoo, spec).rstrip("@"), target, x.detach())
    if not torch.allclose(value, expected, rtol=1e-3, atol=1e-4):
        return f"reads {value.tolist()}, the eager network {expected.tolist()}"
    chunked_value = chunked(x)
    (chunked_grad,) = torch.autograd.grad(chunked_value.sum(), x)
    if not torch.allclose(
        chunked_value.detach(), value, rtol=1e-4, atol=1e-5
    ) or not torch.allclose(chunked_grad, grad, rtol=1e-3, atol=1e-6):
        return "the fixed-batch export gives other values or gradients than the dynamic one"

    # Normalized gradients (Algorithm 1 line 6): a step moves each chain by the same RMS
    # whatever the scale of the layer's activations, so one step size fits every network.
    config = SamplerConfig(
        chains=CHAINS,
        temperature=0.0,
        step_size=0.02,
        l2_weight=0.01,
        normalize="all",
        window=1,
        burn_in=0,
        seed=3,
    )
    sampler = Sampler([ActivationTerm(target), L2Term()], shape, config)
    trace = [sampler.step().activation for _ in range(STEPS)]
    with torch.no_grad():
        trace.append(target(sampler.x))
    rises = torch.stack(trace).diff(dim=0)
    if not (rises > 0).all():
        return f"does not rise at every step: {torch.stack(trace).T.tolist()}"
    return None


def test_inner_targets_rise_at_zero_temperature(zoo: Exported) -> None:
    failed = {spec: check_target(zoo, spec) for spec in zoo.arch.targets}
    failed = {spec: why for spec, why in failed.items() if why is not None}
    assert not failed, "\n".join(f"{spec}: {why}" for spec, why in failed.items())


def test_the_eager_network_reads_its_layers_as_its_export_does(zoo: Exported) -> None:
    """A state-dict checkpoint runs eagerly, with no graph: its layers' kinds come from the
    modules (`_EagerAxes`). Every layer both list has the export's kind and units, and each
    target reads the export's value."""
    shape = zoo.dynamic.input_shape
    exported = {i.name: i for i in list_layers(zoo.dynamic.module, shape)}
    eager = {i.name: i for i in list_layers(zoo.eager, shape)}
    common = [name for name in exported if name in eager]
    # The export lists no module without ops (Identity, eval Dropout) and names an attention
    # that returns a tuple by its one used tensor: nearly all layers are in both.
    assert len(common) >= 0.9 * len(exported)
    differ = [
        (name, eager[name].kind, eager[name].units, exported[name].kind, exported[name].units)
        for name in common
        if (eager[name].kind, eager[name].units) != (exported[name].kind, exported[name].units)
    ]
    assert differ == []
    x = torch.randn(CHAINS, *shape, generator=torch.Generator().manual_seed(3))
    for text in zoo.arch.targets:
        if parse_target(text).layer not in eager:
            continue
        with torch.no_grad():
            torch.testing.assert_close(
                Target(zoo.eager, text, CHAINS)(x),
                Target(zoo.dynamic.module, text, CHAINS)(x),
                rtol=1e-4,
                atol=1e-4,
            )
