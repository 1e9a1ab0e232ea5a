"""Settings: defaults that work, every source, and errors that name the setting and a fix.

The bounds tests walk the settings models, so a field added later is checked without an edit
here: every duration and count must have both bounds, state them in its description, refuse
zero, negative, huge and misspelt values with a message naming it and a valid example, and
accept the example it gives.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import annotated_types
import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.fields import FieldInfo

import toolkit
from tests.support.servers import UvicornServer
from toolkit import AgentPool, ConfigurationError, RateLimitMiddleware, ToolkitSettings
from toolkit._duration import format_seconds
from toolkit.backends import backend_from_url
from toolkit.cache import ResponseCacheMiddleware, cached_response
from toolkit.identity import parse_caller
from toolkit.resilience import CircuitBreaker
from toolkit.settings import (
    CONFIG_FILE_ENV,
    ENV_PREFIX,
    BreakerSettings,
    CacheSettings,
    PoolSettings,
    RateLimitSettings,
    ResilienceSettings,
)
from toolkit.settings._fields import is_duration
from toolkit.settings._resilience import BreakerFields
from toolkit.settings._root import variable_field
from toolkit.settings._section import validate_arguments, with_arguments


@pytest.fixture(autouse=True)
def _clean_slate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TOOLKIT_* variable of the machine and no toolkit.toml of the checkout leaks in."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError


def test_settings_defaults_work_on_one_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing configured the toolkit runs in-process, limits nothing and serves /metrics."""
    monkeypatch.delenv("TOOLKIT_CONFIG", raising=False)
    settings = ToolkitSettings()
    assert settings.backend.url == "memory://"
    assert settings.ratelimit.limit is None
    assert settings.ratelimit.algorithm == "gcra"
    assert settings.telemetry.prometheus
    assert 0 < settings.backend.timeout <= 0.25


def test_settings_read_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_RATELIMIT__LIMIT", "60/minute;1000/day")
    monkeypatch.setenv(
        "TOOLKIT_RATELIMIT__ROUTES", '{"/chat/{id}": {"limit": "5/minute", "cost": 2}}'
    )
    monkeypatch.setenv("TOOLKIT_BACKEND__TIMEOUT", "50ms")
    settings = ToolkitSettings()
    assert settings.ratelimit.limit == "60/minute;1000/day"
    assert settings.ratelimit.routes["/chat/{id}"].cost == 2
    assert settings.backend.timeout == pytest.approx(0.05)


def test_settings_read_a_toml_file_below_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "toolkit.toml"
    config.write_text(
        '[ratelimit]\nlimit = "10/second"\ncaller = "api_key"\n[backend]\ntimeout = "2s"\n'
    )
    monkeypatch.setenv("TOOLKIT_CONFIG", str(config))
    monkeypatch.setenv("TOOLKIT_RATELIMIT__CALLER", "client")
    settings = ToolkitSettings()
    assert settings.ratelimit.limit == "10/second"
    assert settings.ratelimit.caller == parse_caller("client")  # the environment wins
    assert settings.backend.timeout == 2.0


def test_settings_reject_a_missing_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_CONFIG", "/nonexistent/toolkit.toml")
    with pytest.raises(ConfigurationError, match=r"TOOLKIT_CONFIG='/nonexistent/toolkit\.toml'"):
        ToolkitSettings()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TOOLKIT_RATELIMIT__LIMIT", "60/minit", "example: 60/minute;1000/day"),
        ("TOOLKIT_BACKEND__URL", "mysql://db", "example: redis://localhost:6379/0"),
        ("TOOLKIT_BACKEND__TIMEOUT", "soon", "example: 50ms"),
        ("TOOLKIT_RATELIMIT__CALLER", "ip", "example: header:X-API-Key"),
        ("TOOLKIT_RATELIMIT__TRUSTED_PROXIES", '["10.0.0.300/8"]', 'example: ["10.0.0.0/8"]'),
        ("TOOLKIT_RATELIMIT__ALGORITHM", "token-bucket", "gcra"),
        ("TOOLKIT_RATELIMIT__ROUTES", '{"chat": "5/minute"}', "must start with '/'"),
    ],
)
def test_settings_errors_name_the_variable_the_value_and_a_fix(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        ToolkitSettings()
    assert variable in str(caught.value)
    assert expected in str(caught.value)


def test_settings_route_entry_errors_name_the_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_RATELIMIT__ROUTES", '{"/chat": {"limit": "lots"}}')
    with pytest.raises(
        ConfigurationError, match=r"TOOLKIT_RATELIMIT__ROUTES \(entry /chat.limit\) 'lots'"
    ):
        ToolkitSettings()


def test_middleware_arguments_are_validated_at_construction() -> None:
    """Used alone, the middleware fails at startup naming the argument, not on a request."""
    with pytest.raises(ConfigurationError, match=r"limit= '100/fortnight'.*example: 60/minute"):
        RateLimitMiddleware(_app, limit="100/fortnight")
    with pytest.raises(ConfigurationError, match=r"failure= 'maybe'"):
        RateLimitMiddleware(_app, limit="1/second", failure="maybe")


def test_a_cost_above_the_limit_is_refused_at_startup() -> None:
    with pytest.raises(ConfigurationError, match="cost 5 exceeds its smallest limit"):
        RateLimitMiddleware(_app, routes={"/chat": {"limit": "3/minute", "cost": 5}})


def test_validate_arguments_returns_the_section() -> None:
    section = validate_arguments(RateLimitSettings, {"limit": "5/second", "shadow": True})
    assert section.shadow
    assert section.limit == "5/second"


def test_arguments_go_over_settings_the_same_way_everywhere() -> None:
    """The rate limiter, the response cache and a breaker take an argument over their
    settings alike: it wins, DEFAULT leaves the setting, and only the fields the settings were
    given (and the argument) count as set, the rest defaulting again."""
    limiter = RateLimitMiddleware(
        _app, settings=RateLimitSettings(limit="5/second", shadow=True), headers="legacy"
    )
    assert (limiter.settings.limit, limiter.settings.shadow) == ("5/second", True)
    assert limiter.settings.headers == "legacy"
    assert limiter.settings.model_fields_set == {"limit", "shadow", "headers"}

    routes = {"/ask": {"ttl": 10, "body": True}}  # POST cached, since methods is unset
    cache = ResponseCacheMiddleware(_app, settings=CacheSettings(routes=routes), wait=3)
    assert cache.settings.wait == 3
    assert "POST" in cache.settings.routes["/ask"].cached_methods
    assert cache.settings.model_fields_set == {"routes", "wait"}

    section = ResilienceSettings(window="30s", breakers={"llm": {"open_duration": "10s"}})
    breaker = CircuitBreaker("llm", settings=section, probes=5, failure_rate=toolkit.DEFAULT)
    options = breaker.settings
    assert (options.window, options.open_duration, options.probes) == (30, 10, 5)
    assert options.failure_rate == 0.5  # the default, as no one set it


def test_a_breaker_entry_has_every_breaker_field_optional_with_the_sections_bounds() -> None:
    """resilience.breakers.<name> is derived from the section's breaker fields: the same
    names, types and bounds, each unset (None) until given, and a duration still parses."""
    for name, field in BreakerFields.model_fields.items():
        entry = BreakerSettings.model_fields[name]
        assert entry.default is None, name
        assert (lower_bound(entry), upper_bound(entry)) == (lower_bound(field), upper_bound(field))
        assert is_duration(entry) == is_duration(field), name
        assert f"resilience.{name}" in (entry.description or ""), name
    assert set(BreakerSettings.model_fields) == set(BreakerFields.model_fields)
    entry = BreakerSettings.model_validate({"window": "30s", "probes": None})
    assert (entry.window, entry.probes) == (30.0, None)


def test_a_full_dump_of_the_settings_would_lose_what_was_left_unset() -> None:
    """Why only the fields set are carried over: dumping them all marks a cached route's
    methods as given, and a body=true route would stop caching POST."""
    settings = CacheSettings(routes={"/ask": {"ttl": 10, "body": True}})
    dumped_whole = validate_arguments(CacheSettings, {**settings.model_dump(), "wait": 3})
    assert "POST" not in dumped_whole.routes["/ask"].cached_methods
    merged = with_arguments(CacheSettings, settings, {"wait": 3})
    assert "POST" in merged.routes["/ask"].cached_methods
    assert with_arguments(CacheSettings, settings, {"wait": None}) is settings


def test_admin_tokens_must_be_long_and_flag_callers_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_ADMIN__TOKENS", '{"ops": "short"}')
    with pytest.raises(ConfigurationError, match=r"TOOLKIT_ADMIN__TOKENS.*'ops' is shorter"):
        ToolkitSettings()
    monkeypatch.delenv("TOOLKIT_ADMIN__TOKENS")
    monkeypatch.setenv("TOOLKIT_FLAGS__CALLER", "user")
    with pytest.raises(ConfigurationError, match="TOOLKIT_FLAGS__CALLER"):
        ToolkitSettings()


def test_a_flag_default_naming_a_missing_variant_fails_at_startup() -> None:
    from fastapi import FastAPI

    import toolkit

    with pytest.raises(ConfigurationError, match="default 'sometimes' is not one of"):
        toolkit.install(FastAPI(), ToolkitSettings(flags={"defaults": {"ratelimit": "sometimes"}}))


# --- every duration and count, found in the models ---------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """The type without ``Annotated`` and ``| None``."""
    while True:
        if hasattr(annotation, "__metadata__"):
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, UnionType):
            rest = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _model(annotation: Any) -> type[BaseModel] | None:
    core = _unwrap(annotation)
    return core if isinstance(core, type) and issubclass(core, BaseModel) else None


def _is_number(field: FieldInfo) -> bool:
    return _unwrap(field.annotation) in (int, float)  # bool is neither


@dataclass(frozen=True)
class Setting:
    """A numeric field and how a user writes it: a ``TOOLKIT_*`` variable (``entry`` for a
    field of the entries of a dict setting), or, with no variable, an AgentPool argument."""

    model: type[BaseModel]
    name: str
    variable: str | None
    entry: str | None = None

    def __str__(self) -> str:
        return f"{self.model.__name__}.{self.name}"

    @property
    def field(self) -> FieldInfo:
        return self.model.model_fields[self.name]

    @property
    def label(self) -> str:
        """How an error must name it."""
        if self.variable is None:
            return f"{self.name}="
        if self.entry is not None:
            return f"{self.variable} (entry {self.entry}.{self.name})"
        return self.variable

    def build(self, monkeypatch: pytest.MonkeyPatch, value: object) -> object:
        if self.variable is None:
            return AgentPool(list, **{self.name: value})
        if self.entry is None:
            monkeypatch.setenv(self.variable, str(value))
        else:
            required = {
                name: field.examples[0]
                for name, field in self.model.model_fields.items()
                if field.is_required() and field.examples
            }
            monkeypatch.setenv(
                self.variable, json.dumps({self.entry: {**required, self.name: value}})
            )
        return ToolkitSettings()


def numeric_settings() -> list[Setting]:
    """Every int and float field of every section, of the entries of dict settings, and of
    the AgentPool arguments."""
    found: list[Setting] = []
    for section, info in ToolkitSettings.model_fields.items():
        model = _model(info.annotation)
        assert model is not None
        for name, field in model.model_fields.items():
            variable = f"{ENV_PREFIX}{section.upper()}__{name.upper()}"
            core = _unwrap(field.annotation)
            if _is_number(field):
                found.append(Setting(model, name, variable))
            elif get_origin(core) is dict and (entry := _model(get_args(core)[1])) is not None:
                found += [
                    Setting(entry, sub, variable, entry="/x")
                    for sub, subfield in entry.model_fields.items()
                    if _is_number(subfield)
                ]
    found += [
        Setting(PoolSettings, n, None)
        for n, f in PoolSettings.model_fields.items()
        if _is_number(f)
    ]
    return found


NUMERIC = numeric_settings()

# A bound that depends on another field, and a value past it.
BOUNDED_BY_ANOTHER_FIELD = {"RoutePolicySettings.cost": 11}  # its limit's example: 10/minute


def _bound(field: FieldInfo, *kinds: type) -> tuple[float, bool] | None:
    """(value, inclusive) of the field's first bound of these kinds."""
    for item in field.metadata:
        for kind in kinds:
            if isinstance(item, kind):
                value = getattr(item, kind.__name__.lower())
                return value, kind in (annotated_types.Ge, annotated_types.Le)
    return None


def lower_bound(field: FieldInfo) -> tuple[float, bool] | None:
    return _bound(field, annotated_types.Ge, annotated_types.Gt)


def upper_bound(field: FieldInfo) -> tuple[float, bool] | None:
    return _bound(field, annotated_types.Le, annotated_types.Lt)


def bad_values(setting: Setting) -> dict[str, object]:
    """Zero (when out of bounds), negative, just past each bound, huge and misspelt."""
    field = setting.field
    integer = _unwrap(field.annotation) is int
    duration = is_duration(field)
    values: dict[str, object] = {
        "negative": -1,
        "huge": "1000000d" if duration else 10**18 if integer else 1e18,
        "misspelt": "10 secs" if duration else "ten",
    }
    low = lower_bound(field)
    if low is not None:
        value, inclusive = low
        if value > 0 or not inclusive:
            values["zero"] = 0
        if value > 0:
            values["below"] = value - 1 if integer else value / 2
    high = upper_bound(field)
    if high is not None:
        values["above"] = high[0] + 1 if integer else high[0] * 2
    elif str(setting) in BOUNDED_BY_ANOTHER_FIELD:
        values["above"] = BOUNDED_BY_ANOTHER_FIELD[str(setting)]
    return values


def _shown(field: FieldInfo, bound: float) -> str:
    return format_seconds(bound) if is_duration(field) else str(bound)


@pytest.mark.parametrize("setting", NUMERIC, ids=str)
def test_every_duration_and_count_has_both_bounds_and_its_description_states_them(
    setting: Setting,
) -> None:
    """A number with no bound is how 0 s resync intervals and leases got in."""
    field = setting.field
    low, high = lower_bound(field), upper_bound(field)
    assert low is not None, f"{setting} has no lower bound (ge= or gt=)"
    assert high is not None or str(setting) in BOUNDED_BY_ANOTHER_FIELD, (
        f"{setting} has no upper bound (le= or lt=)"
    )
    if _unwrap(field.annotation) is int or is_duration(field):
        description = field.description or ""
        for bound in (low, high):
            if bound is not None:
                shown = _shown(field, bound[0])
                assert re.search(rf"(?<![\w.]){re.escape(shown)}(?!\w|\.\d)", description), (
                    f"the description of {setting} does not state its bound {shown}: "
                    f"{description!r}"
                )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        pytest.param(setting, value, id=f"{setting}-{kind}")
        for setting in NUMERIC
        for kind, value in bad_values(setting).items()
    ],
)
def test_every_duration_and_count_refuses_bad_values_naming_itself_and_a_valid_example(
    monkeypatch: pytest.MonkeyPatch, setting: Setting, value: object
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        setting.build(monkeypatch, value)
    lines = [line for line in str(caught.value).splitlines() if setting.label in line]
    assert lines, f"the error does not name {setting.label}: {caught.value}"
    example = re.search(r"\(example: (.+)\)$", lines[0])
    assert example is not None, f"the error gives no example: {lines[0]}"
    setting.build(monkeypatch, example[1])  # and the example is valid


@pytest.mark.parametrize("setting", NUMERIC, ids=str)
def test_every_duration_and_count_accepts_its_inclusive_bounds(
    monkeypatch: pytest.MonkeyPatch, setting: Setting
) -> None:
    for bound in (lower_bound(setting.field), upper_bound(setting.field)):
        if bound is not None and bound[1]:
            value = format_seconds(bound[0]) if is_duration(setting.field) else bound[0]
            if str(setting) == "RoutePolicySettings.cost":
                value = 1
            setting.build(monkeypatch, value)


@pytest.mark.parametrize(
    ("variable", "bound"),
    [
        ("TOOLKIT_FLAGS__RESYNC_INTERVAL", "at least 1s"),  # 0: an idle process at 100 % CPU
        ("TOOLKIT_CACHE__LEASE", "at least 100ms"),  # 0: thousands of renewals per miss
        ("TOOLKIT_BACKEND__TIMEOUT", "at least 10ms"),  # 0: every call fails, nothing limited
    ],
)
def test_settings_refuse_the_zero_durations_that_harm(
    monkeypatch: pytest.MonkeyPatch, variable: str, bound: str
) -> None:
    monkeypatch.setenv(variable, "0")
    with pytest.raises(ConfigurationError, match=rf"{variable} 0\.0: must be {bound} \(example"):
        ToolkitSettings()


# --- variables that name no setting ------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("TOOLKIT_RATELIMT__LIMIT", "TOOLKIT_RATELIMIT__LIMIT"),  # a misspelt section
        ("TOOLKIT_RATELIMIT__LIMT", "TOOLKIT_RATELIMIT__LIMIT"),  # a misspelt field
        ("TOOLKIT_BACKEND_URL", "TOOLKIT_BACKEND__URL"),  # one underscore
        ("toolkit_cache__leese", "TOOLKIT_CACHE__LEASE"),  # lower case is read, so checked
        ("TOOLKIT_RATELIMIT__LIMIT__DAY", "TOOLKIT_RATELIMIT__LIMIT"),  # nothing nests in it
        ("TOOLKIT_CONFIGS", "TOOLKIT_CONFIG"),
    ],
)
def test_a_variable_that_names_no_setting_is_an_error_naming_the_closest_one(
    monkeypatch: pytest.MonkeyPatch, variable: str, closest: str
) -> None:
    monkeypatch.setenv(variable, "5/minute")
    with pytest.raises(ConfigurationError) as caught:
        ToolkitSettings()
    assert f"{variable} names no setting; did you mean {closest}?" in str(caught.value)


@pytest.mark.parametrize(
    "variable",
    [
        f"{ENV_PREFIX}{section.upper()}__{name.upper()}"
        for section, info in ToolkitSettings.model_fields.items()
        for name in (_model(info.annotation) or BaseModel).model_fields
    ],
)
def test_every_setting_is_a_variable_and_one_letter_off_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    assert variable_field(variable) is not None
    monkeypatch.setenv(variable[:-1], "1")
    with pytest.raises(ConfigurationError, match=f"did you mean {variable}\\?"):
        ToolkitSettings()


def test_the_config_file_variable_and_dict_entries_are_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """TOOLKIT_CONFIG names the file, and a dict setting's entries may be set one by one."""
    config = tmp_path / "elsewhere.toml"
    config.write_text('[ratelimit]\nlimit = "5/minute"\n')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(config))
    monkeypatch.setenv("TOOLKIT_FLAGS__DEFAULTS__CACHE.RESPONSE", "off")
    settings = ToolkitSettings()
    assert settings.ratelimit.limit == "5/minute"
    assert settings.flags.defaults == {"cache.response": "off"}


# --- values a setting cannot read --------------------------------------------------------------


def _json_settings() -> list[str]:
    return [
        f"{ENV_PREFIX}{section.upper()}__{name.upper()}"
        for section, info in ToolkitSettings.model_fields.items()
        for name, field in (_model(info.annotation) or BaseModel).model_fields.items()
        if get_origin(_unwrap(field.annotation)) in (list, dict)
    ]


@pytest.mark.parametrize("variable", _json_settings())
def test_a_list_or_dict_setting_that_is_not_json_names_itself_and_a_valid_example(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "/health, /ready")
    with pytest.raises(ConfigurationError) as caught:
        ToolkitSettings()
    message = str(caught.value)
    assert f"{variable} '/health, /ready': is not JSON" in message
    example = re.search(rf"\(example: {variable}=(.+)\)$", message)
    assert example is not None, message
    (valid,) = shlex.split(example[1])  # as a shell would read it
    monkeypatch.setenv(variable, valid)
    ToolkitSettings()


BAD_URLS = [
    "redis://h:notaport",
    "redis+cluster://",
    "redis://[::1",
    "redis://h:99999",
    "redis://h:0",
    "redis://h/zero",
    "redis+cluster://h1:7000,h2",
    "redis+cluster://h1:7000,",
    "http://localhost:6379",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_backend_url_names_the_setting_and_a_valid_example(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("TOOLKIT_BACKEND__URL", url)
    with pytest.raises(ConfigurationError) as caught:
        ToolkitSettings()
    assert f"TOOLKIT_BACKEND__URL {url!r}: " in str(caught.value)
    assert "(example: redis://localhost:6379/0)" in str(caught.value)
    with pytest.raises(ConfigurationError, match="url="):  # the middlewares' backend= path
        backend_from_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "redis://",
        "redis://localhost",
        "redis://localhost:6379/0",
        "rediss://user:secret@cache.internal:6380/2",
        "redis://[::1]:6379",
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
    ],
)
def test_a_good_backend_url_is_accepted_and_builds_its_backend(url: str) -> None:
    backend_from_url(url)


def test_a_malformed_config_file_names_the_file_the_line_and_the_form(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "toolkit.toml").write_text('[ratelimit]\nlimit = 60/minute"\n')
    with pytest.raises(ConfigurationError) as caught:
        ToolkitSettings()
    message = str(caught.value)
    assert message.startswith("toolkit.toml, line 2, column ")
    assert 'e.g. [ratelimit] then limit = "60/minute"' in message


def test_a_bad_value_in_the_config_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    (tmp_path / "toolkit.toml").write_text(
        '[ratelimit]\nlimit = "60/minit"\nlimt = 3\n[cache]\nlease = 0\n'
    )
    with pytest.raises(ConfigurationError) as caught:
        ToolkitSettings()
    message = str(caught.value)
    assert "toolkit.toml [ratelimit] limit '60/minit': " in message
    assert "toolkit.toml [ratelimit] limt 3: names no setting; did you mean [ratelimit] limit?" in (
        message
    )
    assert "toolkit.toml [cache] lease 0.0: must be at least 100ms (example: 10s)" in message
    assert "TOOLKIT_" not in message  # no variable was set: none is named


def test_a_pyproject_style_table_in_the_config_file_says_where_sections_go(
    tmp_path: Path,
) -> None:
    (tmp_path / "toolkit.toml").write_text('[tool.toolkit.cache.routes."/catalog"]\nttl = "5m"\n')
    with pytest.raises(ConfigurationError) as caught:
        ToolkitSettings()
    assert "toolkit.toml [tool]: toolkit.toml takes the sections at its top level" in str(
        caught.value
    )
    assert "TOOLKIT_TOOL" not in str(caught.value)


def test_the_environment_is_named_over_the_file_it_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "toolkit.toml").write_text('[backend]\ntimeout = "1s"\n')
    monkeypatch.setenv("TOOLKIT_BACKEND__TIMEOUT", "0")
    with pytest.raises(
        ConfigurationError, match=r"TOOLKIT_BACKEND__TIMEOUT 0\.0: must be at least"
    ):
        ToolkitSettings()


# --- what used to fail only when Starlette built the middleware stack ---------------------------

STACK_TIME_FAILURES = [
    pytest.param(
        "TOOLKIT_RATELIMIT__ROUTES",
        '{"/chat": {"limit": "3/minute", "cost": 5}}',
        r"TOOLKIT_RATELIMIT__ROUTES \(entry /chat.cost\) 5: cost 5 exceeds its smallest limit",
        id="cost-above-limit",
    ),
    pytest.param(
        "TOOLKIT_RATELIMIT__LIMIT",
        "0/minute",
        r"TOOLKIT_RATELIMIT__LIMIT '0/minute': '0 per 1 minute' lets no request through",
        id="zero-per-minute",
    ),
    pytest.param(
        "TOOLKIT_CACHE__ROUTES",
        '{"/chat": {"ttl": 0}}',
        r"TOOLKIT_CACHE__ROUTES \(entry /chat.ttl\) 0\.0: must be at least 1ms",
        id="ttl-zero",
    ),
    pytest.param(
        "TOOLKIT_CACHE__ROUTES",
        '{"/chat": {"ttl": "1m", "methods": ["DELETE"]}}',
        r"TOOLKIT_CACHE__ROUTES \(entry /chat\): methods \['DELETE'\] are never cached",
        id="uncacheable-method",
    ),
]


@pytest.mark.parametrize(("variable", "value", "message"), STACK_TIME_FAILURES)
def test_route_settings_that_cannot_work_fail_inside_install(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=message):
        toolkit.install(FastAPI())


def test_route_settings_given_as_arguments_fail_at_construction() -> None:
    """The same bounds hold for the middlewares used alone and for @cached_response."""
    with pytest.raises(ConfigurationError, match=r"routes\./x\.ttl= 0\.0: must be at least 1ms"):
        ResponseCacheMiddleware(_app, routes={"/x": {"ttl": 0}})
    with pytest.raises(ConfigurationError, match=r"ttl= 0\.0: must be at least 1ms"):
        cached_response(ttl=0)
    with pytest.raises(ConfigurationError, match=r"limit= '0/minute'"):
        RateLimitMiddleware(_app, limit="0/minute")
    with pytest.raises(ConfigurationError, match="finer than one request per microsecond"):
        RateLimitMiddleware(_app, limit="2000000/second")
    with pytest.raises(ConfigurationError, match="window longer than a year"):
        RateLimitMiddleware(_app, limit="1/1000 day")


def _exit_or_answer(server: UvicornServer) -> subprocess.CompletedProcess[str]:
    """Run the server until it exits; fail the test the moment it answers a request."""
    process = subprocess.Popen(
        server.command(), env=server.env, cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                answer = httpx.get(server.base_url + "/health", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            pytest.fail(
                f"uvicorn served (/health answered {answer.status_code}) instead of exiting"
            )
        assert process.poll() is not None, "uvicorn neither exited nor served within 60 s"
        stdout, stderr = process.communicate(timeout=10)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize(("variable", "value", "message"), STACK_TIME_FAILURES[:3])
def test_uvicorn_exits_at_startup_naming_a_bad_setting_instead_of_serving_500s(
    variable: str, value: str, message: str
) -> None:
    server = UvicornServer("tests.apps.installed:app", env={variable: value})
    result = _exit_or_answer(server)
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr[-2000:]


@pytest.mark.slow
def test_uvicorn_serves_the_same_app_with_good_settings() -> None:
    """The control of the test above: the app and the harness do serve."""
    env = {"TOOLKIT_RATELIMIT__ROUTES": '{"/chat": {"limit": "5/minute", "cost": 5}}'}
    with UvicornServer("tests.apps.installed:app", env=env) as server:
        assert httpx.get(server.base_url + "/chat").status_code == 200
        assert httpx.get(server.base_url + "/chat").status_code == 429


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "TOOLKIT_CACHE__ROUTES",
            '{"/a": {"ttl": "1m", "tll": 3}}',
            "TOOLKIT_CACHE__ROUTES (entry /a.tll) 3: names no setting; did you mean "
            "TOOLKIT_CACHE__ROUTES (entry /a.ttl)? (example: 10m)",
        ),
        (
            "TOOLKIT_RATELIMIT",
            '{"limt": "5/minute"}',
            "TOOLKIT_RATELIMIT__LIMT '5/minute': names no setting; did you mean "
            "TOOLKIT_RATELIMIT__LIMIT?",
        ),
    ],
)
def test_a_misspelt_key_inside_a_json_value_names_the_closest_one(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        ToolkitSettings()
    assert expected in str(caught.value)
