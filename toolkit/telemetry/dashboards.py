"""Grafana dashboards for the toolkit's metrics, generated from the name registry.

Every metric and label a panel queries is computed from :mod:`toolkit.telemetry.names`, so a
renamed metric or attribute changes the dashboard with it; a test compares the committed
``dashboards/*.json`` with what this module generates. Regenerate with::

    agent-toolkit dashboards --output dashboards
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

from toolkit.telemetry import names

Kind = Literal["counter", "updowncounter", "gauge", "histogram"]
Json = dict[str, Any]


class Instrument(NamedTuple):
    """Unit and kind of a metric, as its factory in ``names.py`` creates it."""

    unit: str
    kind: Kind


INSTRUMENTS: Final[Mapping[str, Instrument]] = {
    names.HTTP_SERVER_REQUEST_DURATION: Instrument("s", "histogram"),
    names.HTTP_SERVER_ACTIVE_REQUESTS: Instrument("{request}", "updowncounter"),
    names.RATE_LIMIT_REQUESTS: Instrument("{request}", "counter"),
    names.BACKEND_ERRORS: Instrument("{error}", "counter"),
    names.CACHE_REQUESTS: Instrument("{request}", "counter"),
    names.CACHE_OPERATION_DURATION: Instrument("s", "histogram"),
    names.CACHE_ENTRIES: Instrument("{entry}", "gauge"),
    names.CACHE_EVICTIONS: Instrument("{entry}", "counter"),
    names.FEATURE_FLAG_EVALUATIONS: Instrument("{evaluation}", "counter"),
    names.FEATURE_FLAG_CHANGES: Instrument("{change}", "counter"),
    names.CIRCUIT_BREAKER_STATE: Instrument("1", "gauge"),
    names.CIRCUIT_BREAKER_TRANSITIONS: Instrument("{transition}", "counter"),
    names.CIRCUIT_BREAKER_CALLS: Instrument("{call}", "counter"),
    names.RETRY_BUDGET_EXHAUSTED: Instrument("{retry}", "counter"),
    names.POOL_COUNT: Instrument("{object}", "updowncounter"),
    names.POOL_PENDING_REQUESTS: Instrument("{request}", "updowncounter"),
    names.POOL_WAIT_TIME: Instrument("s", "histogram"),
    names.POOL_USE_TIME: Instrument("s", "histogram"),
    names.POOL_CREATE_TIME: Instrument("s", "histogram"),
    names.POOL_TIMEOUTS: Instrument("{timeout}", "counter"),
    names.POOL_REJECTIONS: Instrument("{request}", "counter"),
    names.POOL_DISCARDS: Instrument("{object}", "counter"),
}
"""Every metric of ``names.METRICS``; a test checks these against the real exposition."""

_UNITS: Final = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}
_INVALID_NAME = re.compile(r"[^a-zA-Z0-9:]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9]+")


def prometheus_name(name: str, unit: str, kind: Kind) -> str:
    """The Prometheus metric name of an OpenTelemetry instrument, as the Prometheus exporter
    writes it: invalid characters become ``_``, the unit is appended (``{annotations}``
    dropped), counters end in ``_total``. Histograms add ``_bucket``/``_sum``/``_count``."""
    base = _INVALID_NAME.sub("_", name)
    suffix = _UNITS.get(unit, _INVALID_NAME.sub("_", re.sub(r"\{.*\}", "", unit)).strip("_"))
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    return f"{base}_total" if kind == "counter" else base


def prometheus_label(attribute: str) -> str:
    """The Prometheus label of an OpenTelemetry attribute: ``http.route`` -> ``http_route``."""
    return _INVALID_LABEL.sub("_", attribute)


def series(metric: str, suffix: str = "") -> str:
    """The Prometheus name of ``metric`` (from ``names.METRICS``), plus a histogram suffix."""
    unit, kind = INSTRUMENTS[metric]
    return prometheus_name(metric, unit, kind) + suffix


# --- PromQL ------------------------------------------------------------------------------------
DATASOURCE: Final = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
RATE_INTERVAL: Final = "$__rate_interval"
SELECTOR: Final = 'job=~"$job",instance=~"$instance"'

_DURATION_COUNT = series(names.HTTP_SERVER_REQUEST_DURATION, "_count")
_DURATION_BUCKET = series(names.HTTP_SERVER_REQUEST_DURATION, "_bucket")
_ACTIVE = series(names.HTTP_SERVER_ACTIVE_REQUESTS)
_DECISIONS = series(names.RATE_LIMIT_REQUESTS)
_BACKEND_ERRORS = series(names.BACKEND_ERRORS)
_CACHE_REQUESTS = series(names.CACHE_REQUESTS)
_CACHE_DURATION_BUCKET = series(names.CACHE_OPERATION_DURATION, "_bucket")
_CACHE_ENTRIES = series(names.CACHE_ENTRIES)
_CACHE_EVICTIONS = series(names.CACHE_EVICTIONS)
_EVALUATIONS = series(names.FEATURE_FLAG_EVALUATIONS)
_CHANGES = series(names.FEATURE_FLAG_CHANGES)
_BREAKER_STATE = series(names.CIRCUIT_BREAKER_STATE)
_BREAKER_TRANSITIONS = series(names.CIRCUIT_BREAKER_TRANSITIONS)
_BREAKER_CALLS = series(names.CIRCUIT_BREAKER_CALLS)
_BUDGET_EXHAUSTED = series(names.RETRY_BUDGET_EXHAUSTED)
_POOL_COUNT = series(names.POOL_COUNT)
_POOL_PENDING = series(names.POOL_PENDING_REQUESTS)
_POOL_WAIT_BUCKET = series(names.POOL_WAIT_TIME, "_bucket")
_POOL_USE_BUCKET = series(names.POOL_USE_TIME, "_bucket")
_POOL_CREATE_BUCKET = series(names.POOL_CREATE_TIME, "_bucket")
_POOL_TIMEOUTS = series(names.POOL_TIMEOUTS)
_POOL_REJECTIONS = series(names.POOL_REJECTIONS)
_POOL_DISCARDS = series(names.POOL_DISCARDS)
_POOL = prometheus_label(names.POOL_NAME)
_POOL_STATE = prometheus_label(names.POOL_STATE)
_POOL_REASON = prometheus_label(names.POOL_DISCARD_REASON)

_ROUTE = prometheus_label(names.HTTP_ROUTE)
_STATUS = prometheus_label(names.HTTP_RESPONSE_STATUS_CODE)
_POLICY = prometheus_label(names.RATE_LIMIT_POLICY)
_RESULT = prometheus_label(names.RATE_LIMIT_RESULT)
_OPERATION = prometheus_label(names.BACKEND_OPERATION)
_ERROR_TYPE = prometheus_label(names.ERROR_TYPE)
_CACHE = prometheus_label(names.CACHE_NAME)
_CACHE_RESULT = prometheus_label(names.CACHE_RESULT)
_CACHE_OPERATION = prometheus_label(names.CACHE_OPERATION)
_CACHE_BACKEND = prometheus_label(names.CACHE_BACKEND)
_FLAG = prometheus_label(names.FEATURE_FLAG_KEY)
_VARIANT = prometheus_label(names.FEATURE_FLAG_RESULT_VARIANT)
_REASON = prometheus_label(names.FEATURE_FLAG_RESULT_REASON)
_BREAKER = prometheus_label(names.CIRCUIT_BREAKER_NAME)
_BREAKER_OUTCOME = prometheus_label(names.CIRCUIT_BREAKER_OUTCOME)
_BREAKER_TO = prometheus_label(names.CIRCUIT_BREAKER_TO_STATE)
_FUNCTION = prometheus_label(names.RESILIENCE_FUNCTION)
RESILIENCE_ROW_Y: Final = 90


def _rate(metric: str, matchers: str = "") -> str:
    selector = f"{SELECTOR},{matchers}" if matchers else SELECTOR
    return f"rate({metric}{{{selector}}}[{RATE_INTERVAL}])"


def _sum(expr: str, *by: str) -> str:
    return f"sum by ({', '.join(by)}) ({expr})" if by else f"sum({expr})"


def _or_zero(expr: str, label: str) -> str:
    """``expr``, or else one series at 0 with ``label="none"``: a panel of events that did
    not happen (no backend errors, no refusals) reads 0 instead of "No data"."""
    return f'{expr} or on() label_replace(vector(0), "{label}", "none", "", "")'


def _ratio_by_policy(result: str) -> str:
    """Share of a policy's decisions with ``result``; 0 (not "no data") when there were none."""
    part = _sum(_rate(_DECISIONS, f'{_RESULT}="{result}"'), _POLICY)
    whole = _sum(_rate(_DECISIONS), _POLICY)
    return f"({part} or 0 * {whole}) / {whole}"


def _quantile(q: float) -> str:
    return f"histogram_quantile({q}, {_sum(_rate(_DURATION_BUCKET), 'le', _ROUTE)})"


# --- Panels ------------------------------------------------------------------------------------
def _target(expr: str, legend: str = "", *, exemplar: bool = False) -> Json:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "exemplar": exemplar,
        "legendFormat": legend or "__auto",
        "range": True,
    }


def _panel(
    kind: Literal["stat", "timeseries"],
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    grid: tuple[int, int, int, int],
    **defaults: Any,
) -> Json:
    x, y, w, h = grid
    if kind == "stat":
        options: Json = {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        }
    else:
        options = {
            "legend": {"calcs": ["mean", "max"], "displayMode": "table", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {"defaults": {"unit": unit, **defaults}, "overrides": []},
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "options": options,
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "title": title,
        "type": kind,
    }


def _row(title: str, y: int) -> Json:
    return {
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
        "title": title,
        "type": "row",
    }


def _thresholds(*steps: tuple[str, float | None]) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def _http_panels() -> list[Json]:
    all_requests = _sum(_rate(_DURATION_COUNT))
    server_errors = _sum(_rate(_DURATION_COUNT, f'{_STATUS}=~"5.."'))
    return [
        _row("HTTP", 0),
        _panel(
            "stat",
            "Request rate",
            "Requests per second through the toolkit's telemetry middleware, 429s and 404s "
            "included; excluded paths and the metrics endpoint are not counted.",
            "reqps",
            [_target(all_requests, "requests/s")],
            (0, 1, 8, 4),
        ),
        _panel(
            "stat",
            "Error ratio",
            "Share of requests answered with a 5xx status (including 503s of fail-closed rate "
            "limits while the backend is down). 4xx, 429 included, are not errors here.",
            "percentunit",
            [_target(f"({server_errors} or vector(0)) / {all_requests}", "5xx ratio")],
            (8, 1, 8, 4),
            thresholds=_thresholds(("green", None), ("orange", 0.01), ("red", 0.05)),
        ),
        _panel(
            "stat",
            "Active requests",
            "Requests in flight now, summed over the selected instances; streaming responses "
            "count until their last byte.",
            "short",
            [_target(_sum(f"{_ACTIVE}{{{SELECTOR}}}"), "in flight")],
            (16, 1, 8, 4),
        ),
        _panel(
            "timeseries",
            "Latency by route (p50, p95, p99)",
            "Request duration percentiles per route template, from the request's start to its "
            "last response byte. Rejected and unmatched requests appear as __unmatched__. "
            "Exemplars link to traces when metrics reach Prometheus with exemplars (OTLP).",
            "s",
            [
                _target(_quantile(q), f"p{round(q * 100)} {{{{{_ROUTE}}}}}", exemplar=True)
                for q in (0.5, 0.95, 0.99)
            ],
            (0, 5, 12, 9),
        ),
        _panel(
            "timeseries",
            "Requests by route",
            "Requests per second per route template and status code; requests no route "
            "matched (404s, and requests refused before routing, e.g. 429s) are __unmatched__.",
            "reqps",
            [
                _target(
                    _sum(_rate(_DURATION_COUNT), _ROUTE, _STATUS),
                    f"{{{{{_ROUTE}}}}} {{{{{_STATUS}}}}}",
                )
            ],
            (12, 5, 12, 9),
        ),
    ]


def _ratelimit_panels() -> list[Json]:
    return [
        _row("Rate limiting", 14),
        _panel(
            "timeseries",
            "Rate-limit decisions by policy and result",
            "Decisions per second per policy and result: allowed, rejected (429), error (the "
            "backend failed and the policy's failure mode decided) and shadow_rejected (would "
            "have been rejected; let through in shadow mode).",
            "reqps",
            [
                _target(
                    _sum(_rate(_DECISIONS), _POLICY, _RESULT),
                    f"{{{{{_POLICY}}}}} {{{{{_RESULT}}}}}",
                )
            ],
            (0, 15, 12, 8),
        ),
        _panel(
            "timeseries",
            "Rejection ratio by policy",
            "Share of each policy's decisions that were rejected, and that shadow mode would "
            "have rejected: size limits with the shadow line before enforcing them.",
            "percentunit",
            [
                _target(_ratio_by_policy(names.RATE_LIMIT_REJECTED), f"{{{{{_POLICY}}}}} rejected"),
                _target(
                    _ratio_by_policy(names.RATE_LIMIT_SHADOW_REJECTED),
                    f"{{{{{_POLICY}}}}} shadow_rejected",
                ),
            ],
            (12, 15, 12, 8),
            min=0,
            max=1,
        ),
    ]


def _backend_panels() -> list[Json]:
    return [
        _row("Backend", 23),
        _panel(
            "timeseries",
            "Backend errors by operation and error type",
            "Backend calls per second that failed, timed out or were skipped while the backend "
            "was down (error type unavailable), per operation. No series means no errors.",
            "ops",
            [
                _target(
                    _or_zero(_sum(_rate(_BACKEND_ERRORS), _OPERATION, _ERROR_TYPE), _OPERATION),
                    f"{{{{{_OPERATION}}}}} {{{{{_ERROR_TYPE}}}}}",
                )
            ],
            (0, 24, 24, 8),
            noValue="0",
        ),
    ]


def _cache_panels() -> list[Json]:
    hits = _sum(_rate(_CACHE_REQUESTS, f'{_CACHE_RESULT}=~"hit|stale"'), _CACHE)
    every = _sum(_rate(_CACHE_REQUESTS), _CACHE)
    return [
        _row("Caches", 32),
        _panel(
            "timeseries",
            "Cache hit ratio by cache",
            "Share of each cache's lookups answered from the cache (hits and stale hits): "
            "responses, each @cached namespace, embeddings (per text).",
            "percentunit",
            [_target(f"({hits} or 0 * {every}) / {every}", f"{{{{{_CACHE}}}}}")],
            (0, 33, 12, 8),
            min=0,
            max=1,
        ),
        _panel(
            "timeseries",
            "Cache decisions by cache and result",
            "Lookups per second: hit, miss, stale (served while one caller refreshes), bypass "
            "(not cacheable, or the flag is off) and error (the backend failed; the origin "
            "answered).",
            "ops",
            [
                _target(
                    _sum(_rate(_CACHE_REQUESTS), _CACHE, _CACHE_RESULT),
                    f"{{{{{_CACHE}}}}} {{{{{_CACHE_RESULT}}}}}",
                )
            ],
            (12, 33, 12, 8),
        ),
        _panel(
            "timeseries",
            "Cache backend latency (p95)",
            "95th percentile of cache backend operations (get, set, invalidate) by backend.",
            "s",
            [
                _target(
                    "histogram_quantile(0.95, "
                    + _sum(_rate(_CACHE_DURATION_BUCKET), "le", _CACHE_OPERATION, _CACHE_BACKEND)
                    + ")",
                    f"{{{{{_CACHE_OPERATION}}}}} {{{{{_CACHE_BACKEND}}}}}",
                )
            ],
            (0, 41, 12, 8),
        ),
        _panel(
            "timeseries",
            "Cache entries and evictions",
            "Entries held and evictions per second by tier: the in-process store (memory), the "
            "local tier in front of Redis (local), and Redis's own counts for its database "
            "(redis, read every 15 s: keys, and keys evicted under maxmemory).",
            "short",
            [
                _target(
                    _sum(f"{_CACHE_ENTRIES}{{{SELECTOR}}}", _CACHE_BACKEND),
                    f"entries {{{{{_CACHE_BACKEND}}}}}",
                ),
                _target(
                    _sum(_rate(_CACHE_EVICTIONS), _CACHE_BACKEND),
                    f"evictions/s {{{{{_CACHE_BACKEND}}}}}",
                ),
            ],
            (12, 41, 12, 8),
        ),
    ]


def _flag_panels() -> list[Json]:
    return [
        _row("Feature flags", 49),
        _panel(
            "timeseries",
            "Flag evaluations by flag and variant",
            "Evaluations per second of each flag, by the variant served: a kill switch turned "
            "off, or a rollout's share, shows here within seconds of the change.",
            "ops",
            [
                _target(
                    _sum(_rate(_EVALUATIONS), _FLAG, _VARIANT),
                    f"{{{{{_FLAG}}}}} {{{{{_VARIANT}}}}}",
                )
            ],
            (0, 50, 12, 8),
        ),
        _panel(
            "timeseries",
            "Stale or failed flag evaluations",
            "Evaluations per second served from a snapshot the instance could not refresh "
            "(stale: the backend is unreachable) or of undeclared flags (error), by instance. "
            "0 is healthy.",
            "ops",
            [
                _target(
                    _sum(_rate(_EVALUATIONS, f'{_REASON}=~"stale|error"'), "instance", _REASON)
                    # An instance with none of them still gets a line, at 0.
                    + " or on (instance) "
                    + _sum(f"0 * {_rate(_EVALUATIONS)}", "instance"),
                    f"{{{{instance}}}} {{{{{_REASON}}}}}",
                )
            ],
            (12, 50, 12, 8),
            noValue="0",
        ),
        _panel(
            "timeseries",
            "Flag changes applied, by instance",
            "Changes each instance applied: after a flip, every instance should count one. An "
            "instance missing here did not get it (see the stale panel).",
            "short",
            [
                _target(
                    _or_zero(
                        _sum(
                            f"increase({_CHANGES}{{{SELECTOR}}}[{RATE_INTERVAL}])",
                            "instance",
                            _FLAG,
                        ),
                        _FLAG,
                    ),
                    f"{{{{instance}}}} {{{{{_FLAG}}}}}",
                )
            ],
            (0, 58, 24, 8),
            noValue="0",
        ),
    ]


def _pool_quantile(bucket: str, q: float = 0.99) -> str:
    return f"histogram_quantile({q}, {_sum(_rate(bucket), 'le', _POOL)})"


def _pool_panels(y: int) -> list[Json]:
    return [
        _row("Agent pools", y),
        _panel(
            "timeseries",
            "Pooled objects by pool and state, and callers waiting",
            "Objects idle (built, waiting) and used (lent), and acquires queued for room. "
            "Used at the pool size with callers waiting: raise size, or shorten the work.",
            "short",
            [
                _target(
                    _sum(f"{_POOL_COUNT}{{{SELECTOR}}}", _POOL, _POOL_STATE),
                    f"{{{{{_POOL}}}}} {{{{{_POOL_STATE}}}}}",
                ),
                _target(
                    _sum(f"{_POOL_PENDING}{{{SELECTOR}}}", _POOL),
                    f"{{{{{_POOL}}}}} waiting",
                ),
            ],
            (0, y + 1, 12, 8),
            min=0,
        ),
        _panel(
            "timeseries",
            "Acquire, use and build time (p99) by pool",
            "99th percentile of how long an acquire took (wait, checks, build), how long "
            "callers held an object, and how long the factory took to build one.",
            "s",
            [
                _target(_pool_quantile(_POOL_WAIT_BUCKET), f"acquire {{{{{_POOL}}}}}"),
                _target(_pool_quantile(_POOL_USE_BUCKET), f"use {{{{{_POOL}}}}}"),
                _target(_pool_quantile(_POOL_CREATE_BUCKET), f"build {{{{{_POOL}}}}}"),
            ],
            (12, y + 1, 12, 8),
        ),
        _panel(
            "timeseries",
            "Acquires refused by pool",
            "Per second: timeouts (no object within acquire_timeout) and rejections (the wait "
            "queue was full); both are answered 503 with Retry-After.",
            "ops",
            [
                _target(
                    _or_zero(_sum(_rate(_POOL_TIMEOUTS), _POOL), _POOL), f"timeouts {{{{{_POOL}}}}}"
                ),
                _target(
                    _or_zero(_sum(_rate(_POOL_REJECTIONS), _POOL), _POOL),
                    f"refused {{{{{_POOL}}}}}",
                ),
            ],
            (0, y + 9, 12, 8),
            noValue="0",
        ),
        _panel(
            "timeseries",
            "Objects closed by pool and reason",
            "Per second: error (the caller's block raised), cancelled, recycled (age or uses), "
            "unhealthy (health check), reset_failed, closed (shutdown, or the pool flag off), "
            "evicted (an idle key made room for a new one, max_keys).",
            "ops",
            [
                _target(
                    _or_zero(_sum(_rate(_POOL_DISCARDS), _POOL, _POOL_REASON), _POOL),
                    f"{{{{{_POOL}}}}} {{{{{_POOL_REASON}}}}}",
                )
            ],
            (12, y + 9, 12, 8),
            noValue="0",
        ),
    ]


POOL_ROW_Y: Final = 66
"""Where the "Agent pools" row starts: below the feature-flag panels."""


def _resilience_panels(y: int) -> list[Json]:
    return [
        _row("Resilience", y),
        _panel(
            "timeseries",
            "Circuit breaker state",
            "Each breaker's state as each instance sees it: 0 closed, 1 half-open, 2 open. "
            "Instances of one fleet share the state through the backend and agree within a "
            "second.",
            "short",
            [
                _target(
                    f"max by (instance, {_BREAKER}) ({_BREAKER_STATE}{{{SELECTOR}}})",
                    f"{{{{{_BREAKER}}}}} {{{{instance}}}}",
                )
            ],
            (0, y + 1, 12, 8),
            min=0,
            max=2,
        ),
        _panel(
            "timeseries",
            "Calls through breakers by outcome",
            "Calls per second by breaker and outcome: success, failure, ignored (cancelled, or "
            "the caller's own error) and rejected (refused while open: the fallback answered, "
            "or the caller got CircuitOpenError).",
            "ops",
            [
                _target(
                    _sum(_rate(_BREAKER_CALLS), _BREAKER, _BREAKER_OUTCOME),
                    f"{{{{{_BREAKER}}}}} {{{{{_BREAKER_OUTCOME}}}}}",
                )
            ],
            (12, y + 1, 12, 8),
        ),
        _panel(
            "timeseries",
            "Breaker transitions",
            "State changes applied, by breaker and new state: a breaker that keeps reopening "
            "is flapping against a dependency that is still sick.",
            "short",
            [
                _target(
                    _or_zero(
                        _sum(
                            f"increase({_BREAKER_TRANSITIONS}{{{SELECTOR}}}[{RATE_INTERVAL}])",
                            _BREAKER,
                            _BREAKER_TO,
                        ),
                        _BREAKER,
                    ),
                    f"{{{{{_BREAKER}}}}} to {{{{{_BREAKER_TO}}}}}",
                )
            ],
            (0, y + 9, 12, 8),
            noValue="0",
        ),
        _panel(
            "timeseries",
            "Retries refused by the budget",
            "Retries per second that the retry budget refused, by function: those calls failed "
            "with attempts left. Against a dependency that is down this is the budget at work; "
            "otherwise the budget is too small for the traffic.",
            "ops",
            [
                _target(
                    _or_zero(_sum(_rate(_BUDGET_EXHAUSTED), _FUNCTION), _FUNCTION),
                    f"{{{{{_FUNCTION}}}}}",
                )
            ],
            (12, y + 9, 12, 8),
            noValue="0",
        ),
    ]


def _variables() -> list[Json]:
    jobs = f"label_values({_DURATION_COUNT}, job)"
    instances = f'label_values({_DURATION_COUNT}{{job=~"$job"}}, instance)'
    return [
        {
            "current": {},
            "hide": 0,
            "includeAll": False,
            "label": "Data source",
            "multi": False,
            "name": "DS_PROMETHEUS",
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "type": "datasource",
        },
        *(
            {
                "allValue": ".*",
                "current": {},
                "datasource": DATASOURCE,
                "definition": query,
                "hide": 0,
                "includeAll": True,
                "label": label,
                "multi": True,
                "name": name,
                "options": [],
                "query": query,
                "refresh": 2,
                "regex": "",
                "sort": 1,
                "type": "query",
            }
            for name, label, query in (("job", "Job", jobs), ("instance", "Instance", instances))
        ),
    ]


def http_ratelimit_dashboard() -> Json:
    """Agent server — HTTP & rate limiting: HTTP RED, rate-limit decisions, backend errors,
    feature flags."""
    panels = [
        *_http_panels(),
        *_ratelimit_panels(),
        *_backend_panels(),
        *_cache_panels(),
        *_flag_panels(),
        *_resilience_panels(RESILIENCE_ROW_Y),
        *_pool_panels(POOL_ROW_Y),
    ]
    return {
        "annotations": {"list": []},
        "description": (
            "HTTP requests, rate limiting, backend errors, caches and feature flags of servers "
            "running "
            "agent-server-toolkit. Generated by `agent-toolkit dashboards` from "
            "toolkit/telemetry/names.py: regenerate rather than edit."
        ),
        "editable": True,
        "graphTooltip": 1,
        "links": [],
        "panels": [{**panel, "id": i} for i, panel in enumerate(panels, start=1)],
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["agent-server-toolkit", "http", "rate-limiting", "caching", "feature-flags"],
        "templating": {"list": _variables()},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": "Agent server — HTTP & rate limiting",
        "uid": "toolkit-http-ratelimit",
        "version": 1,
    }


def build_dashboards() -> dict[str, Json]:
    """Every bundled dashboard, by file name."""
    return {"agent-server-http.json": http_ratelimit_dashboard()}


def render(dashboard: Json) -> str:
    """The dashboard as committed: sorted keys, two-space indent, UTF-8, trailing newline."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_dashboards(directory: str | Path) -> list[Path]:
    """Write every dashboard into ``directory`` (created if missing); the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, dashboard in build_dashboards().items():
        path = directory / file_name
        path.write_text(render(dashboard), encoding="utf-8")
        written.append(path)
    return written
