"""Caches: hit ratio and decisions per cache, backend latency, entries and evictions."""

from __future__ import annotations

from collections.abc import Callable

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import (
    max_by,
    prometheus_label,
    quantile,
    rate,
    ratio,
    selected,
    series,
    sum_by,
)

_REQUESTS = series(names.CACHE_REQUESTS)
_DURATION_BUCKET = series(names.CACHE_OPERATION_DURATION, "_bucket")
_ENTRIES = series(names.CACHE_ENTRIES)
_EVICTIONS = series(names.CACHE_EVICTIONS)
_CACHE = prometheus_label(names.CACHE_NAME)
_RESULT = prometheus_label(names.CACHE_RESULT)
_OPERATION = prometheus_label(names.CACHE_OPERATION)
_BACKEND = prometheus_label(names.CACHE_BACKEND)
# Redis's figures are its database's (INFO), the same on every instance that reads them (as
# telemetry/_merge.py's FLEET_WIDE says when it merges workers).
_FLEET_WIDE = f'{_BACKEND}="redis"'
_PER_INSTANCE = f'{_BACKEND}!="redis"'


def _per_backend(of: Callable[[str], str]) -> str:
    """Per backend, the in-process tiers' figures summed over the instances, and Redis's
    taken once: summed, it would be multiplied by the instances reading the one database."""
    return f"{sum_by(of(_PER_INSTANCE), _BACKEND)} or {max_by(of(_FLEET_WIDE), _BACKEND)}"


def row() -> Row:
    hits = sum_by(rate(_REQUESTS, f'{_RESULT}=~"hit|stale"'), _CACHE)
    return Row(
        "Caches",
        [
            timeseries(
                "Cache hit ratio by cache",
                "Share of each cache's lookups answered from the cache (hits and stale hits): "
                "responses, each @cached namespace, embeddings (per text).",
                "percentunit",
                [target(ratio(hits, sum_by(rate(_REQUESTS), _CACHE)), legend(_CACHE))],
                min=0,
                max=1,
            ),
            timeseries(
                "Cache decisions by cache and result",
                "Lookups per second: hit, miss, stale (served while one caller refreshes), "
                "bypass (not cacheable, or the flag is off), refused (answered 400 by the "
                "response cache, e.g. a GET with a body), error (the backend failed; the "
                "origin answered), wait_timeout (waited for another caller's computation of "
                "the key until cache.wait ran out, then computed again: a leader slower than "
                "the callers can wait) and wait_deadline (the deadline ran out while waiting: "
                "DeadlineExceeded, nothing computed).",
                "ops",
                [target(sum_by(rate(_REQUESTS), _CACHE, _RESULT), legend(_CACHE, _RESULT))],
            ),
            timeseries(
                "Cache backend latency (p95)",
                "95th percentile of cache backend operations (get, set, invalidate) by backend.",
                "s",
                [
                    target(
                        quantile(0.95, _DURATION_BUCKET, _OPERATION, _BACKEND),
                        legend(_OPERATION, _BACKEND),
                    )
                ],
            ),
            timeseries(
                "Cache entries and evictions",
                "Entries held and evictions per second by tier: the in-process stores (memory) "
                "and local tiers in front of Redis (local), summed over the instances, and "
                "Redis's own counts for its database (redis, read every 15 s: keys, and keys "
                "evicted under maxmemory), counted once however many instances read them.",
                "short",
                [
                    target(
                        _per_backend(lambda matchers: selected(_ENTRIES, matchers)),
                        f"entries {legend(_BACKEND)}",
                    ),
                    target(
                        _per_backend(lambda matchers: rate(_EVICTIONS, matchers)),
                        f"evictions/s {legend(_BACKEND)}",
                    ),
                ],
            ),
        ],
    )
