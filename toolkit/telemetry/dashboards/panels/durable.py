"""Durable deferred work: hand-offs to the Redis queue by outcome and their time, and the runs
lost with their worker that were found and run again."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import (
    or_zero,
    prometheus_label,
    quantile,
    rate,
    series,
    sum_by,
)

_HANDOFFS = series(names.DEFER_DURABLE_HANDOFFS)
_HANDOFF_BUCKET = series(names.DEFER_DURABLE_HANDOFF_DURATION, "_bucket")
_SWEPT = series(names.DEFER_DURABLE_SWEPT)
_REDELIVERED = series(names.DEFER_DURABLE_REDELIVERED)
_OUTCOME = prometheus_label(names.DEFER_DURABLE_OUTCOME)


def row() -> Row:
    return Row(
        "Durable deferred work",
        [
            timeseries(
                "Durable hand-offs by outcome",
                "Per second: queued (Redis took the task), unavailable (refused: Redis did not "
                "answer within defer.durable.handoff_timeout), in_process (ran here instead), "
                "invalid (arguments not JSON, or too large).",
                "ops",
                [target(or_zero(sum_by(rate(_HANDOFFS), _OUTCOME), _OUTCOME), legend(_OUTCOME))],
                noValue="0",
            ),
            timeseries(
                "Durable hand-off time (p99) by outcome",
                "99th percentile of the time a deferring call spent handing its task to Redis: "
                "a round trip when Redis is well, the hand-off timeout when it is not (0 with "
                "no hand-offs: durable mode off).",
                "s",
                [
                    target(
                        or_zero(quantile(0.99, _HANDOFF_BUCKET, _OUTCOME), _OUTCOME),
                        legend(_OUTCOME),
                    )
                ],
                noValue="0",
            ),
            timeseries(
                "Durable runs lost and run again",
                "Per second: runs found lost (their worker died or stalled past the heartbeat) "
                "and runs that started again after one. Lost without a run again: the task "
                "ran out of defer.durable.redeliveries and was given up.",
                "ops",
                [
                    target(f"sum({rate(_SWEPT)}) or vector(0)", "lost"),
                    target(f"sum({rate(_REDELIVERED)}) or vector(0)", "run again"),
                ],
                noValue="0",
            ),
        ],
    )
