"""Feature flags: evaluations by variant, stale or failed evaluations, changes applied."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import (
    increase,
    or_zero,
    prometheus_label,
    rate,
    series,
    sum_by,
)

_EVALUATIONS = series(names.FEATURE_FLAG_EVALUATIONS)
_CHANGES = series(names.FEATURE_FLAG_CHANGES)
_FLAG = prometheus_label(names.FEATURE_FLAG_KEY)
_VARIANT = prometheus_label(names.FEATURE_FLAG_RESULT_VARIANT)
_REASON = prometheus_label(names.FEATURE_FLAG_RESULT_REASON)


def row() -> Row:
    unhealthy = sum_by(rate(_EVALUATIONS, f'{_REASON}=~"stale|error"'), "instance", _REASON)
    # An instance with none of them still gets a line, at 0.
    every_instance = sum_by(f"0 * {rate(_EVALUATIONS)}", "instance")
    return Row(
        "Feature flags",
        [
            timeseries(
                "Flag evaluations by flag and variant",
                "Evaluations per second of each flag, by the variant served: a kill switch "
                "turned off, or a rollout's share, shows here within seconds of the change.",
                "ops",
                [target(sum_by(rate(_EVALUATIONS), _FLAG, _VARIANT), legend(_FLAG, _VARIANT))],
            ),
            timeseries(
                "Stale or failed flag evaluations",
                "Evaluations per second served from a snapshot the instance could not refresh "
                "(stale: the backend is unreachable) or of undeclared flags (error), by "
                "instance. 0 is healthy.",
                "ops",
                [
                    target(
                        f"{unhealthy} or on (instance) {every_instance}",
                        legend("instance", _REASON),
                    )
                ],
                noValue="0",
            ),
            timeseries(
                "Flag changes applied, by instance",
                "Changes each instance applied: after a flip, every instance should count one. "
                "An instance missing here did not get it (see the stale panel).",
                "short",
                [
                    target(
                        or_zero(sum_by(increase(_CHANGES), "instance", _FLAG), _FLAG),
                        legend("instance", _FLAG),
                    )
                ],
                width=24,
                noValue="0",
            ),
        ],
    )
