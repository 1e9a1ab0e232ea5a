"""The durable runner: deferred work handed to a queue in Redis, run by worker processes.

The deferring side of durable mode (``defer.durable.enabled``). A hand-off checks that the
task's arguments are JSON (:mod:`._durable_payload`), then enqueues it within the hand-off
timeout, bounded by the current deadline; it returns once Redis holds the task, which any
worker of the fleet may then run (:mod:`._durable_worker`), again after a crash. When Redis
cannot take it in time the hand-off is refused with :class:`~toolkit.errors.DurableUnavailable`
(the caller knows the task will not run), or, with ``on_unavailable = "in_process"``, given to
the in-process runner, which a crash of this process loses. Either way the outcome is on the
deferring span and in ``toolkit.defer.durable.handoffs``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry import metrics, trace
from redis.exceptions import RedisError
from saq import Job

from toolkit import _deadlines
from toolkit.errors import DeadlineExceeded, DurableArgumentError, DurableUnavailable
from toolkit.pipelines._deferred import TaskRecord, TaskRunner
from toolkit.pipelines._durable_payload import to_job
from toolkit.pipelines._durable_queue import ENGINE, DurableQueue, make_job, open_queue
from toolkit.settings._durable import DurableSettings
from toolkit.telemetry import names

logger = logging.getLogger("toolkit.pipelines.durable")



class DurableRunner:
    """Hands deferred tasks to the durable queue (one per app process).

    Args:
        settings: the ``defer.durable`` section.
        url: the queue's Redis (:func:`~toolkit.pipelines._durable_queue.redis_url`).
        in_process: the in-process runner, where a task goes when Redis cannot take it and
            ``on_unavailable`` is ``"in_process"`` (started and drained by its owner); None
            refuses whatever the setting says.
        meter_provider / tracer_provider: the app's (``install()`` passes them).
    """

    def __init__(
        self,
        settings: DurableSettings,
        url: str,
        *,
        in_process: TaskRunner | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        self.url = url
        self._in_process = in_process if settings.on_unavailable == "in_process" else None
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(
            names.INSTRUMENTATION_SCOPE
        )
        self._handoffs = names.DEFER_DURABLE_HANDOFFS_METRIC.create(meter)
        self._duration = names.DEFER_DURABLE_HANDOFF_DURATION_METRIC.create(meter)
        self._queue: DurableQueue | None = None
        self._attributes = {
            outcome: {names.DEFER_DURABLE_OUTCOME: outcome} for outcome in names.DEFER_DURABLE_OUTCOMES
        }

    async def start(self) -> None:
        """Open the queue's connection pool (connections are made on first use: a Redis down
        at startup refuses hand-offs, it does not stop the app)."""
        self._open()

    def _open(self) -> DurableQueue:
        if self._queue is None:
            self._queue = open_queue(
                self.settings, self.url, connect_timeout=self.settings.handoff_timeout
            )
        return self._queue

    async def drain(self, grace: float) -> None:
        """Close the connections. Nothing to wait for: accepted tasks are in Redis."""
        queue, self._queue = self._queue, None
        if queue is not None:
            await queue.disconnect()

    async def submit(self, record: TaskRecord) -> None:
        """Queue ``record``; returns once Redis holds it (or, fallen back, once the in-process
        runner took it).

        Raises:
            DurableArgumentError: an argument is not JSON, or the task is over
                ``max_payload_bytes`` (the message names which).
            DurableUnavailable: Redis did not take the task within the hand-off timeout.
            DeadlineExceeded: the current deadline passed before Redis took it.
        """
        started = time.perf_counter()
        span = trace.get_current_span()
        try:
            kwargs = to_job(record, max_bytes=self.settings.max_payload_bytes)
        except DurableArgumentError:
            self._record(span, names.DEFER_DURABLE_INVALID, started)
            raise
        try:
            await self._enqueue(make_job(record.id, kwargs, self.settings))
        except (TimeoutError, RedisError, OSError) as exc:
            await self._unavailable(record, exc, span, started)
            return
        if span.is_recording():
            span.set_attributes(
                {
                    names.MESSAGING_SYSTEM: ENGINE,
                    names.MESSAGING_DESTINATION_NAME: self.settings.queue,
                    names.MESSAGING_MESSAGE_ID: record.id,
                }
            )
        self._record(span, names.DEFER_DURABLE_QUEUED, started)

    async def _enqueue(self, job: Job) -> None:
        queue = self._open()
        async with asyncio.timeout(_deadlines.bounded(self.settings.handoff_timeout)):
            if await queue.enqueue(job) is None:
                # The key is new per hand-off: SAQ refusing it means a bug, never a duplicate.
                raise RedisError(f"the queue refused job {job.key} as already queued")

    async def _unavailable(
        self, record: TaskRecord, exc: BaseException, span: trace.Span, started: float
    ) -> None:
        if self._in_process is not None:
            logger.warning(
                "durable queue unavailable (%s): %s runs in this process instead",
                type(exc).__name__,
                record.name,
            )
            self._record(span, names.DEFER_DURABLE_IN_PROCESS, started)
            await self._in_process.submit(record)
            return
        self._record(span, names.DEFER_DURABLE_UNAVAILABLE, started)
        if _deadlines.time_left() == 0.0:
            raise DeadlineExceeded(
                f"the deadline passed before the durable queue took {record.name}"
            ) from exc
        raise DurableUnavailable(
            f"the durable queue ({self.settings.queue!r} on Redis) did not take {record.name} "
            f"within defer.durable.handoff_timeout ({self.settings.handoff_timeout}s): "
            f"{type(exc).__name__}: {exc}. The task was not accepted; set "
            "defer.durable.on_unavailable='in_process' to run it here instead",
            task=record.name,
            error_type=names.DEFER_DURABLE_UNAVAILABLE,
        ) from exc

    def _record(self, span: trace.Span, outcome: str, started: float) -> None:
        attributes = self._attributes[outcome]
        self._handoffs.add(1, attributes)
        self._duration.record(time.perf_counter() - started, attributes)
        if span.is_recording():
            span.set_attribute(names.DEFER_DURABLE_OUTCOME, outcome)
