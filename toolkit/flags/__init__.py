"""Feature flags: a kill switch per capability, application flags, sticky rollouts, live.

    toolkit.flags.is_enabled("agent.prompt-v2")           # for the current request's caller
    toolkit.flags.variant("agent.model")                  # a named variant
    with toolkit.flags.override({"ratelimit": "off"}):    # tests
        ...

Evaluation is in process, from a snapshot; changes made with ``agent-toolkit flags`` or the
admin routes reach every instance through the backend within a second.
"""

from __future__ import annotations

from typing import Protocol

from toolkit.flags._current import current_store, set_current_store
from toolkit.flags._feature import feature
from toolkit.flags._middleware import FlagContextMiddleware
from toolkit.flags._model import (
    BOOLEAN,
    OFF,
    ON,
    SHADOW,
    Evaluation,
    FlagDefinition,
    FlagState,
    Rollout,
    bucket,
)
from toolkit.flags._override import override
from toolkit.flags._registry import (
    CACHE_EMBEDDINGS,
    CACHE_FUNCTION,
    CACHE_RESPONSE,
    CAPABILITIES,
    POOL,
    RATELIMIT,
    RESILIENCE,
    TRACING,
    declare,
)
from toolkit.flags._store import FlagStore, FlagView, UnknownFlag

__all__ = [
    "BOOLEAN",
    "CACHE_EMBEDDINGS",
    "CACHE_FUNCTION",
    "CACHE_RESPONSE",
    "CAPABILITIES",
    "OFF",
    "ON",
    "POOL",
    "RATELIMIT",
    "RESILIENCE",
    "SHADOW",
    "TRACING",
    "Evaluation",
    "FlagContextMiddleware",
    "FlagDefinition",
    "FlagSource",
    "FlagState",
    "FlagStore",
    "FlagView",
    "Rollout",
    "UnknownFlag",
    "bucket",
    "current_store",
    "declare",
    "evaluate",
    "feature",
    "is_enabled",
    "override",
    "set_current_store",
    "variant",
]


class FlagSource(Protocol):
    """What the capabilities ask, per request, from memory: :class:`FlagStore`, or the
    OpenFeature adapter that reads another provider."""

    def evaluate(self, key: str, *, caller: str | None = None) -> Evaluation: ...

    def variant(self, key: str, *, caller: str | None = None) -> str: ...

    def is_enabled(self, key: str, *, caller: str | None = None) -> bool: ...


# ``subject=`` is the old name of ``caller=``, deprecated: the store warns.


def evaluate(key: str, *, caller: str | None = None, subject: str | None = None) -> Evaluation:
    """Flag ``key`` for ``caller`` (an identity; the current request's caller when None):
    variant, value, reason."""
    return current_store().evaluate(key, caller=caller, subject=subject)


def is_enabled(key: str, *, caller: str | None = None, subject: str | None = None) -> bool:
    """Whether boolean flag ``key`` is on for ``caller`` (the current request's when None)."""
    return current_store().is_enabled(key, caller=caller, subject=subject)


def variant(key: str, *, caller: str | None = None, subject: str | None = None) -> str:
    """The variant of flag ``key`` for ``caller`` (the current request's when None)."""
    return current_store().variant(key, caller=caller, subject=subject)
