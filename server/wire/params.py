"""The parameters the browser controls, and the one ``set`` message that changes them.

`SamplerParams` holds every field with its default and bounds; `SetMessage` is made from it
field by field (each optional, same bounds), so a bound is written once. The grid rule
(`grid_columns`, `grid_rows`) lives here too: the dashboard and `ldam sample --png` both use it.

No torch here: the web server validates with these models, the worker rebuilds from them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ldam.errors import UserError
from ldam.wire.limits import MAX_RANGE_UNITS, MAX_SWEEP_VALUES
from ldam.wire.settings import (
    PER_CHAIN_SETTINGS,
    SETTINGS,
    Setting,
    SettingError,
    check_replica_temperature,
    on,
)
from ldam.wire.views import DEFAULT_VIEW, View


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
# A sweep's rows take values of one per-chain setting the page shows.
SweepParam = Literal[tuple(n for n in PER_CHAIN_SETTINGS if "dashboard" in SETTINGS[n].surfaces)]  # type: ignore[valid-type]

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


def _setting_field(setting: Setting) -> tuple[Any, Any]:
    """A pydantic field for a setting of the one model: its value is checked by
    `Setting.check` (one value: the dashboard runs no per-chain lists), so a refusal reads
    word for word as on the command line and in `SamplerConfig`."""

    def validate(value: Any) -> Any:
        try:
            return setting.check(value, single=True)
        except SettingError as err:
            raise PydanticCustomError("setting", str(err)) from None

    python_type: Any = {"float": float, "int": int, "choice": str}[setting.kind]
    if setting.none is not None:
        python_type = python_type | None
    return (Annotated[python_type, PlainValidator(validate)], setting.default_on("dashboard"))


# The sampler settings the page controls, in the model's order (`ldam.wire.settings`).
_DASHBOARD_SETTINGS = {name: _setting_field(s) for name, s in on("dashboard").items()}


class _ParamsBase(BaseModel):
    """The full state the browser controls: the sampler settings of the one settings model
    (`ldam.wire.settings`, surface ``dashboard``) and the page's own choices.

    The server keeps one of these per worker and a version number that grows with each
    change; every frame says which version it was made with.
    """

    model_config = STRICT

    show: Show = "average"
    # A display choice only: switching it redraws the same chains (`ldam.wire.views`: auto
    # draws a colour network in its input space, any other in the paper's symmetric view).
    view: View = DEFAULT_VIEW
    disc_training: bool = True
    paused: bool = False
    # What to sample and how the grid is laid out.
    layer: str = Field(default="", max_length=200, pattern=r"^[A-Za-z0-9_.\-\[\]]{0,200}$")
    unit: int = Field(default=0, ge=0, le=1_000_000)
    unit_end: int = Field(default=9, ge=0, le=1_000_000)
    layout: Layout = "range"
    sweep_param: SweepParam = "disc_weight"
    # One row per value; each value is checked against the swept setting's own bounds.
    sweep_values: list[float] = Field(
        default_factory=lambda: [0.0, 0.2, 0.5, 0.8, 1.0], min_length=1, max_length=MAX_SWEEP_VALUES
    )
    checkpoint: CheckpointName | None = None
    compare: CheckpointName | None = None

    @field_validator("sweep_values")
    @classmethod
    def _sweep_in_bounds(cls, values: list[float], info: ValidationInfo) -> list[float]:
        name = info.data.get("sweep_param")
        if name is None:  # sweep_param itself was refused; that error is reported
            return values
        for value in values:
            try:
                SETTINGS[name].check(value, single=True)
            except SettingError as err:
                text = str(err).replace(f"{name} must", f"Sweep values of {name} must", 1)
                raise PydanticCustomError("setting", text) from None
        return values

    @model_validator(mode="after")
    def _replicas_need_heat(self) -> Any:
        # Every chain's temperature: the one value, or a temperature sweep's rows.
        temperatures = [getattr(self, "temperature", 1.0)]
        if self.layout == "sweep" and self.sweep_param == "temperature":
            temperatures = list(self.sweep_values)
        try:
            check_replica_temperature(getattr(self, "replicas", 0), temperatures)
        except SettingError as err:
            raise PydanticCustomError("setting", str(err)) from None
        return self

    def grid(self) -> tuple[list[int], int]:
        """The unit of every chain (row-major over the grid) and the number of columns.

        "chains": `chains` chains on one unit in `grid_columns` columns; "range": units
        `unit`..`unit_end`, one column each, `chains` // columns rows; "sweep": the same
        columns, one row per value of `sweep_param`.
        """
        chains: int = self.chains
        if self.layout == "chains":
            return [self.unit] * chains, grid_columns(chains, 1)
        first, last = sorted((self.unit, self.unit_end))
        units = list(range(first, min(last, first + MAX_RANGE_UNITS - 1) + 1))
        if self.layout == "range":
            rows = max(1, chains // len(units))
        else:
            rows = len(self.sweep_values)
        # One unit in a range is the chains layout's square grid, as in `ldam sample`'s PNG.
        return units * rows, grid_columns(len(units) * rows, len(units))

    def sweep_rows(self) -> list[float] | None:
        """The value of `sweep_param` for each row in the sweep layout, else None."""
        return list(self.sweep_values) if self.layout == "sweep" else None

    def sampler_settings(self) -> dict[str, Any]:
        """The sampler settings of these parameters, by the model's names."""
        return {name: getattr(self, name) for name in _DASHBOARD_SETTINGS}


SamplerParams = create_model(
    "SamplerParams",
    __base__=_ParamsBase,
    __module__=__name__,
    __doc__=_ParamsBase.__doc__,
    **_DASHBOARD_SETTINGS,
)


# Fields that change what is sampled: changing one rebuilds the chains in the worker.
STRUCTURAL_FIELDS = frozenset(
    {
        "layer",
        "unit",
        "unit_end",
        "layout",
        "sweep_param",
        "sweep_values",
        "checkpoint",
        "compare",
        # The settings fixed for a run (chains, seed, energy_scale).
        *(name for name, s in on("dashboard").items() if not s.live),
    }
)


# The settings whose None means something (window and step size: auto).
NULLABLE = frozenset(name for name, s in on("dashboard").items() if s.none is not None)


class _SetBase(BaseModel):
    model_config = STRICT

    def changes(self) -> dict[str, Any]:
        """The fields the message actually sets (null is a value: ``window: null`` is auto);
        "" becomes None: for `checkpoint` the operator's checkpoint, for `compare` no compare
        view."""
        out = {
            name: value
            for name, value in self.model_dump(exclude_unset=True, exclude={"type"}).items()
            # null sets only a setting that means something by it (auto); elsewhere it
            # leaves the field as it is, as an absent field does.
            if value is not None or name in NULLABLE
        }
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


def invalid(err: ValidationError, drop: str | None = None) -> tuple[str, str]:
    """The sentence and the field of the first error in `err`: a setting's own sentence
    (`Setting.check`, the same on every surface) as it is, anything else as "The field 'X' is
    invalid: ...". `drop` is a leading location part to leave out (a tagged union's tag)."""
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"]]
    if drop is not None and len(loc) > 1 and loc[0] == drop:
        loc = loc[1:]
    loc = [part for part in loc if _FIELD_PART.match(part)]
    field = ".".join(loc)
    if first["type"] == "setting":
        text = first["msg"]
        return text, field or text.split(" ", 1)[0].rstrip(":")
    field = field or "message"
    return f"The field '{field}' is invalid: {first['msg']}.", field


# A location part that names a field (not a union member pydantic adds, "function-after[...]").
_FIELD_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$|^[0-9]+$")
