"""The event loop: how late it runs, how many tasks it holds, and how often it blocks."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import (
    max_by,
    or_zero,
    prometheus_label,
    quantile,
    rate,
    selected,
    series,
    sum_by,
)

_LAG = series(names.EVENT_LOOP_LAG, "_bucket")
_TASKS = series(names.EVENT_LOOP_TASKS)
_BLOCKED = series(names.EVENT_LOOP_BLOCKED)
_CAUSE = prometheus_label(names.EVENT_LOOP_BLOCKED_CAUSE)


def row() -> Row:
    return Row(
        "Event loop",
        [
            timeseries(
                "Event-loop lag (p50, p99)",
                "How late each instance's event loop ran a callback that was due (the loop "
                "monitor's probe, every 20 ms by default). A free loop stays under a "
                "millisecond; a high p99 means some callback holds the loop.",
                "s",
                [
                    target(quantile(q, _LAG, "instance"), f"p{round(q * 100)} {legend('instance')}")
                    for q in (0.5, 0.99)
                ],
                width=8,
            ),
            timeseries(
                "Blocked-loop events by cause",
                "Times per second an event loop did not turn for the blocked threshold (100 ms by "
                "default), by cause: gc, code, descheduled or waiting (a blocking call). Each "
                "has a toolkit.event_loop.blocked span and warning naming the blocking line. No "
                "series means no blocks.",
                "ops",
                [target(or_zero(sum_by(rate(_BLOCKED), _CAUSE), _CAUSE), legend(_CAUSE))],
                width=8,
                noValue="0",
            ),
            timeseries(
                "Event-loop tasks",
                "asyncio tasks not yet done per instance, counted about once a second: a "
                "count that only grows is tasks leaking.",
                "short",
                [target(max_by(selected(_TASKS), "instance"), legend("instance"))],
                width=8,
            ),
        ],
    )
