"""HTTP: request rate, errors, requests in flight, latency and traffic by route."""

from __future__ import annotations

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.layout import Row, legend, stat, target, thresholds, timeseries
from toolkit.telemetry.dashboards.promql import (
    prometheus_label,
    quantile,
    rate,
    selected,
    series,
    sum_by,
)

_COUNT = series(names.HTTP_SERVER_REQUEST_DURATION, "_count")
_BUCKET = series(names.HTTP_SERVER_REQUEST_DURATION, "_bucket")
_ACTIVE = series(names.HTTP_SERVER_ACTIVE_REQUESTS)
_ROUTE = prometheus_label(names.HTTP_ROUTE)
_STATUS = prometheus_label(names.HTTP_RESPONSE_STATUS_CODE)


def row() -> Row:
    all_requests = sum_by(rate(_COUNT))
    server_errors = sum_by(rate(_COUNT, f'{_STATUS}=~"5.."'))
    return Row(
        "HTTP",
        [
            stat(
                "Request rate",
                "Requests per second through the toolkit's telemetry middleware, 429s and 404s "
                "included; excluded paths and the metrics endpoint are not counted.",
                "reqps",
                [target(all_requests, "requests/s")],
            ),
            stat(
                "Error ratio",
                "Share of requests answered with a 5xx status (including 503s of fail-closed "
                "rate limits while the backend is down). 4xx, 429 included, are not errors here.",
                "percentunit",
                [target(f"({server_errors} or vector(0)) / {all_requests}", "5xx ratio")],
                thresholds=thresholds(("green", None), ("orange", 0.01), ("red", 0.05)),
            ),
            stat(
                "Active requests",
                "Requests in flight now, summed over the selected instances; streaming "
                "responses count until their last byte.",
                "short",
                [target(sum_by(selected(_ACTIVE)), "in flight")],
            ),
            timeseries(
                "Latency by route (p50, p95, p99)",
                "Request duration percentiles per route template, from the request's start to "
                "its last response byte. Rejected and unmatched requests appear as "
                "__unmatched__. Exemplars link to traces when metrics reach Prometheus with "
                "exemplars (OTLP).",
                "s",
                [
                    target(
                        quantile(q, _BUCKET, _ROUTE),
                        f"p{round(q * 100)} {legend(_ROUTE)}",
                        exemplar=True,
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                height=9,
            ),
            timeseries(
                "Requests by route",
                "Requests per second per route template and status code; requests no route "
                "matched (404s, and requests refused before routing, e.g. 429s) are "
                "__unmatched__.",
                "reqps",
                [target(sum_by(rate(_COUNT), _ROUTE, _STATUS), legend(_ROUTE, _STATUS))],
                height=9,
            ),
        ],
    )
