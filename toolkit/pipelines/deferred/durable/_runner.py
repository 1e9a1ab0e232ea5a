"""The durable runner: deferred work handed to a queue in Redis, run by worker processes.

The deferring side of durable mode (``defer.durable.enabled``), a
:class:`~toolkit.pipelines.deferred._task.TaskRunner`. A hand-off checks that the task's arguments
are JSON (:mod:`._payload`), then enqueues it within the hand-off timeout, bounded by
the current deadline; it returns once Redis holds the task, which any worker of the fleet then
runs (:mod:`._worker`), again after a crash. When Redis cannot take it in time the
hand-off is refused with :class:`~toolkit.errors.DurableUnavailable` (the caller knows the task
will not run), or, with ``on_unavailable = "in_process"``, given to the in-process runner,
which a crash of this process loses. The outcome is on the deferring span and in
``toolkit.deferred.durable.handoffs``.

A task no worker could find (``toolkit.defer(fn)`` of a function that is not a registered
``@background``) runs in process, as it would without durable mode.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry import context, metrics, trace
from redis.exceptions import RedisError
from saq import Job

from toolkit import _deadlines
from toolkit._version import __version__
from toolkit.errors import DurableArgumentError, DurableUnavailable
from toolkit.pipelines.deferred._background import lookup
from toolkit.pipelines.deferred._in_process import InProcessRunner
from toolkit.pipelines.deferred._task import TaskRecord
from toolkit.pipelines.deferred.durable._payload import to_job
from toolkit.pipelines.deferred.durable._queue import ENGINE, DurableQueue, make_job, open_queue
from toolkit.pipelines.deferred.durable._worker import DurableWorker
from toolkit.settings._durable import DurableSettings
from toolkit.telemetry import names
from toolkit.telemetry.batched import batched_records
from toolkit.telemetry.counts import shared_counts

logger = logging.getLogger("toolkit.pipelines.durable")


class DurableRunner:
    """Hands deferred tasks to the durable queue (one per app process).

    Args:
        settings: the ``defer.durable`` section.
        url: the queue's Redis (:func:`~toolkit.pipelines.deferred.durable._queue.redis_url`).
        local: this process's in-process runner: it runs what no worker could (unregistered
            functions), what Redis could not take with ``on_unavailable = "in_process"``, and
            the tasks of the in-app worker; its telemetry records accepted and refused
            hand-offs. Started and drained with this runner.
        worker: the worker to run inside this process (``workers_in_app``), or None.
        meter_provider: the app's (``install()`` passes it).
    """

    def __init__(
        self,
        settings: DurableSettings,
        url: str,
        *,
        local: InProcessRunner,
        worker: DurableWorker | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        self.url = url
        self.local = local
        self.worker = worker
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        # On the caller's path: the count is a dict update read at collection, the duration
        # a point queued for the SDK and recorded in a batch, or first thing at a collection.
        self._handoffs = shared_counts(meter, names.DEFER_DURABLE_HANDOFFS_METRIC)
        self._duration = names.DEFER_DURABLE_HANDOFF_DURATION_METRIC.create(meter)
        self._records = batched_records(meter, self._handoffs)
        self._outcomes = {
            outcome: {names.DEFER_DURABLE_OUTCOME: outcome}
            for outcome in names.DEFER_DURABLE_OUTCOMES
        }
        self._queue: DurableQueue | None = None
        self._stopped = False

    async def start(self) -> None:
        """Start the local runner and the in-app worker. Connections are made on first use:
        a Redis down at startup refuses hand-offs, it does not stop the app."""
        await self.local.start()
        self._open()
        if self.worker is not None:
            self.worker.start()

    def _open(self) -> DurableQueue:
        if self._queue is None:
            self._queue = open_queue(
                self.settings, self.url, connect_timeout=self.settings.handoff_timeout
            )
        return self._queue

    async def drain(self, grace: float) -> None:
        """Stop the in-app worker (its unfinished tasks go back to the queue once ``grace``
        ran out) and drain the local runner; accepted durable tasks are in Redis already.
        Hand-offs after it are refused (``stopped``), as in process."""
        self._stopped = True
        if self.worker is not None:
            await self.worker.stop()
        await self.local.drain(grace)
        queue, self._queue = self._queue, None
        if queue is not None:
            await queue.close()

    async def submit(self, record: TaskRecord) -> None:
        """Queue ``record``; returns once Redis holds it (or the local runner took it).

        Raises:
            DurableArgumentError: an argument is not JSON, or the task is over
                ``max_payload_bytes`` (the message names which).
            DurableUnavailable: Redis did not take the task within the hand-off timeout
                (or the time the deadline left).
        """
        if self._stopped or not _registered(record):
            await self.local.submit(record)  # refuses it once drained: the app is stopping
            return
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
        self.local.telemetry.accepted(record)

    async def _enqueue(self, job: Job) -> None:
        queue = self._open()
        async with asyncio.timeout(_deadlines.bounded(self.settings.handoff_timeout)):
            if await queue.enqueue(job) is None:
                # The key is new per hand-off: SAQ refusing it means a bug, never a duplicate.
                raise RedisError(f"the queue refused job {job.key} as already queued")

    async def _unavailable(
        self, record: TaskRecord, exc: BaseException, span: trace.Span, started: float
    ) -> None:
        if self.settings.on_unavailable == "in_process":
            logger.warning(
                "durable queue unavailable (%s): %s runs in this process instead",
                type(exc).__name__,
                record.name,
            )
            self._record(span, names.DEFER_DURABLE_IN_PROCESS, started)
            await self.local.submit(record)
            return
        self._record(span, names.DEFER_DURABLE_UNAVAILABLE, started)
        self.local.telemetry.refused(record.name, names.DEFER_DURABLE_UNAVAILABLE)
        raise DurableUnavailable(
            f"deferred task {record.name!r} refused: the durable queue "
            f"({self.settings.queue!r}) did not take it within defer.durable.handoff_timeout "
            f"({self.settings.handoff_timeout} s) or the time the deadline left "
            f"({type(exc).__name__}: {exc}). Set defer.durable.on_unavailable='in_process' to "
            "run such tasks here instead",
            task=record.name,
            error_type=names.DEFER_DURABLE_UNAVAILABLE,
        ) from exc

    def _record(self, span: trace.Span, outcome: str, started: float) -> None:
        attributes = self._outcomes[outcome]
        self._handoffs.add(outcome, attributes)
        self._records.record(
            self._duration, time.perf_counter() - started, attributes, context.get_current()
        )
        if span.is_recording():
            span.set_attribute(names.DEFER_DURABLE_OUTCOME, outcome)


def _registered(record: TaskRecord) -> bool:
    """Whether a worker can find ``record``'s function by its name (it is a ``@background``)."""
    try:
        return lookup(record.name).function is record.spec.function
    except LookupError:
        return False
