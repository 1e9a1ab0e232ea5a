"""The metrics and span events of breakers, retries and fallbacks; counts kept in dicts, read
when OpenTelemetry collects (see ``telemetry/counts.py``): a call through a breaker pays a
dict update."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from toolkit._version import __version__
from toolkit.errors import CircuitOpenError, DeadlineExceeded
from toolkit.resilience.classify import error_type, is_timeout
from toolkit.telemetry import names
from toolkit.telemetry.counts import Counts, shared_callbacks, shared_counts

logger = logging.getLogger("toolkit.resilience")


class BreakerTelemetry:
    """Instruments of one breaker: ``calls`` by outcome, ``transitions``, the ``state`` gauge."""

    __slots__ = ("__weakref__", "_calls", "_outcomes", "_transitions", "name")

    def __init__(
        self,
        name: str,
        owner: object,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        """``owner`` has a ``state`` attribute; the gauge holds it weakly, so a breaker
        dropped by its owner stops reporting."""
        self.name = name
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._calls: Counts = shared_counts(meter, names.CIRCUIT_BREAKER_CALLS_METRIC)
        self._transitions: Counts = shared_counts(meter, names.CIRCUIT_BREAKER_TRANSITIONS_METRIC)
        self._outcomes = {
            outcome: {names.CIRCUIT_BREAKER_NAME: name, names.CIRCUIT_BREAKER_OUTCOME: outcome}
            for outcome in names.CIRCUIT_BREAKER_OUTCOMES
        }
        attributes = {names.CIRCUIT_BREAKER_NAME: name}
        reference = weakref.ref(owner)

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            del options
            alive = reference()
            if alive is None:
                return []
            state: str = getattr(alive, "state")  # noqa: B009 - any owner with a state
            return [Observation(names.CIRCUIT_STATE_VALUES[state], attributes)]

        shared_callbacks(meter, names.CIRCUIT_BREAKER_STATE_METRIC).append(observe)

    def call(self, outcome: str) -> None:
        """Count one call's outcome."""
        self._calls.add((self.name, outcome), self._outcomes[outcome])

    def rejected(self, *, shadow: bool = False) -> None:
        """Count a refused call and mark the current span ``error.type=circuit_open``; in
        shadow mode, count it as ``shadow_rejected`` and leave the span alone: it runs."""
        if shadow:
            outcome = names.CIRCUIT_SHADOW_REJECTED
            self._calls.add((self.name, outcome), self._outcomes[outcome])
            return
        self._calls.add((self.name, names.CIRCUIT_REJECTED), self._outcomes[names.CIRCUIT_REJECTED])
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(names.ERROR_TYPE, names.CIRCUIT_OPEN)

    def transition(self, before: str, after: str, forced: str) -> None:
        """Count a state change and put it on the current span."""
        self._transitions.add(
            (self.name, after),
            {names.CIRCUIT_BREAKER_NAME: self.name, names.CIRCUIT_BREAKER_TO_STATE: after},
        )
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                names.CIRCUIT_BREAKER_STATE_CHANGE_EVENT,
                {
                    names.CIRCUIT_BREAKER_NAME: self.name,
                    names.CIRCUIT_BREAKER_FROM_STATE: before,
                    names.CIRCUIT_BREAKER_TO_STATE: after,
                    names.CIRCUIT_BREAKER_FORCED: forced,
                },
            )


class RetryTelemetry:
    """Instruments of one retrying function: the retries it made, those its budget refused."""

    __slots__ = ("_attributes", "_refused", "_retries", "_warned", "label")

    def __init__(self, label: str, meter_provider: metrics.MeterProvider | None = None) -> None:
        self.label = label
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._refused: Counts = shared_counts(meter, names.RETRY_BUDGET_EXHAUSTED_METRIC)
        self._retries: Counts = shared_counts(meter, names.RETRY_ATTEMPTS_METRIC)
        self._attributes = {names.RESILIENCE_FUNCTION: label}
        self._warned = False

    def retried(self) -> None:
        """Count a retry about to run (its span event is added before its backoff)."""
        self._retries.add(self.label, self._attributes)

    def budget_exhausted(self, attempt: int, error: BaseException | None) -> None:
        """Count a retry the budget refused, put it on the current span, and log the first
        one (the rest are in the metric)."""
        self._refused.add(self.label, self._attributes)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                names.RETRY_BUDGET_EXHAUSTED_EVENT,
                {
                    names.RESILIENCE_FUNCTION: self.label,
                    names.RETRY_ATTEMPT_NUMBER: attempt,
                    names.ERROR_TYPE: "" if error is None else error_type(error),
                },
            )
        if not self._warned:
            self._warned = True
            logger.warning(
                "%s: the retry budget refused a retry (attempt %d), so the call failed with "
                "attempts left; further refusals are counted in %s. If the dependency is not "
                "down, raise the budget (RetryBudget(ratio=, minimum=), or the "
                "resilience.retry_budget and resilience.retry_budget_minimum settings).",
                self.label or "a RetryPolicy",
                attempt,
                names.RETRY_BUDGET_EXHAUSTED,
            )


def fallback_reason(error: BaseException) -> str:
    """Why the fallback answered, one of ``names.RESILIENCE_FALLBACK_REASONS``."""
    if isinstance(error, CircuitOpenError):
        return names.FALLBACK_CIRCUIT_OPEN
    if isinstance(error, DeadlineExceeded):
        return names.FALLBACK_DEADLINE
    if is_timeout(error):
        return names.FALLBACK_TIMEOUT
    return names.FALLBACK_ERROR


class FallbackTelemetry:
    """The fallbacks of one ``@resilient`` function: counted by reason, put on the span."""

    __slots__ = ("_answered", "_reasons", "label")

    def __init__(self, label: str, meter_provider: metrics.MeterProvider | None = None) -> None:
        self.label = label
        meter = metrics.get_meter(
            names.INSTRUMENTATION_SCOPE, __version__, meter_provider=meter_provider
        )
        self._answered: Counts = shared_counts(meter, names.RESILIENCE_FALLBACKS_METRIC)
        self._reasons = {
            reason: {names.RESILIENCE_FUNCTION: label, names.RESILIENCE_FALLBACK_REASON: reason}
            for reason in names.RESILIENCE_FALLBACK_REASONS
        }

    def answered(self, error: BaseException) -> None:
        """The fallback answers after ``error``: count it, and add the span event."""
        reason = fallback_reason(error)
        self._answered.add((self.label, reason), self._reasons[reason])
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                names.RESILIENCE_FALLBACK_EVENT,
                {
                    names.RESILIENCE_FUNCTION: self.label,
                    names.RESILIENCE_FALLBACK_REASON: reason,
                    names.ERROR_TYPE: names.CIRCUIT_OPEN
                    if reason == names.FALLBACK_CIRCUIT_OPEN
                    else error_type(error),
                },
            )
