"""The backend a URL names, from settings or from a URL alone."""

from __future__ import annotations

from opentelemetry import metrics

from toolkit.backends.base import Backend
from toolkit.backends.memory import MemoryBackend
from toolkit.settings import BackendSettings
from toolkit.settings._section import validate_arguments


def backend_from_settings(
    settings: BackendSettings, *, meter_provider: metrics.MeterProvider | None = None
) -> Backend:
    """The backend ``settings.url`` names, not yet connected; its error counter on
    ``meter_provider`` (the global provider when None)."""
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
    """The backend for ``url`` with default settings, as :func:`backend_from_settings` makes
    it (``meter_provider`` too); invalid URLs raise ConfigurationError."""
    return backend_from_settings(
        validate_arguments(BackendSettings, {"url": url}), meter_provider=meter_provider
    )
