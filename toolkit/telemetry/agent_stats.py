"""Recent percentiles, tokens and cost per agent and per model, read from the GenAI spans as
they end: a span processor feeding two :class:`~toolkit.telemetry.latency.LatencyTable`.

A span whose ``gen_ai.operation.name`` is ``invoke_agent`` counts for its agent
(``gen_ai.agent.name``), an inference or embeddings span (``chat``, ``embeddings``, ...) for its
model (``gen_ai.request.model``). An
agent's tokens and cost are those its own span reports, else the sum of what the model
calls under it reported (through steps and tools, sub-agents included): each ended span
hands its descendants' usage to its parent, and only spans below a model call carry any, so
other spans cost one attribute read. Names follow the OpenTelemetry GenAI conventions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from toolkit.telemetry import names
from toolkit.telemetry.latency import LatencyTable

logger = logging.getLogger("toolkit.telemetry")

OTHER: Final = "other"
"""The agent or model that names past ``max_names`` are counted under."""
INVOKE_AGENT: Final = names.GEN_AI_INVOKE_AGENT
MODEL_OPERATIONS: Final = frozenset(
    {
        names.GEN_AI_CHAT,
        names.GEN_AI_EMBEDDINGS,
        names.GEN_AI_TEXT_COMPLETION,
        names.GEN_AI_GENERATE_CONTENT,
    }
)
"""Operations that are a call to a model."""
_OPERATIONS: Final = MODEL_OPERATIONS | {INVOKE_AGENT}
PENDING_USAGE: Final = 10_000
"""Open spans holding their descendants' usage, at most (oldest dropped past it)."""

Usage = tuple[int, int, float]
"""Input tokens, output tokens, cost."""


class AgentStats(SpanProcessor):
    """Per agent and per model: recent calls, errors, percentiles, tokens and cost.

    Args:
        window: seconds of the recent past kept.
        max_names: agents, and models, with their own figures; more go under ``other``.
    """

    def __init__(self, *, window: float = 300.0, max_names: int = 100) -> None:
        self.agents: LatencyTable[str] = LatencyTable(
            window=window, max_keys=max_names, other=OTHER
        )
        self.models: LatencyTable[str] = LatencyTable(
            window=window, max_keys=max_names, other=OTHER
        )
        self.spans = 0
        """GenAI spans (agents and model calls) seen since start: none means nothing is
        traced, or a sampler drops those traces."""
        self._below: dict[int, Usage] = {}
        self._lock = threading.Lock()
        self._warned = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        del span, parent_context

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._on_end(span)
        except Exception:  # observability never fails the application
            if not self._warned:
                self._warned = True
                logger.exception("the status page's agent figures failed; some may be missing")

    def shutdown(self) -> None:
        self._below.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        del timeout_millis
        return True

    def _on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes
        if attributes is None:
            attributes = {}
        # Most spans (every HTTP span) have no operation, and the SDK's attributes answer a
        # missing key with a KeyError inside Mapping.get: looked for among the keys first.
        operation = (
            attributes.get(names.GEN_AI_OPERATION_NAME)
            if names.GEN_AI_OPERATION_NAME in iter(attributes)
            else None
        )
        if operation not in _OPERATIONS and not self._below:
            return  # no model call, and none below it: nothing to count or hand up
        context = span.context
        span_id = context.span_id if context is not None else 0
        with self._lock:
            below = self._below.pop(span_id, None)
        if operation not in _OPERATIONS:
            self._hand_up(span, below)
            return
        own = _usage(attributes)
        seconds = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
        failed = span.status.status_code is StatusCode.ERROR or names.ERROR_TYPE in attributes
        if operation == INVOKE_AGENT:
            usage = own if own is not None else below
            name = attributes.get(names.GEN_AI_AGENT_NAME) or span.name.partition(" ")[2]
            with self._lock:
                self.spans += 1
                self.agents.record(str(name or "agent"), seconds, failed, usage or (0, 0, 0.0))
            self._hand_up(span, usage)
            return
        model = attributes.get(names.GEN_AI_REQUEST_MODEL) or span.name.partition(" ")[2]
        with self._lock:
            self.spans += 1
            self.models.record(str(model or "unknown"), seconds, failed, own or (0, 0, 0.0))
        self._hand_up(span, _add(own, below))

    def _hand_up(self, span: ReadableSpan, usage: Usage | None) -> None:
        """Give ``usage`` (this span's and its descendants') to its parent span."""
        parent = span.parent
        if usage is None or parent is None or parent.is_remote:
            return
        with self._lock:
            below = self._below
            below[parent.span_id] = _add(below.pop(parent.span_id, None), usage) or usage
            if len(below) > PENDING_USAGE:
                del below[next(iter(below))]


def _usage(attributes: Mapping[str, Any]) -> Usage | None:
    tokens_in = attributes.get(names.GEN_AI_USAGE_INPUT_TOKENS)
    tokens_out = attributes.get(names.GEN_AI_USAGE_OUTPUT_TOKENS)
    cost = attributes.get(names.GEN_AI_COST_ATTRIBUTE)
    if tokens_in is None and tokens_out is None and cost is None:
        return None
    return (_int(tokens_in), _int(tokens_out), _float(cost))


def _add(one: Usage | None, other: Usage | None) -> Usage | None:
    if one is None:
        return other
    if other is None:
        return one
    return (one[0] + other[0], one[1] + other[1], one[2] + other[2])


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
