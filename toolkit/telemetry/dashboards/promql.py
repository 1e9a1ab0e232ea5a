"""PromQL for the bundled dashboards: Prometheus names computed from the metric records in
``names.py``, and the few query shapes the panels use.

Every selector filters on the dashboards' ``$job`` and ``$instance`` variables and every rate
is over Grafana's ``$__rate_interval``; the panel modules never write either by hand.
"""

from __future__ import annotations

import re
from typing import Final

from toolkit.telemetry import names
from toolkit.telemetry.metric import Kind

SELECTOR: Final = 'job=~"$job",instance=~"$instance"'
RATE_INTERVAL: Final = "$__rate_interval"
RANGE: Final = "$__range"
"""The dashboard's whole time range: for totals over it (the cost of the last hour)."""

_UNITS: Final = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}
_INVALID_NAME = re.compile(r"[^a-zA-Z0-9:]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9]+")


# --- Names -------------------------------------------------------------------------------------
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
    """The Prometheus name of ``metric`` (a name in ``names.METRIC_RECORDS``), plus a
    histogram suffix such as ``_bucket``."""
    record = names.METRIC_RECORDS[metric]
    return prometheus_name(record.name, record.unit, record.kind.points) + suffix


# --- Queries -----------------------------------------------------------------------------------
def selected(metric: str, matchers: str = "") -> str:
    """Series ``metric`` of the selected jobs and instances, with more ``matchers``."""
    return f"{metric}{{{SELECTOR},{matchers}}}" if matchers else f"{metric}{{{SELECTOR}}}"


def rate(metric: str, matchers: str = "") -> str:
    return f"rate({selected(metric, matchers)}[{RATE_INTERVAL}])"


def increase(metric: str, matchers: str = "", *, over: str = RATE_INTERVAL) -> str:
    """The increase of counter ``metric`` over ``over``: a rate interval, or :data:`RANGE`."""
    return f"increase({selected(metric, matchers)}[{over}])"


def sum_by(expr: str, *labels: str) -> str:
    return _aggregate("sum", expr, labels)


def max_by(expr: str, *labels: str) -> str:
    return _aggregate("max", expr, labels)


def quantile(q: float, bucket: str, *labels: str) -> str:
    """The ``q`` quantile of histogram ``bucket`` series, per ``labels``."""
    return f"histogram_quantile({q}, {sum_by(rate(bucket), 'le', *labels)})"


def or_zero(expr: str, label: str) -> str:
    """``expr``, or else one series at 0 with ``label="none"``: a panel of events that did
    not happen (no backend errors, no refusals) reads 0 instead of "No data"."""
    return f'{expr} or on() label_replace(vector(0), "{label}", "none", "", "")'


def ratio(part: str, whole: str) -> str:
    """``part / whole`` per series of ``whole``: 0, not "no data", where ``part`` has none."""
    return f"({part} or 0 * {whole}) / {whole}"


def _aggregate(operator: str, expr: str, labels: tuple[str, ...]) -> str:
    return f"{operator} by ({', '.join(labels)}) ({expr})" if labels else f"{operator}({expr})"
