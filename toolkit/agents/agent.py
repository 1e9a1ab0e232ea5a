"""``@traced_agent("name")``: an ``invoke_agent {name}`` span around each run of an agent.

The span (INTERNAL: the agent runs in this process) is current while the agent's code runs,
so every model call, step and toolkit decision inside it (cache hit, breaker, retry,
fallback, pool wait, flag variant) lands on it or under it; model calls inside count their
tokens and cost under the agent's name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from toolkit.agents._conversation import ConversationSpec, Reader, conversation_reader
from toolkit.agents._run import SpanRun, start_agent
from toolkit.agents._telemetry import current_agent_telemetry
from toolkit.agents._wrap import wrap
from toolkit.errors import ConfigurationError
from toolkit.flags import TRACING_AGENTS, FlagSource, current_flags
from toolkit.telemetry import names

logger = logging.getLogger("toolkit.agents")

F = TypeVar("F", bound=Callable[..., Any])

HOOK_CONVERSATION = "traced_agent.conversation"
"""``toolkit.hook`` of the exception event when reading the conversation id failed."""


def traced_agent(
    name: str,
    *,
    conversation: ConversationSpec | None = None,
    flags: FlagSource | None = None,
) -> Callable[[F], F]:
    """Trace each run of an agent: a function, a coroutine function, a generator or an async
    generator (a streamed answer), whose signature and kind stay as they are.

        @toolkit.traced_agent("support", conversation="session_id")
        async def answer(question: str, session_id: str) -> str: ...

    Args:
        name: ``gen_ai.agent.name``, also the label of its ``toolkit.agent.duration``.
        conversation: where ``gen_ai.conversation.id`` comes from: the name of one of the
            function's parameters, or a function called with the call's arguments; none when
            None. A failure to read it is an exception event on the span, never the call's.
        flags: where the ``tracing.agents`` flag is read; the current flags when None. Off
            means no span and no metric: the function runs bare.

    Raises:
        ConfigurationError: at decoration, for an empty name or a ``conversation`` naming no
            parameter.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"traced_agent({name!r}): a name, e.g. traced_agent('support')")

    def decorate(function: F) -> F:
        read: Reader | None = (
            None if conversation is None else conversation_reader(function, conversation)
        )

        def open_run(args: tuple[Any, ...], kwargs: dict[str, Any]) -> SpanRun | None:
            try:
                if not (flags or current_flags()).is_enabled(TRACING_AGENTS):
                    return None
                telemetry = current_agent_telemetry()
                failed: Exception | None = None
                conversation_id = None
                if read is not None:
                    try:
                        conversation_id = read(args, kwargs)
                    except Exception as exc:
                        failed = exc
                run = start_agent(telemetry, name, conversation_id)
                if failed is not None:
                    run.span.record_exception(failed, {names.HOOK: HOOK_CONVERSATION})
                return run
            except Exception:
                logger.exception("toolkit.agents: starting the span of %s failed", name)
                return None

        return wrap(function, open_run)

    return decorate
