"""CacheStore: cache entries over a backend, with an optional in-process tier, and telemetry.

Every cache of the toolkit (responses, functions, embeddings) goes through one store per app:
it times the backend's operations, counts decisions, keeps the in-process copies coherent
(an invalidation announced by any process empties them) and never lets a backend failure
through as anything but :class:`~toolkit.errors.BackendError`, which each cache turns into
its origin path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final, Protocol

from cachetools import TLRUCache
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from toolkit._deprecated import keyword_only, warn_renamed
from toolkit._tasks import raise_if_cancelling, spawn, stop_tasks
from toolkit._version import __version__
from toolkit.backends import CacheStorage, LeaseStorage, require
from toolkit.backends._cache_table import ENTRY_OVERHEAD, CacheTable
from toolkit.backends._following import start_following
from toolkit.backends.memory import DEFAULT_MAX_CACHE_BYTES
from toolkit.cache._keys import DEFAULT_CALLER
from toolkit.cache._saved import SavedCounts
from toolkit.errors import BackendError
from toolkit.identity import CallerResolver
from toolkit.settings import CacheSettings
from toolkit.telemetry import names
from toolkit.telemetry.counts import shared_callbacks, shared_counts

logger = logging.getLogger("toolkit.cache")

LOCAL = "local"
DEFAULT_LOCAL_BYTES: Final = 64 * 1024 * 1024
"""Bound on the in-process tier's size, whatever its entry count."""
STATS_INTERVAL: Final = 15.0
"""Seconds between readings of a server backend's entry and eviction counts."""
CACHE_CHANNEL: Final = "cache"
"""Where invalidations are announced: ``{"tags": [...]}``, for in-process copies."""


class CacheBackend(CacheStorage, LeaseStorage, Protocol):
    """What the caches need of a backend: entries (announcing their invalidations), and leases
    for their single flights."""


class LocalTier:
    """A bounded in-process copy of recently read entries, kept for a few seconds.

    It saves the backend round trip on hot keys; a short time to live bounds how stale a
    copy can be if an invalidation notice is lost, and any notice empties it at once. It
    holds at most ``max_entries`` entries and ``max_bytes`` bytes: each entry is charged its
    size, and never less than ``max_bytes / max_entries``, so one budget enforces both.
    """

    @keyword_only("LocalTier", "max_bytes")
    def __init__(
        self, max_entries: int, ttl: float, *, max_bytes: int = DEFAULT_LOCAL_BYTES
    ) -> None:
        self.ttl = ttl
        share = max(1, max_bytes // max(1, max_entries))
        self._entries: TLRUCache[str, tuple[bytes, float, int]] = TLRUCache(
            maxsize=share * max_entries,
            ttu=lambda key, entry, now: entry[1],
            timer=time.monotonic,
            getsizeof=lambda entry: entry[2],
        )
        self._share = share
        self.evictions = 0

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: str, value: bytes, ttl: float) -> None:
        entries = self._entries
        size = max(self._share, len(key) + len(value) + ENTRY_OVERHEAD)
        if size > entries.maxsize:
            return  # larger than the whole tier
        before = len(entries)
        replacing = key in entries
        entries[key] = (value, time.monotonic() + min(ttl, self.ttl), size)
        # Entries that made room for this one (expired ones do not count: they were gone).
        self.evictions += max(0, before + (not replacing) - len(entries))

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_CANCELLED = BackendError(
    "the cache read was cancelled", operation="cache.get", error_type="cancelled"
)


class _BatchedReads:
    """Reads asked for in the same turn of the event loop, sent to the backend as one.

    Under load many requests look up their entries at once; one MGET for all of them costs
    Redis and this process one round trip instead of one each. A read waits at most one
    loop turn for its companions. Each caller has its own future, so a caller cancelled
    while waiting takes nothing from the others.
    """

    __slots__ = ("_pending", "_read", "_tasks")

    def __init__(self, read: Callable[[list[str]], Awaitable[list[bytes | None]]]) -> None:
        self._read = read
        self._pending: list[tuple[Sequence[str], asyncio.Future[list[bytes | None]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def read(self, keys: Sequence[str]) -> asyncio.Future[list[bytes | None]]:
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)
        future: asyncio.Future[list[bytes | None]] = loop.create_future()
        self._pending.append((keys, future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        spawn(self._tasks, self._send(batch))

    async def _send(
        self, batch: list[tuple[Sequence[str], asyncio.Future[list[bytes | None]]]]
    ) -> None:
        wanted = list(dict.fromkeys(key for keys, _ in batch for key in keys))
        try:
            found = await self._read(wanted)
        except BaseException as exc:
            # A cancelled batch (the app shutting down) fails its readers as a backend
            # failure would: they go to their origin rather than wait forever.
            failure = exc if isinstance(exc, Exception) else _CANCELLED
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            if failure is _CANCELLED:
                raise
            return
        values = dict(zip(wanted, found, strict=True))
        for keys, future in batch:
            if not future.done():
                future.set_result([values[key] for key in keys])


class CacheStore:
    """Cache entries for the app's caches.

    Sync functions (``@cached`` on a ``def``) cannot wait for a backend: their entries live
    in :attr:`sync_entries`, in this process, and :meth:`invalidate` (here or announced by
    another process) reaches them too.

    Args:
        backend: where entries and single-flight leases live (shared by every instance on
            Redis); ConfigurationError when it lacks :class:`~toolkit.backends.CacheStorage`
            or :class:`~toolkit.backends.LeaseStorage`.
        local: an in-process tier in front of the backend; none when None.
        meter_provider: where the cache metrics live; the global one when None.
        settings: the cache settings the decorators read (serializer, lease, wait); the
            defaults when None.
    """

    def __init__(
        self,
        backend: CacheBackend,
        *,
        local: LocalTier | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        settings: CacheSettings | None = None,
    ) -> None:
        require(backend, CacheStorage, LeaseStorage, user="CacheStore")
        self.backend = backend
        self.local = local
        self.settings = settings if settings is not None else CacheSettings.model_validate({})
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._requests = shared_counts(meter, names.CACHE_REQUESTS_METRIC)
        self.saved = SavedCounts(meter)
        """What hits spared (``toolkit.cache.saved.*``): ``saved.add(name, tally)``."""
        self._duration = names.CACHE_OPERATION_DURATION_METRIC.create(meter)
        shared_callbacks(meter, names.CACHE_ENTRIES_METRIC).append(self._observe_entries)
        shared_callbacks(meter, names.CACHE_EVICTIONS_METRIC).append(self._observe_evictions)
        self._operation_attributes = {
            op: {names.CACHE_OPERATION: op, names.CACHE_BACKEND: backend.name}
            for op in ("get", "set", "invalidate")
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._reads = None if backend.in_process else _BatchedReads(self._read)
        self.sync_entries = CacheTable(DEFAULT_MAX_CACHE_BYTES, time.monotonic)
        self.caller: CallerResolver[str | None] = DEFAULT_CALLER
        """Whose request it is, as the response cache tells callers apart
        (``@cached(per_caller=True)`` uses it): the ``Authorization`` and ``Cookie`` values
        until a response cache with its own ``caller`` is set up."""

    @property
    def identity(self) -> CallerResolver[str | None]:
        """Deprecated: the old name of :attr:`caller`."""
        warn_renamed("CacheStore.identity", "CacheStore.caller")
        return self.caller

    @identity.setter
    def identity(self, caller: CallerResolver[str | None]) -> None:
        warn_renamed("CacheStore.identity", "CacheStore.caller")
        self.caller = caller

    # --- entries -----------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values in order, None for misses. Raises BackendError."""
        values: list[bytes | None] = [None] * len(keys)
        wanted = list(range(len(keys)))
        if self.local is not None:
            wanted = []
            for i, key in enumerate(keys):
                values[i] = self.local.get(key)
                if values[i] is None:
                    wanted.append(i)
            if not wanted:
                return values
        missing = [keys[i] for i in wanted]
        if self._reads is None:
            found = await self._read(missing)
        else:
            found = await self._reads.read(missing)
        for i, value in zip(wanted, found, strict=True):
            values[i] = value
        return values

    async def _read(self, keys: list[str]) -> list[bytes | None]:
        started = time.perf_counter()
        found = await self.backend.cache_get_many(keys)
        self._duration.record(time.perf_counter() - started, self._operation_attributes["get"])
        return found

    def remember(self, key: str, value: bytes, ttl: float) -> None:
        """Keep a copy in the in-process tier (after a backend hit)."""
        if self.local is not None:
            self.local.put(key, value, ttl)

    async def generation(self) -> int:
        """The invalidation clock, read before computing a value to be stored under tags
        (see :meth:`set_many`). Raises BackendError."""
        return await self.backend.cache_generation()

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float,
        tags: Sequence[str] = (),
        generation: int | None = None,
    ) -> int:
        return await self.set_many([(key, value)], ttl, tags, generation)

    async def set_many(
        self,
        items: Sequence[tuple[str, bytes]],
        ttl: float,
        tags: Sequence[str] = (),
        generation: int | None = None,
    ) -> int:
        """Store the items for ``ttl`` seconds under ``tags``; returns how many were stored.
        With ``generation`` (read by :meth:`generation` before the value was computed),
        nothing is stored if one of ``tags`` was invalidated since. Raises BackendError."""
        started = time.perf_counter()
        stored = await self.backend.cache_set_many(items, ttl, tags, generation)
        self._duration.record(time.perf_counter() - started, self._operation_attributes["set"])
        if stored:
            for key, value in items:
                self.remember(key, value, ttl)
        elif items and generation is not None:
            logger.debug("cache write refused: tags %s were invalidated meanwhile", list(tags))
        return stored

    async def invalidate(self, tags: Iterable[str]) -> int:
        """Delete every entry under any of ``tags``, on every instance. Raises BackendError."""
        tags = list(tags)
        started = time.perf_counter()
        deleted = self.sync_entries.invalidate(tags)
        deleted += await self.backend.cache_invalidate(tags, channel=CACHE_CHANNEL)
        self._duration.record(
            time.perf_counter() - started, self._operation_attributes["invalidate"]
        )
        if self.local is not None:
            self.local.clear()
        logger.info("cache invalidated tags %s: %d entries", tags, deleted)
        return deleted

    # --- decisions ---------------------------------------------------------------------------

    def decisions(self) -> list[tuple[Mapping[str, str | int], int]]:
        """The decisions counted so far (what ``toolkit.cache.requests`` reports): each
        series' attributes (cache name and result) and its total. Shared by the stores that
        count through one meter; the status page reads them."""
        return self._requests.totals()

    def record(self, name: str, result: str, key: str | None = None, *, count: int = 1) -> None:
        """Count ``count`` decisions of cache ``name`` (the items of one batch: one call) and
        put them on the current span as one event."""
        self._requests.add(
            (name, result), {names.CACHE_NAME: name, names.CACHE_RESULT: result}, count
        )
        span = trace.get_current_span()
        if span.is_recording():
            event = {names.CACHE_NAME: name, names.CACHE_RESULT: result}
            if key is not None:
                event[names.CACHE_KEY] = key
            span.add_event(names.CACHE_LOOKUP_EVENT, event)

    # --- keeping in-process copies coherent ----------------------------------------------------

    async def start(self) -> None:
        """Follow invalidations announced by every process, for the copies kept here (the
        local tier and sync functions' entries), returning once the subscription is live
        (or its first attempt failed); with a server backend, read its entry and eviction
        counts every :data:`STATS_INTERVAL` seconds for the metrics."""
        if not self.backend.in_process:
            self._tasks.append(asyncio.create_task(self._read_stats(), name="toolkit.cache.stats"))
        self._tasks.append(await self._follow())

    async def stop(self) -> None:
        """Stop following and reading counts (bounded: see :func:`toolkit._tasks.stop_tasks`)."""
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks)

    async def _read_stats(self) -> None:
        # A scrape cannot await the server: it reports the last reading, at most this old.
        while True:
            with contextlib.suppress(BackendError):  # counted by the backend; read again later
                await self.backend.refresh_cache_stats()
            raise_if_cancelling()  # the error may have been a cancellation, swallowed
            await asyncio.sleep(STATS_INTERVAL)

    async def _follow(self) -> asyncio.Task[None]:
        """Follow invalidations in a task, returned once the subscription is live."""
        local, synced = self.local, self.sync_entries

        def lost() -> None:
            # Subscribed anew or cut off: invalidations may have been missed meanwhile.
            if local is not None:
                local.clear()
            synced.clear()

        async def invalidated(message: str) -> None:
            if local is not None:
                local.clear()  # a few seconds' worth of copies: drop them all
            try:
                tags = json.loads(message)["tags"] if message else None
            except (ValueError, KeyError, TypeError):
                tags = None
            if isinstance(tags, list) and all(isinstance(tag, str) for tag in tags):
                synced.invalidate(tags)
            else:
                synced.clear()

        return await start_following(
            self.backend, CACHE_CHANNEL, invalidated, lost, name="toolkit.cache.follow"
        )

    # --- observable instruments ----------------------------------------------------------------

    def _observe_entries(self, options: CallbackOptions) -> list[Observation]:
        del options
        return self._per_tier(0, None if self.local is None else len(self.local))

    def _observe_evictions(self, options: CallbackOptions) -> list[Observation]:
        del options
        return self._per_tier(1, None if self.local is None else self.local.evictions)

    def _per_tier(self, stat: int, local: int | None) -> list[Observation]:
        """The backend's ``cache_stats()[stat]`` (0: entries, 1: evictions; when it has
        stats) and the local tier's ``local`` (when there is one), each under its
        ``toolkit.cache.backend``."""
        seen = []
        stats = self.backend.cache_stats()
        if stats is not None:
            seen.append(Observation(stats[stat], {names.CACHE_BACKEND: self.backend.name}))
        if local is not None:
            seen.append(Observation(local, {names.CACHE_BACKEND: LOCAL}))
        return seen
