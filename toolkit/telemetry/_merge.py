"""Several workers' metric families merged into one exposition, each series by its kind.

A worker's families travel as :data:`Family` tuples (JSON in the sockets and snapshot files
of :mod:`toolkit.telemetry._siblings`). :func:`merge` combines every worker's, plus the
retired totals of the workers that left; :func:`retire` adds a leaving worker's cumulative
series to those totals. How each series combines is :func:`combine`'s answer:

- ``sum``: counters, histograms (each bucket, ``_sum`` and ``_count``) and summaries add up;
  so do up-down counters (requests in flight, pooled objects) and the gauges that count what
  each process holds (in-process cache entries, memory, open files). Only cumulative series
  outlive their worker (retired); a gauge of a gone worker is gone with it.
- ``max``: one value seen by every worker: a fleet-wide figure every worker reads from Redis
  (cache entries and evictions of ``toolkit.cache.backend="redis"``: summed, they would be
  multiplied by the workers), the circuit breaker state (shared through the backend: the
  most severe state any worker sees), info series (``target_info``, ``python_info``) and a
  per-process limit (``process_max_fds``).
- ``process``: any other gauge describes one process and keeps it apart with a
  ``process_pid`` label (``process_start_time_seconds``, an application's own gauges).

Summary quantiles cannot be merged and are left out (neither OpenTelemetry's Prometheus
exporter nor ``prometheus_client`` produces them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias

from prometheus_client.metrics_core import Metric

from toolkit.telemetry import names
from toolkit.telemetry.dashboards.promql import prometheus_label, series

Sample: TypeAlias = tuple[str, dict[str, str], float]
Family: TypeAlias = tuple[str, str, str, str, list[Sample]]
"""A metric family as it travels: name, type, help, unit and its samples (sample name,
labels, value), as ``prometheus_client`` collects them."""
Combine: TypeAlias = Literal["sum", "max", "process"]

PROCESS_LABEL: Final = prometheus_label(names.PROCESS_PID)
"""The label that tells apart the series of a gauge that describes one process."""

_CUMULATIVE: Final = frozenset({"counter", "histogram", "summary"})
_SHARED_KINDS: Final = frozenset({"info", "stateset"})


def _family(metric: str) -> str:
    """The family name ``prometheus_client`` gives ``metric``: a counter's without
    ``_total`` (its samples carry it)."""
    return series(metric).removesuffix("_total")


GAUGES: Final[Mapping[str, Combine]] = {
    # Every toolkit metric exported as a gauge (up-down counters included) says how it
    # merges; tests/unit/test_worker_merge.py fails on one that does not.
    _family(names.HTTP_SERVER_ACTIVE_REQUESTS): "sum",
    _family(names.POOL_COUNT): "sum",
    _family(names.POOL_PENDING_REQUESTS): "sum",
    _family(names.CACHE_ENTRIES): "sum",  # but see FLEET_WIDE
    _family(names.CIRCUIT_BREAKER_STATE): "max",
    _family(names.EVENT_LOOP_TASKS): "sum",  # one loop per worker: the server's tasks
    _family(names.DEFERRED_QUEUED): "sum",  # each worker runs its own deferred tasks
    _family(names.DEFERRED_RUNNING): "sum",
    _family(names.OFFLOAD_CALLS): "sum",  # one offload pool per worker
    # prometheus_client's process and platform collectors.
    "process_resident_memory_bytes": "sum",
    "process_virtual_memory_bytes": "sum",
    "process_open_fds": "sum",
    "process_max_fds": "max",
    "python_info": "max",
}
"""How each known gauge combines; any other gauge is ``process``."""

FLEET_WIDE: Final[Mapping[str, tuple[str, str]]] = {
    _family(names.CACHE_ENTRIES): (prometheus_label(names.CACHE_BACKEND), "redis"),
    _family(names.CACHE_EVICTIONS): (prometheus_label(names.CACHE_BACKEND), "redis"),
}
"""Families whose series with this label value every worker reads from one shared source."""


def combine(family: str, kind: str, labels: Mapping[str, str]) -> Combine:
    """How the series ``labels`` of ``family`` (of type ``kind``) combine across workers."""
    shared = FLEET_WIDE.get(family)
    if shared is not None and labels.get(shared[0]) == shared[1]:
        return "max"
    if kind in _CUMULATIVE:
        return "sum"
    if kind in _SHARED_KINDS:
        return "max"
    return GAUGES.get(family, "process")


def families_of(metrics: Iterable[Metric]) -> list[Family]:
    """What ``prometheus_client`` collected, as families that travel."""
    return [
        (
            metric.name,
            metric.type,
            metric.documentation,
            metric.unit,
            [(sample.name, dict(sample.labels), float(sample.value)) for sample in metric.samples],
        )
        for metric in metrics
    ]


def parse_families(data: Any) -> list[Family]:
    """Families read back from JSON, checked for shape.

    Raises:
        ValueError: ``data`` is not a list of families.
    """
    if not isinstance(data, list):
        raise ValueError("not a list of metric families")
    families: list[Family] = []
    for item in data:
        name, kind, help_text, unit, samples = item
        families.append(
            (
                str(name),
                str(kind),
                str(help_text),
                str(unit),
                [(str(s), {str(k): str(v) for k, v in labels.items()}, float(value))
                 for s, labels, value in samples],
            )
        )  # fmt: skip
    return families


class _Merged:
    """One output family being built: its first header, its series in first-seen order."""

    __slots__ = ("header", "values")

    def __init__(self, header: tuple[str, str, str, str]) -> None:
        self.header = header
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[dict[str, str], float]]
        self.values = {}

    def add(self, sample: str, labels: dict[str, str], value: float, how: Combine) -> None:
        key = (sample, tuple(sorted(labels.items())))
        seen = self.values.get(key)
        if seen is None:
            self.values[key] = (labels, value)
        elif how == "max":
            self.values[key] = (seen[0], max(seen[1], value))
        elif sample.endswith("_created"):
            self.values[key] = (seen[0], min(seen[1], value))  # the oldest start
        else:
            self.values[key] = (seen[0], seen[1] + value)


def _fold(
    merged: dict[str, _Merged], families: Sequence[Family], pid: int | None, *, retired: bool
) -> None:
    """Add ``families`` (of process ``pid``, or retired totals) into ``merged``; with
    ``retired``, only what outlives a worker."""
    for name, kind, help_text, unit, samples in families:
        target = merged.get(name)
        for sample, labels, value in samples:
            if kind == "summary" and "quantile" in labels:
                continue
            how = combine(name, kind, labels)
            if retired and (how != "sum" or kind not in _CUMULATIVE):
                continue
            if how == "process" and pid is not None and PROCESS_LABEL not in labels:
                labels = {**labels, PROCESS_LABEL: str(pid)}
            if target is None:
                target = merged[name] = _Merged((name, kind, help_text, unit))
            target.add(sample, labels, value, how)


def _families(merged: Mapping[str, _Merged]) -> list[Family]:
    return [
        (*family.header, [(s, labels, value) for (s, _), (labels, value) in family.values.items()])
        for family in merged.values()
    ]


def merge(
    workers: Sequence[tuple[int, Sequence[Family]]], retired: Sequence[Family]
) -> list[Metric]:
    """One exposition's families from every worker's (its pid, its families) and the retired
    totals of those that left, ready for ``prometheus_client``'s encoders."""
    merged: dict[str, _Merged] = {}
    for pid, families in workers:
        _fold(merged, families, pid, retired=False)
    _fold(merged, retired, None, retired=True)
    metrics = []
    for name, kind, help_text, unit, samples in _families(merged):
        metric = Metric(name, help_text, kind, unit)
        for sample, labels, value in samples:
            metric.add_sample(sample, labels, value)
        metrics.append(metric)
    return metrics


def retire(retired: Sequence[Family], leaving: Sequence[Family]) -> list[Family]:
    """The retired totals with a leaving worker's cumulative series added: what keeps the
    fleet's counters from dropping (which ``rate()`` would read as a reset) when it goes."""
    merged: dict[str, _Merged] = {}
    _fold(merged, retired, None, retired=True)
    _fold(merged, leaving, None, retired=True)
    return _families(merged)
