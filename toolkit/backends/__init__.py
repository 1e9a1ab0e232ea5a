"""Storage backends: the only code that talks to storage.

``memory://`` keeps state in this process (one instance); ``redis://``, ``rediss://`` and
``redis+cluster://`` share it between instances. The contract is one small protocol per
capability (:mod:`toolkit.backends.protocols`); :class:`Backend` offers all of them, and the
breaker's stored state is :mod:`toolkit.backends.breaker_state`.
"""

from __future__ import annotations

from toolkit.backends._factory import backend_from_settings, backend_from_url
from toolkit.backends._gcra import GcraLimit, GcraResult
from toolkit.backends.base import Backend, BackendCore
from toolkit.backends.memory import MemoryBackend
from toolkit.backends.protocols import (
    BackendInfo,
    BreakerStorage,
    CacheStorage,
    FlagStorage,
    InstantRateLimits,
    LeaseStorage,
    LimitsSupport,
    PubSub,
    RateLimitStorage,
    require,
)

__all__ = [
    "Backend",
    "BackendCore",
    "BackendInfo",
    "BreakerStorage",
    "CacheStorage",
    "FlagStorage",
    "GcraLimit",
    "GcraResult",
    "InstantRateLimits",
    "LeaseStorage",
    "LimitsSupport",
    "MemoryBackend",
    "PubSub",
    "RateLimitStorage",
    "backend_from_settings",
    "backend_from_url",
    "require",
]
