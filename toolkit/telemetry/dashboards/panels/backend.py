"""The shared backend: calls that failed, timed out or were skipped while it was down."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import or_zero, prometheus_label, rate, series, sum_by

_ERRORS = series(names.BACKEND_ERRORS)
_OPERATION = prometheus_label(names.BACKEND_OPERATION)
_ERROR_TYPE = prometheus_label(names.ERROR_TYPE)


def row() -> Row:
    return Row(
        "Backend",
        [
            timeseries(
                "Backend errors by operation and error type",
                "Backend calls per second that failed, timed out or were skipped while the "
                "backend was down (error type unavailable), per operation. No series means no "
                "errors.",
                "ops",
                [
                    target(
                        or_zero(sum_by(rate(_ERRORS), _OPERATION, _ERROR_TYPE), _OPERATION),
                        legend(_OPERATION, _ERROR_TYPE),
                    )
                ],
                width=24,
                noValue="0",
            ),
        ],
    )
