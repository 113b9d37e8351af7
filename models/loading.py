"""Load any PyTorch checkpoint a user points at into an eval-mode module plus its metadata.

Formats are detected from the file's bytes, not its extension:
- `torch.export` programs (`.pt2`, the recommended format): `torch.export.load`, run through
  the program's flat graph (`ExportedProgram.module()`); any layer can be a target, because
  `ldam.sampling.targets` cuts the graph at the layer's node. ldam's own metadata rides along
  as the extra file `ldam.json` (input shape, normalization, class names, accuracy, training
  settings).
- TorchScript archives: runnable, but ScriptModules refuse forward hooks, so only the output
  can be a target.
- State dicts (`torch.save` `.pt`/`.pth`, read with `weights_only=True`, or `.safetensors`) plus
  `arch`: `lenet`, a torchvision model name, or `package.module:factory`.
- Full pickles run code when loaded: only with `trust=True` (`--trust-checkpoint`).

Every failure raises `CheckpointError` whose message is one sentence for the user.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ldam.errors import UserError, first_line
from ldam.metadata import MetadataOverride, check_class_names, override_normalization
from ldam.models.bundled import AVERAGED_CHECKPOINT, DEFAULT_CHECKPOINT
from ldam.models.lenet import INPUT_SHAPE as LENET_INPUT_SHAPE
from ldam.models.lenet import MNIST_MEAN, MNIST_STD, LeNet

METADATA_FILE = "ldam.json"
IMAGENET_NORMALIZATION = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
FORMATS = ("export", "torchscript", "state_dict", "pickle")
ARCH_HINT = "lenet, a torchvision model name such as resnet18, or package.module:factory"

Normalization = tuple[list[float], list[float]]


class CheckpointError(UserError):
    """A checkpoint cannot be loaded or used; the message is one sentence for the user."""


class FixedBatchWarning(UserWarning):
    """The export accepts only one batch size, so chains run in chunks of it (slower)."""


@dataclass
class LoadedModel:
    """A loaded network, in eval mode with `requires_grad` off on every parameter.

    `input_shape` is (C, H, W) of one image; `normalization` is (mean per channel, std per
    channel) applied outside the network, or None; `format` is one of `FORMATS`
    (`pickle`: a trusted full pickle of a module); `batch_size` is the only batch a
    fixed-batch export accepts (None: any batch).
    """

    module: nn.Module
    input_shape: tuple[int, int, int]
    normalization: Normalization | None
    class_names: list[str] | None
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = "export"
    batch_size: int | None = None
    path: str = ""


# ----------------------------------------------------------------------------- format detection


def detect_format(path: Path) -> str:
    """What kind of file `path` is: `export`, `torchscript`, `torch_save` or `safetensors`."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
        tails = {name.split("/", 1)[-1] for name in names}
        if "archive_format" in tails or any(
            t.startswith("models/") and t.endswith(".json") for t in tails
        ):
            return "export"
        if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
            return "torchscript"
        if "data.pkl" in tails:
            return "torch_save"
    else:
        with open(path, "rb") as file:
            head = file.read(16)
        # safetensors: an 8-byte little-endian header length, then a JSON header.
        if (
            len(head) > 9
            and head[8:9] == b"{"
            and 2 <= int.from_bytes(head[:8], "little") < 100_000_000
        ):
            return "safetensors"
        # The legacy (pre-zip) torch.save format is a pickle: protocol opcode 0x80, version <= 5.
        if len(head) > 2 and head[0] == 0x80 and head[1] <= 5:
            return "torch_save"
    raise CheckpointError(
        f"{path} is not a checkpoint ldam can read (a torch.export .pt2, TorchScript, "
        "a state dict .pt/.pth, or .safetensors)."
    )


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    # torch.export.load logs a full traceback before raising; the user gets our sentence only.
    loggers = [
        logging.getLogger(name)
        for name in ("torch.export", "torch._export", "torch._export.serde.serialize")
    ]
    before = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, was in zip(loggers, before, strict=True):
            logger.disabled = was


# ----------------------------------------------------------------------------- per-format readers


def _pickled_members(path: Path) -> list[str]:
    """Entries of a .pt2 archive whose config says they are stored as pickles.

    torch.export.load unpickles such entries with weights_only=False, so a crafted program can
    run code while loading; a program saved by torch.export.save never needs it for tensors.
    """
    found = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith("_config.json"):
                continue
            try:
                config = json.loads(archive.read(name))
            except (ValueError, UnicodeDecodeError):
                continue
            entries = config.get("config", {}) if isinstance(config, dict) else {}
            if isinstance(entries, dict) and any(
                isinstance(entry, dict) and entry.get("use_pickle") for entry in entries.values()
            ):
                found.append(name)
    return found


@contextlib.contextmanager
def _weights_only_everywhere(enabled: bool) -> Iterator[None]:
    # Belt and braces for code paths inside torch.export.load that call torch.load with
    # weights_only=False (legacy artifacts): torch honours this variable in every torch.load.
    name = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(name)
    if enabled:
        os.environ[name] = "1"
    try:
        yield
    finally:
        if enabled:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def _read_export(
    path: Path, trust: bool = False
) -> tuple[nn.Module, dict[str, Any], tuple[int, ...]]:
    extra = {METADATA_FILE: ""}
    if not trust:
        try:
            pickled = _pickled_members(path)
        except (zipfile.BadZipFile, OSError):
            pickled = []  # torch.export.load below gives the sentence for a damaged file
        if pickled:
            raise CheckpointError(
                f"{path} is a torch.export program with pickled entries, which can run code "
                "when loaded; use --trust-checkpoint only if you trust where it came from."
            )
    try:
        with (
            _quiet_torch_export(),
            _weights_only_everywhere(not trust),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            program = torch.export.load(path, extra_files=extra)
    except Exception as error:
        # torch's own message points at the log we silenced, so it is not repeated here.
        raise CheckpointError(
            f"{path} looks like a torch.export program but could not be read; it may be damaged "
            f"or saved by an incompatible torch version (this is torch {torch.__version__})."
        ) from error
    inputs = program.graph_signature.user_inputs
    if len(inputs) != 1:
        raise CheckpointError(
            f"{path} takes {len(inputs)} inputs; ldam needs a model with one image input."
        )
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == inputs[0])
    value = node.meta.get("val")
    # Static sizes are ints, dynamic ones SymInts; -1 marks a dynamic dimension.
    shape = tuple(s if isinstance(s, int) else -1 for s in value.shape) if value is not None else ()
    active = training_ops(program)
    if active:
        raise CheckpointError(
            f"{path} was exported in training mode ({' and '.join(active)} active); "
            "call model.eval() before torch.export.export."
        )
    # The flat graph, not `torch.export.unflatten`: it runs at 0.90-0.99 of the eager network
    # against 0.46-0.89, and `ldam.sampling.targets` reads any layer from it by cutting it.
    module = program.module()
    return module, _parse_metadata(extra[METADATA_FILE], path), shape


_BATCH_NORMS = (
    "aten.batch_norm.default",
    "aten.native_batch_norm.default",
    "aten._native_batch_norm_legit.default",
    "aten._native_batch_norm_legit_functional.default",
)


def training_ops(program: torch.export.ExportedProgram) -> list[str]:
    """What runs in training mode in `program`: ``batch norm``, ``dropout`` (sorted; empty in
    eval mode)."""
    # An export bakes in the train/eval mode and module.eval() cannot change it afterwards:
    # training batch norm would couple the chains through batch statistics (and update its
    # running stats every step), training dropout would add random noise to the energy.
    found = []
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name, args = str(node.target), node.args
        if name in _BATCH_NORMS and len(args) > 5 and args[5] is True:
            found.append("batch norm")
        elif "dropout" in name and len(args) > 2 and args[2] is True:
            found.append("dropout")
    return sorted(set(found))


def _read_torchscript(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as error:
        raise CheckpointError(
            f"{path} looks like TorchScript but could not be read ({first_line(error)})."
        ) from error
    return module, _parse_metadata(extra[METADATA_FILE], path)


def _read_torch_save(path: Path, trust: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only load failed" not in str(error).lower():
            raise CheckpointError(
                f"{path} could not be read as a PyTorch checkpoint ({first_line(error)})."
            ) from error
        if not trust:
            raise CheckpointError(
                f"{path} is a full pickle, which runs code when loaded; if you trust its source, "
                "load it with --trust-checkpoint."
            ) from None
    except Exception as error:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({first_line(error)})."
        ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"{path} could not be unpickled ({first_line(error)}).") from error


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(
            "Reading .safetensors needs the safetensors package (pip install 'ldam[safetensors]')."
        ) from None
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as file:
            header = file.metadata() or {}
            for key in file.keys():
                tensors[key] = file.get_tensor(key)
    except Exception as error:
        raise CheckpointError(
            f"{path} could not be read as safetensors ({first_line(error)})."
        ) from error
    return tensors, _parse_metadata(header.get(METADATA_FILE, ""), path)


def _parse_metadata(text: str | bytes, path: Path) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise CheckpointError(
            f"The metadata {METADATA_FILE} inside {path} is not valid JSON."
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"The metadata {METADATA_FILE} inside {path} must be a JSON object.")
    return data


# ----------------------------------------------------------------------------- architectures


@dataclass
class _Built:
    module: nn.Module
    input_shape: tuple[int, int, int] | None
    normalization: Normalization | None
    class_names: list[str] | None


def _build_arch(arch: str, state: dict[str, torch.Tensor]) -> _Built:
    if arch == "lenet":
        classes = int(state["fc3.weight"].shape[0]) if "fc3.weight" in state else 10
        names = [str(k) for k in range(10)] if classes == 10 else None
        return _Built(LeNet(classes), LENET_INPUT_SHAPE, ([MNIST_MEAN], [MNIST_STD]), names)
    if ":" in arch:
        return _Built(_build_factory(arch), None, None, None)
    try:
        import torchvision
    except ImportError:
        raise CheckpointError(
            f"Unknown architecture {arch!r} (torchvision is not installed, so its model names are "
            f"unavailable); use {ARCH_HINT}."
        ) from None
    if arch not in torchvision.models.list_models():
        raise CheckpointError(f"Unknown architecture {arch!r}; use {ARCH_HINT}.")
    module = torchvision.models.get_model(arch, weights=None)
    # A fine-tuned classifier has another class count: rebuild with the one the weights hold.
    shapes = {k: v.shape for k, v in module.state_dict().items() if v.ndim == 2}
    classifier = next(reversed(shapes), None)
    classes = None
    if classifier in state and state[classifier].shape[0] != shapes[classifier][0]:
        classes = int(state[classifier].shape[0])
        module = torchvision.models.get_model(arch, weights=None, num_classes=classes)
    names = None
    if classes is None:
        with contextlib.suppress(Exception):
            names = list(torchvision.models.get_model_weights(arch).DEFAULT.meta["categories"])
    return _Built(module, (3, 224, 224), IMAGENET_NORMALIZATION, names)


def _build_factory(arch: str) -> nn.Module:
    module_name, _, factory_name = arch.partition(":")
    try:
        python_module = importlib.import_module(module_name)
    except Exception as error:
        raise CheckpointError(
            f"Could not import {module_name!r} for the architecture {arch!r} ({first_line(error)})."
        ) from None
    factory = getattr(python_module, factory_name, None)
    if not callable(factory):
        raise CheckpointError(f"{module_name!r} has no callable named {factory_name!r}.")
    try:
        module = factory()
    except Exception as error:
        raise CheckpointError(f"Calling {arch} failed ({first_line(error)}).") from None
    if not isinstance(module, nn.Module):
        raise CheckpointError(f"{arch} returned a {type(module).__name__}, not a torch.nn.Module.")
    return module


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # Training checkpoints often nest the weights (Lightning: "state_dict"; others: "model").
    lightning = isinstance(obj, dict) and "pytorch-lightning_version" in obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise CheckpointError(f"{path} holds neither a state dict of tensors nor a module.")
    prefix = "module."  # DataParallel wrapping
    if all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix) :]: v for k, v in obj.items()}
    # A LightningModule's keys carry the attribute holding the network ("model.conv1.weight"
    # for `self.model = LeNet()`): when every key shares one first part, that part goes.
    heads = {k.split(".", 1)[0] for k in obj}
    if lightning and len(heads) == 1 and all("." in k for k in obj):
        cut = len(next(iter(heads))) + 1
        obj = {k[cut:]: v for k, v in obj.items()}
    return obj


def _load_weights(module: nn.Module, state: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = (
        [f"missing {k}" for k in missing]
        + [f"unexpected {k}" for k in unexpected]
        + [f"{k} is {list(state[k].shape)} not {list(expected[k].shape)}" for k in wrong]
    )
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise CheckpointError(
            f"The weights in {path} do not fit the architecture {arch!r}: {problems[0]}{more}."
        )
    module.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- the loader


def _shape_argument(input_shape: Any) -> tuple[int, int, int] | None:
    if input_shape is None:
        return None
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise CheckpointError(
            f"The input shape must be three positive integers C,H,W, got {input_shape!r}."
        )
    return shape  # type: ignore[return-value]


def _metadata_normalization(meta: dict[str, Any]) -> Normalization | None:
    norm = meta.get("normalization")
    if isinstance(norm, dict) and "mean" in norm and "std" in norm:
        return [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
    return None


def load_checkpoint(
    path: str | Path,
    arch: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    trust: bool = False,
    metadata: MetadataOverride | None = None,
) -> LoadedModel:
    """Load a checkpoint of any supported format into a `LoadedModel` (eval mode, frozen).

    `arch` names the network for a state dict (ignored for exports and TorchScript);
    `input_shape` (C, H, W) overrides or supplies what the metadata lacks; `trust` allows a
    full pickle; `metadata` (``--mean``, ``--std``, ``--class-names``) overrides or supplies
    the normalization and class names. Runs one forward pass on zeros to check the shape fits.
    Raises `CheckpointError` (one sentence) on every failure, a `UserError` naming the flag
    for a mean or std count that is neither 1 nor the channel count, or a class-name count
    other than the output's units; warns `FixedBatchWarning` once for an export that accepts
    only one batch size.
    """
    path = Path(path)
    shape_arg = _shape_argument(input_shape)
    if not path.exists():
        raise CheckpointError(f"No such checkpoint file: {path}.")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file.")
    kind = detect_format(path)

    meta: dict[str, Any] = {}
    program_shape: tuple[int, ...] = ()
    built: _Built | None = None
    if kind == "export":
        module, meta, program_shape = _read_export(path, trust)
        fmt = "export"
    elif kind == "torchscript":
        module, meta = _read_torchscript(path)
        fmt = "torchscript"
    else:
        if kind == "safetensors":
            obj, meta = _read_safetensors(path)
        else:
            obj = _read_torch_save(path, trust)
        if isinstance(obj, nn.Module):
            module, fmt = obj, "pickle"
        else:
            state = _unwrap_state_dict(obj, path)
            if arch is None:
                raise CheckpointError(
                    f"{path} holds weights but not the network; name the architecture with --arch "
                    f"({ARCH_HINT})."
                )
            built = _build_arch(arch, state)
            _load_weights(built.module, state, arch, path)
            module, fmt = built.module, "state_dict"

    batch_size = None
    if len(program_shape) == 4:
        batch_size = program_shape[0] if program_shape[0] > 0 else None
        static = program_shape[1:]
        if shape_arg is not None and all(s > 0 for s in static) and tuple(static) != shape_arg:
            raise CheckpointError(
                f"{path} was exported for input shape {_fmt(static)}, not {_fmt(shape_arg)}."
            )
    elif program_shape:
        raise CheckpointError(
            f"{path} takes input of shape {list(program_shape)}; ldam needs images [N, C, H, W]."
        )

    shape = shape_arg or _shape_argument(meta.get("input_shape"))
    if shape is None and len(program_shape) == 4 and all(s > 0 for s in program_shape[1:]):
        shape = tuple(program_shape[1:])  # type: ignore[assignment]
    if shape is None and built is not None:
        shape = built.input_shape
    if shape is None:
        raise CheckpointError(
            f"{path} does not say what input it takes; give its shape with --input-shape C,H,W."
        )

    normalization = _metadata_normalization(meta) or (built.normalization if built else None)
    class_names = meta.get("class_names") or (built.class_names if built else None)

    if fmt == "export":
        # The graph was traced in eval mode (checked above) and refuses .eval(); say so.
        for sub in module.modules():
            sub.training = False
    else:
        module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    out = _check_forward(module, shape, batch_size or 1, path)
    if metadata is not None:
        normalization = override_normalization(metadata, normalization, shape[0])
        if metadata.class_names is not None:
            # Only an output of one vector per image has units to count.
            single = isinstance(out, torch.Tensor) and out.dim() == 2
            check_class_names(metadata.class_names, int(out.shape[1]) if single else None)
            class_names = list(metadata.class_names)
    if batch_size is not None:
        warnings.warn(
            FixedBatchWarning(
                f"{path} was exported with a fixed batch of {batch_size}, so chains run in chunks "
                f"of {batch_size}; export with dynamic_shapes=({{0: torch.export.Dim('batch')}},) "
                "to run all chains in one batch."
            ),
            stacklevel=2,
        )
    return LoadedModel(
        module=module,
        input_shape=shape,
        normalization=normalization,
        class_names=list(class_names) if class_names else None,
        metadata=meta,
        format=fmt,
        batch_size=batch_size,
        path=str(path),
    )


def _fmt(shape: tuple[int, ...]) -> str:
    return ",".join(str(s) for s in shape)


def _check_forward(module: nn.Module, shape: tuple[int, int, int], batch: int, path: Path) -> Any:
    """The model's output on zeros [batch, *shape], or one sentence why there is none."""
    try:
        with torch.no_grad():
            out = module(torch.zeros(batch, *shape))
    except Exception as error:
        raise CheckpointError(
            f"The model in {path} does not accept input of shape {_fmt(shape)} ({first_line(error)})."
        ) from None
    leaves = torch.utils._pytree.tree_leaves(out)
    if not leaves or not all(isinstance(leaf, torch.Tensor) for leaf in leaves):
        # A tuple, list or dict of tensors is fine: a target names one element of it.
        raise CheckpointError(f"The model in {path} returns a {type(out).__name__}, not tensors.")
    return out


def load_default_pair() -> tuple[LoadedModel, LoadedModel]:
    """The bundled MNIST LeNets: (plain, parameter-averaged), both from committed `.pt2` files."""
    return load_checkpoint(DEFAULT_CHECKPOINT), load_checkpoint(AVERAGED_CHECKPOINT)
