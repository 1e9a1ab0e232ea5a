"""The bundled dashboards, one per concern, each a stack of capability rows; and writing them
as committed (``agent-toolkit dashboards --output dashboards``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Final

from toolkit.telemetry import names
from toolkit.telemetry.dashboards import layout
from toolkit.telemetry.dashboards.layout import Json
from toolkit.telemetry.dashboards.panels import (
    agents,
    backend,
    cache_savings,
    caches,
    deferred,
    event_loop,
    flags,
    http,
    models,
    offload,
    pipelines,
    pools,
    ratelimit,
    resilience,
    traces,
)
from toolkit.telemetry.dashboards.promql import series

# Every toolkit server records HTTP durations: their labels list the jobs and instances.
_INSTANCES_OF: Final = series(names.HTTP_SERVER_REQUEST_DURATION, "_count")


def http_ratelimit_dashboard() -> Json:
    """Agent server — HTTP & rate limiting: HTTP RED, rate-limit decisions, backend errors,
    the event loop."""
    return layout.build_dashboard(
        uid="toolkit-http-ratelimit",
        title="Agent server — HTTP & rate limiting",
        shows="HTTP requests, rate limiting, backend errors and the event loop",
        tags=["http", "rate-limiting"],
        rows=[http.row(), ratelimit.row(), backend.row(), event_loop.row()],
        instances_of=_INSTANCES_OF,
    )


def caches_dashboard() -> Json:
    """Agent server — Caches: hit ratios, decisions, backend latency, entries and evictions."""
    return layout.build_dashboard(
        uid="toolkit-caches",
        title="Agent server — Caches",
        shows="The response, function and embedding caches",
        tags=["caching"],
        rows=[caches.row()],
        instances_of=_INSTANCES_OF,
    )


def resilience_pools_dashboard() -> Json:
    """Agent server — Resilience & pools: breakers, retry budgets, agent pools and deferred
    work."""
    return layout.build_dashboard(
        uid="toolkit-resilience-pools",
        title="Agent server — Resilience & pools",
        shows="Circuit breakers, retry budgets, agent pools and deferred work",
        tags=["resilience", "pooling"],
        rows=[resilience.row(), pools.row(), deferred.row()],
        instances_of=_INSTANCES_OF,
    )


def flags_dashboard() -> Json:
    """Agent server — Feature flags: evaluations by variant, stale instances, changes."""
    return layout.build_dashboard(
        uid="toolkit-feature-flags",
        title="Agent server — Feature flags",
        shows="Feature flag evaluations and changes",
        tags=["feature-flags"],
        rows=[flags.row()],
        instances_of=_INSTANCES_OF,
    )


def agents_dashboard() -> Json:
    """Agent server — Agents and LLM calls: model calls, agents and steps, tokens and cost,
    the pipelines around them (fan-out branches, request deadlines), what the caches saved,
    the event loop they run on and the calls offloaded from it, and the slow runs and failed
    calls in Tempo."""
    return layout.build_dashboard(
        uid="toolkit-agents",
        title="Agent server — Agents and LLM calls",
        shows="Agent runs, their steps and model calls, tokens, cost, cache savings, the "
        "event loop and offloaded calls",
        tags=["agents", "gen-ai"],
        # The event loop row is the HTTP dashboard's too: a blocked loop stalls every agent.
        rows=[
            models.row(),
            agents.row(),
            pipelines.row(),
            cache_savings.row(),
            event_loop.row(),
            offload.row(),  # the fix for a blocked loop, beside it
            traces.row(),
        ],
        instances_of=_INSTANCES_OF,
        variables=traces.variables(),
    )


DASHBOARDS: Final[dict[str, Callable[[], Json]]] = {
    "agent-server-http.json": http_ratelimit_dashboard,
    "agent-server-caches.json": caches_dashboard,
    "agent-server-resilience-pools.json": resilience_pools_dashboard,
    "agent-server-flags.json": flags_dashboard,
    "agent-server-agents.json": agents_dashboard,
}
"""Every bundled dashboard, by the file it is committed as under ``dashboards/``."""


def build_dashboards() -> dict[str, Json]:
    """Every bundled dashboard, by file name."""
    return {file_name: build() for file_name, build in DASHBOARDS.items()}


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
