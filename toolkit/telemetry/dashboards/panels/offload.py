"""Offloaded calls: calls running on the offload pool's threads and waiting for one, wait and
run time by function, refusals."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import (
    or_zero,
    prometheus_label,
    quantile,
    rate,
    selected,
    series,
    sum_by,
)

_CALLS = series(names.OFFLOAD_CALLS)
_WAIT_BUCKET = series(names.OFFLOAD_WAIT_TIME, "_bucket")
_DURATION_BUCKET = series(names.OFFLOAD_DURATION, "_bucket")
_DURATION_COUNT = series(names.OFFLOAD_DURATION, "_count")
_REFUSALS = series(names.OFFLOAD_REFUSALS)
_NAME = prometheus_label(names.OFFLOAD_NAME)
_STATE = prometheus_label(names.OFFLOAD_STATE)
_OUTCOME = prometheus_label(names.OFFLOAD_OUTCOME)
_REASON = prometheus_label(names.OFFLOAD_REASON)


def row() -> Row:
    return Row(
        "Offloaded calls",
        [
            timeseries(
                "Offloaded calls running and waiting",
                "Calls on the offload pool's threads (abandoned ones included until they end) "
                "and calls waiting for a thread. Running at offload.threads with calls "
                "waiting: raise it, or find the slow call below.",
                "short",
                [target(sum_by(selected(_CALLS), _STATE), legend(_STATE))],
                min=0,
            ),
            timeseries(
                "Wait and run time (p99) by function",
                "99th percentile of how long a call waited for a thread and how long the "
                "function ran on it.",
                "s",
                [
                    target(quantile(0.99, _WAIT_BUCKET, _NAME), f"wait {legend(_NAME)}"),
                    target(quantile(0.99, _DURATION_BUCKET, _NAME), f"run {legend(_NAME)}"),
                ],
            ),
            timeseries(
                "Calls by outcome, and refusals by reason",
                "Per second: calls that ended ok, with an error, or abandoned (their caller's "
                "deadline passed, or it was cancelled, while they ran); and calls refused "
                "without running: queue_full (answered 503), deadline, closed.",
                "ops",
                [
                    target(
                        or_zero(sum_by(rate(_DURATION_COUNT), _OUTCOME), _OUTCOME),
                        legend(_OUTCOME),
                    ),
                    target(
                        or_zero(sum_by(rate(_REFUSALS), _REASON), _REASON),
                        f"refused {legend(_REASON)}",
                    ),
                ],
                noValue="0",
            ),
        ],
    )
