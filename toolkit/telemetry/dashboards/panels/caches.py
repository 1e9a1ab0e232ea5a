"""Caches: hit ratio and decisions per cache, backend latency, entries and evictions."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import (
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
                "response cache, e.g. a GET with a body) and error (the backend failed; the "
                "origin answered).",
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
                "Entries held and evictions per second by tier: the in-process store (memory), "
                "the local tier in front of Redis (local), and Redis's own counts for its "
                "database (redis, read every 15 s: keys, and keys evicted under maxmemory).",
                "short",
                [
                    target(sum_by(selected(_ENTRIES), _BACKEND), f"entries {legend(_BACKEND)}"),
                    target(sum_by(rate(_EVICTIONS), _BACKEND), f"evictions/s {legend(_BACKEND)}"),
                ],
            ),
        ],
    )
