"""Deferred work (``toolkit.defer``, ``@toolkit.background``): tasks queued and running,
tasks ended by outcome and retried, time queued and run time, hand-offs refused and tasks a
crash lost."""

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

_QUEUED = series(names.DEFERRED_QUEUED)
_RUNNING = series(names.DEFERRED_RUNNING)
_TASKS = series(names.DEFERRED_TASKS)
_RETRIES = series(names.DEFERRED_RETRIES)
_REFUSED = series(names.DEFERRED_REFUSED)
_LOST = series(names.DEFERRED_LOST)
_QUEUED_BUCKET = series(names.DEFERRED_QUEUED_TIME, "_bucket")
_DURATION_BUCKET = series(names.DEFERRED_DURATION, "_bucket")
_TASK = prometheus_label(names.TASK_NAME)
_OUTCOME = prometheus_label(names.TASK_OUTCOME)
_ERROR = prometheus_label(names.ERROR_TYPE)


def row() -> Row:
    return Row(
        "Deferred work",
        [
            timeseries(
                "Deferred tasks queued and running by task",
                "Tasks accepted and not started, and tasks running. Queued growing while "
                "running stays at defer.concurrency: the workers cannot keep up.",
                "short",
                [
                    target(sum_by(selected(_QUEUED), _TASK), f"queued {legend(_TASK)}"),
                    target(sum_by(selected(_RUNNING), _TASK), f"running {legend(_TASK)}"),
                ],
                min=0,
            ),
            timeseries(
                "Deferred tasks ended by task and outcome, and retries",
                "Per second: tasks done, failed (after their retries) and cancelled (the "
                "shutdown grace ran out), and retries of failed attempts.",
                "ops",
                [
                    target(sum_by(rate(_TASKS), _TASK, _OUTCOME), legend(_TASK, _OUTCOME)),
                    target(
                        or_zero(sum_by(rate(_RETRIES), _TASK), _TASK), f"retries {legend(_TASK)}"
                    ),
                ],
                noValue="0",
            ),
            timeseries(
                "Time queued and run time (p99) by task",
                "99th percentile of the wait between the hand-off and the start (the age at "
                "start), and of the run, retries included.",
                "s",
                [
                    target(quantile(0.99, _QUEUED_BUCKET, _TASK), f"queued {legend(_TASK)}"),
                    target(quantile(0.99, _DURATION_BUCKET, _TASK), f"run {legend(_TASK)}"),
                ],
            ),
            timeseries(
                "Hand-offs refused and tasks lost in a crash",
                "Per second: hand-offs refused (queue_full: the queue stayed full for the "
                "hand-off timeout; stopped: after shutdown), and tasks a crashed process had "
                "accepted and not finished, counted by the next start.",
                "ops",
                [
                    target(
                        or_zero(sum_by(rate(_REFUSED), _TASK, _ERROR), _TASK),
                        f"refused {legend(_TASK, _ERROR)}",
                    ),
                    target(or_zero(sum_by(rate(_LOST), _TASK), _TASK), f"lost {legend(_TASK)}"),
                ],
                noValue="0",
            ),
        ],
    )
