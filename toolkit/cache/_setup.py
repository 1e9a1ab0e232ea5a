"""The cache store that settings describe, for install() and a response cache of its own."""

from __future__ import annotations

from opentelemetry import metrics

from toolkit.cache._store import CacheBackend, CacheStore, LocalTier
from toolkit.settings import CacheSettings


def cache_store_from_settings(
    settings: CacheSettings,
    backend: CacheBackend,
    *,
    meter_provider: metrics.MeterProvider | None = None,
) -> CacheStore:
    """A store over ``backend`` with the in-process tier ``cache.local_entries`` and
    ``cache.local_ttl`` ask for (none when ``local_entries`` is 0), reading ``settings``."""
    local = (
        LocalTier(settings.local_entries, settings.local_ttl) if settings.local_entries else None
    )
    return CacheStore(backend, local=local, meter_provider=meter_provider, settings=settings)
