"""Rate limiting: decisions by policy and result, and the share each policy rejects."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import prometheus_label, rate, ratio, series, sum_by

_DECISIONS = series(names.RATE_LIMIT_REQUESTS)
_POLICY = prometheus_label(names.RATE_LIMIT_POLICY)
_RESULT = prometheus_label(names.RATE_LIMIT_RESULT)


def _share(result: str) -> str:
    """Share of a policy's decisions with ``result``; 0 (not "no data") when there were none."""
    return ratio(
        sum_by(rate(_DECISIONS, f'{_RESULT}="{result}"'), _POLICY),
        sum_by(rate(_DECISIONS), _POLICY),
    )


def row() -> Row:
    return Row(
        "Rate limiting",
        [
            timeseries(
                "Rate-limit decisions by policy and result",
                "Decisions per second per policy and result: allowed, rejected (429), error "
                "(the backend failed and the policy's failure mode decided) and shadow_rejected "
                "(would have been rejected; let through in shadow mode).",
                "reqps",
                [target(sum_by(rate(_DECISIONS), _POLICY, _RESULT), legend(_POLICY, _RESULT))],
            ),
            timeseries(
                "Rejection ratio by policy",
                "Share of each policy's decisions that were rejected, and that shadow mode "
                "would have rejected: size limits with the shadow line before enforcing them.",
                "percentunit",
                [
                    target(_share(names.RATE_LIMIT_REJECTED), f"{legend(_POLICY)} rejected"),
                    target(
                        _share(names.RATE_LIMIT_SHADOW_REJECTED),
                        f"{legend(_POLICY)} shadow_rejected",
                    ),
                ],
                min=0,
                max=1,
            ),
        ],
    )
