"""Reading what the real OpenTelemetry SDK recorded, through its in-memory exporter and reader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """Every data point of metric ``name`` collected so far."""
    return [
        point
        for metric in _metrics(reader)
        if metric.name == name
        for point in metric.data.data_points
    ]


def metric_names(reader: InMemoryMetricReader) -> set[str]:
    return {metric.name for metric in _metrics(reader)}


def metric_streams(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Every metric collected so far, by name: its unit, description and data."""
    return {metric.name: metric for metric in _metrics(reader)}


def counter_value(reader: InMemoryMetricReader, name: str, **attributes: Any) -> float:
    """Sum of the points of counter ``name`` whose attributes include ``attributes``."""
    total = 0.0
    for point in points(reader, name):
        if isinstance(point, NumberDataPoint) and _has(point.attributes, attributes):
            total += point.value
    return total


def _has(actual: Any, wanted: dict[str, Any]) -> bool:
    return all(actual.get(key.replace("__", ".")) == value for key, value in wanted.items())


def _metrics(reader: InMemoryMetricReader) -> Iterator[Any]:
    data = reader.get_metrics_data()
    if data is None:
        return
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            yield from scope_metrics.metrics
