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
``_telemetry``, ``_cache``, ``_flags``, ``_admin``, ``_pool``, ``_resilience``, ``_agents``,
``_status``, ``_plugins``, ``_event_loop``, ``_deadline``, ``_defer``, ``_offload``),
``_section`` (their base, and building one from keyword arguments), ``_root``
(ToolkitSettings), ``_sources`` (the environment and the file), ``_errors`` and ``_fields``
(messages naming each setting), ``_environment`` (the check of the ``TOOLKIT_*`` variables).
"""

from __future__ import annotations

import typing as _typing

from toolkit._deprecated import renamed_attributes as _renamed_attributes
from toolkit.identity import CallerSpec as _CallerSpec
from toolkit.identity import ProxyHeader
from toolkit.settings._admin import AdminSettings
from toolkit.settings._agents import AgentSettings, ModelPrice
from toolkit.settings._backend import BackendSettings
from toolkit.settings._cache import CacheRouteSettings, CacheSettings
from toolkit.settings._deadline import DeadlineRouteSettings, DeadlineSettings
from toolkit.settings._defer import DeferSettings
from toolkit.settings._event_loop import EventLoopSettings
from toolkit.settings._flags import FlagDeclarationSettings, FlagsSettings
from toolkit.settings._offload import OffloadSettings
from toolkit.settings._plugins import PluginsSettings
from toolkit.settings._pool import PoolMode, PoolSettings
from toolkit.settings._ratelimit import RateLimitSettings, RoutePolicySettings
from toolkit.settings._resilience import BreakerSettings, ResilienceSettings
from toolkit.settings._root import ToolkitSettings
from toolkit.settings._sources import CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE, ENV_PREFIX
from toolkit.settings._status import StatusSettings
from toolkit.settings._telemetry import TelemetrySettings
from toolkit.settings._values import Algorithm, FailureMode, HeaderStyle

# The model and its sections, the closed sets their options take, and where settings come
# from. The parsers and error helpers the capabilities share are imported from the private
# modules above: they are not part of what an application uses.
__all__ = [
    "CONFIG_FILE_ENV",
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "AdminSettings",
    "AgentSettings",
    "Algorithm",
    "BackendSettings",
    "BreakerSettings",
    "CacheRouteSettings",
    "CacheSettings",
    "DeadlineRouteSettings",
    "DeadlineSettings",
    "DeferSettings",
    "EventLoopSettings",
    "FailureMode",
    "FlagDeclarationSettings",
    "FlagsSettings",
    "HeaderStyle",
    "ModelPrice",
    "OffloadSettings",
    "PluginsSettings",
    "PoolMode",
    "PoolSettings",
    "ProxyHeader",
    "RateLimitSettings",
    "ResilienceSettings",
    "RoutePolicySettings",
    "StatusSettings",
    "TelemetrySettings",
    "ToolkitSettings",
]

if _typing.TYPE_CHECKING:  # the old name, deprecated: a warning at run time
    KeySpec = _CallerSpec
else:
    __getattr__ = _renamed_attributes(
        __name__, {"KeySpec": ("toolkit.identity.CallerSpec", _CallerSpec)}
    )
