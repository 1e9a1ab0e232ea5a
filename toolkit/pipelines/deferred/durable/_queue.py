"""The durable queue: SAQ's Redis queue, built from ``defer.durable`` for the deferring side and
for the workers, and the job that carries one deferred task.

Why SAQ (docs/pipelines.md, "Durable mode", has the comparison): it is asyncio-native, sends
JSON, and a task's run is leased, not merely delivered: a job moves atomically from the queued
list to the active list (``BLMOVE``), its worker touches it while it runs, and a sweep (one
worker at a time, fleet-wide) puts a job whose worker stopped touching it back in the queue.
Delivery is at least once.

Every task goes through one SAQ function, :data:`DISPATCH`: the job's keyword arguments are a
task record (:mod:`._payload`) naming the ``@background`` function, which the worker looks up
in its own registry, so the queue carries data, never code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any, Final

from opentelemetry.metrics import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now, seconds

from toolkit.settings._durable import DurableSettings

logger = logging.getLogger("toolkit.pipelines.durable")

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
    """SAQ's Redis queue with a sweep of its own (:meth:`sweep`), counting the lost runs it
    finds (``swept``: None counts nothing, on the deferring side, which never sweeps)."""

    def __init__(self, redis: Redis, *, name: str, swept: Counter | None = None) -> None:
        super().__init__(redis, name=name, swept_error_message="lost: no heartbeat")
        self._swept_counter = swept
        # "job id:attempts" -> when a sweep first saw that delivery in the active list still queued
        self._unmarked = self.namespace("unmarked")
        self._dequeuing: set[asyncio.Task[Any]] = set()
        self.sweeping = asyncio.Lock()
        """Held while a sweep runs: a stopping worker waits for it (a sweep cut between its
        abort and its retry would leave the lost task in no list at all)."""

    async def dequeue(
        self,
        timeout: float = 0.0,  # noqa: ASYNC109 (SAQ's signature, which its worker calls)
        poll_interval: float = 0.0,
    ) -> Job | None:
        """SAQ's dequeue, noting the task that waits in it, for :meth:`interrupt_dequeues`."""
        task = asyncio.current_task()
        if task is not None:
            self._dequeuing.add(task)
        try:
            return await super().dequeue(timeout, poll_interval)
        finally:
            if task is not None:
                self._dequeuing.discard(task)

    def interrupt_dequeues(self) -> None:
        """Cancel the worker slots waiting for a job, so that a stopping worker need not wait
        out their blocking wait. A job whose ``BLMOVE`` answer was on its way at that moment
        sits in the active list still marked queued, and the sweep queues it again."""
        for task in self._dequeuing:
            task.cancel()

    async def close(self) -> None:
        """Close the connections; never raises (a Redis that is away has nothing to close)."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.disconnect()

    async def sweep(self, lock: int = 60, abort: float = ABORT_WAIT) -> list[str]:
        """Queue again (or give up) the runs that are lost, once per ``lock`` seconds across
        the fleet. A run is lost when its worker stopped touching it (``heartbeat``) or it
        overran its ``timeout``. A job in the active list still marked queued was moved there
        by a worker that is marking it active now, or died before it could: it is lost only
        if an earlier sweep saw it so a heartbeat ago. (SAQ's own sweep takes it for lost at
        once, so a sweep that meets a dequeue, as at every worker's start, runs the task
        twice, or loses it when its abort cancels the run it raced.)"""
        async with self.sweeping:
            return await self._sweep_once(lock, abort)

    async def _sweep_once(self, lock: int, abort: float) -> list[str]:
        if not await self.redis.set(self._sweep, 1, nx=True, ex=max(1, lock)):
            return []  # another worker swept within the last ``lock`` seconds
        unmarked = {
            (k.decode() if isinstance(k, bytes) else str(k)): int(v)
            for k, v in (await self.redis.hgetall(self._unmarked)).items()
        }
        still_unmarked: dict[str, int] = {}
        swept: list[str] = []
        for raw in await self.redis.lrange(self._active, 0, -1):
            job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            job = await self._get_job_by_id(job_id)
            if job is None:  # its record expired or was deleted: nothing to run again
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
            elif job.status is Status.QUEUED:
                # Per delivery: a sighting of an earlier one (a stop can leave it unswept)
                # must not make the next delivery of the same job look lost.
                delivery = f"{job_id}:{job.attempts}"
                seen = unmarked.get(delivery, now())
                if seconds(now() - seen) <= max(1, job.heartbeat):
                    still_unmarked[delivery] = seen
                    continue
                await self._lost(job, abort)
            elif job.status in (Status.ACTIVE, Status.ABORTING) and job.stuck:
                await self._lost(job, abort)
            else:
                continue  # running, or finished and being taken off the list by its worker
            swept.append(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._unmarked)
            if still_unmarked:
                pipe.hset(self._unmarked, mapping=still_unmarked)  # type: ignore[arg-type]
            await pipe.execute()
        if swept and self._swept_counter is not None:
            self._swept_counter.add(len(swept))
        return swept

    async def _lost(self, job: Job, abort: float) -> None:
        logger.warning("durable task %s lost (no heartbeat): queued again", job.key)
        await self.abort(job, error=self.swept_error_message)
        with contextlib.suppress(TimeoutError):
            await job.refresh(abort)  # a live but stalled worker may stop it first
        if job.retryable:
            await self.retry(job, error=self.swept_error_message)
        else:
            await self.finish(job, Status.ABORTED, error=self.swept_error_message)


def redis_url(settings: DurableSettings, backend_url: str) -> str:
    """The queue's Redis: ``defer.durable.url``, else ``backend.url``, which must be a Redis."""
    url = settings.url or backend_url
    if not url.startswith(("redis://", "rediss://")):
        from toolkit.errors import ConfigurationError

        raise ConfigurationError(
            f"the durable queue (defer.durable) needs a Redis: set defer.durable.url (e.g. "
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
