"""Durable mode in one process, on a real Redis: the hand-off, its refusals and the worker."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import toolkit
from tests.support.otel import counter_value, points
from tests.support.servers import RedisServer, free_port
from tests.support.waiting import eventually, eventually_returns
from toolkit.errors import DeferRefused, DurableArgumentError, DurableUnavailable
from toolkit.pipelines.deferred._background import set_current_runner
from toolkit.pipelines.deferred._in_process import InProcessRunner
from toolkit.pipelines.deferred._runners import deferred_runner, durable_worker
from toolkit.pipelines.deferred.durable._payload import encode
from toolkit.pipelines.deferred.durable._runner import DurableRunner
from toolkit.pipelines.deferred.durable._worker import DurableWorker
from toolkit.settings import ToolkitSettings
from toolkit.telemetry import names

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.timeout(60)]

RUNS: list[tuple[str, int]] = []


@toolkit.background(name="tests.durable.record", retries=0)
async def record_run(token: str, count: int) -> None:
    RUNS.append((token, count))


@toolkit.background(name="tests.durable.flaky", retries=2)
async def flaky(token: str) -> None:
    RUNS.append((token, 0))
    if sum(1 for seen, _ in RUNS if seen == token) < 3:
        raise ConnectionError("the store is away")


@toolkit.background(name="tests.durable.slow_once", retries=0)
async def slow_the_first_time(token: str, seconds: float) -> None:
    """Started, then ``seconds`` long on its first run only, then done."""
    RUNS.append((token, 0))
    if RUNS.count((token, 0)) == 1:
        await asyncio.sleep(seconds)
    RUNS.append((token, 1))


async def unregistered(token: str) -> None:
    RUNS.append((token, -1))


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    RUNS.clear()
    yield
    set_current_runner(None)


def durable_settings(url: str, grace: str = "10s", **durable: Any) -> ToolkitSettings:
    return ToolkitSettings(
        defer={
            "journal": None,
            "grace": grace,
            "durable": {
                "enabled": True,
                "url": url,
                "heartbeat": "1s",
                "sweep_interval": "1s",
                **durable,
            },
        }
    )


@pytest.fixture
async def app_runner(
    redis_url: str, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> AsyncIterator[DurableRunner]:
    """The deferring side, current, as install() makes it."""
    runner = deferred_runner(
        durable_settings(redis_url), tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    assert isinstance(runner, DurableRunner)
    await runner.start()
    set_current_runner(runner)
    yield runner
    await runner.drain(1.0)


@pytest.fixture
async def worker(
    redis_url: str, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> AsyncIterator[None]:
    """A worker of the same queue on this event loop, as another process would run it."""
    settings = durable_settings(redis_url)
    local = InProcessRunner(
        settings.defer, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    running = durable_worker(settings, local, meter_provider=meter_provider)
    running.start()
    yield
    await running.stop()


async def queued(url: str, queue: str = "toolkit-deferred") -> int:
    async with aioredis.from_url(url) as client:
        return int(await client.llen(f"saq:{queue}:queued"))


async def test_durable_task_runs_on_a_worker_under_a_span_linked_to_the_deferring_one(
    app_runner: DurableRunner,
    worker: None,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """The hand-off returns once Redis holds the task; a worker runs it by its name, under a
    CONSUMER span linked to the request's, and the outcome is on the deferring span."""
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("POST /memories") as request_span:
        handle = await record_run.defer("t1", 3)
    await eventually(lambda: RUNS == [("t1", 3)], seconds=10)
    deferring = next(s for s in span_exporter.get_finished_spans() if s.name == "POST /memories")
    assert deferring.attributes is not None
    assert deferring.attributes[names.DEFER_DURABLE_OUTCOME] == "queued"
    assert deferring.attributes[names.MESSAGING_MESSAGE_ID] == handle.id
    assert deferring.attributes[names.MESSAGING_SYSTEM] == "saq"

    def task_span() -> Any:
        found = [s for s in span_exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
        return found[0] if found else None

    await eventually(lambda: task_span() is not None, seconds=5)
    span = task_span()
    assert span.name == "toolkit.deferred tests.durable.record"
    assert span.attributes[names.TASK_ID] == handle.id
    assert span.attributes[names.TASK_ATTEMPT] == 1
    assert span.attributes[names.TASK_OUTCOME] == "done"
    # The messaging conventions' processing attributes, matching the deferring span's.
    messaging = {
        key: value for key, value in span.attributes.items() if key.startswith("messaging.")
    }
    assert messaging == {
        names.MESSAGING_SYSTEM: "saq",
        names.MESSAGING_DESTINATION_NAME: "toolkit-deferred",
        names.MESSAGING_MESSAGE_ID: handle.id,
        names.MESSAGING_OPERATION_TYPE: "process",
    }
    assert deferring.attributes[names.MESSAGING_DESTINATION_NAME] == "toolkit-deferred"
    assert [link.context.span_id for link in span.links] == [
        request_span.get_span_context().span_id
    ]
    assert span.context.trace_id != request_span.get_span_context().trace_id  # a root
    assert counter_value(metric_reader, names.DEFER_DURABLE_HANDOFFS, **{
        names.DEFER_DURABLE_OUTCOME: "queued"
    }) == 1  # fmt: skip


async def test_durable_task_retries_inside_one_delivery_with_its_own_policy(
    app_runner: DurableRunner, worker: None, metric_reader: InMemoryMetricReader
) -> None:
    """A task that raises is retried on the worker by its own policy (retries=2), not by
    delivering it again: three runs, then done."""
    await flaky.defer("f1")
    await eventually(lambda: len(RUNS) == 3, seconds=20)
    await eventually(
        lambda: counter_value(metric_reader, names.DEFERRED_TASKS, **{
            names.TASK_NAME: "tests.durable.flaky", names.TASK_OUTCOME: "done"
        }) == 1,
        seconds=5,
    )  # fmt: skip
    assert counter_value(metric_reader, names.DEFER_DURABLE_REDELIVERED) == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((b"raw",), {}, "argument 0: a bytes"),
        (("ok", ("a", "b")), {}, "argument 1: a tuple"),
        (("ok",), {"tags": {"a"}}, "argument 'tags': a set"),
        (("ok",), {"when": object()}, "argument 'when': a object"),
        ((math.nan,), {}, "argument 0: nan is not JSON"),
        (({1: "one"},), {}, "argument 0: key 1 is a int"),
        (([[{"deep": b"x"}]],), {}, "argument 0[0][0]['deep']: a bytes"),
    ],
)
def test_durable_arguments_that_would_not_come_back_from_json_are_refused_by_name(
    args: tuple[Any, ...], kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(DurableArgumentError) as caught:
        encode("memory.extract", args, kwargs, max_bytes=65536)
    assert named in str(caught.value)
    assert isinstance(caught.value, TypeError)


def test_durable_json_arguments_pass_unchanged() -> None:
    value = {"id": "p1", "n": 3, "x": 0.5, "ok": True, "none": None, "list": [1, "a", {"b": []}]}
    assert encode("t", ("a", value), {"k": [1, 2]}, max_bytes=65536) == (
        ["a", value],
        {"k": [1, 2]},
    )


async def test_durable_hand_off_refuses_a_task_that_is_not_json_and_queues_nothing(
    app_runner: DurableRunner, redis_url: str, metric_reader: InMemoryMetricReader
) -> None:
    with pytest.raises(DurableArgumentError, match="argument 0"):
        await record_run.defer(b"raw", 1)  # type: ignore[arg-type]
    with pytest.raises(DurableArgumentError, match="max_payload_bytes"):
        await record_run.defer("x" * 70_000, 1)
    assert await queued(redis_url) == 0
    assert counter_value(metric_reader, names.DEFER_DURABLE_HANDOFFS, **{
        names.DEFER_DURABLE_OUTCOME: "invalid"
    }) == 2  # fmt: skip


async def test_every_durable_hand_off_is_counted_and_timed_by_the_next_collection(
    app_runner: DurableRunner,
    tracer_provider: TracerProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    """A hand-off's count and duration stay off the SDK's path (a total read at collection,
    a point queued for a batch), yet each collection sees every hand-off before it, far
    fewer than a batch, each duration in the trace of the call that deferred it."""
    with tracer_provider.get_tracer("test").start_as_current_span("POST /memories") as request:
        for count in range(3):
            await record_run.defer("timed", count)
        with pytest.raises(DurableArgumentError):
            await record_run.defer(b"raw", 1)  # type: ignore[arg-type]

    def durations() -> dict[str, Any]:
        return {
            point.attributes[names.DEFER_DURABLE_OUTCOME]: point
            for point in points(metric_reader, names.DEFER_DURABLE_HANDOFF_DURATION)
        }

    def handoffs(outcome: str) -> float:
        return counter_value(metric_reader, names.DEFER_DURABLE_HANDOFFS, **{
            names.DEFER_DURABLE_OUTCOME: outcome
        })  # fmt: skip

    seen = durations()
    assert {outcome: point.count for outcome, point in seen.items()} == {"queued": 3, "invalid": 1}
    assert (handoffs("queued"), handoffs("invalid")) == (3, 1)
    trace_id = request.get_span_context().trace_id
    assert {exemplar.trace_id for exemplar in seen["queued"].exemplars} == {trace_id}
    await record_run.defer("timed", 3)
    assert durations()["queued"].count == 4
    assert handoffs("queued") == 4


async def test_durable_hand_off_to_a_redis_that_is_down_is_refused_within_its_timeout(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """Nothing listens on the port: the hand-off fails fast with DurableUnavailable, a
    DeferRefused (install() answers it 503), counted with error.type unavailable."""
    settings = durable_settings(f"redis://127.0.0.1:{free_port()}/0", handoff_timeout="500ms")
    runner = deferred_runner(settings, meter_provider=meter_provider)
    await runner.start()
    set_current_runner(runner)
    started = time.monotonic()
    with pytest.raises(DurableUnavailable) as caught:
        await record_run.defer("down", 1)
    assert time.monotonic() - started < 3  # redis-py's own retries on a refused connection
    assert isinstance(caught.value, DeferRefused)
    assert caught.value.error_type == "unavailable"
    assert "defer.durable.on_unavailable" in str(caught.value)
    assert counter_value(metric_reader, names.DEFERRED_REFUSED, **{
        names.TASK_NAME: "tests.durable.record", names.ERROR_TYPE: "unavailable"
    }) == 1  # fmt: skip
    assert RUNS == []
    await runner.drain(1.0)


async def test_durable_hand_off_waits_no_longer_than_the_deadline(
    app_runner: DurableRunner, redis_server: RedisServer
) -> None:
    """Redis stalls (CLIENT PAUSE): the hand-off gives up when the deadline runs out, well
    before its own timeout (1 s)."""
    await record_run.defer("warm", 1)  # the connection is open: the pause holds the command
    redis_server.pause(1.5)
    started = time.monotonic()
    with toolkit.deadline(0.2), pytest.raises(DurableUnavailable):
        await record_run.defer("stalled", 1)
    assert time.monotonic() - started < 0.6


async def test_durable_on_unavailable_in_process_runs_the_task_here(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    settings = durable_settings(
        f"redis://127.0.0.1:{free_port()}/0", handoff_timeout="200ms", on_unavailable="in_process"
    )
    runner = deferred_runner(settings, meter_provider=meter_provider)
    await runner.start()
    set_current_runner(runner)
    await record_run.defer("fallback", 7)
    await eventually(lambda: RUNS == [("fallback", 7)], seconds=5)
    assert counter_value(metric_reader, names.DEFER_DURABLE_HANDOFFS, **{
        names.DEFER_DURABLE_OUTCOME: "in_process"
    }) == 1  # fmt: skip
    await runner.drain(1.0)


async def test_durable_mode_runs_a_function_no_worker_could_find_in_process(
    app_runner: DurableRunner, redis_url: str
) -> None:
    """toolkit.defer of a function that is not a registered @background: no worker could
    look it up by name, so it runs here, as without durable mode; nothing is queued."""
    await toolkit.defer(unregistered, "plain")
    await eventually(lambda: RUNS == [("plain", -1)], seconds=5)
    assert await queued(redis_url) == 0


async def test_durable_workers_in_app_run_the_queue_inside_the_app_process(
    redis_url: str, meter_provider: MeterProvider
) -> None:
    settings = durable_settings(redis_url, workers_in_app=True)
    runner = deferred_runner(settings, meter_provider=meter_provider)
    assert isinstance(runner, DurableRunner)
    assert runner.worker is not None
    await runner.start()
    set_current_runner(runner)
    for count in range(5):
        await record_run.defer("in-app", count)
    await eventually(lambda: sorted(RUNS) == [("in-app", n) for n in range(5)], seconds=10)
    await runner.drain(1.0)


async def test_durable_worker_gives_up_a_task_no_function_is_named_for(
    redis_url: str, worker: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A task named by no @background function in the worker (another app, an old version) is
    given up with an error naming it, and the worker goes on with the next task."""
    from toolkit.pipelines.deferred.durable._queue import make_job, open_queue

    settings = durable_settings(redis_url).defer.durable
    queue = open_queue(settings, redis_url, connect_timeout=1)
    ghost = {"name": "tests.durable.ghost", "id": "g1", "args": [], "kwargs": {}, "trace": {}}
    await queue.enqueue(make_job("g1", {**ghost, "enqueued_at": time.time()}, settings))
    await queue.disconnect()
    set_current_runner(None)
    runner = deferred_runner(durable_settings(redis_url))
    await runner.start()
    set_current_runner(runner)
    await record_run.defer("after", 1)
    await eventually(lambda: RUNS == [("after", 1)], seconds=10)
    assert "tests.durable.ghost" in caplog.text
    await runner.drain(1.0)


async def test_durable_worker_survives_redis_restarting_under_it(
    redis_server: RedisServer, redis_url: str, app_runner: DurableRunner, worker: None
) -> None:
    """Redis goes away and comes back: the worker keeps going and runs what is deferred after."""
    await record_run.defer("before", 1)
    await eventually(lambda: RUNS == [("before", 1)], seconds=10)
    redis_server.stop()
    with pytest.raises(DurableUnavailable):
        await record_run.defer("while-down", 1)
    await asyncio.sleep(0)  # the worker's slots see the failure on their own
    redis_server.start()

    async def deferred_again() -> bool:
        try:
            await record_run.defer("after", 2)
        except DurableUnavailable:
            return False
        return True

    deadline = time.monotonic() + 10
    while not await deferred_again():
        assert time.monotonic() < deadline, "the hand-off never worked again"
        await asyncio.sleep(0.1)
    await eventually(lambda: ("after", 2) in RUNS, seconds=20)


async def test_durable_hand_off_after_the_drain_is_refused_as_stopped(
    app_runner: DurableRunner, redis_url: str
) -> None:
    await app_runner.drain(1.0)
    with pytest.raises(DeferRefused) as caught:
        await record_run.defer("late", 1)
    assert caught.value.error_type == "stopped"
    assert await queued(redis_url) == 0


async def test_durable_hand_off_cancelled_while_redis_stalls_leaves_the_runner_working(
    app_runner: DurableRunner, worker: None, redis_server: RedisServer
) -> None:
    """The caller is cancelled mid-hand-off (Redis paused): the cancellation propagates, and
    once Redis answers again the next hand-off is queued and runs."""
    await record_run.defer("warm", 0)
    redis_server.pause(0.5)
    pending = asyncio.ensure_future(record_run.defer("cancelled", 1))
    await asyncio.sleep(0.05)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await asyncio.sleep(0.6)
    await record_run.defer("next", 2)
    await eventually(lambda: ("next", 2) in RUNS, seconds=10)


def started_worker(redis_url: str, meter_provider: MeterProvider, grace: str) -> DurableWorker:
    settings = durable_settings(redis_url, grace=grace)
    local = InProcessRunner(settings.defer, meter_provider=meter_provider)
    running = durable_worker(settings, local, meter_provider=meter_provider)
    running.start()
    return running


async def announced(url: str) -> bool:
    """The worker's upkeep loops run (its first worker info is written)."""
    async with aioredis.from_url(url) as client:
        return bool(await client.keys("saq:toolkit-deferred:worker_info:*"))


async def timed_stop(running: DurableWorker) -> float:
    started = time.monotonic()
    await running.stop()
    return time.monotonic() - started


async def test_idle_durable_worker_stops_at_once_whatever_its_grace(
    redis_url: str, meter_provider: MeterProvider
) -> None:
    """SAQ's stop waits for its upkeep loops, asleep up to 10 s; the worker cuts them (and its
    blocked dequeues), so the default 10 s grace is not waited out when nothing runs."""
    running = started_worker(redis_url, meter_provider, grace="10s")
    await eventually_returns(lambda: announced(redis_url), bool, seconds=10)
    assert await timed_stop(running) < 2.0


async def test_busy_durable_worker_finishes_its_task_then_stops(
    redis_url: str, app_runner: DurableRunner, meter_provider: MeterProvider
) -> None:
    """A 1 s task under a 5 s grace: it completes, once, and the stop follows it closely."""
    running = started_worker(redis_url, meter_provider, grace="5s")
    await slow_the_first_time.defer("busy", 1.0)
    await eventually(lambda: RUNS == [("busy", 0)], seconds=10)
    assert await timed_stop(running) < 3.0
    assert RUNS == [("busy", 0), ("busy", 1)]
    assert await queued(redis_url) == 0


async def test_durable_task_longer_than_the_grace_is_cut_and_runs_again_on_another_worker(
    redis_url: str, app_runner: DurableRunner, meter_provider: MeterProvider
) -> None:
    """A task still running when the grace (1 s) runs out is cancelled and queued again at
    once, not left to the sweep; the next worker runs it to the end."""
    first = started_worker(redis_url, meter_provider, grace="1s")
    await slow_the_first_time.defer("cut", 30.0)
    await eventually(lambda: RUNS == [("cut", 0)], seconds=10)
    # The grace, SAQ's 1 s for the cancelled task to end, the retry.
    assert await timed_stop(first) < 4.0
    assert RUNS == [("cut", 0)]
    assert await queued(redis_url) == 1
    second = started_worker(redis_url, meter_provider, grace="1s")
    await eventually(lambda: RUNS == [("cut", 0), ("cut", 0), ("cut", 1)], seconds=10)
    await second.stop()


async def test_a_sweep_tells_a_new_delivery_from_an_earlier_one_of_the_same_job(
    redis_url: str,
) -> None:
    """A sweep that saw a job's first delivery in the active list still queued (dequeued, not
    yet marked active) remembers that sighting; a stop can leave it there unswept. The job's
    next delivery, seen the same way a heartbeat later, is new, not lost: before, the earlier
    sighting made the sweep abort the delivery a worker was just starting."""
    from saq import Status

    from toolkit.pipelines.deferred.durable._queue import make_job, open_queue

    settings = durable_settings(redis_url).defer.durable
    queue = open_queue(settings, redis_url, connect_timeout=1)
    record = {"name": "tests.durable.record", "id": "d1", "args": [], "kwargs": {}, "trace": {}}
    job = await queue.enqueue(make_job("d1", {**record, "enqueued_at": time.time()}, settings))
    assert job is not None
    active = queue.namespace("active")

    async def dequeued_not_marked() -> None:  # what a worker's BLMOVE leaves for a moment
        await queue.redis.lmove(queue.namespace("queued"), active, "LEFT", "RIGHT")

    try:
        await dequeued_not_marked()
        assert await queue.sweep(lock=1) == []  # first seen: not lost yet
        job.attempts += 1  # the first delivery runs, is cut and queued again
        await job.update(status=Status.ACTIVE)
        await queue.retry(job, error="cancelled")
        await asyncio.sleep(1.1 + job.heartbeat)  # past the earlier sighting's allowance
        await dequeued_not_marked()
        assert await queue.sweep(lock=1) == []  # the second delivery, first seen now
        assert (await queue.job(job.key)).status is Status.QUEUED  # type: ignore[union-attr]
    finally:
        await queue.redis.flushdb()
        await queue.disconnect()
