"""Agent, step and model-call telemetry, by the OpenTelemetry GenAI conventions.

``@traced_agent`` (an ``invoke_agent`` span per run), ``step`` (a span per pipeline step or
tool), ``llm_call`` (the recorder around one model call, streams included, that the framework
plugins use too) and the ``AgentTelemetry`` they share. Where each piece lives: ``agent``,
``step``, ``call`` (and ``_stream``: the stream it hands over); ``_wrap`` (a function of any
kind run inside a span), ``_run`` (one open span), ``_conversation``, ``_content`` (prompt
capture), ``_cost`` (the price table), ``_telemetry`` (instruments and bounds). See
docs/agents.md.
"""

from toolkit.agents._content import CAPTURE_CONTENT_ENV, Messages
from toolkit.agents._conversation import ConversationSpec
from toolkit.agents._stream import AsyncStream, SyncStream
from toolkit.agents._telemetry import (
    AgentTelemetry,
    current_agent_telemetry,
    set_current_agent_telemetry,
)
from toolkit.agents.agent import traced_agent
from toolkit.agents.call import LLMCall, Operation, llm_call
from toolkit.agents.step import Step, step

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "AgentTelemetry",
    "AsyncStream",
    "ConversationSpec",
    "LLMCall",
    "Messages",
    "Operation",
    "Step",
    "SyncStream",
    "current_agent_telemetry",
    "llm_call",
    "set_current_agent_telemetry",
    "step",
    "traced_agent",
]
