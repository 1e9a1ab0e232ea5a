"""Pipelines: fan-out branches by outcome and their durations, requests their deadline ran out
on. Each helper of ``toolkit.pipelines`` charts its metrics in its own block of this row."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Json, Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import prometheus_label, quantile, rate, series, sum_by

# --- fan-out and request deadlines -------------------------------------------------------------
_BRANCHES = series(names.FANOUT_BRANCH_DURATION, "_count")
_BRANCH_BUCKET = series(names.FANOUT_BRANCH_DURATION, "_bucket")
_DEADLINE_EXCEEDED = series(names.DEADLINE_EXCEEDED)
_FANOUT = prometheus_label(names.FANOUT_NAME)
_BRANCH = prometheus_label(names.FANOUT_BRANCH)
_OUTCOME = prometheus_label(names.FANOUT_OUTCOME)
_SOURCE = prometheus_label(names.DEADLINE_SOURCE)


def _fanout_panels() -> list[Json]:
    return [
        timeseries(
            "Fan-out branches by outcome",
            "toolkit.gather branches per second by fan-out, branch and outcome: ok, fallback "
            "(failed or timed out, its fallback answered), failed, timeout, cancelled (first= "
            "or enough= was met first).",
            "ops",
            [
                target(
                    sum_by(rate(_BRANCHES), _FANOUT, _BRANCH, _OUTCOME),
                    legend(_FANOUT, _BRANCH, _OUTCOME),
                )
            ],
        ),
        timeseries(
            "Fan-out branch duration (p95)",
            "Each branch from its start to its outcome, its fallback included, by fan-out and "
            "branch: the slowest branch of a fan-out sets its latency, up to its deadline.",
            "s",
            [
                target(
                    quantile(0.95, _BRANCH_BUCKET, _FANOUT, _BRANCH),
                    f"p95 {legend(_FANOUT, _BRANCH)}",
                )
            ],
        ),
        timeseries(
            "Requests past their deadline (504)",
            "Requests answered 504 per second because their time budget ran out before the "
            "answer started, by where the budget came from (default, route, header; none: a "
            "DeadlineExceeded raised with no request budget).",
            "ops",
            [target(sum_by(rate(_DEADLINE_EXCEEDED), _SOURCE), legend(_SOURCE))],
            width=24,
        ),
    ]


def row() -> Row:
    return Row("Pipelines", [*_fanout_panels()])
