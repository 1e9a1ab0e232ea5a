"""Storage backends: the only code that talks to storage.

``memory://`` keeps state in this process (one instance); ``redis://``, ``rediss://`` and
``redis+cluster://`` share it between instances. The contract is one small protocol per
capability (:mod:`toolkit.backends.protocols`); :class:`Backend` offers all of them, and the
breaker's stored state is :mod:`toolkit.backends.breaker_state`.
"""

from __future__ import annotations

from opentelemetry import metrics

from toolkit.backends._gcra import GcraLimit, GcraResult
from toolkit.backends.base import Backend, BackendCore
from toolkit.backends.memory import MemoryBackend
from toolkit.backends.protocols import (
    BackendInfo,
    BreakerStorage,
    CacheStorage,
    FlagStorage,
    LeaseStorage,
    LimitsSupport,
    PubSub,
    RateLimitStorage,
    require,
)
from toolkit.settings import BackendSettings, validate_arguments

__all__ = [
    "Backend",
    "BackendCore",
    "BackendInfo",
    "BreakerStorage",
    "CacheStorage",
    "FlagStorage",
    "GcraLimit",
    "GcraResult",
    "LeaseStorage",
    "LimitsSupport",
    "MemoryBackend",
    "PubSub",
    "RateLimitStorage",
    "backend_from_settings",
    "backend_from_url",
    "require",
]


def backend_from_settings(
    settings: BackendSettings, *, meter_provider: metrics.MeterProvider | None = None
) -> Backend:
    """The backend ``settings.url`` names, not yet connected."""
    if settings.url.startswith("memory://"):
        return MemoryBackend(
            timeout=settings.timeout, key_prefix=settings.key_prefix, meter_provider=meter_provider
        )
    from toolkit.backends.redis import RedisBackend  # the redis extra is optional

    return RedisBackend(
        settings.url,
        timeout=settings.timeout,
        key_prefix=settings.key_prefix,
        max_connections=settings.max_connections,
        meter_provider=meter_provider,
    )


def backend_from_url(url: str, *, meter_provider: metrics.MeterProvider | None = None) -> Backend:
    """The backend for ``url`` with default settings; invalid URLs raise ConfigurationError."""
    return backend_from_settings(
        validate_arguments(BackendSettings, {"url": url}), meter_provider=meter_provider
    )
