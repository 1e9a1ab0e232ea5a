"""What each request to the provider took and spent, in the toolkit's GenAI metrics.

pydantic-ai opens the ``chat`` span; the metrics are the toolkit's agent layer's
(``toolkit.agents.AgentTelemetry``), so a pydantic-ai agent's calls count in the same
series, with the same bounded labels, as every other model call of the app: per attempt
sent, ``gen_ai.client.operation.duration`` (with ``error.type`` when it failed); per answer,
``gen_ai.client.token.usage`` by token type and agent (the agent's name as pydantic-ai puts
it in the baggage), ``toolkit.gen_ai.cost`` by the ``agents.prices`` table, the cost on the
span, and the call noted for the cache's savings (``toolkit.cache.saved``). pydantic-ai's own
instruments are given no meter (see ``_instrument``), so nothing is counted twice.

The ``tracing.agents`` flag turns it off, as it does every model call's. Recording never
raises into the request.
"""

from __future__ import annotations

import logging
from typing import Final

from opentelemetry import baggage, trace
from pydantic_ai.messages import ModelResponse
from pydantic_ai.models import Model

from toolkit._savings import note_call
from toolkit.agents import current_agent_telemetry
from toolkit.agents.call import _CLIENT_KEYS, _COST_KEYS, _TOKEN_KEYS
from toolkit.flags import TRACING_AGENTS, current_flags
from toolkit.resilience import error_type
from toolkit.telemetry import names

logger = logging.getLogger("toolkit.plugins.pydantic_ai")

AGENT_BAGGAGE: Final = "gen_ai.agent.name"
"""Where pydantic-ai's instrumentation puts the running agent's name."""


def record_request(
    model: Model,
    seconds: float,
    response: ModelResponse | None,
    error: BaseException | None = None,
) -> None:
    """One request sent to ``model``: its duration, and what its ``response`` spent."""
    try:
        _record(model, seconds, response, error)
    except Exception:
        logger.exception("recording a pydantic-ai model request failed; the request goes on")


def _record(
    model: Model, seconds: float, response: ModelResponse | None, error: BaseException | None
) -> None:
    if not current_flags().is_enabled(TRACING_AGENTS):
        return
    telemetry = current_agent_telemetry()
    provider = telemetry.providers(model.system)
    asked = telemetry.models(model.model_name)
    answered = None
    if response is not None and response.model_name:
        answered = telemetry.models(response.model_name)
    failed = None if error is None else telemetry.errors(error_type(error))
    telemetry.operation_duration.record(
        seconds, telemetry.attributes(_CLIENT_KEYS, ("chat", provider, asked, answered, failed))
    )
    if response is None:
        return
    usage = response.usage
    agent_name = baggage.get_baggage(AGENT_BAGGAGE)
    agent = telemetry.agents(str(agent_name)) if agent_name else None
    for tokens, token_type in (
        (usage.input_tokens, names.GEN_AI_TOKEN_INPUT),
        (usage.output_tokens, names.GEN_AI_TOKEN_OUTPUT),
    ):
        key = ("chat", provider, asked, answered, token_type, agent)
        telemetry.token_usage.record(tokens, telemetry.attributes(_TOKEN_KEYS, key))
    note_call(model.model_name, usage.input_tokens, usage.output_tokens)
    if not telemetry.prices:
        return
    cost = telemetry.prices.cost(
        (response.model_name, model.model_name),
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
    )
    if cost is None:
        return
    telemetry.cost.add(
        (agent, provider, asked), telemetry.attributes(_COST_KEYS, (agent, provider, asked)), cost
    )
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(names.GEN_AI_COST_ATTRIBUTE, cost)
