"""The one settings model (`ldam.wire.settings`): every surface exposes every setting it
declares, with the model's default there and the model's bounds, and refuses a value with the
model's sentence, word for word."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from pydantic import ValidationError

from ldam.atlas.plan import Settings
from ldam.cli.main import build_parser, main
from ldam.cli.options import settings_from_args
from ldam.sampling.settings import SamplerConfig, SamplerError
from ldam.web.store import SETTINGS_DESCRIBED
from ldam.wire.messages import parse_client_message
from ldam.wire.params import SamplerParams, SetMessage, invalid
from ldam.wire.settings import (
    ALL_SURFACES,
    SETTINGS,
    Setting,
    SettingError,
    defaults,
    describe,
    on,
)

COMMANDS = {"sample": ["sample"], "atlas": ["atlas", "x.pt2", "--layer", "fc3", "--out", "o"]}


def _outside(setting: Setting) -> list[Any]:
    """Values just outside the setting's range (none for an unbounded side)."""
    out: list[Any] = []
    if setting.low is not None:
        out.append(setting.low if setting.low_open else setting.low - 1)
    if setting.high is not None:
        out.append(setting.high * 2 + 1)
    return [int(v) if setting.kind == "int" else float(v) for v in out]


def _sentence(setting: Setting, value: Any) -> str:
    with pytest.raises(SettingError) as err:
        setting.check(value)
    return str(err.value)


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def test_every_setting_is_well_formed() -> None:
    for name, s in SETTINGS.items():
        assert s.name == name and s.help and set(s.surfaces) <= set(ALL_SURFACES)
        for surface in s.surfaces:
            # Each default is accepted by the setting's own rule.
            assert s.check(s.default_on(surface)) == s.default_on(surface), (name, surface)
        if s.slider is not None:  # a control's span lies within the bounds
            assert s.low is None or s.slider.low >= s.low
            assert s.high is None or s.slider.high <= s.high
        assert s.flag == "--" + name.replace("_", "-")


def test_sampler_config_takes_every_default_and_refusal_from_the_model() -> None:
    fields = {f.name: f for f in dataclasses.fields(SamplerConfig)}
    for name, s in on("config").items():
        assert fields[name].default == s.default_on("config"), name
        for bad in _outside(s):
            with pytest.raises(SamplerError) as err:
                SamplerConfig(**{name: bad})
            assert (str(err.value), err.value.field) == (_sentence(s, bad), name)


def test_the_dashboard_takes_every_default_and_refusal_from_the_model() -> None:
    params = SamplerParams()
    for name, s in on("dashboard").items():
        assert getattr(params, name) == s.default_on("dashboard"), name
        for bad in _outside(s):
            with pytest.raises(ValidationError) as err:
                SamplerParams.model_validate({name: bad})
            assert invalid(err.value) == (_sentence(s, bad), name)
            # The websocket message says the same, naming the same field.
            with pytest.raises(Exception) as refused:
                parse_client_message(f'{{"type": "set", "{name}": {bad}}}')
            assert (str(refused.value), refused.value.field) == (_sentence(s, bad), name)
    assert set(on("dashboard")) <= set(SetMessage.model_fields)
    # The page builds its controls from the same description.
    assert SETTINGS_DESCRIBED == describe()
    assert [d["name"] for d in describe()] == list(on("dashboard"))


@pytest.mark.parametrize("surface", ["sample", "atlas", "serve"])
def test_every_command_has_a_flag_per_setting_with_the_models_default(surface: str) -> None:
    parser = build_parser()
    argv = COMMANDS.get(surface, ["serve"])
    args = parser.parse_args(argv)
    assert settings_from_args(args, surface) == defaults(surface)
    for name in on(surface):
        assert hasattr(args, f"setting_{name}"), (surface, name)


@pytest.mark.parametrize("surface", ["sample", "atlas", "serve"])
def test_every_command_refuses_with_the_models_sentence(
    surface: str, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    base = COMMANDS.get(surface, ["serve", "--port", "1"])
    if surface == "sample":
        base = [*base, "--out", str(tmp_path / "run.npz")]
    for name, s in on(surface).items():
        for bad in _outside(s):
            assert main([*base, s.flag, _text(bad)]) == 2
            assert capsys.readouterr().err == f"ldam: {_sentence(s, bad)}\n", (surface, name)


def test_the_atlas_manifest_holds_every_atlas_setting_at_its_atlas_default() -> None:
    stored = Settings().as_json()
    for name, s in on("atlas").items():
        assert stored[name] == s.default_on("atlas")
    assert set(stored) == {*on("atlas"), "layout", "threads", "batch_units", "view"}


# The values the issue found answered differently on different surfaces: one answer everywhere.
ONE_ANSWER = [
    ("momentum", 0.9995, "momentum must be in [0, 0.999], got 0.9995."),
    ("step_size", 1e-7, "step_size must be in [1e-06, 100], got 1e-07."),
    ("temperature", 150, "temperature must be in [0, 100], got 150."),
    ("l2_weight", 150, "l2_weight must be in [0, 100], got 150."),
]


@pytest.mark.parametrize(("name", "value", "sentence"), ONE_ANSWER)
def test_one_answer_on_every_surface(
    name: str, value: float, sentence: str, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    with pytest.raises(SamplerError, match=f"^{_escape(sentence)}$"):
        SamplerConfig(**{name: value})
    with pytest.raises(Exception) as err:
        parse_client_message(f'{{"type": "set", "{name}": {value}}}')
    assert str(err.value) == sentence
    flag = SETTINGS[name].flag
    out = str(tmp_path / "run.npz")
    for argv in (
        ["sample", "--out", out, flag, str(value)],
        ["atlas", "x.pt2", "--layer", "fc3", "--out", "o", flag, str(value)],
        ["serve", "--port", "1", flag, str(value)],
    ):
        assert main(argv) == 2
        assert capsys.readouterr().err == f"ldam: {sentence}\n"


def test_a_sweep_is_checked_against_the_swept_settings_bounds() -> None:
    # The dashboard clamped a disc_weight sweep to [0, 1] silently; it now refuses it.
    with pytest.raises(ValidationError) as err:
        SamplerParams(layout="sweep", sweep_param="disc_weight", sweep_values=[0, 2.5, 5])
    assert invalid(err.value) == (
        "Sweep values of disc_weight must be in [0, 1], got 2.5.",
        "sweep_values",
    )
    # The same values are fine for a setting whose range holds them.
    ok = SamplerParams(
        layout="sweep", sweep_param="temperature", sweep_values=[0, 2.5, 5], replicas=0
    )
    assert ok.sweep_rows() == [0, 2.5, 5]


def test_a_per_chain_list_is_one_value_or_one_per_chain() -> None:
    s = SETTINGS["temperature"]
    assert s.check([0.1, 0.1, 0.1], chains=3) == 0.1  # equal values collapse
    assert s.check([0.1, 0.2, 0.3], chains=3) == [0.1, 0.2, 0.3]
    assert s.parse("0.1,0.2,0.3") == [0.1, 0.2, 0.3]
    with pytest.raises(SettingError, match=r"^temperature takes one value here, got 2\.$"):
        s.check([0.1, 0.2], single=True)
    with pytest.raises(SettingError, match=r"^window takes one value here, got 2\.$"):
        SETTINGS["window"].check([1, 2])


def test_none_means_what_the_setting_says() -> None:
    assert SETTINGS["window"].parse("auto") is None
    assert SETTINGS["burn_in"].parse("auto") is None
    assert SETTINGS["clamp"].parse("off") is None
    assert SETTINGS["clamp"].parse("0,1") == (0.0, 1.0)
    with pytest.raises(SettingError, match=r"^temperature must be given\.$"):
        SETTINGS["temperature"].check(None)
    with pytest.raises(SettingError, match=r"^window must be a number or auto, got 'fit'\.$"):
        SETTINGS["window"].parse("fit")
    # The user who picks exactly the auto window's length gets that length, kept.
    assert SamplerParams(window=200).window == 200 and SamplerParams().window is None


def test_range_text_reads_as_the_user_writes_numbers() -> None:
    assert SETTINGS["step_size"].range_text() == "in [1e-06, 100]"
    assert SETTINGS["divergence_limit"].range_text() == "> 0"
    assert not math.isnan(SETTINGS["momentum"].high)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_null_sets_auto_only_where_a_setting_means_something_by_it() -> None:
    # A fuzzed `{"unit": null}` once reached the target check as None and closed the socket.
    message = parse_client_message(
        '{"type": "set", "unit": null, "window": null, "step_size": null}'
    )
    assert message.changes() == {"window": None, "step_size": None}
