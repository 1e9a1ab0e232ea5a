"""Tool-call arguments and results on pydantic-ai's spans, cut to ``agents.content_max_length``.

When content is recorded, pydantic-ai puts a tool call's arguments and its result on the
``execute_tool`` span whole (``gen_ai.tool.call.arguments`` / ``gen_ai.tool.call.result``;
``tool_arguments`` / ``tool_response`` in its version-2 format): a tool that returns a
document would put the document on the span. The toolkit bounds every content it records
(``toolkit.agents._content``), so the plugin gives pydantic-ai a tracer whose spans cut those
attributes to that length as they are set, the same prefix cut. Every other attribute, and
the spans themselves, are the provider's as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util import types

TOOL_CONTENT: Final = frozenset(
    {"gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "tool_arguments", "tool_response"}
)
"""The attributes of pydantic-ai's tool spans that carry content."""


def _cut(key: str, value: Any, max_length: int) -> Any:
    if key in TOOL_CONTENT and isinstance(value, str) and len(value) > max_length:
        return value[:max_length]
    return value


def _cut_all(attributes: types.Attributes, max_length: int) -> types.Attributes:
    if not attributes or TOOL_CONTENT.isdisjoint(attributes):
        return attributes
    return {key: _cut(key, value, max_length) for key, value in attributes.items()}


class CuttingTracerProvider(trace.TracerProvider):
    """``provider``'s tracers, their spans' tool content cut to ``max_length``."""

    def __init__(self, provider: trace.TracerProvider, max_length: int) -> None:
        self._provider = provider
        self._max_length = max_length

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes | None = None,
    ) -> trace.Tracer:
        tracer = self._provider.get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        return _CuttingTracer(tracer, self._max_length)


class _CuttingTracer(trace.Tracer):
    def __init__(self, tracer: trace.Tracer, max_length: int) -> None:
        self._tracer = tracer
        self._max_length = max_length

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        span = self._tracer.start_span(
            name,
            context,
            kind,
            _cut_all(attributes, self._max_length),
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        return _CuttingSpan(span, self._max_length)

    @contextmanager  # the API's own decorator is private; the same context manager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, False
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class _CuttingSpan(trace.Span):
    """A span of the provider's, with its tool content cut as it is set."""

    def __init__(self, span: trace.Span, max_length: int) -> None:
        self._span = span
        self._max_length = max_length

    def __getattr__(self, name: str) -> Any:  # what an SDK span has beyond the API's
        return getattr(self._span, name)

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        self._span.set_attribute(key, _cut(key, value, self._max_length))

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        self._span.set_attributes(_cut_all(attributes, self._max_length) or {})

    def end(self, end_time: int | None = None) -> None:
        self._span.end(end_time)

    def get_span_context(self) -> SpanContext:
        return self._span.get_span_context()

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        self._span.add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        self._span.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self._span.update_name(name)

    def is_recording(self) -> bool:
        return self._span.is_recording()

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._span.set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._span.record_exception(exception, attributes, timestamp, escaped)
