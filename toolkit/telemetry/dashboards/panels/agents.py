"""Agents: runs and their duration per agent, the steps inside them, and the tokens and cost
each agent spends per model."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import (
    prometheus_label,
    quantile,
    rate,
    series,
    sum_by,
)

_RUNS = series(names.AGENT_DURATION, "_count")
_RUN_BUCKET = series(names.AGENT_DURATION, "_bucket")
_STEP_BUCKET = series(names.STEP_DURATION, "_bucket")
_TOKENS_SUM = series(names.GEN_AI_CLIENT_TOKEN_USAGE, "_sum")
_COST = series(names.GEN_AI_COST)
_AGENT = prometheus_label(names.GEN_AI_AGENT_NAME)
_MODEL = prometheus_label(names.GEN_AI_REQUEST_MODEL)
_TOKEN_TYPE = prometheus_label(names.GEN_AI_TOKEN_TYPE)
_STEP = prometheus_label(names.STEP_NAME)
_OPERATION = prometheus_label(names.GEN_AI_OPERATION_NAME)
_ERROR_TYPE = prometheus_label(names.ERROR_TYPE)


def row() -> Row:
    return Row(
        "Agents",
        [
            timeseries(
                "Agent runs by agent and error type",
                "@traced_agent runs per second by agent; failed runs also by error.type (a "
                "line without one is the runs that succeeded).",
                "ops",
                [target(sum_by(rate(_RUNS), _AGENT, _ERROR_TYPE), legend(_AGENT, _ERROR_TYPE))],
            ),
            timeseries(
                "Agent run duration by agent (p50, p95, p99)",
                "Each run from its call to its return (a streamed answer: to its last item, "
                "error or close), model calls, steps and tools inside it included.",
                "s",
                [
                    target(quantile(q, _RUN_BUCKET, _AGENT), f"p{round(q * 100)} {legend(_AGENT)}")
                    for q in (0.5, 0.95, 0.99)
                ],
            ),
            timeseries(
                "Step duration by step (p50, p95)",
                "Each toolkit.step (memory layers, retrieval strategies, tools: "
                "execute_tool) by its name.",
                "s",
                [
                    target(
                        quantile(q, _STEP_BUCKET, _STEP, _OPERATION),
                        f"p{round(q * 100)} {legend(_STEP, _OPERATION)}",
                    )
                    for q in (0.5, 0.95)
                ],
                width=24,
            ),
            timeseries(
                "Tokens per second by agent, model and type",
                "Input and output tokens per second of the model calls each agent made "
                "(calls outside any agent have no agent name).",
                "short",
                [
                    target(
                        sum_by(rate(_TOKENS_SUM), _AGENT, _MODEL, _TOKEN_TYPE),
                        legend(_AGENT, _MODEL, _TOKEN_TYPE),
                    )
                ],
            ),
            timeseries(
                "Cost per hour by agent and model",
                "US dollars an hour at the current rate, by agent and model, from the "
                "agents.prices table; models it does not price add nothing.",
                "currencyUSD",
                [target(f"{sum_by(rate(_COST), _AGENT, _MODEL)} * 3600", legend(_AGENT, _MODEL))],
            ),
        ],
    )
