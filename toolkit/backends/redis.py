"""The shared backend: Redis through redis-py's asyncio client (hiredis parser when installed).

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
import json
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

from opentelemetry import metrics

from toolkit.backends._breaker import BreakerConfig, BreakerView
from toolkit.backends._cache_table import MAX_INVALIDATED_TAGS
from toolkit.backends._deadline import Deadline, LoopLag
from toolkit.backends._gcra import GcraLimit, GcraResult
from toolkit.backends._reconnect import Reconnect
from toolkit.backends.base import (
    BREAKER_CHANNEL,
    CACHE_CHANNEL,
    FLAG_HISTORY_LENGTH,
    FLAGS_CHANNEL,
    Backend,
    redacted_url,
)
from toolkit.errors import BackendError, BackendUnavailable, ConfigurationError

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError(
        "a redis:// backend needs the redis client: pip install 'agent-server-toolkit[redis]'"
    ) from exc

if TYPE_CHECKING:
    from limits.aio.storage import Storage

T = TypeVar("T")
logger = logging.getLogger("toolkit.backends")

_NO_DRIVER_TIMEOUTS: Final[dict[str, Any]] = {
    "socket_timeout": None,
    "socket_connect_timeout": None,
}
"""redis-py's socket timeouts (5 s by default) count wall time, the event loop's delays
included: they are off, and every call runs inside ``RedisBackend._deadline()`` instead."""


_CLUSTER_CACHE_SHARDS = 16
"""On a cluster, cache entries are spread over this many {hash tags}, each with its own tag
indexes and invalidated tags, so that every cache script touches one slot."""


def _read_script(name: str) -> str:
    return resources.files("toolkit.backends").joinpath("lua", name).read_text("utf-8")


class RedisBackend(Backend):
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

    name: ClassVar[str] = "redis"

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
        super().__init__(timeout=timeout, key_prefix=key_prefix, meter_provider=meter_provider)
        self.url = url
        self._reconnect = reconnect or Reconnect()
        self._cluster = url.startswith("redis+cluster://")
        self._lag: LoopLag | None = None
        self._listen_options: dict[str, Any] = {**_NO_DRIVER_TIMEOUTS, "health_check_interval": 5}
        self._client: Any
        if self._cluster:
            nodes = [
                aioredis.cluster.ClusterNode(host, int(port))
                for host, _, port in (
                    node.rpartition(":") for node in url.removeprefix("redis+cluster://").split(",")
                )
            ]
            self._client = aioredis.RedisCluster(
                startup_nodes=nodes, max_connections=max_connections, **_NO_DRIVER_TIMEOUTS
            )
            self._pool = None
        else:
            self._pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=None,
                # A pooled connection may be stale after a Redis restart: retry once, at once.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                **_NO_DRIVER_TIMEOUTS,
            )
            self._client = aioredis.Redis(connection_pool=self._pool)
        self._db = 0 if self._pool is None else int(self._pool.connection_kwargs.get("db", 0))
        self._cache_stats: tuple[int, int] | None = None
        self._gcra_script = self._client.register_script(_read_script("gcra.lua"))
        self._flags_save_script = self._client.register_script(_read_script("flags_save.lua"))
        self._lease_renew_script = self._client.register_script(_read_script("lease_renew.lua"))
        self._lease_release_script = self._client.register_script(_read_script("lease_release.lua"))
        self._cache_scripts = {
            op: self._client.register_script(_read_script(f"cache_{op}.lua"))
            for op in ("set", "invalidate", "clock")
        }
        self._cache_shards = _CLUSTER_CACHE_SHARDS if self._cluster else 1
        self._clock_key = self.key("cache", "clock")
        self._breaker_scripts = {
            op: self._client.register_script(_read_script(f"breaker_{op}.lua"))
            for op in ("record", "probe", "release", "force")
        }
        self._limits_storage: Storage | None = None
        # Overrides and their history share one {hash tag}: the save script runs on a cluster.
        self._flags_key = self.key("{flags}", "state")
        self._history_key = self.key("{flags}", "history")
        self._declared_key = self.key("{flags}", "declared")
        self._channel = self.key(FLAGS_CHANNEL)

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
        elif self._limits_storage is not None:
            # On a cluster `limits` keeps a client of its own (it cannot share ours); the
            # library has no close method, so close the client its bridge holds.
            client = getattr(getattr(self._limits_storage, "bridge", None), "storage", None)
            if client is not None:
                await client.aclose()

    async def gcra(self, keys: Sequence[str], limits: Sequence[GcraLimit], cost: int) -> GcraResult:
        args: list[int] = [cost]
        for limit in limits:
            args += [limit.interval_us, limit.period_us]
        full_keys = [self.key(k) for k in keys]
        reply = await self.call(
            "ratelimit.gcra", lambda: self._gcra_script(keys=full_keys, args=args)
        )
        return GcraResult.from_reply(reply)

    async def flags_load(self) -> dict[str, str]:
        stored = await self.call("flags.load", lambda: self._client.hgetall(self._flags_key))
        return {k.decode(): v.decode() for k, v in stored.items()}

    async def flags_save(self, key: str, state: str | None, change: dict[str, Any]) -> None:
        keys = [self._flags_key, self._history_key]
        args = [key, state or "", json.dumps(change), self._channel, FLAG_HISTORY_LENGTH]
        await self.call("flags.save", lambda: self._flags_save_script(keys=keys, args=args))

    async def flags_history(self, limit: int) -> list[dict[str, Any]]:
        records = await self.call(
            "flags.history", lambda: self._client.lrange(self._history_key, 0, limit - 1)
        )
        return [json.loads(record) for record in records]

    async def flags_declare(self, definitions: dict[str, str]) -> None:
        if definitions:
            await self.call(
                "flags.declare", lambda: self._client.hset(self._declared_key, mapping=definitions)
            )

    async def flags_declared(self) -> dict[str, str]:
        stored = await self.call("flags.declared", lambda: self._client.hgetall(self._declared_key))
        return {k.decode(): v.decode() for k, v in stored.items()}

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
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc  # redis-py swallowed our cancel
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

    # --- cache entries: one shard off a cluster, 16 {hash tags} on one ---------------------------

    def _shard(self, key: str) -> int:
        return zlib.crc32(key.encode("utf-8", "surrogatepass")) % self._cache_shards

    def _in_shard(self, shard: int, *parts: str) -> str:
        if self._cluster:
            return self.key("{cache" + str(shard) + "}", *parts)
        return self.key(*parts)

    def _entry_key(self, key: str) -> str:
        return self._in_shard(self._shard(key), key)

    def _shard_keys(self, shard: int, tags: Sequence[str]) -> list[str]:
        """The shard's invalidated tags, its floor, then the index of each tag."""
        return [
            self._in_shard(shard, "cache", "invalidated"),
            self._in_shard(shard, "cache", "floor"),
            *(self._in_shard(shard, "cache", "tagged", tag) for tag in tags),
        ]

    async def cache_get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        full = [self._entry_key(k) for k in keys]
        if len(full) == 1:
            value = await self.call("cache.get", lambda: self._client.get(full[0]))
            return [value]
        # MGET needs one slot; on a cluster, a pipeline splits the keys by node instead.
        if self._cluster:
            return await self.call("cache.get", lambda: self._pipelined(("GET", k) for k in full))
        values: list[bytes | None] = await self.call("cache.get", lambda: self._client.mget(full))
        return values

    async def cache_generation(self) -> int:
        value = await self.call("cache.generation", lambda: self._client.get(self._clock_key))
        return int(value or 0)

    async def cache_set_many(
        self,
        items: Sequence[tuple[str, bytes]],
        ttl: float,
        tags: Sequence[str] = (),
        generation: int | None = None,
    ) -> int:
        ttl_ms = max(1, round(ttl * 1000))
        shards: dict[int, list[tuple[str, bytes]]] = {}
        for key, value in items:
            shards.setdefault(self._shard(key), []).append((key, value))
        script = self._cache_scripts["set"]
        read = -1 if generation is None else generation

        async def store(shard: int, group: list[tuple[str, bytes]]) -> int:
            index = self._shard_keys(shard, tags)
            keys = [*index[:2], *(self._in_shard(shard, k) for k, _ in group), *index[2:]]
            args = [read, ttl_ms, len(group), *(v for _, v in group), *tags]
            stored = await self.call("cache.set", lambda: script(keys=keys, args=args))
            return int(stored)

        counts = await asyncio.gather(*(store(s, group) for s, group in shards.items()))
        return sum(counts)

    async def cache_invalidate(self, tags: Sequence[str]) -> int:
        clock_script, script = self._cache_scripts["clock"], self._cache_scripts["invalidate"]
        # The clock first: a write that reads it from here on is newer than this invalidation,
        # and one that read it before is refused by every shard, before or after its deletion.
        clock = await self.call(
            "cache.invalidate", lambda: clock_script(keys=[self._clock_key], args=[])
        )
        args = [clock, MAX_INVALIDATED_TAGS, *tags]

        async def invalidate(shard: int) -> int:
            keys = self._shard_keys(shard, tags)
            return int(await self.call("cache.invalidate", lambda: script(keys=keys, args=args)))

        counts = await asyncio.gather(*(invalidate(s) for s in range(self._cache_shards)))
        await self.publish(CACHE_CHANNEL, json.dumps({"tags": list(tags)}))
        return sum(counts)

    def cache_stats(self) -> tuple[int, int] | None:
        return self._cache_stats

    async def refresh_cache_stats(self) -> None:
        """Redis's own counts, from INFO: keys in the toolkit's database (summed over the
        primaries of a cluster) and keys Redis evicted under ``maxmemory``. They cover the
        whole database, so a Redis shared with other data reports that data too."""

        async def read() -> tuple[int, int]:
            if self._cluster:
                keyspaces = await self._client.info("keyspace", target_nodes="primaries")
                stats = await self._client.info("stats", target_nodes="primaries")
                return (
                    sum(_keys_in(info, 0) for info in keyspaces.values()),
                    sum(int(info.get("evicted_keys", 0)) for info in stats.values()),
                )
            keyspace = await self._client.info("keyspace")
            stats = await self._client.info("stats")
            return _keys_in(keyspace, self._db), int(stats.get("evicted_keys", 0))

        self._cache_stats = await self.call("cache.stats", read)

    async def lease_acquire(self, key: str, token: str, ttl: float) -> bool:
        ms = max(1, round(ttl * 1000))
        taken = await self.call(
            "lease.acquire", lambda: self._client.set(self.key(key), token, nx=True, px=ms)
        )
        return bool(taken)

    async def lease_renew(self, key: str, token: str, ttl: float) -> bool:
        ms = max(1, round(ttl * 1000))
        renewed = await self.call(
            "lease.renew", lambda: self._lease_renew_script(keys=[self.key(key)], args=[token, ms])
        )
        return bool(renewed)

    async def lease_release(self, key: str, token: str) -> None:
        await self.call(
            "lease.release", lambda: self._lease_release_script(keys=[self.key(key)], args=[token])
        )

    async def lease_held(self, key: str) -> bool:
        return bool(await self.call("lease.held", lambda: self._client.exists(self.key(key))))

    def _breaker_keys(self, name: str) -> list[str]:
        # One {hash tag} per breaker: its scripts touch all three keys, on one cluster slot.
        tag = "{breaker:" + name + "}"
        return [self.key(tag, "state"), self.key(tag, "window"), self.key(tag, "probes")]

    async def _breaker_script(
        self, operation: str, script: str, name: str, args: Sequence[object]
    ) -> BreakerView:
        keys = self._breaker_keys(name)
        call = self._breaker_scripts[script]
        reply = await self.call(operation, lambda: call(keys=keys, args=list(args)))
        return BreakerView.from_reply(reply)

    async def breaker_record(
        self,
        name: str,
        now_ms: int,
        successes: int,
        failures: int,
        slow: int,
        trip: bool,
        config: BreakerConfig,
    ) -> BreakerView:
        args = [now_ms, successes, failures, slow, int(trip), self.key(BREAKER_CHANNEL), name]
        return await self._breaker_script("breaker.record", "record", name, [*args, *config.args()])

    async def breaker_acquire_probe(
        self, name: str, now_ms: int, token: str, config: BreakerConfig
    ) -> BreakerView:
        args = [now_ms, token, self.key(BREAKER_CHANNEL), name, *config.args()]
        return await self._breaker_script("breaker.probe", "probe", name, args)

    async def breaker_release_probe(
        self,
        name: str,
        now_ms: int,
        token: str,
        generation: int,
        outcome: str,
        config: BreakerConfig,
    ) -> BreakerView:
        args = [now_ms, token, generation, outcome, self.key(BREAKER_CHANNEL), name]
        return await self._breaker_script(
            "breaker.release", "release", name, [*args, *config.args()]
        )

    async def breaker_force(self, name: str, forced: str) -> BreakerView:
        args = [forced, self.key(BREAKER_CHANNEL), name]
        return await self._breaker_script("breaker.force", "force", name, args)

    async def breaker_read(self, name: str) -> BreakerView:
        key = self._breaker_keys(name)[0]
        fields = ("state", "until", "gen", "forced")
        stored = await self.call("breaker.read", lambda: self._client.hmget(key, fields))
        state, until, gen, forced = (None if v is None else v.decode() for v in stored)
        return BreakerView(state or "closed", int(until or 0), int(gen or 0), forced or "")

    async def _pipelined(self, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
        pipeline = self._client.pipeline(transaction=False)
        for command in commands:
            pipeline.execute_command(*command)
        replies: list[Any] = await pipeline.execute()
        return replies

    def limits_storage(self) -> Storage:
        if self._limits_storage is None:
            from limits.aio.storage import RedisClusterStorage, RedisStorage

            prefix = self.key("limits")
            if self._cluster:
                self._limits_storage = RedisClusterStorage(
                    "async+redis+cluster://" + self.url.removeprefix("redis+cluster://"),
                    implementation="redispy",
                    key_prefix=prefix,
                    wrap_exceptions=True,
                    **_NO_DRIVER_TIMEOUTS,
                )
            else:
                self._limits_storage = RedisStorage(
                    "async+" + self.url,
                    implementation="redispy",
                    connection_pool=self._pool,  # type: ignore[arg-type]
                    key_prefix=prefix,
                    wrap_exceptions=True,
                )
        return self._limits_storage

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


def _keys_in(keyspace: dict[str, Any], db: int) -> int:
    """Keys of database ``db`` in an INFO keyspace reply (``db0: {"keys": 12, ...}``); none
    when the database is empty (INFO then leaves it out)."""
    entry = keyspace.get(f"db{db}")
    return int(entry.get("keys", 0)) if isinstance(entry, dict) else 0
