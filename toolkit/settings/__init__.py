"""All toolkit settings: one pydantic-settings model, validated at startup.

Values come, highest precedence first, from keyword arguments, ``TOOLKIT_*`` environment
variables (nested with ``__``: ``TOOLKIT_RATELIMIT__LIMIT="60/minute"``), a TOML file
(``toolkit.toml`` in the working directory, or the path in ``TOOLKIT_CONFIG``), then the
defaults below, each of which works on one machine. An invalid value raises
:class:`~toolkit.errors.ConfigurationError` naming the setting, its value and a valid example,
and so does a ``TOOLKIT_*`` variable that names no setting (with the closest one that does) and
a ``toolkit.toml`` that is not TOML (with its line). Every duration and count is bounded to the
range where it makes sense; each field's description states its bounds.

Where each part lives: ``_values`` (the values fields hold: rate limits, durations, URLs,
paths, header names, callers), one module per section (``_backend``, ``_ratelimit``,
``_telemetry``, ``_cache``, ``_flags``, ``_admin``, ``_pool``, ``_resilience``), ``_section``
(their base, and building one from keyword arguments), ``_root`` (ToolkitSettings),
``_sources`` (the environment and the file), ``_errors`` and ``_fields`` (messages naming each
setting), ``_environment`` (the check of the ``TOOLKIT_*`` variables).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit._deprecated import renamed_attributes
from toolkit.identity import DEFAULT_PROXY_HEADER, IPNetwork, ProxyHeader
from toolkit.settings._admin import AdminSettings
from toolkit.settings._backend import BackendSettings
from toolkit.settings._cache import (
    CACHEABLE_METHODS,
    CACHEABLE_STATUSES,
    CacheRouteSettings,
    CacheSettings,
)
from toolkit.settings._errors import configuration_error
from toolkit.settings._fields import is_duration
from toolkit.settings._flags import FlagDeclarationSettings, FlagsSettings
from toolkit.settings._pool import DEFAULT_EXCLUSIVE_POOL_SIZE, PoolMode, PoolSettings
from toolkit.settings._ratelimit import RateLimitSettings, RoutePolicy, RoutePolicySettings
from toolkit.settings._resilience import BreakerFields, BreakerSettings, ResilienceSettings
from toolkit.settings._root import ToolkitSettings, check_environment, variable_field
from toolkit.settings._section import SectionT, validate_arguments, with_arguments
from toolkit.settings._sources import CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE, ENV_PREFIX
from toolkit.settings._telemetry import TelemetrySettings
from toolkit.settings._values import (
    BREAKER_NAME_CHARACTERS,
    MAX_LIMIT_WINDOW,
    Algorithm,
    CallerSetting,
    FailureMode,
    HeaderName,
    HeaderStyle,
    Path,
    RateLimitString,
    Seconds,
    cost_problem,
    parse_rate_limits,
    rate_limit_problem,
)

__all__ = [
    "BREAKER_NAME_CHARACTERS",
    "CACHEABLE_METHODS",
    "CACHEABLE_STATUSES",
    "CONFIG_FILE_ENV",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_EXCLUSIVE_POOL_SIZE",
    "DEFAULT_PROXY_HEADER",
    "ENV_PREFIX",
    "MAX_LIMIT_WINDOW",
    "AdminSettings",
    "Algorithm",
    "BackendSettings",
    "BreakerFields",
    "BreakerSettings",
    "CacheRouteSettings",
    "CacheSettings",
    "CallerSetting",
    "FailureMode",
    "FlagDeclarationSettings",
    "FlagsSettings",
    "HeaderName",
    "HeaderStyle",
    "IPNetwork",
    "Path",
    "PoolMode",
    "PoolSettings",
    "ProxyHeader",
    "RateLimitSettings",
    "RateLimitString",
    "ResilienceSettings",
    "RoutePolicy",
    "RoutePolicySettings",
    "Seconds",
    "SectionT",
    "TelemetrySettings",
    "ToolkitSettings",
    "check_environment",
    "configuration_error",
    "cost_problem",
    "is_duration",
    "parse_rate_limits",
    "rate_limit_problem",
    "validate_arguments",
    "variable_field",
    "with_arguments",
]

if TYPE_CHECKING:  # the old name, deprecated: a warning at run time
    KeySpec = CallerSetting
else:
    __getattr__ = renamed_attributes(__name__, {"KeySpec": ("CallerSetting", CallerSetting)})
