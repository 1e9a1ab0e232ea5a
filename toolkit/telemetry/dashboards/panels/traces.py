"""Traces of agent runs and model calls in Tempo: the slow runs and the failed calls, each
line opening its trace."""

from __future__ import annotations

from typing import Final

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Json, Row, textbox, trace_table, trace_target
from toolkit.telemetry.dashboards.traceql import (
    ERROR,
    SERVICE_VARIABLE,
    equals,
    longer_than,
    one_of,
    span,
    spans,
)

SLOW_VARIABLE: Final = "slow_agent_run"
_MODEL_OPERATIONS: Final = tuple(
    operation
    for operation in names.GEN_AI_OPERATIONS
    if operation not in (names.GEN_AI_INVOKE_AGENT, names.GEN_AI_EXECUTE_TOOL)
)


def variables() -> list[Json]:
    """The template variables the trace tables' queries use."""
    return [
        textbox(
            SERVICE_VARIABLE,
            "Services (traces)",
            ".*",
            "A regular expression of the service.name values whose spans the trace tables "
            "list (telemetry.service_name; agent-server by default).",
        ),
        textbox(
            SLOW_VARIABLE,
            "Slow agent run over",
            "5s",
            "The shortest agent run the slow-runs table lists (TraceQL duration: 500ms, 5s, 1m).",
        ),
    ]


def row() -> Row:
    return Row(
        "Traces",
        [
            trace_table(
                "Slow agent runs",
                "invoke_agent spans that lasted longer than the 'Slow agent run over' "
                "variable, with their agent, conversation and error type: open one to see "
                "its steps and model calls. Sort by duration in the table's header.",
                [
                    trace_target(
                        spans(
                            equals(span(names.GEN_AI_OPERATION_NAME), names.GEN_AI_INVOKE_AGENT),
                            longer_than(f"${SLOW_VARIABLE}"),
                            columns=(
                                span(names.GEN_AI_AGENT_NAME),
                                span(names.GEN_AI_CONVERSATION_ID),
                                span(names.ERROR_TYPE),
                            ),
                        )
                    )
                ],
            ),
            trace_table(
                "Failed model calls",
                "LLM and embedding call spans that ended in error, with their model, provider "
                "and error type; the trace shows the agent and the request they ran in.",
                [
                    trace_target(
                        spans(
                            one_of(span(names.GEN_AI_OPERATION_NAME), _MODEL_OPERATIONS),
                            ERROR,
                            columns=(
                                span(names.GEN_AI_REQUEST_MODEL),
                                span(names.GEN_AI_PROVIDER_NAME),
                                span(names.ERROR_TYPE),
                            ),
                        )
                    )
                ],
            ),
        ],
    )
