"""Model calls: how many, how many failed and why, how long they took and how soon streams
started, per model (the GenAI conventions' client metrics)."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, stat, target, thresholds, timeseries
from toolkit.telemetry.dashboards.promql import (
    RANGE,
    increase,
    or_zero,
    prometheus_label,
    quantile,
    rate,
    ratio,
    series,
    sum_by,
)

_COUNT = series(names.GEN_AI_CLIENT_OPERATION_DURATION, "_count")
_BUCKET = series(names.GEN_AI_CLIENT_OPERATION_DURATION, "_bucket")
_FIRST_CHUNK_BUCKET = series(names.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK, "_bucket")
_TOKENS_SUM = series(names.GEN_AI_CLIENT_TOKEN_USAGE, "_sum")
_COST = series(names.GEN_AI_COST)
_OPERATION = prometheus_label(names.GEN_AI_OPERATION_NAME)
_MODEL = prometheus_label(names.GEN_AI_REQUEST_MODEL)
_ERROR_TYPE = prometheus_label(names.ERROR_TYPE)
_FAILED = f'{_ERROR_TYPE}!=""'


def _percentiles(bucket: str) -> list[dict[str, object]]:
    return [
        target(
            quantile(q, bucket, _OPERATION, _MODEL),
            f"p{round(q * 100)} {legend(_OPERATION, _MODEL)}",
            exemplar=True,
        )
        for q in (0.5, 0.95, 0.99)
    ]


def row() -> Row:
    all_calls = sum_by(rate(_COUNT))
    return Row(
        "Model calls",
        [
            stat(
                "Model calls per second",
                "LLM and embedding calls per second recorded by toolkit.llm_call and the "
                "framework plugins, failed ones included.",
                "ops",
                [target(all_calls, "calls/s")],
                width=6,
            ),
            stat(
                "Model call error ratio",
                "Share of model calls that failed (error.type set: a timeout, a refused "
                "connection, the provider's status code, an open breaker).",
                "percentunit",
                [target(ratio(sum_by(rate(_COUNT, _FAILED)), all_calls), "failed")],
                width=6,
                thresholds=thresholds(("green", None), ("orange", 0.01), ("red", 0.05)),
            ),
            stat(
                "Tokens over the time range",
                "Input and output tokens of every model call in the dashboard's time range.",
                "short",
                [target(sum_by(increase(_TOKENS_SUM, over=RANGE)), "tokens")],
                width=6,
            ),
            stat(
                "Model cost over the time range",
                "US dollars spent on model calls in the dashboard's time range, by the "
                "agents.prices table. Empty until the table prices a model that was called.",
                "currencyUSD",
                [target(sum_by(increase(_COST, over=RANGE)), "USD")],
                width=6,
                decimals=4,
            ),
            timeseries(
                "Model calls by operation and model",
                "Calls per second by operation (chat, embeddings, ...) and the model asked "
                "for; models past agents.max_label_values are other.",
                "ops",
                [target(sum_by(rate(_COUNT), _OPERATION, _MODEL), legend(_OPERATION, _MODEL))],
            ),
            timeseries(
                "Model call errors by model and error type",
                "Failed calls per second by model and error.type: timeout, connection, the "
                "provider's HTTP status, circuit_open, or the exception's class. No series "
                "means no errors.",
                "ops",
                [
                    target(
                        or_zero(sum_by(rate(_COUNT, _FAILED), _MODEL, _ERROR_TYPE), _ERROR_TYPE),
                        legend(_MODEL, _ERROR_TYPE),
                    )
                ],
                noValue="0",
            ),
            timeseries(
                "Model call duration by model (p50, p95, p99)",
                "From the request to the end of the answer: a stream's last chunk, never its "
                "headers. The conventions' buckets reach 82 s.",
                "s",
                _percentiles(_BUCKET),
                height=9,
            ),
            timeseries(
                "Time to first chunk by model (p50, p95, p99)",
                "Streamed calls only: from the request to the first chunk, what a user waits "
                "before the answer starts to appear.",
                "s",
                _percentiles(_FIRST_CHUNK_BUCKET),
                height=9,
            ),
        ],
    )
