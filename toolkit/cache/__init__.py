"""Caching: responses (pure-ASGI middleware), functions (``@cached``) and embeddings
(``@cache_embeddings``), on one store, safe by default.

    await toolkit.cache.invalidate(tags=["catalog"])   # every instance, every cache
"""

from __future__ import annotations

from toolkit.cache._current import current_cache, invalidate, set_current_cache
from toolkit.cache._singleflight import SingleFlight, Turn
from toolkit.cache._store import CacheStore, LocalTier
from toolkit.cache.embeddings import cache_embeddings
from toolkit.cache.functions import cached
from toolkit.cache.response import ResponseCacheMiddleware, cached_response

__all__ = [
    "CacheStore",
    "LocalTier",
    "ResponseCacheMiddleware",
    "SingleFlight",
    "Turn",
    "cache_embeddings",
    "cached",
    "cached_response",
    "current_cache",
    "invalidate",
    "set_current_cache",
]
