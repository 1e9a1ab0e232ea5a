"""agent-server-toolkit: rate limiting, caching, resilience and telemetry for agent servers.

import toolkit
toolkit.install(app)    # configured from TOOLKIT_* environment variables / toolkit.toml
"""

from toolkit import flags as flags  # the toolkit.flags module: is_enabled, variant, ...
from toolkit._default import DEFAULT, Default
from toolkit._version import __version__
from toolkit.agents import llm_call, step, traced_agent
from toolkit.cache import ResponseCacheMiddleware, cache_embeddings, cached
from toolkit.errors import (
    BackendError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceeded,
    DeferRefused,
    PoolClosedError,
    PoolError,
    PoolExhaustedError,
    PoolTimeoutError,
    ToolkitError,
)
from toolkit.flags import feature
from toolkit.install import Toolkit, install
from toolkit.pipelines import (
    DeadlineMiddleware,
    background,
    branch,
    deadline,
    defer,
    gather,
    offload,
    run_sync,
    time_left,
)
from toolkit.pool import AgentPool, pooled
from toolkit.ratelimit import RateLimitMiddleware
from toolkit.resilience import CircuitBreaker, RetryBudget, RetryPolicy, resilient
from toolkit.settings import ToolkitSettings
from toolkit.telemetry.loop import LoopMonitor
from toolkit.telemetry.middleware import TelemetryMiddleware

__all__ = [
    "DEFAULT",
    "AgentPool",
    "BackendError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigurationError",
    "DeadlineExceeded",
    "DeadlineMiddleware",
    "Default",
    "DeferRefused",
    "LoopMonitor",
    "PoolClosedError",
    "PoolError",
    "PoolExhaustedError",
    "PoolTimeoutError",
    "RateLimitMiddleware",
    "ResponseCacheMiddleware",
    "RetryBudget",
    "RetryPolicy",
    "TelemetryMiddleware",
    "Toolkit",
    "ToolkitError",
    "ToolkitSettings",
    "__version__",
    "background",
    "branch",
    "cache_embeddings",
    "cached",
    "deadline",
    "defer",
    "feature",
    "gather",
    "install",
    "llm_call",
    "offload",
    "pooled",
    "resilient",
    "run_sync",
    "step",
    "time_left",
    "traced_agent",
]
