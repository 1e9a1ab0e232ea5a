"""A pool's instruments: counts observed from its state, timings recorded, rare events
counted in memory (``telemetry/counts.py``), a span only for slow acquires."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from toolkit._version import __version__
from toolkit.telemetry import names
from toolkit.telemetry.counts import shared_callbacks, shared_counts


class PoolTelemetry:
    """Instruments of one pool, created once, on the providers given (the global ones when
    None). ``counts`` reports (idle, used, pending) summed over the pool's keys."""

    __slots__ = (
        "_counts",
        "_discards",
        "_phases",
        "_rejections",
        "_timeouts",
        "_tracer",
        "attributes",
        "create_time",
        "name",
        "threshold",
        "use_time",
        "wait_time",
    )

    def __init__(
        self,
        name: str,
        counts: Callable[[], tuple[int, int, int]],
        *,
        threshold: float,
        meter_provider: metrics.MeterProvider | None,
        tracer_provider: trace.TracerProvider | None,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.attributes = {names.POOL_NAME: name}
        self._phases = {
            phase: {names.POOL_NAME: name, names.POOL_TIMEOUT_PHASE: phase}
            for phase in names.POOL_TIMEOUT_PHASES
        }
        self._counts = counts
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._tracer = trace.get_tracer(
            names.INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider
        )
        self.wait_time = names.POOL_WAIT_TIME_METRIC.create(meter)
        self.use_time = names.POOL_USE_TIME_METRIC.create(meter)
        self.create_time = names.POOL_CREATE_TIME_METRIC.create(meter)
        self._timeouts = shared_counts(meter, names.POOL_TIMEOUTS_METRIC)
        self._rejections = shared_counts(meter, names.POOL_REJECTIONS_METRIC)
        self._discards = shared_counts(meter, names.POOL_DISCARDS_METRIC)
        shared_callbacks(meter, names.POOL_COUNT_METRIC).append(self._observe_count)
        shared_callbacks(meter, names.POOL_PENDING_REQUESTS_METRIC).append(self._observe_pending)

    def discarded(self, reason: str) -> None:
        self._discards.add(
            (self.name, reason),
            {names.POOL_NAME: self.name, names.POOL_DISCARD_REASON: reason},
        )

    def refused(self, error_type: str) -> None:
        """Count an acquire refused at once (``queue_full``, ``too_many_keys``), with an
        event on the span."""
        self._rejections.add(self.name, self.attributes)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                names.POOL_EXHAUSTED_EVENT,
                {names.POOL_NAME: self.name, names.ERROR_TYPE: error_type},
            )

    def timed_out(self, phase: str) -> None:
        """Count an acquire timed out in ``phase`` (``names.POOL_TIMEOUT_PHASES``), with an
        event on the span."""
        attributes = self._phases[phase]
        self._timeouts.add((self.name, phase), attributes)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                names.POOL_EXHAUSTED_EVENT, {**attributes, names.ERROR_TYPE: names.POOL_TIMEOUT}
            )

    def waited(self, seconds: float, error_type: str | None) -> None:
        """Record an acquire's duration; past the threshold, a span covering it."""
        self.wait_time.record(seconds, self.attributes)
        if seconds < self.threshold:
            return
        end = time.time_ns()
        attributes: dict[str, Any] = {names.POOL_NAME: self.name}
        if error_type is not None:
            attributes[names.ERROR_TYPE] = error_type
        span = self._tracer.start_span(
            names.POOL_WAIT_SPAN,
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
            start_time=end - int(seconds * 1e9),
        )
        if error_type is not None:
            span.set_status(trace.StatusCode.ERROR)
        span.end(end_time=end)

    def _observe_count(self, options: CallbackOptions) -> list[Observation]:
        del options
        idle, used, _ = self._counts()
        return [
            Observation(idle, {names.POOL_NAME: self.name, names.POOL_STATE: names.POOL_IDLE}),
            Observation(used, {names.POOL_NAME: self.name, names.POOL_STATE: names.POOL_USED}),
        ]

    def _observe_pending(self, options: CallbackOptions) -> list[Observation]:
        del options
        return [Observation(self._counts()[2], self.attributes)]
