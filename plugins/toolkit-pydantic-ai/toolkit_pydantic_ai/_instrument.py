"""Agents traced with the app's providers, through pydantic-ai's own instrumentation.

``apply`` (called by ``install()``) makes pydantic-ai's :class:`InstrumentationSettings` on
the toolkit's tracer and meter providers, never the global ones, and makes it the default of
every agent (``Agent.instrument_all``) until the app shuts down. pydantic-ai then opens the
``invoke_agent`` / ``chat`` / ``execute_tool`` spans itself, inside the request's server span;
the toolkit opens none of its own around them, so there is one span per operation.

What it leaves alone, and says so in one log line: an app that already called
``Agent.instrument_all`` (its choice wins). An agent given ``instrument=`` or an
``Instrumentation`` capability keeps its own settings, too.

Prompts and completions are recorded only when the toolkit's agent layer records them (the
``agents.capture_content`` setting, else the OpenTelemetry convention's
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``); pydantic-ai's own default records
them. Tool-call arguments and results are then cut to ``agents.content_max_length``
(``_content``). pydantic-ai's instruments get no meter: the toolkit's GenAI metrics of each request
are recorded by :class:`~toolkit_pydantic_ai.ToolkitModel` (``_usage``), with the labels and
names of every other model call of the app, never twice.
"""

from __future__ import annotations

import logging

from opentelemetry.metrics import NoOpMeterProvider
from pydantic_ai import Agent
from pydantic_ai.models.instrumented import InstrumentationSettings

from toolkit.agents import current_agent_telemetry
from toolkit.plugins import PluginContext
from toolkit_pydantic_ai._content import CuttingTracerProvider

logger = logging.getLogger("toolkit.plugins.pydantic_ai")

_applied: InstrumentationSettings | None = None
"""What the last install() made, until its app shuts down."""


def instrumentation() -> InstrumentationSettings | None:
    """The settings ``install()`` made (the app's providers, content per the environment),
    for an agent that sets its own (``Agent(..., instrument=instrumentation())``); None
    before ``install()`` or after the app shut down."""
    return _applied


def apply(context: PluginContext) -> None:
    agents = current_agent_telemetry()
    tracer_provider = context.tracer_provider
    if agents.capture_content:  # tool arguments and results, cut as the toolkit cuts content
        tracer_provider = CuttingTracerProvider(tracer_provider, agents.content_max_length)
    settings = InstrumentationSettings(
        tracer_provider=tracer_provider,
        meter_provider=NoOpMeterProvider(),
        include_content=agents.capture_content,
        include_binary_content=False,
    )
    global _applied
    previous, _applied = _applied, settings
    chosen = getattr(Agent, "_instrument_default", False)
    if chosen is not False and chosen is not previous:
        logger.info(
            "pydantic-ai agents keep the instrumentation the app chose with "
            "Agent.instrument_all(); toolkit_pydantic_ai.instrumentation() gives the app's "
            "providers to an agent"
        )
    else:
        Agent.instrument_all(settings)

    def restore() -> None:
        global _applied
        if getattr(Agent, "_instrument_default", False) is settings:
            Agent.instrument_all(False)
        if _applied is settings:
            _applied = None

    context.on_shutdown(restore)
