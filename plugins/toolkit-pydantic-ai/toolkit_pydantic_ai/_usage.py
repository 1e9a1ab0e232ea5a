"""What each request to the provider took and spent, in the toolkit's GenAI metrics.

pydantic-ai opens the ``chat`` span; each request :class:`~toolkit_pydantic_ai.ToolkitModel`
sends is recorded onto that span through ``toolkit.llm_call(..., span=...)``, the recorder of
every other model call of the app, so a pydantic-ai agent's calls count in the same series,
with the same bounded labels, and no second span is opened: per attempt sent,
``gen_ai.client.operation.duration`` (with ``error.type`` when it failed); per answer,
``gen_ai.client.token.usage`` by token type and agent (the agent's name as pydantic-ai puts
it in the baggage), ``toolkit.gen_ai.cost`` by the ``agents.prices`` table, the cost on the
span, the call noted for the cache's savings (``toolkit.cache.saved``); per stream,
``gen_ai.client.operation.time_to_first_chunk``, from pydantic-ai's own stamp of the first
event its consumer received. pydantic-ai's own instruments are given no meter (see
``_instrument``), so nothing is counted twice.

Where pydantic-ai opened no span (its instrumentation is off for that agent), the request
gets the toolkit's own ``chat {model}`` span. The ``tracing.agents`` flag turns it all off,
as it does every model call's. Recording never raises into the request.
"""

from __future__ import annotations

from typing import Final

from opentelemetry import baggage, trace
from pydantic_ai.messages import ModelResponse
from pydantic_ai.models import Model

from toolkit import DEFAULT
from toolkit.agents import LLMCall, llm_call

AGENT_BAGGAGE: Final = "gen_ai.agent.name"
"""Where pydantic-ai's instrumentation puts the running agent's name."""
SCOPE: Final = "pydantic-ai"
"""The instrumentation scope of pydantic-ai's spans."""


def _chat_span() -> trace.Span | None:
    """pydantic-ai's span around this request, current while the model is called: borrowed
    when it is one of pydantic-ai's (or not recording: nothing to add to it, and no second
    span); None when another span is current (the request then opens its own)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return span
    scope = getattr(span, "instrumentation_scope", None)
    return span if getattr(scope, "name", None) == SCOPE else None


def model_call(model: Model, *, stream: bool = False) -> LLMCall:
    """The recorder of one request sent to ``model``; enter it around the request."""
    agent = baggage.get_baggage(AGENT_BAGGAGE)
    return llm_call(
        model.model_name,
        provider=model.system,
        stream=stream,
        span=_chat_span(),
        agent=str(agent) if agent else DEFAULT,
    )


def answered(call: LLMCall, response: ModelResponse) -> None:
    """What ``response`` says of itself: the model that answered and what it spent."""
    if response.model_name:
        call.response(model=response.model_name)
    usage = response.usage
    call.usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_input_tokens=usage.cache_read_tokens or None,
    )
