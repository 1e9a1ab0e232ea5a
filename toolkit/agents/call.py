"""``toolkit.llm_call(model, provider=...)``: the recorder around one model call.

What users with their own client and the framework plugins call, the one API every model
call is recorded through::

    with toolkit.llm_call("gpt-4o", provider="openai") as call:
        answer = client.chat.completions.create(model="gpt-4o", messages=messages)
        call.response(model=answer.model, finish_reasons=["stop"])
        call.usage(input_tokens=answer.usage.prompt_tokens,
                   output_tokens=answer.usage.completion_tokens)

A streamed answer is handed over: ``return call.stream(chunks)`` inside the block returns an
iterator (sync or async, as ``chunks`` is) that owns the end of the call. The span and every
metric are then recorded when the stream is exhausted, fails or is closed (``close()``,
``aclose()``, leaving its ``with``, or dropped), never when the block or the headers end.

The span (CLIENT, ``chat gpt-4o``) is current inside the block and while the stream produces
each chunk, so the toolkit's decisions around the call (a breaker, a retry, a cache) land on
it. Every method is a no-op when telemetry is off, and none raises into the application.

A framework that opens its own span for the call (pydantic-ai's ``chat``) passes it:
``llm_call(model, provider=..., span=trace.get_current_span())`` records the metrics, the
cost and what it is told onto that span, without a second one; the span stays the
framework's to end, and to mark failed (a failed attempt that a retry makes good is not a
failed operation).

One call is recorded once: a call of the same operation entered while another is open in the
context (an instrumented client inside the app's own ``llm_call``) opens no span and records
no point; what it is told fills in what the open one was not told.

Over 400 lines: the recorder is one class whose methods are its whole API, with the two small
records (the span's opening, the metric series) it prepares once per model and outcome so the
per-call path only looks them up; split apart, each piece would reach into the others' state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, Literal, TypeVar, overload

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind

from toolkit._default import DEFAULT, Default
from toolkit._savings import note_call
from toolkit.agents._content import Messages, messages_json
from toolkit.agents._run import AGENT_KEY, mark_failed
from toolkit.agents._stream import AsyncStream, SyncStream
from toolkit.agents._telemetry import AgentTelemetry, current_agent_telemetry
from toolkit.flags import TRACING_AGENTS, FlagSource, current_flags
from toolkit.resilience.classify import error_type
from toolkit.telemetry import names
from toolkit.telemetry.labels import MAX_LABEL_LENGTH

logger = logging.getLogger("toolkit.agents")

T = TypeVar("T")

Operation = Literal["chat", "embeddings", "text_completion", "generate_content"]
"""The model operations a call records (``gen_ai.operation.name``)."""

_CLIENT_KEYS = (
    names.GEN_AI_OPERATION_NAME,
    names.GEN_AI_PROVIDER_NAME,
    names.GEN_AI_REQUEST_MODEL,
    names.GEN_AI_RESPONSE_MODEL,
    names.ERROR_TYPE,
    names.SERVER_ADDRESS,
    names.SERVER_PORT,
)
_TOKEN_KEYS = (
    names.GEN_AI_OPERATION_NAME,
    names.GEN_AI_PROVIDER_NAME,
    names.GEN_AI_REQUEST_MODEL,
    names.GEN_AI_RESPONSE_MODEL,
    names.GEN_AI_TOKEN_TYPE,
    names.GEN_AI_AGENT_NAME,
    names.SERVER_ADDRESS,
    names.SERVER_PORT,
)
_MAX_PORT = 65535
_COST_KEYS = (names.GEN_AI_AGENT_NAME, names.GEN_AI_PROVIDER_NAME, names.GEN_AI_REQUEST_MODEL)
_CALL_KEY: Final = context.create_key("toolkit.llm_call")
"""The OpenTelemetry context value holding the open call: a call of the same operation made
inside it records onto it."""
_MERGED: Final = (
    "_input",
    "_output",
    "_cache_read",
    "_response_model",
    "_response_id",
    "_finish_reasons",
    "_first_chunk",
    "_input_messages",
    "_output_messages",
)
"""What a call made inside another tells it, where the outer one was not told."""


class LLMCall:
    """One model call being recorded: enter it (``with`` or ``async with``) around the
    request; tell it what the answer said; hand a stream over with :meth:`stream`.

    Build it with :func:`llm_call`. An object records one call: enter it once.
    """

    __slots__ = (
        "_agent",
        "_agent_given",
        "_attached",
        "_cache_read",
        "_consumer",
        "_ended",
        "_finish_reasons",
        "_first_chunk",
        "_flags",
        "_given_span",
        "_input",
        "_input_messages",
        "_inside",
        "_opening",
        "_outer",
        "_output",
        "_output_messages",
        "_parent",
        "_response_id",
        "_response_model",
        "_server",
        "_server_given",
        "_span",
        "_started",
        "_streaming",
        "_telemetry",
        "model",
        "operation",
        "provider",
        "streamed",
    )

    def __init__(
        self,
        model: str,
        *,
        provider: str,
        operation: Operation = "chat",
        stream: bool = False,
        span: trace.Span | None = None,
        agent: str | Default | None = DEFAULT,
        server_address: str | None = None,
        server_port: int | None = None,
        flags: FlagSource | None = None,
    ) -> None:
        """The arguments of :func:`llm_call` (``span``: None opens one of its own; ``agent``:
        None for none; ``server_address`` / ``server_port``: None leaves each out;
        ``flags``: where the ``tracing.agents`` flag is read, the current flags when None)."""
        self.model = str(model)
        self.provider = str(provider)
        self.operation: str = operation
        self.streamed = stream
        self._given_span = span
        self._agent_given = agent
        port = (
            server_port
            if isinstance(server_port, int) and not isinstance(server_port, bool)
            else None
        )
        self._server_given = (
            None if server_address is None else str(server_address),
            port if port is not None and 0 < port <= _MAX_PORT else None,
        )
        self._server: tuple[str | None, int | None] = (None, None)
        self._flags = flags
        self._telemetry: AgentTelemetry | None = None
        self._opening: _Opening | None = None
        self._parent: context.Context | None = None
        self._span: trace.Span = trace.INVALID_SPAN
        self._attached: object = None
        self._outer: LLMCall | None = None
        self._consumer: context.Context | None = None
        self._inside: context.Context | None = None
        self._agent: str | None = None
        self._started = 0.0
        self._first_chunk: float | None = None
        self._ended = False
        self._streaming = False
        self._input: int | None = None
        self._output: int | None = None
        self._cache_read: int | None = None
        self._response_model: str | None = None
        self._response_id: str | None = None
        self._finish_reasons: Sequence[str] | None = None
        self._input_messages: str | None = None
        self._output_messages: str | None = None

    # --- the block ---------------------------------------------------------------------------

    def __enter__(self) -> LLMCall:
        try:
            if self._telemetry is None and not self._ended:
                self._start()
        except Exception:
            logger.exception("toolkit.agents: starting the span of a model call failed")
            self._telemetry = None
        return self

    def _start(self) -> None:
        if not (self._flags or current_flags()).is_enabled(TRACING_AGENTS):
            return
        telemetry = current_agent_telemetry()
        current = context.get_current()  # read once: the parent, the agent, the new context
        outer: LLMCall | None = current.get(_CALL_KEY)  # type: ignore[assignment]
        if outer is not None and outer.operation == self.operation and outer.recording:
            self._nest(telemetry, outer)
            return
        opening = self._opening_of(telemetry)
        self._opening = opening
        self._server = opening.server
        self._parent = current  # what the metrics are recorded in (an exemplar's trace)
        given = self._given_span
        if given is None:
            self._span = telemetry.tracer.start_span(
                opening.name, current, kind=SpanKind.CLIENT, attributes=opening.attributes
            )
        else:
            self._span = given
            if opening.on_given and given.is_recording():
                given.set_attributes(opening.on_given)
        agent = self._agent_given
        if isinstance(agent, Default):
            self._agent = current.get(AGENT_KEY)  # type: ignore[assignment]
        else:
            self._agent = None if agent is None else telemetry.agents(str(agent))
        inside = context.set_value(_CALL_KEY, self, trace.set_span_in_context(self._span, current))
        # Kept for the stream: its chunks are most often read in the context the call began in.
        self._consumer, self._inside = current, inside
        self._attached = context.attach(inside)
        self._telemetry = telemetry
        self._started = time.perf_counter()

    def _nest(self, telemetry: AgentTelemetry, outer: LLMCall) -> None:
        """Inside an open call of the same operation (an instrumented client inside the app's
        own ``llm_call``), this call is that call: it opens no span and records no point, and
        what it is told fills in what the outer one was not told when it ends (:meth:`_merge`)."""
        logger.debug(
            "toolkit.agents: the %s call of %s inside the open one of %s records onto it",
            self.operation,
            self.model,
            outer.model,
        )
        self._outer = outer
        self._server = self._opening_of(telemetry).server
        self._telemetry = telemetry
        self._started = time.perf_counter()

    def _opening_of(self, telemetry: AgentTelemetry) -> _Opening:
        address, port = self._server_given
        key = ("llm_call", self.operation, self.provider, self.model, address, port, self.streamed)
        opening: _Opening | None = telemetry.prepared(key)
        if opening is None:
            opening = telemetry.prepare(key, _Opening(telemetry, self, address, port))
        return opening

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._attached is not None:
            context.detach(self._attached)  # type: ignore[arg-type]
            self._attached = None
        # A stream handed over ends the call itself, unless the block failed after all.
        if error is not None or not self._streaming:
            self._finish(error)

    async def __aenter__(self) -> LLMCall:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, traceback)

    # --- what the answer said ---------------------------------------------------------------

    @property
    def recording(self) -> bool:
        """Whether this call is recorded (entered, telemetry on, not ended yet)."""
        return self._telemetry is not None and not self._ended

    @property
    def capture_content(self) -> bool:
        """Whether :meth:`input_messages` and :meth:`output_messages` record anything: build
        the messages only when it is True."""
        return self._telemetry is not None and self._telemetry.capture_content

    def usage(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_input_tokens: int | None = None,
    ) -> None:
        """The tokens the provider reported (each replaces what was said before; None leaves
        it). ``input_tokens`` include the cache-read ones, as the conventions (and OpenAI)
        count them: add them for a provider that reports them apart (Anthropic)."""
        if input_tokens is not None:
            self._input = _count(input_tokens)
        if output_tokens is not None:
            self._output = _count(output_tokens)
        if cache_read_input_tokens is not None:
            self._cache_read = _count(cache_read_input_tokens)

    def response(
        self,
        *,
        model: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        response_id: str | None = None,
    ) -> None:
        """What the answer said of itself: the model that answered (``gpt-4o-2024-08-06``),
        why each choice stopped, the provider's id of the answer. None leaves each."""
        if model is not None:
            self._response_model = str(model)
        if finish_reasons is not None:
            self._finish_reasons = [str(reason) for reason in finish_reasons]
        if response_id is not None:
            self._response_id = str(response_id)

    def input_messages(self, messages: Messages) -> None:
        """The prompt, recorded only when content capture is on (see :attr:`capture_content`):
        a text, or messages as ``{"role": ..., "content": ...}`` or the conventions'
        ``{"role": ..., "parts": [...]}``."""
        if self.capture_content:
            self._input_messages = self._content(messages, "user")

    def output_messages(self, messages: Messages) -> None:
        """The completion, as :meth:`input_messages`."""
        if self.capture_content:
            self._output_messages = self._content(messages, "assistant")

    def _content(self, messages: Messages, role: str) -> str | None:
        telemetry = self._telemetry
        if telemetry is None:
            return None
        try:
            return messages_json(
                messages,
                role,
                max_length=telemetry.content_max_length,
                max_messages=telemetry.content_max_messages,
            )
        except Exception:
            logger.exception("toolkit.agents: the messages of a model call could not be recorded")
            return None

    # --- streams ----------------------------------------------------------------------------

    def first_chunk(self, *, after: float | None = None) -> None:
        """The first chunk of a streamed answer arrived (what :meth:`stream` notes itself).

        Args:
            after: seconds from the start of the call to the first chunk, for a stream that
                stamps it itself and is read afterwards (pydantic-ai's); None: now.
        """
        if self._first_chunk is None and self._telemetry is not None:
            if after is None:
                self._first_chunk = time.perf_counter()
            elif after >= 0:
                self._first_chunk = self._started + float(after)

    @overload
    def stream(
        self, chunks: AsyncIterable[T], *, on_chunk: Callable[[T], object] | None = None
    ) -> AsyncStream[T]: ...

    @overload
    def stream(
        self, chunks: Iterable[T], *, on_chunk: Callable[[T], object] | None = None
    ) -> SyncStream[T]: ...

    def stream(
        self,
        chunks: Iterable[T] | AsyncIterable[T],
        *,
        on_chunk: Callable[[T], object] | None = None,
    ) -> SyncStream[T] | AsyncStream[T]:
        """Hand the streamed answer over: the returned iterator yields ``chunks``' items and
        ends the call when they end (exhausted, failed, or closed early: ``close()``,
        ``aclose()``, leaving its ``with``, or dropped). Other attributes are ``chunks``'.

        Args:
            chunks: the provider's stream, sync or async.
            on_chunk: called with each chunk (read usage, finish reasons or text from it into
                this call); an exception it raises is logged, never the stream's.
        """
        self._streaming = True
        self.streamed = True
        if isinstance(chunks, AsyncIterable):
            return AsyncStream(self, chunks, on_chunk)
        return SyncStream(self, chunks, on_chunk)

    def _context(self) -> object:
        """Make the call current (its span, and itself for a call made inside) around producing
        a chunk, in the reader's context; the token undoes it. The context is made again only
        when the reader's has changed since the last chunk."""
        if self._telemetry is None or self._ended or self._outer is not None:
            return None
        reader = context.get_current()
        if reader is not self._consumer:
            self._consumer = reader
            self._inside = context.set_value(
                _CALL_KEY, self, trace.set_span_in_context(self._span, reader)
            )
        return context.attach(self._inside)  # type: ignore[arg-type]

    # --- the end ------------------------------------------------------------------------------

    def _finish(self, error: BaseException | None) -> None:
        """End the span and record the metrics, once: when the block ends, or the stream."""
        telemetry = self._telemetry
        # The chunks' context holds this call: let go of it, so the call is freed at once.
        self._consumer = self._inside = None
        if telemetry is None or self._ended:
            self._ended = True
            return
        self._ended = True
        try:
            if self._outer is None:
                self._record(telemetry, error)
            else:
                self._merge(self._outer)
        except Exception:
            logger.exception("toolkit.agents: recording a model call failed; the call goes on")

    def _merge(self, outer: LLMCall) -> None:
        """Fill in what the outer call was not told with what this one was (its outcome is
        the outer's own: an error that escapes reaches it too)."""
        if outer._ended:
            logger.debug("toolkit.agents: a call inside one that ended is not recorded")
            return
        for slot in _MERGED:
            if getattr(outer, slot) is None:
                setattr(outer, slot, getattr(self, slot))
        outer.streamed = outer.streamed or self.streamed
        if outer._server == (None, None) and self._server != (None, None):
            outer._server = self._server
            outer._opening = None  # its last series is for the server the call opened with
            address, port = self._server_given
            if outer._span.is_recording():
                server = {names.SERVER_ADDRESS: address, names.SERVER_PORT: port}
                outer._span.set_attributes({k: v for k, v in server.items() if v is not None})

    def _record(self, telemetry: AgentTelemetry, error: BaseException | None) -> None:
        ended = time.perf_counter()
        span = self._span
        input_tokens, output_tokens = self._input, self._output
        own = self._given_span is None
        kind = None
        if error is not None:
            # A borrowed span is marked by its framework, which knows how the operation ended.
            kind = mark_failed(span, error) if own else error_type(error)
        series = self._series(telemetry, kind)
        cost = None
        if series.price is not None and (input_tokens is not None or output_tokens is not None):
            cost = series.price.cost(input_tokens or 0, output_tokens or 0, self._cache_read or 0)
        if span.is_recording():
            self._describe(span, cost)
        if own:
            span.end()

        record, parent = telemetry.records.record, self._parent
        record(telemetry.operation_duration, ended - self._started, series.duration, parent)
        if self._first_chunk is not None:
            first = self._first_chunk - self._started
            record(telemetry.time_to_first_chunk, first, series.duration, parent)
        if input_tokens is not None:
            record(telemetry.token_usage, input_tokens, series.input_tokens, parent)
        if output_tokens is not None:
            record(telemetry.token_usage, output_tokens, series.output_tokens, parent)
        if cost is not None:
            telemetry.cost.add(series.cost_key, series.cost, cost)
        note_call(self.model, input_tokens or 0, output_tokens or 0)

    def _series(self, telemetry: AgentTelemetry, kind: str | None) -> _Series:
        """The metric series of this call's outcome: the one its opening's last call used
        when the answering model, outcome and agent are the same (the common case), else
        the one prepared for them."""
        opening = self._opening
        response_model, agent = self._response_model, self._agent
        last = None if opening is None else opening.last
        if (
            last is not None
            and last.response_model == response_model
            and last.kind == kind
            and last.agent == agent
        ):
            return last
        address, port = self._server
        key = (
            "llm_call.series",
            self.operation,
            self.provider,
            self.model,
            response_model,
            kind,
            address,
            port,
            agent,
        )
        series: _Series | None = telemetry.prepared(key)
        if series is None:
            series = telemetry.prepare(key, _Series(telemetry, self, kind, address, port, agent))
        if opening is not None:
            opening.last = series
        return series

    def _describe(self, span: trace.Span, cost: float | None) -> None:
        values: dict[str, Any] = {}
        if self._response_model is not None:
            values[names.GEN_AI_RESPONSE_MODEL] = self._response_model
        if self._response_id is not None:
            values[names.GEN_AI_RESPONSE_ID] = self._response_id
        if self._finish_reasons is not None:
            values[names.GEN_AI_RESPONSE_FINISH_REASONS] = self._finish_reasons
        if self._input is not None:
            values[names.GEN_AI_USAGE_INPUT_TOKENS] = self._input
        if self._output is not None:
            values[names.GEN_AI_USAGE_OUTPUT_TOKENS] = self._output
        if self._cache_read is not None:
            values[names.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = self._cache_read
        if cost is not None:
            values[names.GEN_AI_COST_ATTRIBUTE] = cost
        if self._input_messages is not None:
            values[names.GEN_AI_INPUT_MESSAGES] = self._input_messages
        if self._output_messages is not None:
            values[names.GEN_AI_OUTPUT_MESSAGES] = self._output_messages
        if self.streamed:
            values[names.GEN_AI_REQUEST_STREAM] = True
        if self._first_chunk is not None:
            values[names.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = self._first_chunk - self._started
        span.set_attributes(values)


class _Opening:
    """What every call of one operation, provider, model and server starts with: its span's
    name and attributes, the server's bounded labels; made on the first such call."""

    __slots__ = ("attributes", "last", "name", "on_given", "server")

    def __init__(
        self, telemetry: AgentTelemetry, call: LLMCall, address: str | None, port: int | None
    ) -> None:
        server: dict[str, str | int] = {}
        self.server: tuple[str | None, int | None] = (None, None)
        if address is not None:
            server[names.SERVER_ADDRESS] = address
            label = telemetry.servers(address)
            # A port beside an address past the bound would make a series per port again.
            self.server = (label, None if label == names.GEN_AI_OTHER else port)
        if port is not None:
            server[names.SERVER_PORT] = port
        self.on_given = server
        """What a framework's span is given: the server only."""
        attributes: dict[str, str | int | bool] = {
            names.GEN_AI_OPERATION_NAME: call.operation,
            names.GEN_AI_PROVIDER_NAME: call.provider,
            names.GEN_AI_REQUEST_MODEL: call.model,
            **server,
        }
        if call.streamed:
            attributes[names.GEN_AI_REQUEST_STREAM] = True
        self.attributes = attributes
        self.name = f"{call.operation} {call.model[:MAX_LABEL_LENGTH]}"
        self.last: _Series | None = None
        """The series the last call that ended used: the next one most often needs it too."""


class _Series:
    """The metric attributes of every call of one operation, provider, model, answering
    model, outcome, server and agent: made on the first such call."""

    __slots__ = (
        "agent",
        "cost",
        "cost_key",
        "duration",
        "input_tokens",
        "kind",
        "output_tokens",
        "price",
        "response_model",
    )

    def __init__(
        self,
        telemetry: AgentTelemetry,
        call: LLMCall,
        kind: str | None,
        address: str | None,
        port: int | None,
        agent: str | None,
    ) -> None:
        operation, provider = call.operation, telemetry.providers(call.provider)
        model = telemetry.models(call.model)
        answering = call._response_model
        answered = None if answering is None else telemetry.models(answering)
        error_label = None if kind is None else telemetry.errors(kind)
        self.duration = telemetry.attributes(
            _CLIENT_KEYS, (operation, provider, model, answered, error_label, address, port)
        )
        self.input_tokens, self.output_tokens = (
            telemetry.attributes(
                _TOKEN_KEYS,
                (operation, provider, model, answered, token_type, agent, address, port),
            )
            for token_type in (names.GEN_AI_TOKEN_INPUT, names.GEN_AI_TOKEN_OUTPUT)
        )
        self.cost_key = (agent, provider, model)
        self.cost = telemetry.attributes(_COST_KEYS, self.cost_key)
        # What the series stands for (compared by the next call), unbounded as given.
        self.response_model, self.kind, self.agent = answering, kind, agent
        self.price = telemetry.prices.find((answering, call.model))


def _count(tokens: int) -> int:
    return max(int(tokens), 0)


def llm_call(
    model: str,
    *,
    provider: str,
    operation: Operation = "chat",
    stream: bool = False,
    span: trace.Span | None = None,
    agent: str | Default | None = DEFAULT,
    server_address: str | None = None,
    server_port: int | None = None,
    flags: FlagSource | None = None,
) -> LLMCall:
    """Record one model call: a ``chat {model}`` (or ``embeddings {model}``...) CLIENT span
    and the GenAI metrics, around the block it is entered in (see the module's example).

    Args:
        model: the model asked for (``gen_ai.request.model``).
        provider: who serves it: ``openai``, ``anthropic``, ``gcp.gemini``... (the
            conventions' ``gen_ai.provider.name`` values).
        operation: ``chat``, ``embeddings``, ``text_completion`` or ``generate_content``.
        stream: the request asks for a streamed answer (``gen_ai.request.stream``); set
            anyway by :meth:`LLMCall.stream`.
        span: the span a framework already opened for this call: what the call is told is
            recorded onto it, and it is neither ended nor marked failed here (its framework
            does both). None opens the call's own ``chat {model}`` span.
        agent: the agent the call is made for (``gen_ai.agent.name`` of its token and cost
            metrics); by default the running ``@traced_agent``; None for none.
        server_address / server_port: where the model is served (``server.address``,
            ``server.port``), on the span and the metrics; from the client's configuration,
            never from a request (``agents.max_label_values`` addresses, the others
            ``other``). None leaves each out.
        flags: where the ``tracing.agents`` flag is read, when the call is entered; the
            current flags when None. Off means nothing is recorded.
    """
    return LLMCall(
        model,
        provider=provider,
        operation=operation,
        stream=stream,
        span=span,
        agent=agent,
        server_address=server_address,
        server_port=server_port,
        flags=flags,
    )
