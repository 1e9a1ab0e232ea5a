"""The in-process runner of deferred work: a bounded queue, a fixed number of workers, the
retry policy, a drain at shutdown and a crash journal (:mod:`._journal`).

A hand-off (``submit``) puts the record in an ``asyncio.Queue`` of ``defer.queue_size``: at
once when there is room, else waiting at most the hand-off timeout (bounded by the deadline)
before it is refused. ``defer.concurrency`` workers take records in order; each record runs
in a task of its own, in a fresh ``contextvars.Context`` (no deadline, flag pin, span or
anything else of the request that deferred it), under the task's retry policy. Every task
the runner starts is held and, at the end of the drain, cancelled and awaited.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import time
from typing import Any

import anyio.to_thread
from opentelemetry import metrics, trace

from toolkit._deadlines import bounded
from toolkit._default import DEFAULT
from toolkit._tasks import spawn, stop_tasks
from toolkit.errors import DeferRefused
from toolkit.pipelines.deferred._journal import WRITE_INTERVAL, Journal
from toolkit.pipelines.deferred._task import TaskRecord, retry_policy
from toolkit.pipelines.deferred._telemetry import DeferTelemetry
from toolkit.settings import DeferSettings
from toolkit.telemetry import names

logger = logging.getLogger("toolkit.pipelines")


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class InProcessRunner:
    """Runs deferred tasks in this process (the :class:`~._task.TaskRunner` protocol).

    Args:
        settings: the ``defer`` section; its defaults when None.
        service: the service name, which names the crash journal's file.
        tracer_provider / meter_provider: where its spans and metrics go; the global ones
            when None.
    """

    def __init__(
        self,
        settings: DeferSettings | None = None,
        *,
        service: str = "toolkit",
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.settings = settings = settings or DeferSettings.model_validate({})
        self._queue: asyncio.Queue[TaskRecord] = asyncio.Queue(settings.queue_size)
        self._state = _State.NEW
        self._default_retry = retry_policy(settings.retries)
        self._workers: set[asyncio.Task[None]] = set()
        self._running: set[asyncio.Task[None]] = set()
        self._helpers: set[asyncio.Task[None]] = set()
        self.queued: dict[str, int] = {}
        """Tasks accepted and not started, by metric label."""
        self.running: dict[str, int] = {}
        """Tasks running, by metric label."""
        self._pending: dict[str, int] = {}  # accepted and not ended, by name: the journal's
        self._journal = None if settings.journal is None else Journal(settings.journal, service)
        self._dirty = asyncio.Event()
        self._stopped = asyncio.Event()
        self.telemetry = DeferTelemetry(
            self.queued,
            self.running,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )

    async def start(self) -> None:
        """Report what a crashed process of this service left in the journal, then run."""
        if self._journal is not None:
            lost = await anyio.to_thread.run_sync(self._journal.claim_lost)
            if lost:
                logger.warning(
                    "deferred work: %d tasks accepted by a process that crashed (or was "
                    "killed) before finishing them never ran: %s",
                    sum(lost.values()),
                    ", ".join(f"{name}: {count}" for name, count in sorted(lost.items())),
                )
                self.telemetry.lost(lost)
        if self._state is _State.NEW:
            self._run_workers()

    def _run_workers(self) -> None:
        self._state = _State.RUNNING
        for _ in range(self.settings.concurrency):
            spawn(self._workers, self._work())
        if self._journal is not None:
            spawn(self._helpers, self._keep_journal(self._journal))

    async def submit(self, record: TaskRecord) -> None:
        """Accept ``record``, waiting for room at most the hand-off timeout (or the time
        left, if sooner); refuse it when the queue stayed full or the runner stopped."""
        if self._state is _State.STOPPED:
            self._refuse(record, names.DEFER_STOPPED)
        if self._state is _State.NEW:  # no install(): started on first use
            self._run_workers()
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            await self._wait_for_room(record)
        label = self.telemetry.label(record.name)
        self.queued[label] = self.queued.get(label, 0) + 1
        self._pending[record.name] = self._pending.get(record.name, 0) + 1
        self._dirty.set()
        self.telemetry.accepted(record)

    async def _wait_for_room(self, record: TaskRecord) -> None:
        wait = bounded(self.settings.handoff_timeout)
        if wait is not None and wait <= 0:
            self._refuse(record, names.DEFER_QUEUE_FULL)
        try:
            async with asyncio.timeout(wait):
                await self._queue.put(record)
        except TimeoutError:
            self._refuse(record, names.DEFER_QUEUE_FULL)
        if self._state is _State.STOPPED:  # the drain ended while this hand-off waited
            self._queue.get_nowait()  # nothing reads the queue any more: take it back
            self._refuse(record, names.DEFER_STOPPED)

    def _refuse(self, record: TaskRecord, error_type: str) -> None:
        self.telemetry.refused(record.name, error_type)
        why = (
            f"its queue stayed full ({self.settings.queue_size} tasks, defer.queue_size) for "
            f"the hand-off timeout ({self.settings.handoff_timeout} s, defer.handoff_timeout) "
            "or the time the deadline left"
            if error_type == names.DEFER_QUEUE_FULL
            else "the runner has stopped: the app is shutting down"
        )
        raise DeferRefused(
            f"deferred task {record.name!r} refused: {why}", task=record.name, error_type=error_type
        )

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            record = await self._queue.get()
            try:
                # A fresh context per task: nothing of the request, nor of the task before.
                task = loop.create_task(self._run(record), context=contextvars.Context())
                self._running.add(task)
                task.add_done_callback(self._running.discard)
                await task
            finally:
                self._queue.task_done()

    async def run(self, record: TaskRecord) -> None:
        """Run ``record`` now, in the calling task, as a queued task runs (span, retries,
        metrics) but outside the queue and the journal: a durable worker's delivery, which
        the durable queue holds until it ends. A failure is recorded, not raised."""
        label = self.telemetry.label(record.name)
        self.queued[label] = self.queued.get(label, 0) + 1
        await self._run(record, journaled=False)

    async def _run(self, record: TaskRecord, *, journaled: bool = True) -> None:
        name = record.name
        label = self.telemetry.label(name)
        telemetry = self.telemetry
        self.queued[label] -= 1
        self.running[label] = self.running.get(label, 0) + 1
        waited = max(0.0, time.time() - record.enqueued_at)
        telemetry.queued_time.record(waited, {names.TASK_NAME: label})
        span = telemetry.start_span(record, waited)
        started = time.monotonic()
        outcome = names.TASK_FAILED
        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                await self._attempts(record, label)
            outcome = names.TASK_DONE
        except asyncio.CancelledError:
            outcome = names.TASK_CANCELLED
            span.set_status(trace.StatusCode.ERROR, "cancelled at the end of the grace")
            raise
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, type(exc).__qualname__)
            span.set_attribute(names.ERROR_TYPE, type(exc).__qualname__)
            logger.warning("deferred task %s (%s) failed", name, record.id, exc_info=exc)
        finally:
            self.running[label] -= 1
            if journaled:
                self._ended(name)
            telemetry.ended(label, outcome)
            attributes = {names.TASK_NAME: label, names.TASK_OUTCOME: outcome}
            telemetry.duration.record(time.monotonic() - started, attributes)
            span.set_attribute(names.TASK_OUTCOME, outcome)
            span.end()

    async def _attempts(self, record: TaskRecord, label: str) -> None:
        spec = record.spec
        policy = self._default_retry if spec.retry is DEFAULT else spec.retry
        attempts = 0

        async def attempt(*args: Any, **kwargs: Any) -> Any:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self.telemetry.retried(label)
            return await spec.call(*args, **kwargs)

        await policy.run(attempt, record.args, dict(record.kwargs), label=record.name)

    def _ended(self, name: str) -> None:
        left = self._pending[name] - 1
        if left:
            self._pending[name] = left
        else:
            del self._pending[name]
        self._dirty.set()

    async def _keep_journal(self, journal: Journal) -> None:
        """Write the pending counts whenever they changed, at most every WRITE_INTERVAL."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await anyio.to_thread.run_sync(journal.write, dict(self._pending))
            await asyncio.sleep(WRITE_INTERVAL)

    async def drain(self, grace: float) -> None:
        """Let the tasks accepted (and those they defer) finish for ``grace`` seconds, then
        cancel what is left, count it and log it. Hand-offs after it are refused."""
        if self._state is _State.NEW:
            self._state = _State.STOPPED
            self._stopped.set()
        if self._state is not _State.RUNNING:  # stopped, or another call is draining it
            await self._stopped.wait()
            return
        self._state = _State.DRAINING
        try:
            await self._drain(grace)
        finally:
            self._stopped.set()

    async def _drain(self, grace: float) -> None:
        try:
            async with asyncio.timeout(grace):
                await self._queue.join()
        except TimeoutError:
            pass
        self._state = _State.STOPPED
        never_started: dict[str, int] = {}
        while not self._queue.empty():
            record = self._queue.get_nowait()
            self._queue.task_done()
            never_started[record.name] = never_started.get(record.name, 0) + 1
            label = self.telemetry.label(record.name)
            self.queued[label] -= 1
            self.telemetry.ended(label, names.TASK_CANCELLED)
            self._ended(record.name)
        cut_short = len(self._running)
        await stop_tasks([*self._workers, *self._running])
        if never_started or cut_short:
            logger.warning(
                "deferred work: the %s s grace ran out; cancelled %d running tasks and %d that "
                "never started (%s)",
                grace,
                cut_short,
                sum(never_started.values()),
                ", ".join(f"{name}: {count}" for name, count in sorted(never_started.items()))
                or "none queued",
            )
        await stop_tasks(list(self._helpers))
        if self._journal is not None:
            await anyio.to_thread.run_sync(self._journal.remove)
