"""The embedded backend: state in this process's memory, for a single instance.

One module per capability (``_ratelimit``, ``_cache``, ``_leases``, ``_breakers``,
``_flags``), each a mixin over the core (``_core``: clock, pub/sub, call guard);
:class:`MemoryBackend` (``_backend``) composes them.
"""

from __future__ import annotations

from toolkit.backends.memory._backend import MemoryBackend
from toolkit.backends.memory._cache import DEFAULT_MAX_CACHE_BYTES

__all__ = ["DEFAULT_MAX_CACHE_BYTES", "MemoryBackend"]
