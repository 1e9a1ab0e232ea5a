"""The instruments of deferred work: counts kept in dicts and read at collection time
(``telemetry/counts.py``), two histograms, the task span, and the hand-off's span events."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from toolkit._version import __version__
from toolkit.pipelines.deferred._task import TaskRecord
from toolkit.telemetry import names
from toolkit.telemetry.counts import shared_callbacks, shared_counts
from toolkit.telemetry.labels import MAX_LABEL_LENGTH, BoundedLabels

TASK_LABELS = 100
"""Distinct task names on metrics; later ones are ``other`` there (spans keep every name)."""


class DeferTelemetry:
    """Instruments of one runner, on the providers given (the global ones when None).
    ``queued`` and ``running`` are the runner's own counts by label, read when collected."""

    def __init__(
        self,
        queued: Mapping[str, int],
        running: Mapping[str, int],
        *,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
    ) -> None:
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self.tracer = trace.get_tracer(
            names.INSTRUMENTATION_SCOPE, __version__, tracer_provider=tracer_provider
        )
        self.label: Callable[[str], str] = BoundedLabels(TASK_LABELS)
        self._tasks = shared_counts(meter, names.DEFERRED_TASKS_METRIC)
        self._retries = shared_counts(meter, names.DEFERRED_RETRIES_METRIC)
        self._refused = shared_counts(meter, names.DEFERRED_REFUSED_METRIC)
        self._lost = shared_counts(meter, names.DEFERRED_LOST_METRIC)
        self.queued_time = names.DEFERRED_QUEUED_TIME_METRIC.create(meter)
        self.duration = names.DEFERRED_DURATION_METRIC.create(meter)
        shared_callbacks(meter, names.DEFERRED_QUEUED_METRIC).append(_observer(queued))
        shared_callbacks(meter, names.DEFERRED_RUNNING_METRIC).append(_observer(running))

    def accepted(self, record: TaskRecord) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                names.DEFER_ACCEPTED_EVENT, {names.TASK_NAME: record.name, names.TASK_ID: record.id}
            )

    def refused(self, name: str, error_type: str) -> None:
        label = self.label(name)
        self._refused.add(
            (label, error_type), {names.TASK_NAME: label, names.ERROR_TYPE: error_type}
        )
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                names.DEFER_REFUSED_EVENT, {names.TASK_NAME: name, names.ERROR_TYPE: error_type}
            )

    def retried(self, label: str) -> None:
        self._retries.add(label, {names.TASK_NAME: label})

    def ended(self, label: str, outcome: str, count: int = 1) -> None:
        self._tasks.add(
            (label, outcome), {names.TASK_NAME: label, names.TASK_OUTCOME: outcome}, count
        )

    def lost(self, counts: Mapping[str, int]) -> None:
        for name, count in counts.items():
            label = self.label(name)
            self._lost.add(label, {names.TASK_NAME: label}, count)

    def start_span(self, record: TaskRecord, waited: float) -> trace.Span:
        """The task's CONSUMER span: a root (the task runs in a fresh context), linked to the
        span that deferred it; with what the engine that delivered it adds (a durable
        worker's messaging attributes)."""
        attributes: dict[str, str | int | float] = {
            names.TASK_NAME: record.name,
            names.TASK_ID: record.id,
            names.TASK_ATTEMPT: record.attempt,
            names.TASK_QUEUED_TIME: waited,
        }
        if record.delivery is not None:
            attributes.update(record.delivery)
        return self.tracer.start_span(
            names.DEFERRED_SPAN.format(task=record.name[:MAX_LABEL_LENGTH]),
            kind=trace.SpanKind.CONSUMER,
            links=None if record.link is None else [trace.Link(record.link)],
            attributes=attributes,
        )


def _observer(counts: Mapping[str, int]) -> Callable[[CallbackOptions], list[Observation]]:
    def observe(options: CallbackOptions) -> list[Observation]:
        del options
        # Collection may run on another thread: copy the items in one step first.
        return [Observation(n, {names.TASK_NAME: label}) for label, n in list(counts.items())]

    return observe
