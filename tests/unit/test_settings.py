"""Settings: defaults that work, every source, and errors that name the setting and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit import ConfigurationError, RateLimitMiddleware, ToolkitSettings
from toolkit.settings import RateLimitSettings, validate_arguments


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
        '[ratelimit]\nlimit = "10/second"\nkey = "api_key"\n[backend]\ntimeout = "2s"\n'
    )
    monkeypatch.setenv("TOOLKIT_CONFIG", str(config))
    monkeypatch.setenv("TOOLKIT_RATELIMIT__KEY", "client")
    settings = ToolkitSettings()
    assert settings.ratelimit.limit == "10/second"
    assert settings.ratelimit.key == "client"  # the environment wins over the file
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
        ("TOOLKIT_RATELIMIT__KEY", "ip", "example: header:X-API-Key"),
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


def test_admin_tokens_must_be_long_and_flag_subjects_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_ADMIN__TOKENS", '{"ops": "short"}')
    with pytest.raises(ConfigurationError, match=r"TOOLKIT_ADMIN__TOKENS.*'ops' is shorter"):
        ToolkitSettings()
    monkeypatch.delenv("TOOLKIT_ADMIN__TOKENS")
    monkeypatch.setenv("TOOLKIT_FLAGS__SUBJECT", "user")
    with pytest.raises(ConfigurationError, match="TOOLKIT_FLAGS__SUBJECT"):
        ToolkitSettings()


def test_a_flag_default_naming_a_missing_variant_fails_at_startup() -> None:
    from fastapi import FastAPI

    import toolkit

    with pytest.raises(ConfigurationError, match="default 'sometimes' is not one of"):
        toolkit.install(FastAPI(), ToolkitSettings(flags={"defaults": {"ratelimit": "sometimes"}}))
