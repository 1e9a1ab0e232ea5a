"""The GenAI names: agent, step, LLM and embedding spans, their attributes and metrics.

Part of :mod:`toolkit.telemetry.names`, which imports every name here
(``names.GEN_AI_REQUEST_MODEL``): code uses them from there, as every other name.

Which version of the conventions. Every ``gen_ai.*`` name is at "Development" status. The
conventions ask instrumentations that emitted v1.36.0 or earlier to keep emitting those names
by default and to switch to the latest only under
``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``. The toolkit emits GenAI
telemetry for the first time now, so it has no older version to keep: it always emits the
latest names (``gen_ai.provider.name``, never the deprecated ``gen_ai.system``;
``gen_ai.usage.input_tokens``, never ``prompt_tokens``; ``gen_ai.input.messages`` as
structured JSON, never ``gen_ai.prompt``), with or without the variable, as an instrumentation
already opted in would.

Drafts not in a released version (``gen_ai.invoke_agent.duration``,
``gen_ai.execute_tool.duration`` in the conventions' new repository) are not used: a draft's
name may still change, and a dashboard built on it would go blank when it does. The agent and
step durations are ``toolkit.*`` names until the conventions release theirs.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv.attributes import error_attributes, server_attributes

from toolkit.telemetry.metric import HISTOGRAM, OBSERVABLE_COUNTER, Metric

# --- Attributes: OpenTelemetry GenAI semantic conventions ---------------------------------
GEN_AI_OPERATION_NAME: Final = _gen_ai.GEN_AI_OPERATION_NAME
"""One of :data:`GEN_AI_OPERATIONS`: what the span or the point measures."""
GEN_AI_PROVIDER_NAME: Final = _gen_ai.GEN_AI_PROVIDER_NAME
"""The model's provider as the recorder was told: ``openai``, ``anthropic``, ``gcp.gemini``...
(the conventions' well-known values); on metrics bounded as the models are."""
GEN_AI_REQUEST_MODEL: Final = _gen_ai.GEN_AI_REQUEST_MODEL
"""The model asked for; on metrics, the first ``agents.max_label_values`` models seen, then
``other``."""
GEN_AI_RESPONSE_MODEL: Final = _gen_ai.GEN_AI_RESPONSE_MODEL
"""The model that answered (``gpt-4o-2024-08-06`` for ``gpt-4o``); bounded as the request's."""
GEN_AI_RESPONSE_ID: Final = _gen_ai.GEN_AI_RESPONSE_ID
"""The provider's id of the completion: spans only."""
GEN_AI_RESPONSE_FINISH_REASONS: Final = _gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
"""Why the model stopped, one per choice (``stop``, ``length``, ``tool_calls``): spans only."""
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = _gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
"""Seconds from the request to the first chunk of a stream: spans only."""
GEN_AI_REQUEST_STREAM: Final = _gen_ai.GEN_AI_REQUEST_STREAM
"""Whether the answer was streamed: spans only."""
GEN_AI_USAGE_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_INPUT_TOKENS
"""Input tokens, cache-read ones included (as the conventions and OpenAI count them)."""
GEN_AI_USAGE_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
"""The part of the input tokens the provider served from its prompt cache, where it says."""
GEN_AI_TOKEN_TYPE: Final = _gen_ai.GEN_AI_TOKEN_TYPE
"""``input`` or ``output`` (:data:`GEN_AI_TOKEN_TYPES`)."""
GEN_AI_AGENT_NAME: Final = _gen_ai.GEN_AI_AGENT_NAME
"""The ``@traced_agent`` name; on metrics bounded as the models are."""
GEN_AI_CONVERSATION_ID: Final = _gen_ai.GEN_AI_CONVERSATION_ID
"""The conversation (session, thread) an agent run belongs to: spans only, never a label."""
GEN_AI_TOOL_NAME: Final = _gen_ai.GEN_AI_TOOL_NAME
"""A ``toolkit.step(name, tool=True)``'s name."""
GEN_AI_INPUT_MESSAGES: Final = _gen_ai.GEN_AI_INPUT_MESSAGES
"""The prompt as the conventions' JSON messages (``[{"role": ..., "parts": [...]}]``), only
when content capture is on, each text truncated: spans only."""
GEN_AI_OUTPUT_MESSAGES: Final = _gen_ai.GEN_AI_OUTPUT_MESSAGES
"""The completion, as :data:`GEN_AI_INPUT_MESSAGES`."""
_ERROR_TYPE: Final = error_attributes.ERROR_TYPE  # names.ERROR_TYPE, declared with HTTP's
_CACHE_NAME: Final = "toolkit.cache.name"  # names.CACHE_NAME, declared with the caches'

GEN_AI_CHAT: Final = "chat"
GEN_AI_EMBEDDINGS: Final = "embeddings"
GEN_AI_TEXT_COMPLETION: Final = "text_completion"
GEN_AI_GENERATE_CONTENT: Final = "generate_content"
GEN_AI_INVOKE_AGENT: Final = "invoke_agent"
GEN_AI_EXECUTE_TOOL: Final = "execute_tool"
GEN_AI_OPERATIONS: Final = (
    GEN_AI_CHAT,
    GEN_AI_EMBEDDINGS,
    GEN_AI_TEXT_COMPLETION,
    GEN_AI_GENERATE_CONTENT,
    GEN_AI_INVOKE_AGENT,
    GEN_AI_EXECUTE_TOOL,
)
"""The ``gen_ai.operation.name`` values the toolkit emits (the conventions' well-known ones)."""
GEN_AI_TOKEN_INPUT: Final = "input"
GEN_AI_TOKEN_OUTPUT: Final = "output"
GEN_AI_TOKEN_TYPES: Final = (GEN_AI_TOKEN_INPUT, GEN_AI_TOKEN_OUTPUT)
GEN_AI_OTHER: Final = "other"
"""The label of every model, provider, agent or step name past ``agents.max_label_values``."""

# --- Attributes: toolkit ------------------------------------------------------------------
STEP_NAME: Final = "toolkit.step.name"
"""A ``toolkit.step`` that is not a tool: its name (``memory.m1``); on metrics bounded as the
models are. A tool's is ``gen_ai.tool.name``."""
GEN_AI_COST_ATTRIBUTE: Final = "toolkit.gen_ai.cost"
"""On an LLM span: what the call cost in USD by the ``agents.prices`` table (absent for a
model it does not price)."""

# --- Spans ----------------------------------------------------------------------------------
INVOKE_AGENT_SPAN: Final = "invoke_agent {gen_ai.agent.name}"
"""INTERNAL span of one ``@traced_agent`` run, from the call to its return (for a generator,
to its exhaustion, error or close)."""
EXECUTE_TOOL_SPAN: Final = "execute_tool {gen_ai.tool.name}"
"""INTERNAL span of a ``toolkit.step(name, tool=True)``."""
STEP_SPAN: Final = "{toolkit.step.name}"
"""INTERNAL span of any other ``toolkit.step``, named by the step (``memory.m1``)."""
GEN_AI_CLIENT_SPAN: Final = "{gen_ai.operation.name} {gen_ai.request.model}"
"""CLIENT span of one model call, ``chat gpt-4o`` or ``embeddings text-embedding-3-small``,
ending when the answer (or the stream handed to the caller) ends."""

# --- Metrics --------------------------------------------------------------------------------
GEN_AI_DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
"""Seconds: the conventions' advised boundaries for GenAI durations."""
GEN_AI_TOKEN_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
"""Tokens: the conventions' advised boundaries for ``gen_ai.client.token.usage``."""
AGENT_DURATION_BUCKETS: Final = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    320.0,
    640.0,
)
"""Seconds: an agent run or a step, from a cached lookup to a ten-minute tool loop."""

_SERVER: Final = (server_attributes.SERVER_ADDRESS, server_attributes.SERVER_PORT)
"""Where the model is served, as the conventions advise on the client metrics: from the
client's configuration (``llm_call(server_address=...)``), never from a request, and bounded
(``agents.max_label_values`` addresses)."""
_CLIENT_ATTRIBUTES: Final = (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    _ERROR_TYPE,
    *_SERVER,
)

GEN_AI_CLIENT_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
"""Each model call, from the request to the end of the answer (the last chunk of a stream,
never its headers)."""
GEN_AI_CLIENT_OPERATION_DURATION_METRIC: Final = Metric(
    GEN_AI_CLIENT_OPERATION_DURATION,
    HISTOGRAM,
    unit="s",
    description="GenAI operation duration.",
    attributes=_CLIENT_ATTRIBUTES,
    buckets=GEN_AI_DURATION_BUCKETS,
)

GEN_AI_CLIENT_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
"""Tokens of each model call, by type (input, output), recorded when the call ends; with the
agent it ran in, for tokens per agent and model."""
GEN_AI_CLIENT_TOKEN_USAGE_METRIC: Final = Metric(
    GEN_AI_CLIENT_TOKEN_USAGE,
    HISTOGRAM,
    unit="{token}",
    description="Number of input and output tokens used.",
    attributes=(*_CLIENT_ATTRIBUTES[:4], GEN_AI_TOKEN_TYPE, GEN_AI_AGENT_NAME, *_SERVER),
    buckets=GEN_AI_TOKEN_BUCKETS,
)

GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
"""Streams only: from the request to the first chunk, recorded when the stream ends."""
GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK_METRIC: Final = Metric(
    GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
    HISTOGRAM,
    unit="s",
    description="Time to receive the first chunk of a streamed GenAI response.",
    attributes=_CLIENT_ATTRIBUTES,
    buckets=GEN_AI_DURATION_BUCKETS,
)

GEN_AI_COST: Final = "toolkit.gen_ai.cost"
"""USD spent on model calls by the ``agents.prices`` table, by agent, provider and model
(calls of unpriced models add nothing). Prometheus: ``toolkit_gen_ai_cost_total``."""
GEN_AI_COST_METRIC: Final = Metric(
    GEN_AI_COST,
    OBSERVABLE_COUNTER,
    unit="{USD}",
    description="Cost of model calls in US dollars, by agent, provider and model.",
    attributes=(GEN_AI_AGENT_NAME, GEN_AI_PROVIDER_NAME, GEN_AI_REQUEST_MODEL),
)

AGENT_DURATION: Final = "toolkit.agent.duration"
"""Each ``@traced_agent`` run, as its span (no released convention yet: see above)."""
AGENT_DURATION_METRIC: Final = Metric(
    AGENT_DURATION,
    HISTOGRAM,
    unit="s",
    description="Duration of agent runs, by agent.",
    attributes=(GEN_AI_AGENT_NAME, _ERROR_TYPE),
    buckets=AGENT_DURATION_BUCKETS,
)

STEP_DURATION: Final = "toolkit.agent.step.duration"
"""Each ``toolkit.step``, by step name (a tool's name for a tool), as its span."""
STEP_DURATION_METRIC: Final = Metric(
    STEP_DURATION,
    HISTOGRAM,
    unit="s",
    description="Duration of the steps of agent pipelines, by step.",
    attributes=(STEP_NAME, GEN_AI_OPERATION_NAME, _ERROR_TYPE),
    buckets=AGENT_DURATION_BUCKETS,
)

CACHE_SAVED_CALLS: Final = "toolkit.cache.saved.calls"
"""Model calls a cache hit spared: those its entry's computation made, by cache and model."""
CACHE_SAVED_CALLS_METRIC: Final = Metric(
    CACHE_SAVED_CALLS,
    OBSERVABLE_COUNTER,
    unit="{call}",
    description="Model calls cache hits spared, by cache and model.",
    attributes=(_CACHE_NAME, GEN_AI_REQUEST_MODEL),
)

CACHE_SAVED_TOKENS: Final = "toolkit.cache.saved.tokens"
"""Tokens a cache hit spared, by cache, model and type (input, output)."""
CACHE_SAVED_TOKENS_METRIC: Final = Metric(
    CACHE_SAVED_TOKENS,
    OBSERVABLE_COUNTER,
    unit="{token}",
    description="Tokens cache hits spared, by cache, model and token type.",
    attributes=(_CACHE_NAME, GEN_AI_REQUEST_MODEL, GEN_AI_TOKEN_TYPE),
)
