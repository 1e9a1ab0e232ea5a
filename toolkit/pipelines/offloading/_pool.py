"""The offload pool: a call takes a thread's permit (``_permits``), runs on a thread
(``_threads``) in a copy of its caller's context, and records its span and metrics.

The permit is given back when the function ends, never earlier, so a call still running
after its caller gave up keeps its thread counted and the bound is real.

Why not ``anyio.to_thread.run_sync`` with a ``CapacityLimiter``: its line of waiters has no
bound, and a call that stops waiting (``abandon_on_cancel=True``, the only way to answer at
the deadline) returns its token while its thread still runs, so stuck calls make new threads
without limit. ``asyncio.to_thread`` queues without bound on the loop's default executor.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from toolkit import _deadlines
from toolkit._version import __version__
from toolkit.errors import DeadlineExceeded, PoolClosedError, PoolExhaustedError
from toolkit.pipelines.offloading._permits import POOL_NAME, Permits
from toolkit.pipelines.offloading._threads import Threads
from toolkit.settings._offload import OffloadSettings
from toolkit.telemetry import names
from toolkit.telemetry.counts import shared_callbacks, shared_counts
from toolkit.telemetry.labels import BoundedLabels
from toolkit.telemetry.metric import Callback

logger = logging.getLogger("toolkit.pipelines")

R = TypeVar("R")


class _Call:
    """One admitted call: run on a thread, finished on its caller's loop."""

    __slots__ = ("abandoned", "future", "label", "loop", "name", "pool", "span")

    def __init__(
        self,
        pool: OffloadPool,
        name: str,
        label: str,
        span: trace.Span,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.pool = pool
        self.name = name
        self.label = label
        self.span = span
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.abandoned = False

    def run(
        self,
        context: contextvars.Context,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """On the worker thread: the function, in the caller's context, then the permit back
        and the outcome to the caller's loop."""
        started = time.monotonic()
        value: Any = None
        error: BaseException | None = None
        try:
            value = context.run(function, *args, **kwargs)
        except BaseException as exc:  # the caller's to see, whatever it is
            error = exc
        took = time.monotonic() - started
        self.pool._ended(self)
        try:
            self.loop.call_soon_threadsafe(self.finish, value, error, took)
        except RuntimeError:  # the caller's loop is closed: nobody waits, record it here
            self.abandoned = True
            self.finish(value, error, took)

    def finish(self, value: Any, error: BaseException | None, took: float) -> None:
        """Record the outcome and hand it to the caller, if it still waits."""
        if self.abandoned or self.future.done():
            outcome = names.OFFLOAD_ABANDONED
        else:
            outcome = names.OFFLOAD_OK if error is None else names.OFFLOAD_ERROR
            if error is None:
                self.future.set_result(value)
            else:
                self.future.set_exception(error)
        try:
            self.pool._finished(self, outcome, error, took)
        except Exception:  # a broken provider: the caller already has its answer
            logger.exception("toolkit.pipelines: recording the offloaded call %s failed", self.name)


class OffloadPool:
    """The bounded thread pool that runs synchronous calls off the event loop.

    ``install()`` makes one from the ``offload`` settings and closes it at shutdown; without
    it, one is made from the defaults on first use. :func:`toolkit.offload` and
    :func:`toolkit.run_sync` call :meth:`call`.

    Args:
        settings: the ``offload`` section; its defaults when None.
        tracer_provider / meter_provider: the global ones when None.
    """

    def __init__(
        self,
        settings: OffloadSettings | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.settings = settings if settings is not None else OffloadSettings.model_validate({})
        self._permits = Permits(self.settings.threads, self.settings.max_waiting)
        self._threads = Threads(self.settings.threads)
        self._lock = threading.Lock()
        self._running: set[_Call] = set()
        self._tracer = trace.get_tracer(
            names.INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._wait_time = names.OFFLOAD_WAIT_TIME_METRIC.create(meter)
        self._duration = names.OFFLOAD_DURATION_METRIC.create(meter)
        self._refusals = shared_counts(meter, names.OFFLOAD_REFUSALS_METRIC)
        _report_calls(self, shared_callbacks(meter, names.OFFLOAD_CALLS_METRIC))
        self._labels = BoundedLabels(names.MAX_OFFLOAD_NAMES)

    @property
    def running(self) -> int:
        """Calls holding a thread: running, or abandoned by their caller and still running."""
        return self._permits.taken

    @property
    def waiting(self) -> int:
        """Calls waiting for a thread."""
        return self._permits.waiting

    @property
    def closed(self) -> bool:
        return self._permits.closed

    async def call(
        self, name: str, function: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> R:
        """``function(*args, **kwargs)`` on a thread of the pool, in a copy of the caller's
        context, under a span named for ``name``.

        Raises:
            DeadlineExceeded: the deadline passed before a thread came free (the function
                never ran), or while it ran (it goes on; its end is recorded).
            PoolExhaustedError: every thread is busy and ``max_waiting`` calls already wait.
            PoolClosedError: the pool was closed.
            Exception: whatever the function raised.
        """
        loop = asyncio.get_running_loop()
        label = self._labels(name)
        try:
            span = self._tracer.start_span(
                f"toolkit.offload {name}",
                kind=SpanKind.INTERNAL,
                attributes={names.OFFLOAD_NAME: name},
            )
        except Exception:  # a broken tracer provider: the call goes on without a span
            logger.exception("toolkit.pipelines: starting the span of %s failed", name)
            span = trace.INVALID_SPAN
        asked = time.monotonic()
        try:
            await self._permits.take()
        except (DeadlineExceeded, PoolExhaustedError, PoolClosedError) as refused:
            self._refused(span, label, refused)
            raise
        except BaseException:  # cancelled while waiting: it never ran
            _end(span, names.OFFLOAD_CANCELLED, None)
            raise
        waited = time.monotonic() - asked
        try:
            self._wait_time.record(waited, {names.OFFLOAD_NAME: label})
            if span.is_recording():
                span.set_attribute(names.OFFLOAD_WAIT_TIME_ATTRIBUTE, waited)
        except Exception:
            logger.exception("toolkit.pipelines: recording the wait of %s failed", name)
        call = _Call(self, name, label, span, loop)
        context = contextvars.copy_context()
        # The function's own spans are the offload span's children, in its thread only.
        context.run(otel_context.attach, trace.set_span_in_context(span))
        with self._lock:
            self._running.add(call)
        try:
            self._threads.run(functools.partial(call.run, context, function, args, kwargs))
        except RuntimeError:  # closed between the permit and the hand-off
            self._ended(call)
            closed = PoolClosedError("the offload pool is closed", pool=POOL_NAME)
            self._refused(span, label, closed)
            raise closed from None
        try:
            async with asyncio.timeout(_deadlines.bounded(None)) as timeout:
                return await asyncio.shield(call.future)
        except TimeoutError:
            if not timeout.expired():  # the function's own TimeoutError
                raise
            call.abandoned = True
            raise DeadlineExceeded(
                f"the deadline passed while {name} ran on a thread (it goes on to its end)"
            ) from None
        except asyncio.CancelledError:
            call.abandoned = True
            raise

    async def close(self, within: float | None = None) -> None:
        """Refuse every call from now on (``PoolClosedError``; those waiting too), let the
        threads end once idle, and wait for the calls still running, at most ``within``
        seconds (``shutdown_timeout`` when None). Calls running past it are left on their
        daemon threads: logged, their spans ended as abandoned."""
        within = self.settings.shutdown_timeout if within is None else within
        drained = self._permits.close()
        self._threads.close()
        try:
            await asyncio.wait_for(drained.wait(), within)
        except TimeoutError:
            with self._lock:
                left = list(self._running)
            logger.warning(
                "offload pool closed with %d call(s) still running after %.1f s, left on "
                "their threads: %s",
                len(left),
                within,
                ", ".join(sorted(call.name for call in left)),
            )
            for call in left:  # exported now; a caller still waiting gets its answer later
                _end(call.span, names.OFFLOAD_ABANDONED, None)

    def _ended(self, call: _Call) -> None:
        """``call``'s function ended (any thread): its thread's permit goes back."""
        with self._lock:
            self._running.discard(call)
        self._permits.give_back()

    def _finished(
        self, call: _Call, outcome: str, error: BaseException | None, took: float
    ) -> None:
        self._duration.record(
            took, {names.OFFLOAD_NAME: call.label, names.OFFLOAD_OUTCOME: outcome}
        )
        _end(call.span, outcome, error)

    def _refused(self, span: trace.Span, label: str, refused: Exception) -> None:
        reason = (
            names.OFFLOAD_DEADLINE
            if isinstance(refused, DeadlineExceeded)
            else names.OFFLOAD_FULL
            if isinstance(refused, PoolExhaustedError)
            else names.OFFLOAD_CLOSED
        )
        self._refusals.add(
            (label, reason), {names.OFFLOAD_NAME: label, names.OFFLOAD_REASON: reason}
        )
        try:
            if span.is_recording():
                span.set_attribute(names.OFFLOAD_REASON, reason)
        except Exception:
            logger.exception("toolkit.pipelines: recording a refusal failed")
        _end(span, names.OFFLOAD_REFUSED, refused)


def _end(span: trace.Span, outcome: str, error: BaseException | None) -> None:
    """End ``span`` with ``outcome`` (once: an ended span records nothing); never raises."""
    try:
        if not span.is_recording():
            return
        span.set_attribute(names.OFFLOAD_OUTCOME, outcome)
        if error is not None:
            span.set_attribute(names.ERROR_TYPE, type(error).__qualname__)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
        span.end()
    except Exception:  # a broken span processor must not fail the call
        logger.exception("toolkit.pipelines: ending an offload span failed")


def _report_calls(pool: OffloadPool, gauges: list[Callback]) -> None:
    """Report the pool's running and waiting calls for as long as it lives (a weak
    reference: the gauge keeps no pool alive)."""
    ref = weakref.ref(pool)

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        del options
        watched = ref()
        if watched is None:
            gauges.remove(observe)
            return []
        return [
            Observation(watched.running, {names.OFFLOAD_STATE: "running"}),
            Observation(watched.waiting, {names.OFFLOAD_STATE: "waiting"}),
        ]

    gauges.append(observe)
