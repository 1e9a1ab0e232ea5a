"""Resilience: breaker states, calls by outcome, transitions, retries made and refused by the
budget, fallbacks by reason, resilient streams (time to first chunk, outcomes)."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import (
    increase,
    max_by,
    or_zero,
    prometheus_label,
    quantile,
    rate,
    selected,
    series,
    sum_by,
)

_STATE = series(names.CIRCUIT_BREAKER_STATE)
_TRANSITIONS = series(names.CIRCUIT_BREAKER_TRANSITIONS)
_CALLS = series(names.CIRCUIT_BREAKER_CALLS)
_BUDGET_EXHAUSTED = series(names.RETRY_BUDGET_EXHAUSTED)
_RETRIES = series(names.RETRY_ATTEMPTS)
_FALLBACKS = series(names.RESILIENCE_FALLBACKS)
_REASON = prometheus_label(names.RESILIENCE_FALLBACK_REASON)
_BREAKER = prometheus_label(names.CIRCUIT_BREAKER_NAME)
_OUTCOME = prometheus_label(names.CIRCUIT_BREAKER_OUTCOME)
_TO_STATE = prometheus_label(names.CIRCUIT_BREAKER_TO_STATE)
_FUNCTION = prometheus_label(names.RESILIENCE_FUNCTION)
_FIRST_CHUNK = series(names.RESILIENCE_STREAM_TIME_TO_FIRST_CHUNK, "_bucket")
_STREAMS = series(names.RESILIENCE_STREAM_DURATION, "_count")
_STREAM_OUTCOME = prometheus_label(names.RESILIENCE_STREAM_OUTCOME)


def row() -> Row:
    return Row(
        "Resilience",
        [
            timeseries(
                "Circuit breaker state",
                "Each breaker's state as each instance sees it: 0 closed, 1 half-open, 2 open. "
                "Instances of one fleet share the state through the backend and agree within a "
                "second.",
                "short",
                [
                    target(
                        max_by(selected(_STATE), "instance", _BREAKER),
                        legend(_BREAKER, "instance"),
                    )
                ],
                min=0,
                max=2,
            ),
            timeseries(
                "Calls through breakers by outcome",
                "Calls per second by breaker and outcome: success, failure, ignored (cancelled, "
                "or the caller's own error) and rejected (refused while open: the fallback "
                "answered, or the caller got CircuitOpenError).",
                "ops",
                [target(sum_by(rate(_CALLS), _BREAKER, _OUTCOME), legend(_BREAKER, _OUTCOME))],
            ),
            timeseries(
                "Breaker transitions",
                "State changes applied, by breaker and new state: a breaker that keeps "
                "reopening is flapping against a dependency that is still sick.",
                "short",
                [
                    target(
                        or_zero(sum_by(increase(_TRANSITIONS), _BREAKER, _TO_STATE), _BREAKER),
                        f"{legend(_BREAKER)} to {legend(_TO_STATE)}",
                    )
                ],
                noValue="0",
            ),
            timeseries(
                "Retries made",
                "Retries per second by function (attempts after the first, a stream's before "
                "its first chunk): a dependency failing in bursts shows here first, before its "
                "breaker trips or its callers see errors.",
                "ops",
                [target(or_zero(sum_by(rate(_RETRIES), _FUNCTION), _FUNCTION), legend(_FUNCTION))],
                noValue="0",
            ),
            timeseries(
                "Fallbacks by reason",
                "Calls per second a @resilient function's fallback answered, by function and "
                "reason: circuit_open (the breaker refused), timeout (its own timeout), "
                "deadline (the request's or branch's deadline cut it), error (failed after "
                "its retries). Those callers got the canned answer.",
                "ops",
                [
                    target(
                        or_zero(sum_by(rate(_FALLBACKS), _FUNCTION, _REASON), _FUNCTION),
                        legend(_FUNCTION, _REASON),
                    )
                ],
                noValue="0",
            ),
            timeseries(
                "Retries refused by the budget",
                "Retries per second that the retry budget refused, by function: those calls "
                "failed with attempts left. Against a dependency that is down this is the "
                "budget at work; otherwise the budget is too small for the traffic.",
                "ops",
                [
                    target(
                        or_zero(sum_by(rate(_BUDGET_EXHAUSTED), _FUNCTION), _FUNCTION),
                        legend(_FUNCTION),
                    )
                ],
                noValue="0",
            ),
            timeseries(
                "Resilient streams: time to first chunk",
                "p50 and p95 from the call of a @resilient stream to its first chunk, retries "
                "and backoff (or the fallback) included, by function: the latency its "
                "consumer waits before anything arrives.",
                "s",
                [
                    target(
                        quantile(q, _FIRST_CHUNK, _FUNCTION),
                        f"p{round(q * 100)} {legend(_FUNCTION)}",
                    )
                    for q in (0.5, 0.95)
                ],
            ),
            timeseries(
                "Resilient streams by outcome",
                "Streams per second by function and outcome: complete, fallback (failed before "
                "the first chunk, answered by the fallback), failed (before it, raised), "
                "interrupted (failed after it: never retried) and closed (the consumer stopped "
                "early, no failure).",
                "ops",
                [
                    target(
                        or_zero(sum_by(rate(_STREAMS), _FUNCTION, _STREAM_OUTCOME), _FUNCTION),
                        legend(_FUNCTION, _STREAM_OUTCOME),
                    )
                ],
                noValue="0",
            ),
        ],
    )
