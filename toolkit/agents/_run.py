"""One open agent or step span: started current, ended once, its duration recorded after.

Nothing here raises into the application: a failure to start is no span (the function runs
bare), a failure to end is logged.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from opentelemetry import context, trace
from opentelemetry.metrics import Histogram
from opentelemetry.trace import SpanKind, Status, StatusCode

from toolkit.agents._telemetry import AgentTelemetry
from toolkit.resilience.classify import error_type
from toolkit.telemetry import names

logger = logging.getLogger("toolkit.agents")

AGENT_KEY: Final = context.create_key("toolkit.agent")
"""The OpenTelemetry context value naming the agent a call runs in (its bounded label): model
calls inside it count their tokens and cost under that agent."""
MAX_ERROR_MESSAGE: Final = 256


class SpanRun:
    """An open span, the context that makes it current, and the histogram its duration goes
    to with the attributes it has (``error.type`` is added at the end when it failed)."""

    __slots__ = (
        "_attributes",
        "_ended",
        "_histogram",
        "_keys",
        "_started",
        "_telemetry",
        "context",
        "span",
    )

    def __init__(
        self,
        telemetry: AgentTelemetry,
        span: trace.Span,
        histogram: Histogram,
        keys: tuple[str, ...],
        values: tuple[str | None, ...],
        agent: str | None = None,
    ) -> None:
        self._telemetry = telemetry
        self.span = span
        current = trace.set_span_in_context(span)
        self.context = current if agent is None else context.set_value(AGENT_KEY, agent, current)
        self._histogram = histogram
        self._keys = keys
        self._attributes = values
        self._started = time.perf_counter()
        self._ended = False

    def end(self, error: BaseException | None) -> None:
        """End the span (an error marks it and its duration's ``error.type``), then record
        the duration. Only the first call counts."""
        if self._ended:
            return
        self._ended = True
        try:
            duration = time.perf_counter() - self._started
            kind = None if error is None else mark_failed(self.span, error)
            self.span.end()
            telemetry = self._telemetry
            label = None if kind is None else telemetry.errors(kind)
            attributes = telemetry.attributes(
                (*self._keys, names.ERROR_TYPE), (*self._attributes, label)
            )
            self._histogram.record(duration, attributes)
        except Exception:
            logger.exception("toolkit.agents: ending a span failed; the call goes on")


def mark_failed(span: trace.Span, error: BaseException) -> str:
    """Put ``error`` on ``span`` (``error.type``, error status, the exception event) and
    return its ``error.type``."""
    kind = error_type(error)
    if span.is_recording():
        span.set_attribute(names.ERROR_TYPE, kind)
        span.set_status(Status(StatusCode.ERROR, str(error)[:MAX_ERROR_MESSAGE] or kind))
        span.record_exception(error)
    return kind


def start_agent(telemetry: AgentTelemetry, name: str, conversation: str | None) -> SpanRun:
    """The run of agent ``name``, current agent of the model calls inside it."""
    label = telemetry.agents(name)
    attributes: dict[str, str] = {
        names.GEN_AI_OPERATION_NAME: names.GEN_AI_INVOKE_AGENT,
        names.GEN_AI_AGENT_NAME: name,
    }
    if conversation is not None:
        attributes[names.GEN_AI_CONVERSATION_ID] = conversation
    span = telemetry.tracer.start_span(
        f"invoke_agent {name}", kind=SpanKind.INTERNAL, attributes=attributes
    )
    return SpanRun(
        telemetry,
        span,
        telemetry.agent_duration,
        (names.GEN_AI_AGENT_NAME,),
        (label,),
        agent=label,
    )


def start_step(telemetry: AgentTelemetry, name: str, *, tool: bool) -> SpanRun:
    """The run of step ``name``: ``execute_tool {name}`` for a tool, else named by the step."""
    label = telemetry.steps(name)
    if tool:
        span = telemetry.tracer.start_span(
            f"execute_tool {name}",
            kind=SpanKind.INTERNAL,
            attributes={
                names.GEN_AI_OPERATION_NAME: names.GEN_AI_EXECUTE_TOOL,
                names.GEN_AI_TOOL_NAME: name,
            },
        )
        operation: str | None = names.GEN_AI_EXECUTE_TOOL
    else:
        span = telemetry.tracer.start_span(
            name, kind=SpanKind.INTERNAL, attributes={names.STEP_NAME: name}
        )
        operation = None
    return SpanRun(
        telemetry,
        span,
        telemetry.step_duration,
        (names.STEP_NAME, names.GEN_AI_OPERATION_NAME),
        (label, operation),
    )
