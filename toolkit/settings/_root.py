"""ToolkitSettings, the root of every section, read from its sources; and the check of the
``TOOLKIT_*`` variables against it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from toolkit.errors import ConfigurationError
from toolkit.settings import _environment
from toolkit.settings._admin import AdminSettings
from toolkit.settings._agents import AgentSettings
from toolkit.settings._backend import BackendSettings
from toolkit.settings._cache import CacheSettings
from toolkit.settings._deadline import DeadlineSettings
from toolkit.settings._defer import DeferSettings
from toolkit.settings._errors import configuration_error
from toolkit.settings._event_loop import EventLoopSettings
from toolkit.settings._flags import FlagsSettings
from toolkit.settings._offload import OffloadSettings
from toolkit.settings._plugins import PluginsSettings
from toolkit.settings._ratelimit import RateLimitSettings
from toolkit.settings._resilience import ResilienceSettings
from toolkit.settings._sources import ENV_PREFIX, Origin, file_source
from toolkit.settings._status import StatusSettings
from toolkit.settings._telemetry import TelemetrySettings


class ToolkitSettings(BaseSettings):
    """Every toolkit setting. Construct it, or let :func:`toolkit.install` load it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    backend: BackendSettings = Field(default_factory=BackendSettings)  # type: ignore[arg-type]
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)  # type: ignore[arg-type]
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)  # type: ignore[arg-type]
    cache: CacheSettings = Field(default_factory=CacheSettings)  # type: ignore[arg-type]
    flags: FlagsSettings = Field(default_factory=FlagsSettings)  # type: ignore[arg-type]
    admin: AdminSettings = Field(default_factory=AdminSettings)  # type: ignore[arg-type]
    resilience: ResilienceSettings = Field(default_factory=ResilienceSettings)  # type: ignore[arg-type]
    agents: AgentSettings = Field(default_factory=AgentSettings)  # type: ignore[arg-type]
    status: StatusSettings = Field(default_factory=StatusSettings)  # type: ignore[arg-type]
    plugins: PluginsSettings = Field(default_factory=PluginsSettings)
    event_loop: EventLoopSettings = Field(default_factory=EventLoopSettings)  # type: ignore[arg-type]
    deadline: DeadlineSettings = Field(default_factory=DeadlineSettings)  # type: ignore[arg-type]
    defer: DeferSettings = Field(default_factory=DeferSettings)  # type: ignore[arg-type]
    offload: OffloadSettings = Field(default_factory=OffloadSettings)  # type: ignore[arg-type]

    def __init__(self, **values: Any) -> None:
        # pydantic-settings ignores a variable that names no field and reports an undecodable
        # one by its section only: both are checked first, each named.
        check_environment(os.environ)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise configuration_error(
                exc, type(self), style="env", origin=Origin(values, os.environ)
            ) from None
        except SettingsError as exc:  # a value none of the checks above foresaw
            raise ConfigurationError(f"invalid toolkit settings: {exc}") from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        del dotenv_settings, file_secret_settings
        return (init_settings, env_settings, file_source(settings_cls))


def variable_field(name: str) -> FieldInfo | None:
    """The field a ``TOOLKIT_*`` variable sets (for an entry of a dict, the dict's field), or
    None when it names no setting. Case does not matter, as for pydantic-settings."""
    return _environment.variable_field(ToolkitSettings, name)


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse the ``TOOLKIT_*`` variables of ``environ`` that name no setting (naming the
    closest one) and those a list, dict or section reads that are not JSON.

    Raises:
        ConfigurationError: naming each such variable and a valid example.
    """
    _environment.check_environment(ToolkitSettings, environ)
