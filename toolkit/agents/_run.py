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


class Series:
    """Where the duration of one kind of run goes: its histogram, the bounded attributes of
    a run that succeeded (made once), and their keys and values for one that failed (with
    its ``error.type``)."""

    __slots__ = ("histogram", "keys", "ok", "values")

    def __init__(
        self,
        telemetry: AgentTelemetry,
        histogram: Histogram,
        keys: tuple[str, ...],
        values: tuple[str | None, ...],
    ) -> None:
        self.histogram = histogram
        self.keys = (*keys, names.ERROR_TYPE)
        self.values = values
        self.ok = telemetry.attributes(self.keys, (*values, None))


class SpanRun:
    """An open span, the context that makes it current, and the series its duration goes
    to (``error.type`` is added at the end when it failed). ``attached`` and ``stacked``
    are for a step entered as a context manager: the tokens that undo what entering set."""

    __slots__ = (
        "_ended",
        "_parent",
        "_series",
        "_started",
        "_telemetry",
        "attached",
        "context",
        "span",
        "stacked",
    )

    def __init__(
        self,
        telemetry: AgentTelemetry,
        span: trace.Span,
        series: Series,
        parent: context.Context,
        agent: str | None = None,
    ) -> None:
        self._telemetry = telemetry
        self.span = span
        self._parent = parent  # what its duration is recorded in (an exemplar's trace)
        current = trace.set_span_in_context(span, parent)
        self.context = current if agent is None else context.set_value(AGENT_KEY, agent, current)
        self._series = series
        self.attached: object = None
        self.stacked: object = None
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
            series = self._series
            telemetry = self._telemetry
            if error is None:
                self.span.end()
                telemetry.records.record(series.histogram, duration, series.ok, self._parent)
                return
            kind = mark_failed(self.span, error)
            self.span.end()
            attributes = telemetry.attributes(series.keys, (*series.values, telemetry.errors(kind)))
            telemetry.records.record(series.histogram, duration, attributes, self._parent)
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


class _Kind:
    """What every run of one agent or step starts its span with, made on its first run."""

    __slots__ = ("attributes", "label", "name", "series")

    def __init__(
        self, name: str, attributes: dict[str, str], label: str | None, series: Series
    ) -> None:
        self.name = name
        self.attributes = attributes
        self.label = label
        self.series = series


def start_agent(telemetry: AgentTelemetry, name: str, conversation: str | None) -> SpanRun:
    """The run of agent ``name``, current agent of the model calls inside it."""
    key = ("agent", name)
    kind: _Kind | None = telemetry.prepared(key)
    if kind is None:
        label = telemetry.agents(name)
        series = Series(telemetry, telemetry.agent_duration, (names.GEN_AI_AGENT_NAME,), (label,))
        attributes = {
            names.GEN_AI_OPERATION_NAME: names.GEN_AI_INVOKE_AGENT,
            names.GEN_AI_AGENT_NAME: name,
        }
        kind = telemetry.prepare(key, _Kind(f"invoke_agent {name}", attributes, label, series))
    attributes = kind.attributes
    if conversation is not None:
        attributes = {**attributes, names.GEN_AI_CONVERSATION_ID: conversation}
    parent = context.get_current()
    span = telemetry.tracer.start_span(
        kind.name, parent, kind=SpanKind.INTERNAL, attributes=attributes
    )
    return SpanRun(telemetry, span, kind.series, parent, agent=kind.label)


def start_step(telemetry: AgentTelemetry, name: str, *, tool: bool) -> SpanRun:
    """The run of step ``name``: ``execute_tool {name}`` for a tool, else named by the step."""
    key = ("step", name, tool)
    kind: _Kind | None = telemetry.prepared(key)
    if kind is None:
        kind = telemetry.prepare(key, _step_kind(telemetry, name, tool))
    parent = context.get_current()  # read once: the span's parent and its context's
    span = telemetry.tracer.start_span(
        kind.name, parent, kind=SpanKind.INTERNAL, attributes=kind.attributes
    )
    return SpanRun(telemetry, span, kind.series, parent)


def _step_kind(telemetry: AgentTelemetry, name: str, tool: bool) -> _Kind:
    label = telemetry.steps(name)
    keys = (names.STEP_NAME, names.GEN_AI_OPERATION_NAME)
    if tool:
        attributes = {
            names.GEN_AI_OPERATION_NAME: names.GEN_AI_EXECUTE_TOOL,
            names.GEN_AI_TOOL_NAME: name,
        }
        series = Series(
            telemetry, telemetry.step_duration, keys, (label, names.GEN_AI_EXECUTE_TOOL)
        )
        return _Kind(f"execute_tool {name}", attributes, None, series)
    series = Series(telemetry, telemetry.step_duration, keys, (label, None))
    return _Kind(name, {names.STEP_NAME: name}, None, series)
