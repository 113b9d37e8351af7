"""The parameters the browser controls, and the one ``set`` message that changes them.

`SamplerParams` holds every field with its default and bounds; `SetMessage` is made from it
field by field (each optional, same bounds), so a bound is written once. The grid rule
(`grid_columns`, `grid_rows`) lives here too: the dashboard and `ldam sample --png` both use it.

No torch here: the web server validates with these models, the worker rebuilds from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from ldam.errors import UserError
from ldam.wire.limits import MAX_CHAINS, MAX_RANGE_UNITS, MAX_SWEEP_VALUES


def grid_columns(chains: int, units: int) -> int:
    """Columns of the paper's grid: one per target unit, else ceil(sqrt(chains)) for one unit
    (16 chains: 4 x 4; 20 chains: 5 columns, 4 rows)."""
    if units > 1:
        return units
    return max(1, math.ceil(math.sqrt(chains)))


def check_layer_and_units(
    units_by_layer: Mapping[str, int], layer: str, values: Mapping[str, int]
) -> None:
    """The one rule for a picked target: `layer` is one of the model's layers (name -> unit
    count) and each of `values` (``unit``, ``unit_end``) is below its unit count.

    Raises `UserError` naming the field at fault. The web server checks a change with it
    before the worker sees it; the worker checks every rebuild with it.
    """
    if layer not in units_by_layer:
        raise UserError(f"The model has no layer named {layer!r}.", "layer")
    units = units_by_layer[layer]
    for name, value in values.items():
        if value >= units:
            raise UserError(
                f"Layer {layer!r} has {units} units; {name} must be below {units}.", name
            )


def grid_rows(cells: int, columns: int) -> int:
    """Rows of a grid of `cells` images in `columns` columns (the last row may be short)."""
    return max(1, math.ceil(cells / columns))


# Strict: no lax coercion ("0.5" or true for a number, "yes" or 1 for a boolean, 2.0 for an
# integer). A JSON integer is still a valid float: JSON has no separate types for 1 and 1.0.
STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

Layout = Literal["chains", "range", "sweep"]
Show = Literal["sample", "average"]
# How frames show the chains (`ldam.sampling.images.VIEWS`): the paper's per-image symmetric
# scaling, or the input space (de-normalized and clipped to [0, 1]).
View = Literal["symmetric", "input"]
SweepParam = Literal["disc_weight", "temperature", "l2_weight", "step_size"]

# A layer name as `named_modules()` prints it (dotted identifiers and indices), with an
# optional element of a tuple or dict output in brackets (`attn[0]`, `output[logits]`).
_LAYER_PATTERN = r"^[A-Za-z0-9_.\-\[\]]{1,200}$"
# A checkpoint is a relative name inside the configured folder; `security.resolve_checkpoint`
# does the real confinement (no `..`, no symlinks out), this only keeps the text plain ("=" is
# in PyTorch Lightning's names, epoch=3-step=1200.ckpt).
_CHECKPOINT_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./=\-]{0,254}$"


def _no_parent(name: str) -> str:
    if ".." in name.split("/"):
        raise ValueError("a checkpoint name may not contain '..'")
    return name


CheckpointName = Annotated[str, Field(pattern=_CHECKPOINT_PATTERN), AfterValidator(_no_parent)]


class SamplerParams(BaseModel):
    """The full state the browser controls, with the paper's names and the UI's defaults.

    The server keeps one of these per worker and a version number that grows with each
    change; every frame says which version it was made with.
    """

    model_config = STRICT

    # Langevin dynamics (paper Algorithm 1): T, beta_t, gamma. The defaults are those of
    # `ldam sample` (`ldam.sampling.sampler.SamplerConfig`), so both show the same chains.
    temperature: float = Field(default=0.01, ge=0.0, le=100.0)
    step_size: float = Field(default=0.05, ge=1e-6, le=100.0)
    momentum: float = Field(default=0.0, ge=0.0, le=0.999)
    # Regularization weights lambda_i (paper section 4).
    l2_weight: float = Field(default=0.1, ge=0.0, le=100.0)
    disc_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    # Moving window of the sample average, in steps.
    window: int = Field(default=200, ge=1, le=1000)
    # Normalized gradients (Algorithm 1 line 6) are a display aid: off samples exactly.
    grad_norm: bool = False
    show: Show = "average"
    # A display choice only: switching it redraws the same chains.
    view: View = "symmetric"
    disc_training: bool = True
    paused: bool = False
    # What to sample and how the grid is laid out.
    layer: str = Field(default="", max_length=200, pattern=r"^[A-Za-z0-9_.\-\[\]]{0,200}$")
    unit: int = Field(default=0, ge=0, le=1_000_000)
    unit_end: int = Field(default=9, ge=0, le=1_000_000)
    layout: Layout = "range"
    # All chains of a panel; in the "range" layout rows = chains // units.
    chains: int = Field(default=20, ge=1, le=MAX_CHAINS)
    sweep_param: SweepParam = "disc_weight"
    sweep_values: list[Annotated[float, Field(ge=0.0, le=100.0)]] = Field(
        default_factory=lambda: [0.0, 0.2, 0.5, 0.8, 1.0], min_length=1, max_length=MAX_SWEEP_VALUES
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    checkpoint: CheckpointName | None = None
    compare: CheckpointName | None = None

    def grid(self) -> tuple[list[int], int]:
        """The unit of every chain (row-major over the grid) and the number of columns.

        "chains": `chains` chains on one unit in `grid_columns` columns; "range": units
        `unit`..`unit_end`, one column each, `chains` // columns rows; "sweep": the same
        columns, one row per value of `sweep_param`.
        """
        if self.layout == "chains":
            return [self.unit] * self.chains, grid_columns(self.chains, 1)
        first, last = sorted((self.unit, self.unit_end))
        units = list(range(first, min(last, first + MAX_RANGE_UNITS - 1) + 1))
        if self.layout == "range":
            rows = max(1, self.chains // len(units))
        else:
            rows = len(self.sweep_values)
        return units * rows, len(units)

    def sweep_rows(self) -> list[float] | None:
        """The value of `sweep_param` for each row in the sweep layout, else None."""
        return list(self.sweep_values) if self.layout == "sweep" else None


# Fields that change what is sampled: changing one rebuilds the chains in the worker.
STRUCTURAL_FIELDS = frozenset(
    {
        "layer",
        "unit",
        "unit_end",
        "layout",
        "chains",
        "sweep_param",
        "sweep_values",
        "seed",
        "checkpoint",
        "compare",
    }
)


class _SetBase(BaseModel):
    model_config = STRICT

    def changes(self) -> dict[str, Any]:
        """The fields the message actually sets; "" becomes None: for `checkpoint` the
        operator's checkpoint, for `compare` no compare view."""
        out = self.model_dump(exclude_none=True, exclude={"type"})
        for name in ("checkpoint", "compare"):
            if out.get(name) == "":
                out[name] = None
        return out


# Where a `set` message differs from the parameters it sets: a layer must be named (the
# parameters hold "" until the worker picks the last layer), and "" is a command for the
# checkpoints: back to the operator's checkpoint, or no compare view.
_SET_DIFFERENCES: dict[str, Any] = {
    "layer": Annotated[str, Field(pattern=_LAYER_PATTERN)],
    "checkpoint": CheckpointName | Literal[""],
    "compare": CheckpointName | Literal[""],
}


def _optional(name: str) -> tuple[Any, None]:
    """`SamplerParams`'s field `name` with its bounds, optional (None: leave as it is)."""
    if name in _SET_DIFFERENCES:
        return (_SET_DIFFERENCES[name] | None, None)
    info = SamplerParams.model_fields[name]
    annotation = info.annotation
    if info.metadata:
        annotation = Annotated[(annotation, *info.metadata)]
    return (annotation | None, None)


SetMessage = create_model(
    "SetMessage",
    __base__=_SetBase,
    __module__=__name__,
    __doc__="""``{"type": "set", ...}``: change some parameters; absent fields keep their value.""",
    type=(Literal["set"], ...),
    **{name: _optional(name) for name in SamplerParams.model_fields},
)
