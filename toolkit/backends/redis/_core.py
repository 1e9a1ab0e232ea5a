"""The Redis backend's core: redis-py's asyncio client (hiredis parser when installed), the
call guard, pub/sub and script registration.

One connection pool per process, every call bounded by the backend timeout, no driver-level
retry storms (one immediate retry only for a stale connection), and after a connectivity
failure the backend is skipped and probed with backoff (:class:`Reconnect`), so requests take
their failure path at once instead of each waiting out the timeout.

The timeout counts Redis's time, not the event loop's (:class:`Deadline`): on a loop too busy
to read a reply that came back at once, the call waits for the loop instead of failing.
redis-py's own socket and pool timeouts, which count wall time, are therefore left unset;
every call runs inside the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any, ClassVar, Final, TypeVar

from opentelemetry import metrics

from toolkit._tasks import raise_if_cancelling
from toolkit.backends._deadline import Deadline, LoopLag
from toolkit.backends._reconnect import Reconnect
from toolkit.backends.base import BackendCore, redacted_url
from toolkit.errors import BackendError, BackendUnavailable, ConfigurationError

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.commands.core import AsyncScript
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError(
        "a redis:// backend needs the redis client: pip install 'agent-server-toolkit[redis]'"
    ) from exc

T = TypeVar("T")
logger = logging.getLogger("toolkit.backends")

NO_DRIVER_TIMEOUTS: Final[dict[str, Any]] = {
    "socket_timeout": None,
    "socket_connect_timeout": None,
}
"""redis-py's socket timeouts (5 s by default) count wall time, the event loop's delays
included: they are off, and every call runs inside ``RedisCore._deadline()`` instead."""


class RedisCore(BackendCore):
    """The connection to Redis, the call guard and pub/sub that every capability's
    operations go through (arguments: see :class:`~toolkit.backends.redis.RedisBackend`)."""

    name: ClassVar[str] = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        key_prefix: str,
        max_connections: int,
        meter_provider: metrics.MeterProvider | None = None,
        reconnect: Reconnect | None = None,
    ) -> None:
        super().__init__(timeout=timeout, key_prefix=key_prefix, meter_provider=meter_provider)
        self.url = url
        self._reconnect = reconnect or Reconnect()
        self._cluster = url.startswith("redis+cluster://")
        self._lag: LoopLag | None = None
        self._listen_options: dict[str, Any] = {**NO_DRIVER_TIMEOUTS, "health_check_interval": 5}
        self._client: Any
        if self._cluster:
            nodes = [
                aioredis.cluster.ClusterNode(host, int(port))
                for host, _, port in (
                    node.rpartition(":") for node in url.removeprefix("redis+cluster://").split(",")
                )
            ]
            self._client = aioredis.RedisCluster(
                startup_nodes=nodes, max_connections=max_connections, **NO_DRIVER_TIMEOUTS
            )
            self._pool = None
        else:
            self._pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=None,
                # A pooled connection may be stale after a Redis restart: retry once, at once.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                **NO_DRIVER_TIMEOUTS,
            )
            self._client = aioredis.Redis(connection_pool=self._pool)

    def _script(self, name: str) -> AsyncScript:
        """``lua/<name>.lua``, registered with this client (read once, loaded on first call)."""
        text = resources.files("toolkit.backends").joinpath("lua", f"{name}.lua").read_text("utf-8")
        script: AsyncScript = self._client.register_script(text)
        return script

    async def ping(self) -> None:
        await self.call("ping", self._client.ping)

    async def connect(self) -> None:
        try:
            await self.ping()
        except BackendError as exc:
            logger.warning(
                "Redis at %s is unreachable at startup (%s); serving through each capability's "
                "failure path until it answers",
                redacted_url(self.url),
                exc,
            )

    async def close(self) -> None:
        await self._client.aclose()
        if self._pool is not None:
            await self._pool.disconnect()

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        # A connection of its own with no read timeout: it waits for messages. Periodic pings
        # (health_check_interval) find a dead server; Redis Cluster broadcasts PUBLISH to
        # every node, so the first node is as good as any.
        if self._cluster:
            host, _, port = self.url.removeprefix("redis+cluster://").split(",")[0].rpartition(":")
            client = aioredis.Redis(host=host, port=int(port), **self._listen_options)
        else:
            client = aioredis.Redis.from_url(self.url, **self._listen_options)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            try:
                async with self._deadline():
                    await pubsub.subscribe(self.key(channel))
                # Subscribed: Redis answers. Calls skipped since an outage resume now, so
                # that the cue's catch-up (a flag reload) is not refused by the backoff.
                self._answered()
                yield ""
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        yield message["data"].decode()
            except Exception as exc:
                raise_if_cancelling()  # redis-py may turn our cancellation into an error
                raise self._failure(f"{channel}.listen", exc) from exc
        finally:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                    await client.aclose()

    async def publish(self, channel: str, message: str) -> None:
        await self.call(
            f"{channel}.publish", lambda: self._client.publish(self.key(channel), message)
        )

    async def call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        probe = self._reconnect.down
        if not self._reconnect.may_try():
            self.report_error(operation, "unavailable", None)
            raise BackendUnavailable(
                "the Redis backend is down; it is probed again shortly",
                operation=operation,
                error_type="unavailable",
            )
        try:
            async with self._deadline():
                result = await fn()
        except asyncio.CancelledError:
            if probe:
                self._reconnect.abandon()
            raise
        except Exception as exc:
            failure = self._failure(operation, exc)
            connectivity = failure.error_type in _CONNECTIVITY
            if connectivity and self._reconnect.failed():
                logger.warning(
                    "Redis at %s failed (%s: %s); skipping it and probing with backoff",
                    redacted_url(self.url),
                    failure.error_type,
                    exc,
                )
                await self._drop_idle_connections()
            elif not connectivity and probe:
                # Redis answered, with an error: it is reachable.
                self._reconnect.succeeded()
            raise failure from exc
        self._answered()
        return result

    def _deadline(self) -> Deadline:
        """The timeout of one call, on the running loop's clock (see ``_deadline``)."""
        loop = asyncio.get_running_loop()
        lag = self._lag
        if lag is None or lag.loop is not loop:
            lag = self._lag = LoopLag(loop, self.timeout)
        return lag.deadline()

    def _answered(self) -> None:
        """Redis answered: if it was down, it is up again, for every caller at once."""
        if self._reconnect.succeeded():
            logger.warning("Redis at %s answers again; resuming", redacted_url(self.url))

    def _failure(self, operation: str, exc: BaseException) -> BackendError:
        """Report a failed operation and the BackendError that stands for it."""
        error_type = _classify(exc)
        self.report_error(operation, error_type, exc)
        return BackendError(
            f"Redis {operation} failed: {error_type}", operation=operation, error_type=error_type
        )

    async def _drop_idle_connections(self) -> None:
        # After an outage the idle connections point at a dead server; start fresh ones.
        if self._pool is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pool.disconnect(inuse_connections=False)


_CONNECTIVITY = frozenset(("timeout", "connection"))


def _classify(exc: BaseException) -> str:
    """The one place driver errors are translated, into an ``error.type``: ``timeout`` and
    ``connection`` mean Redis could not be reached.

    Anything else is still turned into a BackendError (named by its class), so that no
    surprise from a driver reaches the application; it is counted and on the span."""
    cause = getattr(exc, "storage_error", None)  # limits wraps driver errors in StorageError
    if isinstance(cause, BaseException):
        exc = cause
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError | OSError):
        return "connection"
    return type(exc).__name__
