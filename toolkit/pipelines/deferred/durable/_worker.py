"""The worker side of durable mode: runs the tasks of the durable queue by their registered name.

A :class:`DurableWorker` is SAQ's worker with one function, :data:`DISPATCH`, which decodes the
task's record, looks its ``@background`` function up by name in this process (the worker
imported the app's module, so the registry holds the app's tasks) and runs it in a fresh
context, under a span linked to the one that deferred it. While a task runs, the worker
touches its job every third of ``heartbeat``; a worker that dies stops touching it, and the
next sweep (any worker's) queues it again: at least once, never exactly once. The task's
retries after an exception happen inside one delivery, as in process.

It runs as ``agent-toolkit worker APP_MODULE`` (its own process, SIGTERM drains it), or inside
each app process (``defer.durable.workers_in_app``), started and drained with the app.

Stopping (:class:`_StoppableWorker`): SAQ's ``Worker.stop()`` waits, up to the grace, for every
task it holds, and its upkeep loops (abort, schedule, sweep, worker info) only look at the stop
between sleeps of up to ``sweep_interval`` or 10 s, so a stop took the whole grace even when
idle. SAQ has no public way to wake them, so the worker overrides its public ``upkeep()`` to
keep the loops it starts and, at stop, cancels them once no sweep is under way (a sweep cut
midway can lose a task), and the slots blocked waiting for a job; then SAQ's own stop, left
as it is, gives the running tasks the grace, cancels what remains and queues it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

from opentelemetry import metrics
from saq import Job, Worker
from saq.types import Context, PartialTimersDict

from toolkit._tasks import spawn, stop_tasks
from toolkit.pipelines.deferred._task import TaskRecord, TaskSpec
from toolkit.pipelines.deferred.durable._payload import from_job, name_of
from toolkit.pipelines.deferred.durable._queue import DISPATCH, ENGINE, DurableQueue, open_queue
from toolkit.settings._durable import DurableSettings
from toolkit.telemetry import names

logger = logging.getLogger("toolkit.pipelines.durable")

Execute = Callable[[TaskRecord], Awaitable[None]]
"""Runs one task in this process: the deferred-work runner's own execution (span, retries,
metrics), as in process."""

Lookup = Callable[[str], TaskSpec]
"""The ``@background`` function registered under a name in this process; raises
:class:`LookupError` when none is."""

_DEQUEUE_WAIT: Final = 1.0
"""Seconds an idle worker slot blocks on the queue before it looks again (a stop cuts it short)."""


class _StoppableWorker(Worker[Context]):
    """SAQ's worker, stopping as soon as its running tasks are done (see the module's doc)."""

    def __init__(self, queue: DurableQueue, **options: Any) -> None:
        super().__init__(queue, **options)
        self._durable_queue = queue
        self._upkeep: list[asyncio.Task[None]] = []
        self._retiring: set[asyncio.Task[None]] = set()

    async def upkeep(self) -> list[asyncio.Task[None]]:
        self._upkeep = await super().upkeep()
        return self._upkeep

    async def stop(self) -> None:
        self.event.set()  # no slot takes another job
        self._durable_queue.interrupt_dequeues()
        # Alongside SAQ's stop, which waits for the upkeep loops too and cuts them (a sweep
        # included) only when the grace runs out.
        retiring = spawn(self._retiring, self._retire_upkeep())
        try:
            await super().stop()
        finally:
            await stop_tasks([retiring])

    async def _retire_upkeep(self) -> None:
        async with self._durable_queue.sweeping:
            for task in self._upkeep:
                task.cancel()


class DurableWorker:
    """Runs the durable queue's tasks, ``settings.concurrency`` at once.

    Args:
        settings: the ``defer.durable`` section.
        url: the queue's Redis.
        lookup: finds a task's function by its registered name.
        execute: runs one record (the deferred-work runner's own execution: span, retries,
            metrics).
        grace: at stop, seconds the running tasks may take to finish; those still running are
            cancelled and queued again, for another worker. An idle worker stops at once.
        handle_signals: SIGINT and SIGTERM stop the worker (its own process); False inside an
            app, whose server owns the signals.
        meter_provider: where the queue's counts go.
    """

    def __init__(
        self,
        settings: DurableSettings,
        url: str,
        *,
        lookup: Lookup,
        execute: Execute,
        grace: float,
        handle_signals: bool = False,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(
            names.INSTRUMENTATION_SCOPE
        )
        self._redelivered = names.DEFER_DURABLE_REDELIVERED_METRIC.create(meter)
        self._lookup = lookup
        self._execute = execute
        # The messaging conventions' attributes of processing a message, the id added per task.
        self._delivery = {
            names.MESSAGING_SYSTEM: ENGINE,
            names.MESSAGING_DESTINATION_NAME: settings.queue,
            names.MESSAGING_OPERATION_TYPE: names.MESSAGING_PROCESS,
        }
        self.queue: DurableQueue = open_queue(
            settings,
            url,
            connect_timeout=settings.handoff_timeout,
            swept=names.DEFER_DURABLE_SWEPT_METRIC.create(meter),
        )
        self._saq = _StoppableWorker(
            self.queue,
            functions=[(DISPATCH, self._dispatch)],
            concurrency=settings.concurrency,
            # SAQ's defaults but the sweep's (its typing wants every timer given).
            timers=PartialTimersDict(
                schedule=1, worker_info=10, abort=1, sweep=math.ceil(settings.sweep_interval)
            ),
            dequeue_timeout=_DEQUEUE_WAIT,
            shutdown_grace_period_s=math.ceil(grace),
        )
        if not handle_signals:
            self._saq.SIGNALS = []
        self._touch_every = settings.heartbeat / 3
        self._heartbeats: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Run until stopped (a signal with ``handle_signals``, or :meth:`stop`)."""
        try:
            await self._saq.start()
        finally:
            await self.queue.close()

    def start(self) -> None:
        """Run in the background of this process (an app's), until :meth:`stop`."""
        if self._running is None:
            self._running = spawn(self._tasks, self.run())

    async def stop(self) -> None:
        """Stop taking tasks, let the running ones finish within the grace period, queue the
        rest again for another worker, close the connections."""
        await self._saq.stop()
        running, self._running = self._running, None
        if running is not None:
            await stop_tasks([running])

    async def _dispatch(self, ctx: Context, **job: Any) -> str:
        """SAQ's function: one delivery of one task."""
        saq_job = ctx["job"]
        name = name_of(job)
        try:
            spec = self._lookup(name)
        except LookupError as exc:
            # Given up, not retried: every worker runs the same code, so none has it either.
            logger.error(
                "durable task %s given up: %s (does APP_MODULE import it?)", saq_job.key, exc
            )
            return "unknown"
        if saq_job.attempts > 1:
            self._redelivered.add(1)
        heartbeat = spawn(self._heartbeats, self._touch(saq_job))
        try:
            delivery = {**self._delivery, names.MESSAGING_MESSAGE_ID: str(job.get("id"))}
            await self._execute(from_job(job, spec, attempt=saq_job.attempts, delivery=delivery))
        except Exception:
            # The runner records a task's failure itself; one that escapes it is not queued
            # again (that would multiply the task's own retries).
            logger.exception("durable task %s (%s) failed", saq_job.key, name)
            return "failed"
        finally:
            await stop_tasks([heartbeat])
        return "done"

    async def _touch(self, job: Job) -> None:
        """Keep the job's heartbeat fresh while its task runs; a missed touch (Redis away a
        moment) is retried at the next one, and only a run of them makes the task lost."""
        while True:
            await asyncio.sleep(self._touch_every)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._touch_every):
                    await job.update()
