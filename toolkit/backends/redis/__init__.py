"""The shared backend: Redis (or Redis Cluster) through redis-py's asyncio client.

One module per capability (``_ratelimit``, ``_cache``, ``_leases``, ``_breakers``,
``_flags``), each a mixin over the core (``_core``: connection, call guard and error
translation, pub/sub, script registration); :class:`RedisBackend` (``_backend``) composes
them. Each operation's Lua script is a file of ``toolkit/backends/lua/``.
"""

from __future__ import annotations

from toolkit.backends.redis._backend import RedisBackend

__all__ = ["RedisBackend"]
