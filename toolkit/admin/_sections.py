"""What the caches, breakers and pools show on the status page: one reader each, which
``install()`` adds to the status board. Each reads counts the capability already keeps."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from toolkit.cache import CacheStore
from toolkit.pool import AgentPool
from toolkit.resilience import BreakerRegistry
from toolkit.telemetry import names

Rows = Callable[[], list[dict[str, Any]]]
_SERVED = (names.CACHE_HIT, names.CACHE_STALE)
"""Results answered from the cache; a miss, an error or a refusal ran the function."""


def cache_rows(cache: CacheStore) -> Rows:
    """Each cache's decisions since start (the ``toolkit.cache.requests`` counts) and its hit
    ratio: answers from the cache among those it was asked for (bypasses left out)."""

    def rows() -> list[dict[str, Any]]:
        by_cache: dict[str, dict[str, int]] = defaultdict(dict)
        for attributes, total in cache.decisions():
            results = by_cache[str(attributes[names.CACHE_NAME])]
            result = str(attributes[names.CACHE_RESULT])
            results[result] = results.get(result, 0) + total
        found = []
        for name, results in sorted(by_cache.items()):
            asked = sum(n for result, n in results.items() if result != names.CACHE_BYPASS)
            served = sum(results.get(result, 0) for result in _SERVED)
            found.append(
                {
                    "cache": name,
                    **{result: results.get(result, 0) for result in names.CACHE_RESULTS},
                    "hit_ratio": served / asked if asked else None,
                }
            )
        return found

    return rows


def breaker_rows(breakers: BreakerRegistry) -> Rows:
    """Each named breaker's state, whether an operator forced it, and whether it decides from
    local state because its backend failed."""

    def rows() -> list[dict[str, Any]]:
        return [
            {
                "name": breaker.name,
                "state": breaker.state,
                "forced": breaker.forced or None,
                "degraded": breaker.degraded,
            }
            for breaker in sorted(breakers, key=lambda breaker: breaker.name)
        ]

    return rows


def pool_rows(pools: Sequence[AgentPool[Any]]) -> Rows:
    """Each pool's objects and callers now; ``pools`` is read at each call (pools added
    later show up)."""

    def rows() -> list[dict[str, Any]]:
        found = []
        for pool in pools:
            stats = pool.stats()
            found.append(
                {
                    "name": pool.name,
                    "mode": pool.settings.mode,
                    "size": pool.settings.size,
                    "idle": stats.idle,
                    "used": stats.used,
                    "creating": stats.creating,
                    "pending": stats.pending,
                    "holders": stats.holders,
                }
            )
        return found

    return rows
