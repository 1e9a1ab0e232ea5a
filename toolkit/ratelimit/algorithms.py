"""Rate-limit algorithms: GCRA (default, one atomic round trip) and the strategies of `limits`.

An algorithm charges a request to a policy's limits for a key and reports what the headers
need. It reaches storage only through the backend it is given, typed against the one
protocol it uses (:class:`~toolkit.backends.RateLimitStorage` for GCRA,
:class:`~toolkit.backends.LimitsSupport` for the `limits` strategies) and checked when the
algorithm is created.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar, Final, NamedTuple, Protocol, cast

from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from toolkit.backends import (
    GcraResult,
    InstantRateLimits,
    LimitsSupport,
    RateLimitStorage,
    require,
)
from toolkit.errors import ConfigurationError
from toolkit.ratelimit.policies import Policy
from toolkit.settings import Algorithm as AlgorithmName


class Decision(NamedTuple):
    """The outcome for one request.

    Attributes:
        allowed: every limit of the policy had room and was charged.
        binding: which of the policy's limits the headers describe (the most constraining).
        remaining: units left in that limit.
        reset_after: seconds until that limit is whole again.
        retry_after: seconds until the request could pass; 0 when allowed.
    """

    allowed: bool
    binding: int
    remaining: int
    reset_after: float
    retry_after: float


class Algorithm(Protocol):
    async def acquire(self, key: str, policy: Policy) -> Decision:
        """Charge ``policy.cost`` to every limit of ``policy`` for ``key`` (a hash), atomically
        where the algorithm can. Raises BackendError when storage fails."""
        ...


class Gcra:
    """GCRA on the backend: one script call for all of a policy's limits, all or nothing,
    on the storage's clock. A burst of the full amount is allowed, then one unit per
    ``period / amount``; ``Retry-After`` is exact.

    On a backend that decides in process (:class:`~toolkit.backends.InstantRateLimits`),
    :attr:`acquire_now` is the same decision made without awaiting; None elsewhere."""

    def __init__(self, backend: RateLimitStorage) -> None:
        require(backend, RateLimitStorage, user="algorithm='gcra'")
        self._backend = backend
        self._keys: dict[tuple[str, Policy], list[str]] = {}
        self.acquire_now: Callable[[str, Policy], Decision] | None = None
        if isinstance(backend, InstantRateLimits):
            gcra_now = backend.gcra_now

            def acquire_now(key: str, policy: Policy) -> Decision:
                keys = self._keys.get((key, policy)) or self._storage_keys(key, policy)
                return _decision(gcra_now(keys, policy.gcra_limits, policy.cost))

            self.acquire_now = acquire_now

    async def acquire(self, key: str, policy: Policy) -> Decision:
        keys = self._keys.get((key, policy)) or self._storage_keys(key, policy)
        return _decision(await self._backend.gcra(keys, policy.gcra_limits, policy.cost))

    def _storage_keys(self, key: str, policy: Policy) -> list[str]:
        """The storage keys of ``key`` under ``policy``, remembered: the same callers come
        back request after request (at most ``MAX_REMEMBERED_KEYS``, then forgotten at once)."""
        # One {hash tag} for all keys of the call, so the script runs on Redis Cluster.
        tag = f"rl:{{{key}}}:"
        keys = [tag + limit_id for limit_id in policy.limit_ids]
        if len(self._keys) >= MAX_REMEMBERED_KEYS:
            self._keys.clear()
        self._keys[key, policy] = keys
        return keys


MAX_REMEMBERED_KEYS: Final = 4096
"""Callers whose storage keys :class:`Gcra` keeps built (digests: under 200 bytes each)."""


def _decision(result: GcraResult) -> Decision:
    """What the headers need: the most constraining limit of the result."""
    remaining = result.remaining
    index = 0 if len(remaining) == 1 else min(range(len(remaining)), key=remaining.__getitem__)
    # A NamedTuple's own __new__ is a Python function; tuple's builds the same Decision.
    return _new(
        Decision,
        (result.allowed, index, remaining[index], result.reset_after[index], result.retry_after),
    )


_new = tuple.__new__


class LimitsStrategy:
    """A strategy of the `limits` library on the backend's storage.

    Limits are charged in order and the first that refuses stops the rest (earlier ones stay
    charged, as in flask-limiter and slowapi). Each limit costs a hit and a window-stats read,
    so this takes 2 round trips per limit where GCRA takes one in all.
    """

    _STRATEGIES: ClassVar[dict[str, type[RateLimiter]]] = {
        "fixed-window": FixedWindowRateLimiter,
        "moving-window": MovingWindowRateLimiter,
        "sliding-window-counter": SlidingWindowCounterRateLimiter,
    }

    def __init__(self, backend: LimitsSupport, name: str) -> None:
        require(backend, LimitsSupport, user=f"algorithm={name!r}")
        self._backend = backend
        self._limiter = self._STRATEGIES[name](backend.limits_storage())

    async def acquire(self, key: str, policy: Policy) -> Decision:
        return await self._backend.call("ratelimit.hit", lambda: self._acquire(key, policy))

    async def _acquire(self, key: str, policy: Policy) -> Decision:
        decisions = []
        for index, item in enumerate(policy.limits):
            allowed = await self._limiter.hit(item, key, cost=policy.cost)
            stats = await self._limiter.get_window_stats(item, key)
            reset_after = max(0.0, stats.reset_time - time.time())
            decision = Decision(
                allowed, index, stats.remaining, reset_after, 0.0 if allowed else reset_after
            )
            if not allowed:
                return decision
            decisions.append(decision)
        return min(decisions, key=lambda d: d.remaining)


def create_algorithm(name: AlgorithmName, backend: RateLimitStorage | LimitsSupport) -> Algorithm:
    """The algorithm called ``name`` on ``backend``; ConfigurationError when the backend
    lacks what the algorithm needs."""
    if name == "gcra":
        return Gcra(cast(RateLimitStorage, backend))  # checked by Gcra
    if name in LimitsStrategy._STRATEGIES:
        return LimitsStrategy(cast(LimitsSupport, backend), name)  # checked by LimitsStrategy
    raise ConfigurationError(
        f"algorithm={name!r} is unknown; use gcra, fixed-window, moving-window or "
        "sliding-window-counter"
    )
