"""Merging several workers' metrics: each series by its kind, a leaving worker's counters kept,
and, with real sockets between two in-process workers, the exposition /metrics serves."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.promtool import promtool_problems
from toolkit.settings import TelemetrySettings
from toolkit.telemetry import names
from toolkit.telemetry._merge import (
    FLEET_WIDE,
    GAUGES,
    PROCESS_LABEL,
    Family,
    families_of,
    merge,
    retire,
)
from toolkit.telemetry._workers import MetricsExposition, _Collected, detect_workers
from toolkit.telemetry.dashboards.promql import series

pytestmark = pytest.mark.anyio

REDIS: dict[str, str] = {"toolkit_cache_backend": "redis"}
MEMORY: dict[str, str] = {"toolkit_cache_backend": "memory"}


class Worker:
    """A meter provider with its Prometheus reader, as each worker process has."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.provider = MeterProvider(
            metric_readers=[
                PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
            ]
        )
        meter = self.provider.get_meter(names.INSTRUMENTATION_SCOPE)
        self.duration = names.HTTP_SERVER_REQUEST_DURATION_METRIC.create(meter)
        self.errors = names.BACKEND_ERRORS_METRIC.create(meter)

    def serve(self, count: int, seconds: float = 0.02) -> None:
        for _ in range(count):
            self.duration.record(seconds, {names.HTTP_ROUTE: "/chat"})

    def families(self) -> list[Family]:
        return families_of(self.registry.collect())


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made = [Worker(), Worker()]
    yield made
    for worker in made:
        worker.provider.shutdown()


def _values(exposition: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
    }


def _gauge(name: str, *points: tuple[dict[str, str], float]) -> Family:
    return (name, "gauge", "help", "", [(name, labels, value) for labels, value in points])


def _counter(name: str, *points: tuple[dict[str, str], float]) -> Family:
    return (name, "counter", "help", "", [(f"{name}_total", lbl, v) for lbl, v in points])


def _merged(*workers: list[Family], retired: list[Family] | None = None) -> dict[str, float]:
    """Sample name and sorted labels -> value, of merging ``workers`` (pids 1, 2, ...)."""
    metrics = merge(list(enumerate(workers, start=1)), retired or [])
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value for metric in metrics for s in metric.samples
    }


def test_every_toolkit_gauge_says_how_it_merges() -> None:
    """A metric exported as a gauge (up-down counters too) is either summed or maxed across
    workers by a stated rule; none falls to the per-process default unnoticed."""
    gauges = {
        series(name).removesuffix("_total")
        for name, record in names.METRIC_RECORDS.items()
        if record.kind.points in ("gauge", "updowncounter")
    }
    assert gauges - set(GAUGES) == set()


def test_histograms_from_two_workers_add_bucket_by_bucket(workers: list[Worker]) -> None:
    """Buckets, sums and counts add up; promtool finds nothing wrong in the merge."""
    first, second = workers
    first.serve(3, 0.02)
    second.serve(5, 30.0)
    exposition = generate_latest(
        _Collected(merge([(1, first.families()), (2, second.families())], []))
    )
    values = _values(exposition)
    name = series(names.HTTP_SERVER_REQUEST_DURATION)
    labels = frozenset({(names.HTTP_ROUTE.replace(".", "_"), "/chat")})
    assert values[(f"{name}_count", labels)] == 8
    assert values[(f"{name}_sum", labels)] == pytest.approx(3 * 0.02 + 5 * 30.0)
    assert values[(f"{name}_bucket", labels | {("le", "0.025")})] == 3
    assert values[(f"{name}_bucket", labels | {("le", "40.0")})] == 8
    assert promtool_problems(exposition) == ""


def test_redis_derived_cache_figures_are_not_multiplied_by_the_workers() -> None:
    """Every worker reads the same Redis: its entries and evictions are taken once (the
    highest reading), while each process's own in-memory figures add up."""
    entries = series(names.CACHE_ENTRIES)
    evictions = series(names.CACHE_EVICTIONS).removesuffix("_total")
    assert set(FLEET_WIDE) == {entries, evictions}
    one = [_gauge(entries, (REDIS, 100), (MEMORY, 3)), _counter(evictions, (REDIS, 7))]
    two = [_gauge(entries, (REDIS, 101), (MEMORY, 4)), _counter(evictions, (REDIS, 7))]
    merged = _merged(one, two)
    assert merged[f"{entries}{sorted(REDIS.items())}"] == 101
    assert merged[f"{entries}{sorted(MEMORY.items())}"] == 7
    assert merged[f"{evictions}_total{sorted(REDIS.items())}"] == 7


def test_breaker_state_is_the_most_severe_any_worker_sees() -> None:
    state = series(names.CIRCUIT_BREAKER_STATE)
    breaker = {"toolkit_circuit_breaker_name": "openai"}
    merged = _merged([_gauge(state, (breaker, 0))], [_gauge(state, (breaker, 2))])
    assert merged == {f"{state}{sorted(breaker.items())}": 2}


def test_an_unknown_gauge_keeps_each_worker_apart() -> None:
    """A gauge the toolkit does not know describes one process: one series per pid."""
    merged = _merged([_gauge("queue_depth", ({}, 4))], [_gauge("queue_depth", ({}, 6))])
    assert merged == {
        f"queue_depth{[(PROCESS_LABEL, '1')]}": 4,
        f"queue_depth{[(PROCESS_LABEL, '2')]}": 6,
    }


def test_a_retired_worker_keeps_its_counters_but_not_its_gauges() -> None:
    """What a leaving worker counted stays in the totals; what it held (in flight, its own
    gauges, the shared Redis figures every live worker still reports) goes with it."""
    active = series(names.HTTP_SERVER_ACTIVE_REQUESTS)
    evictions = series(names.CACHE_EVICTIONS).removesuffix("_total")
    leaving = [
        _counter("served", ({}, 10)),
        _gauge(active, ({}, 2)),
        _counter(evictions, (REDIS, 7), (MEMORY, 1)),
    ]
    retired = retire(retire([], leaving), [_counter("served", ({}, 5))])
    merged = _merged([_counter("served", ({}, 1)), _gauge(active, ({}, 1))], retired=retired)
    assert merged == {
        "served_total[]": 16,
        f"{active}[]": 1,
        f"{evictions}_total{sorted(MEMORY.items())}": 1,
    }


def _settings(directory: Path, merge_workers: str = "on") -> TelemetrySettings:
    return TelemetrySettings.model_validate(
        {"merge_workers": merge_workers, "merge_directory": str(directory)}
    )


@pytest.fixture
def directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tkm-"))  # short: unix socket paths must be
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _count(exposition: bytes) -> float:
    name = series(names.HTTP_SERVER_REQUEST_DURATION) + "_count"
    return sum(value for (sample, _), value in _values(exposition).items() if sample == name)


async def test_one_process_serves_its_registry_as_before(
    workers: list[Worker], directory: Path
) -> None:
    """No supervisor detected and merge_workers=auto: nothing starts, nothing is written,
    and the exposition is the registry's own."""
    worker = workers[0]
    worker.serve(2)
    exposition = MetricsExposition(worker.registry, _settings(directory, "auto"))
    assert detect_workers() is None
    await exposition.start()
    assert not exposition.merging
    assert await exposition.render(generate_latest) == generate_latest(worker.registry)
    await exposition.stop()
    assert os.listdir(directory) == []


async def test_workers_answer_each_other_and_the_last_one_out_cleans_up(
    workers: list[Worker], directory: Path
) -> None:
    """Two workers sharing a directory (merge_workers=on): either one's scrape counts both;
    a worker that stops hands its counts over; the last to stop removes the directory."""
    first, second = workers
    one = MetricsExposition(first.registry, _settings(directory))
    two = MetricsExposition(second.registry, _settings(directory))
    await one.start()
    await two.start()
    assert one.merging
    assert two.merging
    first.serve(3)
    second.serve(5)
    assert _count(await one.render(generate_latest)) == 8
    assert _count(await two.render(generate_latest)) == 8
    await two.stop()
    second.serve(100)  # after it left: never counted
    assert _count(await one.render(generate_latest)) == 8
    third = Worker()
    try:
        three = MetricsExposition(third.registry, _settings(directory))
        await three.start()
        third.serve(2)
        assert _count(await three.render(generate_latest)) == 10
        await one.stop()
        assert _count(await three.render(generate_latest)) == 10
        (shared,) = os.listdir(directory)
        # the lock, the retired totals, and the remaining worker's snapshot and socket
        files = sorted(os.path.splitext(name)[1] for name in os.listdir(directory / shared))
        assert files == ["", ".json", ".json", ".sock"]
        await three.stop()
    finally:
        third.provider.shutdown()
    assert os.listdir(directory) == []
