"""Every flag the process knows: the toolkit's kill switches and what the application declared.

One registry per process: declarations happen at import time (``@toolkit.feature``), often
before ``install()`` creates a store, and every store serves them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from toolkit.errors import ConfigurationError
from toolkit.flags._model import BOOLEAN, OFF, ON, SHADOW, FlagDefinition

RATELIMIT: Final = "ratelimit"
"""Rate limiting: ``off`` lets every request through unchecked, ``shadow`` decides and
records without ever refusing."""
TRACING: Final = "tracing"
"""HTTP telemetry: ``off`` means no server span and no HTTP metrics."""
TRACING_LOOP: Final = "tracing.loop"
"""The event-loop monitor: ``off`` records no loop lag, task count or blocked loop (nor does
``tracing`` off)."""
CACHE_RESPONSE: Final = "cache.response"
CACHE_FUNCTION: Final = "cache.function"
CACHE_EMBEDDINGS: Final = "cache.embeddings"
RESILIENCE: Final = "resilience"
POOL: Final = "pool"
TRACING_AGENTS: Final = "tracing.agents"
"""Agent, step and model-call telemetry (``toolkit.agents``): ``off`` means no span and no
metric of theirs; the decorated functions and recorded calls run as ever."""
PIPELINES_GATHER: Final = "pipelines.gather"
"""Fan-out (``toolkit.gather``): ``off`` runs the branches side by side as a plain
``asyncio.gather`` would (every one to its end: no deadline, fallback, early return, span or
metric), with results in the same shape."""
PIPELINES_DEADLINE: Final = "pipelines.deadline"
"""Request deadlines: ``off`` sets no budget on requests and answers no 504."""
PIPELINES_DEFER: Final = "pipelines.defer"
"""Deferred work (``toolkit.defer``, ``@toolkit.background``): ``off`` awaits the work inline,
before the hand-off returns, as the code did without the toolkit."""
PIPELINES_OFFLOAD: Final = "pipelines.offload"
"""``@toolkit.offload`` / ``toolkit.run_sync``: ``off`` calls the function inline, on the
event loop, with no span or metric (the way it ran without the toolkit)."""

CAPABILITIES: Final[tuple[FlagDefinition, ...]] = (
    FlagDefinition(
        RATELIMIT,
        # Values are the variant names: three states have no common type but the string, so
        # one OpenFeature getter (the string one) reads them all.
        {ON: ON, OFF: OFF, SHADOW: SHADOW},
        ON,
        "Rate limiting (shadow: decide and record, never refuse).",
        capability=True,
    ),
    FlagDefinition(TRACING, BOOLEAN, ON, "Server spans and HTTP metrics.", capability=True),
    FlagDefinition(
        TRACING_LOOP, BOOLEAN, ON, "Event-loop lag and blocked-loop reports.", capability=True
    ),
    FlagDefinition(CACHE_RESPONSE, BOOLEAN, ON, "Response cache.", capability=True),
    FlagDefinition(CACHE_FUNCTION, BOOLEAN, ON, "Function cache (@cached).", capability=True),
    FlagDefinition(CACHE_EMBEDDINGS, BOOLEAN, ON, "Embedding cache.", capability=True),
    FlagDefinition(RESILIENCE, BOOLEAN, ON, "Breakers, retries, timeouts.", capability=True),
    FlagDefinition(POOL, BOOLEAN, ON, "Agent pools.", capability=True),
    FlagDefinition(
        TRACING_AGENTS,
        BOOLEAN,
        ON,
        "Agent, step and model-call spans and metrics.",
        capability=True,
    ),
    FlagDefinition(
        PIPELINES_GATHER, BOOLEAN, ON, "Fan-out deadlines and fallbacks.", capability=True
    ),
    FlagDefinition(
        PIPELINES_DEADLINE, BOOLEAN, ON, "Request deadlines and their 504.", capability=True
    ),
    FlagDefinition(
        PIPELINES_DEFER, BOOLEAN, ON, "Deferred work (off: awaited inline).", capability=True
    ),
    FlagDefinition(
        PIPELINES_OFFLOAD,
        BOOLEAN,
        ON,
        "Offloaded calls on the thread pool (off: called inline on the loop).",
        capability=True,
    ),
)


class Registry:
    """Flag definitions by key; ``version`` changes whenever one is added."""

    def __init__(self) -> None:
        self.definitions: dict[str, FlagDefinition] = {d.key: d for d in CAPABILITIES}
        self.version = 0

    def declare(self, definition: FlagDefinition) -> FlagDefinition:
        """Add a flag. Declaring the same flag again is a no-op; a different one with the
        same key is a mistake, refused."""
        known = self.definitions.get(definition.key)
        if known is not None:
            if known != definition:
                raise ConfigurationError(
                    f"flag {definition.key!r} is already declared differently: {known}"
                )
            return known
        self.definitions[definition.key] = definition
        self.version += 1
        return definition


REGISTRY: Final = Registry()


def declare(
    key: str,
    *,
    variants: Mapping[str, Any] | None = None,
    default: str | None = None,
    description: str = "",
) -> FlagDefinition:
    """Declare an application flag, on every store of the process.

    Args:
        key: ``agent.prompt-v2``: lower case, digits, ``.``, ``-``, ``_``.
        variants: variant name -> value; a boolean flag (``on``/``off``) when None.
        default: the variant served until an operator says otherwise; ``off`` for boolean
            flags, required otherwise.
        description: one line, shown by the admin page and the CLI.
    """
    if variants is None:
        variants, default = BOOLEAN, default or OFF
    elif default is None:
        raise ConfigurationError(f"flag {key!r}: give default= one of {sorted(variants)}")
    return REGISTRY.declare(FlagDefinition(key, dict(variants), default, description))
