"""Agent pools: objects by state and callers waiting, acquire/use/build times, refusals and
objects closed."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, target, timeseries
from toolkit.telemetry.dashboards.promql import (
    or_zero,
    prometheus_label,
    quantile,
    rate,
    selected,
    series,
    sum_by,
)

_COUNT = series(names.POOL_COUNT)
_PENDING = series(names.POOL_PENDING_REQUESTS)
_WAIT_BUCKET = series(names.POOL_WAIT_TIME, "_bucket")
_USE_BUCKET = series(names.POOL_USE_TIME, "_bucket")
_CREATE_BUCKET = series(names.POOL_CREATE_TIME, "_bucket")
_TIMEOUTS = series(names.POOL_TIMEOUTS)
_REJECTIONS = series(names.POOL_REJECTIONS)
_DISCARDS = series(names.POOL_DISCARDS)
_POOL = prometheus_label(names.POOL_NAME)
_STATE = prometheus_label(names.POOL_STATE)
_REASON = prometheus_label(names.POOL_DISCARD_REASON)
_PHASE = prometheus_label(names.POOL_TIMEOUT_PHASE)


def row() -> Row:
    return Row(
        "Agent pools",
        [
            timeseries(
                "Pooled objects by pool and state, and callers waiting",
                "Objects idle (built, waiting) and used (lent), and acquires queued for room. "
                "Used at the pool size with callers waiting: raise size, or shorten the work.",
                "short",
                [
                    target(sum_by(selected(_COUNT), _POOL, _STATE), legend(_POOL, _STATE)),
                    target(sum_by(selected(_PENDING), _POOL), f"{legend(_POOL)} waiting"),
                ],
                min=0,
            ),
            timeseries(
                "Acquire, use and build time (p99) by pool",
                "99th percentile of how long an acquire took (wait, checks, build), how long "
                "callers held an object, and how long the factory took to build one.",
                "s",
                [
                    target(quantile(0.99, _WAIT_BUCKET, _POOL), f"acquire {legend(_POOL)}"),
                    target(quantile(0.99, _USE_BUCKET, _POOL), f"use {legend(_POOL)}"),
                    target(quantile(0.99, _CREATE_BUCKET, _POOL), f"build {legend(_POOL)}"),
                ],
            ),
            timeseries(
                "Acquires refused by pool",
                "Per second: timeouts by phase (acquire: no object within acquire_timeout, "
                "or within what the current deadline left, so the pool is too small or held "
                "too long; build: the factory passed create_timeout) and rejections (the wait "
                "queue was full, or a new key past max_keys). Answered 503 with Retry-After, "
                "except an acquire cut by the deadline: DeadlineExceeded, answered 504.",
                "ops",
                [
                    target(
                        or_zero(sum_by(rate(_TIMEOUTS), _POOL, _PHASE), _POOL),
                        f"timeouts {legend(_POOL, _PHASE)}",
                    ),
                    target(
                        or_zero(sum_by(rate(_REJECTIONS), _POOL), _POOL), f"refused {legend(_POOL)}"
                    ),
                ],
                noValue="0",
            ),
            timeseries(
                "Objects closed by pool and reason",
                "Per second: error (the caller's block raised), cancelled, recycled (age or "
                "uses), unhealthy (health check), reset_failed, closed (shutdown, or the pool "
                "flag off), evicted (an idle key made room for a new one, max_keys).",
                "ops",
                [
                    target(
                        or_zero(sum_by(rate(_DISCARDS), _POOL, _REASON), _POOL),
                        legend(_POOL, _REASON),
                    )
                ],
                noValue="0",
            ),
        ],
    )
