"""Grafana dashboards for the toolkit's metrics, generated from the metric records in
:mod:`toolkit.telemetry.names`, so a renamed metric or attribute changes the dashboards with
it; a test compares the committed ``dashboards/*.json`` with what this package generates.
Regenerate with::

    agent-toolkit dashboards --output dashboards

``promql`` computes Prometheus names and writes the queries, ``traceql`` the trace tables'
Tempo queries, ``layout`` the Grafana JSON (rows that stack themselves),
``panels/<capability>.py`` one row per capability, and ``bundled`` puts the rows together,
one dashboard per concern.
"""

from toolkit.telemetry.dashboards.bundled import (
    DASHBOARDS,
    agents_dashboard,
    build_dashboards,
    caches_dashboard,
    flags_dashboard,
    http_ratelimit_dashboard,
    render,
    resilience_pools_dashboard,
    write_dashboards,
)
from toolkit.telemetry.dashboards.layout import DATASOURCE, Json
from toolkit.telemetry.dashboards.promql import (
    RATE_INTERVAL,
    SELECTOR,
    prometheus_label,
    prometheus_name,
    series,
)
from toolkit.telemetry.metric import Kind

__all__ = [
    "DASHBOARDS",
    "DATASOURCE",
    "RATE_INTERVAL",
    "SELECTOR",
    "Json",
    "Kind",
    "agents_dashboard",
    "build_dashboards",
    "caches_dashboard",
    "flags_dashboard",
    "http_ratelimit_dashboard",
    "prometheus_label",
    "prometheus_name",
    "render",
    "resilience_pools_dashboard",
    "series",
    "write_dashboards",
]
