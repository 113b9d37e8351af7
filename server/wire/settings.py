"""Every sampler setting, defined once: its name, type, bounds, default, unit, help and scope.

`SETTINGS` is the one source of truth. Every surface derives from it:

- `SamplerConfig` (`ldam.sampling.settings`) takes its defaults and checks from here;
- the dashboard's `SamplerParams` and its ``set`` message (`ldam.wire.params`);
- the flags of `ldam sample`, `ldam atlas` and `ldam serve` (`ldam.cli.options.add_setting_flags`);
- the atlas manifest's settings (`ldam.atlas.plan.Settings`) and `ldam bench`'s runs;
- the page's controls, which read `describe()` from ``GET /api/settings``.

A value is checked by `Setting.check`, which raises `SettingError` with the same sentence on
every surface ("temperature must be in [0, 100], got 150."). Adding a setting is one entry here
plus the code that uses it. No torch here: the web server imports this module.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from ldam.errors import UserError

# Where a setting can be changed: per chain (one value or one per chain, so one batch can hold a
# sweep; also live), live (between two steps of a running sampler), or fixed for a run.
Scope = Literal["per_chain", "live", "run"]
Kind = Literal["float", "int", "choice", "pair", "triple"]
# The surfaces a setting can appear on; `config` is `SamplerConfig` itself.
Surface = Literal["config", "sample", "atlas", "serve", "dashboard"]
ALL_SURFACES: tuple[Surface, ...] = ("config", "sample", "atlas", "serve", "dashboard")


class SettingError(UserError):
    """A setting value that is refused; the message is one sentence, `field` the setting."""


@dataclass(frozen=True)
class Slider:
    """The span of the page's control for a setting: `low` to `high` on a `scale` ("log":
    the slider holds log10 of the value) in steps of `step` (of the slider's own units). A
    display property only: the setting's bounds decide what is accepted."""

    low: float
    high: float
    scale: Literal["linear", "log"] = "linear"
    step: float = 0.01


@dataclass(frozen=True)
class Setting:
    """One sampler setting.

    Attributes:
        name: the paper's word, as every surface names it (`l2_weight`); the CLI flag is
            ``--l2-weight``, plus `aliases` kept so old command lines keep working.
        kind: float, int, choice (one of `choices`), pair ``(a, b)`` or triple ``(a, b, c)``
            of floats.
        default: the value when none is given; `surface_defaults` overrides it on a surface
            where the same word means a different amount (an atlas's chains are per unit).
        help: one line for `--help` and the page's tooltip.
        unit: what the number counts ("steps", "chains"), "" for a plain number.
        low, high: the accepted range; `low_open` makes it ``low < v`` instead of ``low <= v``.
        none: what None means ("auto"), or None when None is not accepted. The CLI and the URL
            spell it as this word.
        scope: per_chain, live or run (see `Scope`).
        surfaces: where the setting appears.
        slider: the page's control span, when the page shows a slider for it.
        rule: what a pair or triple must satisfy beyond its numbers (clamp: lo < hi).
    """

    name: str
    kind: Kind
    default: Any
    help: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    none: str | None = None
    scope: Scope = "run"
    surfaces: tuple[Surface, ...] = ALL_SURFACES
    aliases: tuple[str, ...] = ()
    slider: Slider | None = None
    surface_defaults: Mapping[str, Any] = field(default_factory=dict)
    # A rule between the numbers of a pair or triple: the refusal without its full stop, or
    # None when the value is fine.
    rule: Callable[[tuple[float, ...]], str | None] | None = None

    @property
    def flag(self) -> str:
        """The command-line flag, ``--step-size`` for ``step_size``."""
        return "--" + self.name.replace("_", "-")

    @property
    def live(self) -> bool:
        """Whether a running sampler takes a new value between two steps."""
        return self.scope != "run"

    def default_on(self, surface: str) -> Any:
        """The default on `surface`."""
        return self.surface_defaults.get(surface, self.default)

    def range_text(self) -> str:
        """The accepted range in words: ``in [0, 1]``, ``in (0, 100]``, ``>= 1``."""
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            return f"in {left}{_fmt(self.low)}, {_fmt(self.high)}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_fmt(self.low)}"
        if self.high is not None:
            return f"<= {_fmt(self.high)}"
        return "a finite number"

    def _fail(self, text: str) -> SettingError:
        return SettingError(f"{self.name} {text}.", self.name)

    def _scalar(self, value: Any) -> float | int:
        """One number of this setting, checked against its kind and range."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self._fail(f"must be a number, got {value!r}")
        # An integer of any size compares exactly; only a float can be NaN or infinite.
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):
            raise self._fail(f"must be a finite number, got {value}")
        if self.kind == "int" and not isinstance(value, numbers.Integral):
            raise self._fail(f"must be a whole number, got {value!r}")
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or value <= self.high
        if not (low_ok and high_ok):
            raise self._fail(f"must be {self.range_text()}, got {_fmt(value)}")
        return int(value) if self.kind == "int" else float(value)

    def check(self, value: Any, chains: int | None = None, single: bool = False) -> Any:
        """`value` checked and in its canonical type, or `SettingError` with one sentence.

        A per-chain setting takes one number or a list of one number per chain (`chains`; a
        list where the surface gives no chain count is checked value by value); a list of
        equal values collapses to one number. None is accepted only where `none` says what
        it means. `single`: the surface takes one value only (the dashboard, the atlas).
        """
        if value is None:
            if self.none is None:
                raise self._fail("must be given")
            return None
        if self.kind == "choice":
            if value not in self.choices:
                raise self._fail(f"must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if self.kind in ("pair", "triple"):
            n = 2 if self.kind == "pair" else 3
            if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != n:
                raise self._fail(f"must be {n} numbers or {self.none}, got {value!r}")
            numbers_ = tuple(self._scalar(v) for v in value)
            broken = self.rule(numbers_) if self.rule is not None else None
            if broken is not None:
                raise SettingError(f"{broken}.", self.name)
            return numbers_
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            if self.scope != "per_chain" or single:
                raise self._fail(f"takes one value here, got {len(value)}")
            values = [self._scalar(v) for v in value]
            if not values:
                raise self._fail("needs at least one value")
            if chains is not None and len(values) not in (1, chains):
                raise self._fail(
                    f"has {len(values)} values but there are {chains} chains; give one value "
                    "or one per chain"
                )
            if all(v == values[0] for v in values):
                return values[0]
            return values
        return self._scalar(value)

    def parse(self, text: str) -> Any:
        """A command-line or URL value: `none`'s word for None, a comma list for a per-chain
        setting or a pair, else one number or choice; then `check`. Same sentences as
        `check`, so ``--momentum 0.9995`` reads as the dashboard's refusal does."""
        text = text.strip()
        if self.none is not None and text == self.none:
            return None
        if self.kind == "choice":
            return self.check(text)
        parts = [p.strip() for p in text.split(",")]
        values = [_number(p) for p in parts]
        if any(v is None for v in values):
            raise self._fail(f"must be a number{self._list_hint()}, got {text!r}")
        if self.kind in ("pair", "triple") or len(values) > 1:
            return self.check(values)
        return self.check(values[0])

    def _list_hint(self) -> str:
        if self.kind == "pair":
            return " pair lo,hi"
        if self.kind == "triple":
            return " triple a,b,c"
        if self.scope == "per_chain":
            return " or a comma list, one per chain"
        if self.none is not None:
            return f" or {self.none}"
        return ""

    def describe(self) -> dict[str, Any]:
        """The setting as the page reads it (``GET /api/settings``)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "default": self.default_on("dashboard"),
            "help": self.help,
            "unit": self.unit,
            "low": self.low,
            "high": self.high,
            "low_open": self.low_open,
            "choices": list(self.choices),
            "none": self.none,
            "scope": self.scope,
            "slider": None
            if self.slider is None
            else {
                "low": self.slider.low,
                "high": self.slider.high,
                "scale": self.slider.scale,
                "step": self.slider.step,
            },
        }


def _fmt(value: float) -> str:
    """A bound or value as the user would write it: 0 not 0.0, 1e-06 as 1e-06, an integer
    too long to read as 1e+400."""
    if isinstance(value, numbers.Integral) and abs(value) >= 10**15:
        return f"{Decimal(int(value)):.0e}"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _number(text: str) -> int | float | None:
    """`text` as an int when it is one, else a float, else None."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _step_decay_rule(value: tuple[float, ...]) -> str | None:
    """a > 0, b >= 0, mu in (0.5, 1]: the Robbins-Monro conditions on beta_t = a (b + t)^-mu
    that make the decaying step a valid SGLD schedule."""
    a, b, mu = value
    if a <= 0:
        return f"step_decay a must be > 0, got {_fmt(a)}"
    if b < 0:
        return f"step_decay b must be >= 0, got {_fmt(b)}"
    if not 0.5 < mu <= 1:
        return f"step_decay mu must be in (0.5, 1], got {_fmt(mu)}"
    return None


def _clamp_rule(value: tuple[float, ...]) -> str | None:
    """low < high."""
    if value[0] < value[1]:
        return None
    return f"clamp must be lo,hi with lo < hi, got ({_fmt(value[0])}, {_fmt(value[1])})"


# The most replicas a chain may have, and the most rows (chains times replicas + 1) one batch
# of the sampler may hold.
MAX_REPLICAS = 64
MAX_ROWS = 8192
# The priors over images (`ldam.sampling.prior`): the paper's white L2, or the spectral one.
PRIORS = ("white", "spectral")

_LIVE: tuple[Surface, ...] = ("config", "sample", "atlas", "serve", "dashboard")
_HEADLESS: tuple[Surface, ...] = ("config", "sample", "atlas")

SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        # --- what is sampled and how long (the paper's Algorithm 1 loop) ---------------------
        Setting(
            "chains",
            "int",
            16,
            "chains run side by side: in all (ldam sample, a dashboard panel) or per unit "
            "(ldam atlas)",
            unit="chains",
            low=1,
            high=256,
            surfaces=("sample", "atlas", "serve", "dashboard"),
            surface_defaults={"dashboard": 20, "serve": 20, "atlas": 8},
        ),
        Setting(
            "steps",
            "int",
            2000,
            "Langevin steps per chain",
            unit="steps",
            low=1,
            high=10_000_000,
            surfaces=("sample", "atlas"),
            surface_defaults={"atlas": 500},
        ),
        # --- Langevin dynamics: T, beta, gamma ----------------------------------------------
        Setting(
            "temperature",
            "float",
            0.1,
            "T: the noise of the Langevin step; 0 is plain gradient ascent",
            low=0,
            high=100,
            scope="per_chain",
            slider=Slider(1e-4, 10, "log"),
            # With replica exchange (`replicas`) T 0.1 and lambda 0.1 let the bundled LeNet's
            # output units mix (BENCHMARKS.md, issue 19); the atlas, which runs no replicas by
            # default, keeps the cold 0.01 of issue 18, and the library the paper's.
            surface_defaults={"config": 0.01, "atlas": 0.01},
        ),
        Setting(
            "step_size",
            "float",
            None,
            "beta: the step of the Langevin update; auto: adapted per unit during burn-in to a "
            "Metropolis acceptance of 0.574, then frozen",
            low=1e-6,
            high=100,
            none="auto",
            scope="per_chain",
            slider=Slider(1e-4, 10, "log"),
            # `SamplerConfig` is the paper's sampler as a library: its defaults stay the
            # paper's (a fixed step, the network's own units); every command adapts.
            surface_defaults={"config": 0.05},
        ),
        Setting(
            "energy_scale",
            "choice",
            "unit",
            "unit: the activation is divided by the unit's own scale sigma_u (the RMS norm of "
            "its input gradient at the chains' starts), so T and lambda mean the same on every "
            "unit; absolute: the network's own units (the paper's)",
            choices=("unit", "absolute"),
            surface_defaults={"config": "absolute"},
        ),
        Setting(
            "adapt_steps",
            "int",
            100,
            "with step_size auto: the burn-in steps that adapt it (Metropolis-adjusted, then "
            "discarded)",
            unit="steps",
            low=1,
            high=100_000,
            surfaces=("config", "sample", "atlas"),
        ),
        Setting(
            "step_decay",
            "triple",
            None,
            "a,b,mu: the step size a*(b+t)^-mu instead of a constant (a > 0, b >= 0, mu in "
            "(0.5, 1])",
            none="off",
            scope="live",
            surfaces=("config", "sample"),
            rule=_step_decay_rule,
        ),
        Setting(
            "momentum",
            "float",
            0.0,
            "gamma: the share of the last move kept; 0 is plain Langevin",
            low=0,
            high=0.999,
            scope="per_chain",
            slider=Slider(0, 0.99, "linear"),
        ),
        # --- replica exchange (parallel tempering of the activation) ---------------------------
        Setting(
            "replicas",
            "int",
            6,
            "K: hidden replicas per shown chain at hotter rungs of the activation, swapped with "
            "their neighbours every step so the chains explore every mode; 0: off",
            unit="replicas",
            low=0,
            high=MAX_REPLICAS,
            slider=Slider(0, 16, "linear", 1),
            # Each replica costs a chain's step: on by default where one unit or a front page
            # is sampled, off for the atlas's many units and in the library.
            surface_defaults={"config": 0, "atlas": 0},
        ),
        Setting(
            "ladder_end",
            "float",
            0.02,
            "beta_K: the hottest rung's weight on the activation (1 is the shown chain's); "
            "the rungs between are adapted in burn-in to equal swap rates, then frozen",
            low=0,
            low_open=True,
            high=1,
            slider=Slider(1e-3, 1, "log"),
        ),
        Setting(
            "ladder_steps",
            "int",
            400,
            "with replicas: the burn-in steps that adapt the ladder (never kept)",
            unit="steps",
            low=0,
            high=100_000,
            surfaces=("config", "sample", "atlas"),
        ),
        # --- regularizers (section 4) ---------------------------------------------------------
        Setting(
            "l2_weight",
            "float",
            0.1,
            "lambda: the weight of the L2 prior",
            low=0,
            high=100,
            scope="per_chain",
            aliases=("--l2",),
            slider=Slider(1e-4, 10, "log"),
            # In the unit's own scale (`energy_scale` unit) the atlas's 0.05 lets every layer of
            # the bundled LeNet reach its top percentile at T 0.01 (BENCHMARKS.md, issue 18);
            # with replicas 0.1 (issue 19); the library's `SamplerConfig` keeps the paper's 0.1
            # with the paper's absolute scale.
            surface_defaults={"atlas": 0.05},
        ),
        Setting(
            "disc_weight",
            "float",
            0.0,
            "w: the weight of the discriminator in the convex mix of gradients",
            low=0,
            high=1,
            scope="per_chain",
            surfaces=("config", "sample", "serve", "dashboard"),
            slider=Slider(0, 1, "linear"),
        ),
        Setting(
            "normalize",
            "choice",
            "none",
            "gradient normalization (Algorithm 1 line 6): none (the only exact mode), "
            "regularizers, or all terms",
            choices=("none", "regularizers", "all"),
            scope="live",
        ),
        # --- the prior over images (issue 20: `ldam.sampling.prior`) ---------------------------
        Setting(
            "prior",
            "choice",
            "white",
            "white: the paper's L2 prior, lambda/2 ||x||^2; spectral: a Gaussian prior whose "
            "amplitude falls as 1/|f|^decay over colour-decorrelated channels, sampled with the "
            "matched preconditioner (smooth, photograph-like samples)",
            choices=PRIORS,
        ),
        Setting(
            "prior_decay",
            "float",
            1.0,
            "alpha: with prior spectral, the prior's amplitude falls as 1/|f|^alpha (0 is "
            "white; photographs are near 1)",
            low=0,
            high=3,
            scope="per_chain",
            slider=Slider(0, 3, "linear", 0.05),
        ),
        Setting(
            "transforms",
            "choice",
            "off",
            "on: every step sees the image under a random small shift (up to 1/32 of its "
            "size), zoom (0.9 to 1.1) and rotation (10 degrees), so the chains sample the "
            "unit's mean over those transforms",
            choices=("off", "on"),
        ),
        # --- the average shown ------------------------------------------------------------------
        Setting(
            "window",
            "int",
            None,
            "K: the moving window of the average, in post-burn-in steps; auto: the longest "
            "that fits the memory budget, up to 200",
            unit="steps",
            low=1,
            high=100_000,
            none="auto",
            scope="live",
            slider=Slider(1, 1000, "log"),
        ),
        Setting(
            "init_std",
            "float",
            1.0,
            "chains start at x0 ~ N(0, init_std^2)",
            low=0,
            high=1000,
            surfaces=_HEADLESS,
        ),
        Setting(
            "clamp",
            "pair",
            None,
            "lo,hi: clamp the input to this range after each step",
            none="off",
            scope="live",
            surfaces=_HEADLESS,
            rule=_clamp_rule,
        ),
        Setting(
            "burn_in",
            "int",
            None,
            "steps discarded per chain; auto: detected per chain",
            unit="steps",
            low=0,
            high=10_000_000,
            none="auto",
            surfaces=_HEADLESS,
        ),
        Setting(
            "record_every",
            "int",
            10,
            "keep every n-th sample in the npz",
            unit="steps",
            low=1,
            high=1_000_000,
            surfaces=("sample", "atlas"),
        ),
        Setting(
            "seed",
            "int",
            0,
            "seeds the chains' starts and noise: same seed, same device, same samples",
            low=0,
            high=2**31 - 1,
            surfaces=_LIVE,
        ),
        # --- advanced: burn-in detection and divergence -------------------------------------
        Setting(
            "burn_in_epsilon",
            "float",
            0.02,
            "auto burn-in: the largest relative change of the activation between two half-windows",
            low=0,
            high=1000,
            surfaces=("config",),
        ),
        Setting(
            "burn_in_window",
            "int",
            50,
            "auto burn-in: the recent steps it looks at",
            unit="steps",
            low=2,
            high=1_000_000,
            surfaces=("config",),
        ),
        Setting(
            "divergence_limit",
            "float",
            1e6,
            "a chain with a |pixel| above this has diverged and is reset",
            low=0,
            low_open=True,
            surfaces=("config",),
        ),
    ]
}

# The settings `Sampler.set` may change between two steps.
LIVE_SETTINGS = tuple(name for name, s in SETTINGS.items() if s.live)
# The settings that take one value or one value per chain.
PER_CHAIN_SETTINGS = tuple(name for name, s in SETTINGS.items() if s.scope == "per_chain")
# The most steps a window of `window=auto` holds.
AUTO_WINDOW_STEPS = 200


def check_replica_temperature(replicas: int, temperatures: Sequence[float]) -> None:
    """The one rule between two settings of replica exchange: a swap's test divides by T, so
    with `replicas` > 0 every chain's temperature must be above 0 (`SettingError`, field
    ``replicas``, on every surface)."""
    if replicas and min(temperatures) <= 0:
        raise SettingError(
            "replicas need a temperature above 0 on every chain; set replicas to 0 or raise "
            "the temperature.",
            "replicas",
        )


def on(surface: Surface) -> dict[str, Setting]:
    """The settings that appear on `surface`, in the model's order."""
    return {name: s for name, s in SETTINGS.items() if surface in s.surfaces}


def defaults(surface: Surface) -> dict[str, Any]:
    """Every setting of `surface` at its default there."""
    return {name: s.default_on(surface) for name, s in on(surface).items()}


def for_sampler(values: Mapping[str, Any]) -> dict[str, Any]:
    """Those of `values` (setting name -> value) that `SamplerConfig` takes: not the run's own
    (how many steps, how often to record) nor a surface's chain count, which the caller
    turns into the batch."""
    return {name: value for name, value in values.items() if "config" in SETTINGS[name].surfaces}


def describe() -> list[dict[str, Any]]:
    """Every setting the dashboard shows, as the page reads them."""
    return [s.describe() for s in on("dashboard").values()]
