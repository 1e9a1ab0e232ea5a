"""RedisBackend: the capability mixins of this package composed into one backend."""

from __future__ import annotations

from opentelemetry import metrics

from toolkit.backends._reconnect import Reconnect
from toolkit.backends.base import Backend
from toolkit.backends.redis._breakers import RedisBreakers
from toolkit.backends.redis._cache import RedisCache
from toolkit.backends.redis._flags import RedisFlags
from toolkit.backends.redis._leases import RedisLeases
from toolkit.backends.redis._ratelimit import RedisRateLimits


class RedisBackend(RedisRateLimits, RedisCache, RedisLeases, RedisBreakers, RedisFlags, Backend):
    """State in Redis, shared by every instance that points at it.

    Args:
        url: ``redis://host:port/db``, ``rediss://`` (TLS) or
            ``redis+cluster://host1:port1,host2:port2`` (Redis Cluster).
        timeout: seconds every call may take, connection wait included, counted in the time
            the event loop was free to read the reply: a busy loop's delays do not count.
        key_prefix: prefix of every key.
        max_connections: pool size per process; callers beyond it wait, within the timeout.
        reconnect: the backoff policy after failures (tests pass one with a fake clock).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.1,
        key_prefix: str = "toolkit",
        max_connections: int = 64,
        meter_provider: metrics.MeterProvider | None = None,
        reconnect: Reconnect | None = None,
    ) -> None:
        super().__init__(
            url,
            timeout=timeout,
            key_prefix=key_prefix,
            max_connections=max_connections,
            meter_provider=meter_provider,
            reconnect=reconnect,
        )
        self._init_rate_limits()
        self._init_cache()
        self._init_leases()
        self._init_breakers()
        self._init_flags()
