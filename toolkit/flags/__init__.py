"""Feature flags: a kill switch per capability, application flags, sticky rollouts, live.

    toolkit.flags.is_enabled("agent.prompt-v2")           # for the current request's caller
    toolkit.flags.variant("agent.model")                  # a named variant
    with toolkit.flags.override({"ratelimit": "off"}):    # tests
        ...

Evaluation is in process, from a snapshot; changes made with ``agent-toolkit flags`` or the
admin routes reach every instance through the backend within a second.
"""

from __future__ import annotations

from toolkit.errors import UnknownFlag
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
    PIPELINES_DEADLINE,
    PIPELINES_DEFER,
    PIPELINES_GATHER,
    PIPELINES_OFFLOAD,
    POOL,
    RATELIMIT,
    RESILIENCE,
    TRACING,
    TRACING_AGENTS,
    TRACING_LOOP,
    declare,
)
from toolkit.flags._source import (
    FlagSource,
    current_flags,
    evaluate,
    is_enabled,
    set_current_flags,
    variant,
)
from toolkit.flags._store import FlagStore, FlagView

__all__ = [
    "BOOLEAN",
    "CACHE_EMBEDDINGS",
    "CACHE_FUNCTION",
    "CACHE_RESPONSE",
    "CAPABILITIES",
    "OFF",
    "ON",
    "PIPELINES_DEADLINE",
    "PIPELINES_DEFER",
    "PIPELINES_GATHER",
    "PIPELINES_OFFLOAD",
    "POOL",
    "RATELIMIT",
    "RESILIENCE",
    "SHADOW",
    "TRACING",
    "TRACING_AGENTS",
    "TRACING_LOOP",
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
    "current_flags",
    "current_store",
    "declare",
    "evaluate",
    "feature",
    "is_enabled",
    "override",
    "set_current_flags",
    "set_current_store",
    "variant",
]
