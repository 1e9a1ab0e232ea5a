"""Event-loop health: how late the loop runs, how many tasks it has, and where it blocks.

:class:`LoopMonitor` runs a probe on the loop (a timer every ``probe_interval`` that records
how late it ran into ``toolkit.event_loop.lag``) and a watchdog thread that, when the loop has
not turned for ``blocked_threshold``, samples the loop thread's stack and reports the block
once the loop turns: a ``toolkit.event_loop.blocked`` span dated back to when the loop stopped
turning, a warning, a count by cause, and the last few in :meth:`LoopMonitor.recent_blocks`.
Each probe's lag also goes into a sliding window (:meth:`LoopMonitor.lag_summary`: the recent
percentiles the status page shows).
``install()`` starts one with the app; alone::

    async with toolkit.LoopMonitor():
        await serve()
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Final

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from toolkit._configured import configured
from toolkit._default import DEFAULT, Default
from toolkit._duration import parse_seconds
from toolkit._version import __version__
from toolkit.errors import ConfigurationError
from toolkit.flags import TRACING, TRACING_LOOP, FlagSource, current_flags
from toolkit.settings import EventLoopSettings
from toolkit.telemetry import names
from toolkit.telemetry._loop_causes import ThreadClock
from toolkit.telemetry._loop_report import BlockedLoop, Reporter
from toolkit.telemetry._loop_stack import StackFrame
from toolkit.telemetry._loop_watchdog import Beat, Watchdog
from toolkit.telemetry.counts import shared_callbacks, shared_counts
from toolkit.telemetry.latency import SLICES, LatencyWindow, Summary
from toolkit.telemetry.metric import Callback

__all__ = ["BlockedLoop", "LoopMonitor", "StackFrame"]

logger = logging.getLogger("toolkit.telemetry.loop")

HOUSEKEEPING: Final = 1.0
"""Seconds between the probe's slower duties: counting tasks, reading the kill switches."""
LAG_WINDOW_BOUNDS: Final = (1.0, 3600.0)
"""Seconds ``lag_window=`` may cover, at least and at most."""


class LoopMonitor:
    """Watches one asyncio event loop: lag, tasks, and blocks with their stack.

    Start it on the loop it watches (:meth:`start`, or ``async with``); :meth:`stop` ends the
    probe and the watchdog thread. Recording follows the ``tracing`` and ``tracing.loop``
    flags, read about once a second: either off, nothing is recorded.

    Args:
        settings: the ``event_loop`` section; its defaults when None.
        probe_interval / blocked_threshold / spans_per_minute / logs_per_minute /
            stack_depth: over ``settings`` (see :class:`~toolkit.settings.EventLoopSettings`).
        lag_window: the recent past :meth:`lag_summary` covers (1s to 1h; ``install()``
            gives ``status.window``).
        flags: asked for ``tracing`` and ``tracing.loop``; the current source
            (``toolkit.flags.current_flags()``) when None.
        tracer_provider / meter_provider: the global providers when None.

    Raises:
        ConfigurationError: an option is out of its bounds.
    """

    def __init__(
        self,
        *,
        settings: EventLoopSettings | None = None,
        probe_interval: float | str | Default = DEFAULT,
        blocked_threshold: float | str | Default = DEFAULT,
        spans_per_minute: int | Default = DEFAULT,
        logs_per_minute: int | Default = DEFAULT,
        stack_depth: int | Default = DEFAULT,
        lag_window: float | str = 300.0,
        flags: FlagSource | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.settings = configured(
            "LoopMonitor",
            EventLoopSettings,
            settings,
            {
                "probe_interval": probe_interval,
                "blocked_threshold": blocked_threshold,
                "spans_per_minute": spans_per_minute,
                "logs_per_minute": logs_per_minute,
                "stack_depth": stack_depth,
            },
        )
        self.lag_window = _lag_window(lag_window)
        """Seconds of the recent past :meth:`lag_summary` covers."""
        self._lags = LatencyWindow(self.lag_window / SLICES)
        self._flags = flags
        self._tracer = trace.get_tracer(
            names.INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._lag = names.EVENT_LOOP_LAG_METRIC.create(meter)
        _report_tasks(self, shared_callbacks(meter, names.EVENT_LOOP_TASKS_METRIC))
        self._reporter = Reporter(
            self._tracer,
            shared_counts(meter, names.EVENT_LOOP_BLOCKED_METRIC),
            spans_per_minute=self.settings.spans_per_minute,
            logs_per_minute=self.settings.logs_per_minute,
            on_loop=self._call_on_loop,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: Watchdog | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._clock: ThreadClock | None = None
        self._housekeeping_due = 0.0
        self._failed = False
        self.recording = False
        """Whether the flags let it record (read about once a second while it runs)."""
        self.lag = 0.0
        """Seconds the probe last ran late."""
        self.tasks = 0
        """asyncio tasks not done on the loop, when last counted (reported by the
        ``toolkit.event_loop.tasks`` gauge while the flags let it record)."""

    @property
    def running(self) -> bool:
        """Started and not stopped: the probe is scheduled and the watchdog thread alive."""
        return self._watchdog is not None and self._watchdog.alive

    @property
    def blocked(self) -> int:
        """Blocks reported since it was made."""
        return self._reporter.blocked

    def recent_blocks(self) -> tuple[BlockedLoop, ...]:
        """The last blocks reported (at most ten), oldest first, spans or not."""
        return tuple(self._reporter.recent)

    def lag_summary(self) -> Summary:
        """The probe's lag over the last ``lag_window`` seconds: ``count`` probes, their
        ``p50`` / ``p95`` / ``p99`` and ``max`` in seconds (None before the first), within
        1 %. Probes count while the flags let the monitor record."""
        now = time.monotonic()
        return self._lags.summary(now, self.lag_window)

    def start(self) -> None:
        """Start watching the running loop: call it on that loop. Starting it again while it
        runs does nothing.

        Raises:
            ConfigurationError: no loop is running here, or it runs on another loop.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigurationError(
                "LoopMonitor.start() needs a running event loop: call it from async code "
                "(or use `async with LoopMonitor():`)"
            ) from None
        if self.running:
            if loop is not self._loop:
                raise ConfigurationError("this LoopMonitor already watches another event loop")
            return
        self._loop = loop
        self._housekeep(time.monotonic())
        now = time.monotonic()
        self._clock = ThreadClock()
        self._watchdog = Watchdog(
            loop,
            Beat(0, now, now + self.settings.probe_interval, *self._clock.read()),
            threshold=self.settings.blocked_threshold,
            stack_depth=self.settings.stack_depth,
            recording=lambda: self.recording,
            report=self._reporter.report,
        )
        self._watchdog.start()
        self._timer = loop.call_later(self.settings.probe_interval, self._tick)

    def stop(self) -> None:
        """Stop the probe and the watchdog thread (it exits before this returns). Call it on
        the loop it watches; stopping a stopped monitor does nothing."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self._clock is not None:
            self._clock.close()
            self._clock = None

    def _call_on_loop(self, work: Callable[[], None]) -> None:
        if self._loop is None:
            raise RuntimeError("not started")
        self._loop.call_soon_threadsafe(work)

    async def __aenter__(self) -> LoopMonitor:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _tick(self) -> None:
        watchdog, loop, clock = self._watchdog, self._loop, self._clock
        if watchdog is None or loop is None or clock is None:
            return
        self._timer = loop.call_later(self.settings.probe_interval, self._tick)
        now = time.monotonic()
        before = watchdog.beat
        beat = Beat(before.number + 1, now, now + self.settings.probe_interval, *clock.read())
        self.lag = lag = max(0.0, now - before.due)
        try:
            watchdog.publish(
                before, beat, late=self.recording and lag >= self.settings.blocked_threshold
            )
            if now >= self._housekeeping_due:
                self._housekeep(now)
            if self.recording:
                self._lag.record(lag)
                self._lags.record(lag, False, now)
        except Exception:  # a broken meter provider: the probe goes on, said once
            if not self._failed:
                self._failed = True
                logger.exception("the event loop probe failed to record; it goes on")

    def _housekeep(self, now: float) -> None:
        self._housekeeping_due = now + HOUSEKEEPING
        try:
            flags = self._flags or current_flags()
            self.recording = flags.is_enabled(TRACING) and flags.is_enabled(TRACING_LOOP)
        except Exception:  # a broken flag source must not stop the probe
            self.recording = False
        self.tasks = len(asyncio.all_tasks(self._loop))


def _lag_window(value: float | str) -> float:
    low, high = LAG_WINDOW_BOUNDS
    try:
        seconds = parse_seconds(value)
    except ValueError as exc:
        raise ConfigurationError(f"LoopMonitor(lag_window={value!r}): {exc}") from None
    if not low <= seconds <= high:
        raise ConfigurationError(
            f"LoopMonitor(lag_window={value!r}) must be from 1s to 1h, such as '5m'"
        )
    return seconds


def _report_tasks(monitor: LoopMonitor, gauges: list[Callback]) -> None:
    """Report ``monitor.tasks`` in the task gauge once it has counted, for as long as the
    monitor lives (a weak reference: the gauge keeps no monitor alive)."""
    ref = weakref.ref(monitor)

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        del options
        watched = ref()
        if watched is None:
            gauges.remove(observe)  # the gauge iterates over a copy
            return []
        return [Observation(watched.tasks)] if watched.recording else []

    gauges.append(observe)
