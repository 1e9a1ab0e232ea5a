"""The durable queue: SAQ's Redis queue, built from ``defer.durable`` for the deferring side and
for the workers, and the job that carries one deferred task.

Why SAQ (docs/pipelines.md, "Durable mode", has the comparison): it is asyncio-native, sends
JSON, and a task's run is leased, not merely delivered: a job moves atomically from the queued
list to the active list (``BLMOVE``), its worker touches it while it runs, and a sweep (one
worker at a time, fleet-wide) puts a job whose worker stopped touching it back in the queue.
Delivery is at least once.

Every task goes through one SAQ function, :data:`DISPATCH`: the job's keyword arguments are a
task record (:mod:`toolkit.pipelines._durable_payload`) naming the ``@background`` function,
which the worker looks up in its own registry, so the queue carries data, never code.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any, Final

from opentelemetry.metrics import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import Job
from saq.queue.redis import RedisQueue

from toolkit.settings._durable import DurableSettings

DISPATCH: Final = "toolkit.deferred"
"""The one SAQ function name every durable task is queued under."""

ENGINE: Final = "saq"
"""``messaging.system`` of the durable spans."""

CLOSE_TIMEOUT: Final = 2.0
"""Seconds closing the queue's connections may take at shutdown."""

ABORT_WAIT: Final = 2.0
"""Seconds a sweep waits for a lost run to be aborted (by its worker, if that one is alive but
stalled; it checks every second) before queueing the task again. SAQ waits 5 s; a dead worker
never answers, so this is pure delay on every redelivery."""


class DurableQueue(RedisQueue):
    """SAQ's Redis queue, counting the lost runs its sweeps find (``swept``: None counts
    nothing, on the deferring side, which never sweeps)."""

    def __init__(self, redis: Redis, *, name: str, swept: Counter | None = None) -> None:
        super().__init__(redis, name=name, swept_error_message="lost: no heartbeat")
        self._swept_counter = swept

    async def close(self) -> None:
        """Close the connections; never raises (a Redis that is away has nothing to close)."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.disconnect()

    async def sweep(self, lock: int = 60, abort: float = ABORT_WAIT) -> list[str]:
        swept = await super().sweep(lock, abort)
        if swept and self._swept_counter is not None:
            self._swept_counter.add(len(swept))
        return swept


def redis_url(settings: DurableSettings, backend_url: str) -> str:
    """The queue's Redis: ``defer.durable.url``, else ``backend.url``, which must be a Redis."""
    url = settings.url or backend_url
    if not url.startswith(("redis://", "rediss://")):
        from toolkit.errors import ConfigurationError

        raise ConfigurationError(
            f"defer.durable.enabled needs a Redis for its queue: set defer.durable.url (e.g. "
            f"'redis://localhost:6379/1') or a redis:// backend.url, not {url!r}"
        )
    return url


def open_queue(
    settings: DurableSettings, url: str, *, connect_timeout: float, swept: Counter | None = None
) -> DurableQueue:
    """A queue on its own connection pool: a hand-off never waits behind a worker's blocking
    dequeue, and a connection attempt to a Redis that is down gives up in ``connect_timeout``.
    Commands have no socket timeout, since a worker's dequeue blocks on purpose; callers bound
    their own waits."""
    client: Redis = Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_keepalive=True,
        health_check_interval=30,
    )
    return DurableQueue(client, name=settings.queue, swept=swept)


def make_job(key: str, kwargs: dict[str, Any], settings: DurableSettings) -> Job:
    """The SAQ job of one hand-off: keyed by the task's id (SAQ refuses to queue a key twice),
    one run's time limit, the heartbeat its worker must keep, and one delivery plus
    ``redeliveries`` more for runs that are lost. SAQ's whole-second fields are rounded up so
    that a bound is never shorter than the setting."""
    return Job(
        function=DISPATCH,
        kwargs=kwargs,
        key=key,
        timeout=math.ceil(settings.timeout),
        heartbeat=math.ceil(settings.heartbeat),
        retries=1 + settings.redeliveries,
        ttl=math.ceil(settings.keep),
    )
