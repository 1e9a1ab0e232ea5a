"""What the caches saved: the model calls and tokens that cache hits spared
(``toolkit.cache.saved.*``), per cache and model."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import or_zero, prometheus_label, rate, series, sum_by

_CALLS = series(names.CACHE_SAVED_CALLS)
_TOKENS = series(names.CACHE_SAVED_TOKENS)
_CACHE = prometheus_label(names.CACHE_NAME)
_MODEL = prometheus_label(names.GEN_AI_REQUEST_MODEL)
_TOKEN_TYPE = prometheus_label(names.GEN_AI_TOKEN_TYPE)


def row() -> Row:
    return Row(
        "Cache savings",
        [
            timeseries(
                "Model calls spared by caches",
                "Per second, the model calls that @cached hits did not make: those the "
                "entry's computation made, by cache and model. No series means no such hits.",
                "ops",
                [
                    target(
                        or_zero(sum_by(rate(_CALLS), _CACHE, _MODEL), _CACHE),
                        legend(_CACHE, _MODEL),
                    )
                ],
                noValue="0",
            ),
            timeseries(
                "Tokens spared by caches",
                "Per second, the input and output tokens of the model calls that @cached hits "
                "spared, by cache and model.",
                "short",
                [
                    target(
                        or_zero(sum_by(rate(_TOKENS), _CACHE, _MODEL, _TOKEN_TYPE), _CACHE),
                        legend(_CACHE, _MODEL, _TOKEN_TYPE),
                    )
                ],
                noValue="0",
            ),
        ],
    )
