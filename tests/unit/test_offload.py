"""Offloaded calls: a synchronous function run on the bounded thread pool, in the caller's
context, within the deadline; refusals, abandonment, cancellation races, the kill switch,
calls from threads without a loop (a sync route), and install()'s lifecycle.

Every block here is real (threads waiting on an event, sqlite3 writes) and every wait is for a
condition.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import toolkit
from tests.support.asgi import lifespan
from tests.support.otel import counter_value, points
from tests.support.waiting import eventually
from toolkit.flags import PIPELINES_OFFLOAD, FlagStore
from toolkit.pipelines.offloading._decorator import current_offload_pool, set_current_offload_pool
from toolkit.pipelines.offloading._pool import OffloadPool
from toolkit.settings import OffloadSettings
from toolkit.telemetry import names

pytestmark = pytest.mark.anyio


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """What the blocked functions of a test wait on; opened at the end, so no thread is left."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
async def pool(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> AsyncIterator[OffloadPool]:
    """The current pool: 2 threads, 1 call may wait."""
    made = OffloadPool(
        OffloadSettings(threads=2, max_waiting=1, shutdown_timeout=1.0),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    set_current_offload_pool(made)
    yield made
    await made.close(1.0)
    set_current_offload_pool(None)


def offload_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("toolkit.offload ")]


def durations(reader: InMemoryMetricReader, outcome: str) -> int:
    """Calls recorded in the duration histogram with ``outcome``."""
    return sum(
        point.count
        for point in points(reader, names.OFFLOAD_DURATION)
        if isinstance(point, HistogramDataPoint)
        and point.attributes.get(names.OFFLOAD_OUTCOME) == outcome
    )


def calls_gauge(reader: InMemoryMetricReader) -> dict[str, float]:
    return {
        str(point.attributes[names.OFFLOAD_STATE]): point.value
        for point in points(reader, names.OFFLOAD_CALLS)
    }


@toolkit.offload
def where_am_i(value: int) -> tuple[int, str, float | None]:
    return value, threading.current_thread().name, toolkit.time_left()


@toolkit.offload(name="db.wait")
def wait_for(gate: threading.Event, ran: list[str] | None = None, tag: str = "") -> str:
    if ran is not None:
        ran.append(tag)
    if not gate.wait(5):
        raise AssertionError("the gate was never opened")
    return tag


# --- running off the loop, in the caller's context ----------------------------------------------


async def test_a_call_runs_on_a_pool_thread_while_the_loop_keeps_turning(
    pool: OffloadPool, gate: threading.Event
) -> None:
    turns = 0

    async def turn() -> None:
        nonlocal turns
        while not gate.is_set():
            turns += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(turn())
    waiting = asyncio.create_task(wait_for(gate, tag="done"))
    await eventually(lambda: turns >= 5)  # the loop turns while the call blocks its thread
    assert not waiting.done()
    gate.set()
    assert await waiting == "done"
    await ticker
    value, thread, left = await where_am_i(7)
    assert (value, left) == (7, None)
    assert thread.startswith("toolkit-offload-")


async def test_the_deadline_and_the_callers_span_are_carried_into_the_thread(
    pool: OffloadPool, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    seen: dict[str, Any] = {}

    @toolkit.offload
    def inside() -> None:
        seen["left"] = toolkit.time_left()
        seen["span"] = trace.get_current_span().get_span_context().span_id
        with tracer_provider.get_tracer("test").start_as_current_span("query"):
            pass

    with (
        tracer_provider.get_tracer("test").start_as_current_span("route") as route,
        toolkit.deadline(3.0),
    ):
        await inside()
    assert 0 < seen["left"] <= 3.0
    (span,) = offload_spans(span_exporter)
    assert span.name == f"toolkit.offload {inside.__wrapped__.__qualname__}"
    assert span.kind is SpanKind.INTERNAL
    assert span.parent is not None
    assert span.parent.span_id == route.get_span_context().span_id
    assert seen["span"] == span.context.span_id  # the current span inside is the offload span
    (query,) = [s for s in span_exporter.get_finished_spans() if s.name == "query"]
    assert query.parent is not None
    assert query.parent.span_id == span.context.span_id
    attributes = span.attributes or {}
    assert attributes[names.OFFLOAD_OUTCOME] == names.OFFLOAD_OK
    assert attributes[names.OFFLOAD_WAIT_TIME_ATTRIBUTE] >= 0


async def test_an_error_reaches_the_caller_as_raised_and_is_recorded(
    pool: OffloadPool, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    @toolkit.offload(name="db.broken")
    def broken() -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        await broken()
    (span,) = offload_spans(span_exporter)
    assert span.name == "toolkit.offload db.broken"
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[names.ERROR_TYPE] == "OperationalError"
    assert durations(metric_reader, names.OFFLOAD_ERROR) == 1


async def test_a_timeout_the_function_raises_is_not_taken_for_the_deadline(
    pool: OffloadPool,
) -> None:
    def times_out() -> None:
        raise TimeoutError("the SDK's own timeout")

    with toolkit.deadline(5.0), pytest.raises(TimeoutError) as raised:
        await toolkit.run_sync(times_out)
    assert not isinstance(raised.value, toolkit.DeadlineExceeded)


async def test_run_sync_passes_arguments_and_names_a_partial_by_its_function(
    pool: OffloadPool, span_exporter: InMemorySpanExporter
) -> None:
    import functools

    def add(a: int, b: int, *, times: int = 1) -> int:
        return (a + b) * times

    assert await toolkit.run_sync(add, 1, 2, times=3) == 9
    assert await toolkit.run_sync(functools.partial(add, 1), 1) == 2
    assert {s.name for s in offload_spans(span_exporter)} == {
        "toolkit.offload test_run_sync_passes_arguments_and_names_a_partial_by_its_function"
        ".<locals>.add"
    }


# --- bounded: threads, the line of waiters, refusals ---------------------------------------------


async def test_calls_past_the_threads_wait_and_past_max_waiting_are_refused_at_once(
    pool: OffloadPool, gate: threading.Event, metric_reader: InMemoryMetricReader
) -> None:
    ran: list[str] = []
    running = [asyncio.create_task(wait_for(gate, ran, tag)) for tag in ("a", "b")]
    await eventually(lambda: len(ran) == 2)
    queued = asyncio.create_task(wait_for(gate, ran, "c"))
    await eventually(lambda: pool.waiting == 1)
    assert calls_gauge(metric_reader) == {"running": 2, "waiting": 1}
    with pytest.raises(toolkit.PoolExhaustedError, match=r"offload\.max_waiting"):
        await wait_for(gate, ran, "d")
    assert ran == ["a", "b"]  # neither the queued one nor the refused one ran yet
    gate.set()
    assert await asyncio.gather(*running, queued) == ["a", "b", "c"]
    assert ran == ["a", "b", "c"]
    assert (
        counter_value(metric_reader, names.OFFLOAD_REFUSALS, toolkit__offload__reason="queue_full")
        == 1
    )
    assert calls_gauge(metric_reader) == {"running": 0, "waiting": 0}
    waits = points(metric_reader, names.OFFLOAD_WAIT_TIME)
    assert sum(p.count for p in waits) == 3
    assert {p.attributes[names.OFFLOAD_NAME] for p in waits} == {"db.wait"}


async def test_a_call_still_waiting_at_the_deadline_is_refused_without_running(
    pool: OffloadPool, gate: threading.Event, metric_reader: InMemoryMetricReader,
    span_exporter: InMemorySpanExporter,
) -> None:  # fmt: skip
    ran: list[str] = []
    busy = [asyncio.create_task(wait_for(gate, ran, tag)) for tag in ("a", "b")]
    await eventually(lambda: len(ran) == 2)
    started = time.monotonic()
    with toolkit.deadline(0.1), pytest.raises(toolkit.DeadlineExceeded, match="waited"):
        await wait_for(gate, ran, "late")
    assert time.monotonic() - started < 1.0
    with toolkit.deadline(0.0), pytest.raises(toolkit.DeadlineExceeded, match="passed before"):
        await wait_for(gate, ran, "after")  # already past: refused even before waiting
    gate.set()
    await asyncio.gather(*busy)
    assert ran == ["a", "b"]
    assert pool.waiting == 0
    assert await wait_for(gate, ran, "next") == "next"  # no permit was lost
    assert (
        counter_value(metric_reader, names.OFFLOAD_REFUSALS, toolkit__offload__reason="deadline")
        == 2
    )
    refused = [
        s
        for s in offload_spans(span_exporter)
        if (s.attributes or {})[names.OFFLOAD_OUTCOME] == "refused"
    ]
    assert {(s.attributes or {})[names.OFFLOAD_REASON] for s in refused} == {"deadline"}
    assert len(refused) == 2


async def test_at_the_deadline_a_running_call_is_left_to_end_and_its_end_is_counted(
    pool: OffloadPool, gate: threading.Event, metric_reader: InMemoryMetricReader,
    span_exporter: InMemorySpanExporter,
) -> None:  # fmt: skip
    ran: list[str] = []
    started = time.monotonic()
    with toolkit.deadline(0.1), pytest.raises(toolkit.DeadlineExceeded, match="goes on"):
        await wait_for(gate, ran, "stuck")
    assert time.monotonic() - started < 1.0  # answered at the deadline, not at the end
    assert ran == ["stuck"]
    assert pool.running == 1  # its thread is still counted: the bound holds
    assert durations(metric_reader, names.OFFLOAD_ABANDONED) == 0
    gate.set()
    await eventually(lambda: durations(metric_reader, names.OFFLOAD_ABANDONED) == 1)
    assert pool.running == 0
    (span,) = offload_spans(span_exporter)
    assert (span.attributes or {})[names.OFFLOAD_OUTCOME] == names.OFFLOAD_ABANDONED


async def test_a_call_cancelled_while_waiting_never_runs_and_one_cancelled_running_is_abandoned(
    pool: OffloadPool, gate: threading.Event, metric_reader: InMemoryMetricReader,
    span_exporter: InMemorySpanExporter,
) -> None:  # fmt: skip
    ran: list[str] = []
    busy = [asyncio.create_task(wait_for(gate, ran, tag)) for tag in ("a", "b")]
    await eventually(lambda: len(ran) == 2)
    queued = asyncio.create_task(wait_for(gate, ran, "queued"))
    await eventually(lambda: pool.waiting == 1)
    queued.cancel()
    busy[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    with pytest.raises(asyncio.CancelledError):
        await busy[0]
    assert pool.waiting == 0
    gate.set()
    assert await busy[1] == "b"
    await eventually(lambda: pool.running == 0)
    assert ran == ["a", "b"]
    assert durations(metric_reader, names.OFFLOAD_ABANDONED) == 1
    outcomes = sorted(
        (s.attributes or {})[names.OFFLOAD_OUTCOME] for s in offload_spans(span_exporter)
    )
    assert outcomes == ["abandoned", "cancelled", "ok"]


async def test_cancellations_and_deadlines_racing_the_hand_off_lose_no_thread(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    """Random deadlines and cancellations against a pool of 2 threads and 5 waiters: every
    permit comes back, every started call ends, and the pool serves on afterwards."""
    pool = OffloadPool(
        OffloadSettings(threads=2, max_waiting=5),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    set_current_offload_pool(pool)
    chance = random.Random(11)
    started: list[int] = []
    ended: list[int] = []

    def work(number: int, seconds: float) -> int:
        started.append(number)
        time.sleep(seconds)
        ended.append(number)
        return number

    async def one(number: int) -> None:
        with toolkit.deadline(chance.choice([None, 0.0, 0.005, 0.02, 0.05])):
            await toolkit.run_sync(work, number, chance.choice([0.0, 0.001, 0.01, 0.03]))

    for _ in range(8):
        tasks = [asyncio.create_task(one(n)) for n in range(12)]
        await asyncio.sleep(chance.choice([0.0, 0.005, 0.02]))
        for task in chance.sample(tasks, 4):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await eventually(lambda: pool.running == 0 and pool.waiting == 0)
        assert sorted(started) == sorted(ended)
        started.clear()
        ended.clear()
    assert await toolkit.run_sync(work, 99, 0.0) == 99
    await pool.close(1.0)


async def test_calls_abandoned_at_their_deadline_never_make_more_threads_than_the_bound(
    pool: OffloadPool, gate: threading.Event
) -> None:
    """What anyio's abandon_on_cancel does not hold: a stuck call keeps its thread counted."""
    for _ in range(6):
        with toolkit.deadline(0.02), pytest.raises(toolkit.DeadlineExceeded):
            await wait_for(gate)
    assert pool.running == 2  # the two that got a thread; the rest were refused waiting
    assert pool._threads.started <= 2
    gate.set()
    await eventually(lambda: pool.running == 0)


async def test_closing_while_calls_run_and_wait_ends_every_one_and_hangs_on_none(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    pool = OffloadPool(
        OffloadSettings(threads=2, max_waiting=10),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    set_current_offload_pool(pool)
    chance = random.Random(5)
    calls = [
        asyncio.create_task(toolkit.run_sync(time.sleep, chance.choice([0.0, 0.01, 0.05])))
        for _ in range(30)
    ]
    await asyncio.sleep(0.02)
    await pool.close(2.0)
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert {type(o) for o in outcomes} <= {
        type(None),
        toolkit.PoolClosedError,
        toolkit.PoolExhaustedError,
    }
    assert toolkit.PoolClosedError in {type(o) for o in outcomes}  # the line was refused
    assert (pool.running, pool.waiting) == (0, 0)
    await eventually(lambda: pool._threads.started == 0)  # every thread ended once idle


# --- the kill switch; calls from threads without a loop ------------------------------------------


async def test_with_the_flag_off_the_function_is_called_inline_with_no_span_or_metric(
    pool: OffloadPool, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    store = FlagStore()

    @toolkit.offload(flags=store)
    def thread_name() -> str:
        return threading.current_thread().name

    assert (await thread_name()).startswith("toolkit-offload-")
    await store.set(PIPELINES_OFFLOAD, "off", by="test")
    assert await thread_name() == threading.current_thread().name  # the loop's thread
    with toolkit.flags.override({PIPELINES_OFFLOAD: "off"}):
        assert await toolkit.run_sync(threading.current_thread) is threading.current_thread()
    assert len(offload_spans(span_exporter)) == 1
    assert durations(metric_reader, names.OFFLOAD_OK) == 1


def test_called_from_a_thread_without_a_loop_it_runs_there_and_returns_the_value() -> None:
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(where_am_i(3)), name="plain-worker")
    thread.start()
    thread.join(5)
    assert seen == [(3, "plain-worker", None)]


def sqlite_notes(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.execute("create table if not exists notes (text text)")
    connection.commit()
    return connection


async def test_a_sync_route_calling_an_offloaded_function_runs_it_on_its_own_worker_thread(
    tmp_path: Path,
) -> None:
    """FastAPI runs a ``def`` route on anyio's threads, where no loop runs: the offloaded
    function is called inline there, takes no second thread, and answers."""
    connection = sqlite_notes(tmp_path / "notes.db")

    @toolkit.offload
    def save(text: str) -> tuple[int, str]:
        with connection:
            cursor = connection.execute("insert into notes values (?)", (text,))
        return cursor.lastrowid or 0, threading.current_thread().name

    app = FastAPI()

    @app.post("/notes")
    def add_note(text: str) -> dict[str, Any]:
        row, thread = save(text)  # type: ignore[misc]  # inline: a value, not an awaitable
        return {"row": row, "thread": thread, "route": threading.current_thread().name}

    @app.post("/async-notes")
    async def add_note_async(text: str) -> dict[str, Any]:
        row, thread = await save(text)
        return {"row": row, "thread": thread}

    toolkit.install(app, toolkit.ToolkitSettings())
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            sync_answer = (await client.post("/notes", params={"text": "hi"})).json()
            async_answer = (await client.post("/async-notes", params={"text": "ho"})).json()
    assert sync_answer["row"] == 1
    assert sync_answer["thread"] == sync_answer["route"]
    assert not sync_answer["thread"].startswith("toolkit-offload-")
    assert async_answer["row"] == 2
    assert async_answer["thread"].startswith("toolkit-offload-")
    assert [r[0] for r in connection.execute("select text from notes")] == ["hi", "ho"]


# --- install(): its pool, 503 on a full line, shutdown that never hangs -------------------------


async def test_install_makes_the_pool_from_settings_and_answers_a_full_line_503(
    gate: threading.Event,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    app = FastAPI()

    @app.get("/wait")
    async def wait() -> str:
        return await wait_for(gate)

    installed = toolkit.install(
        app,
        toolkit.ToolkitSettings(offload={"threads": 1, "max_waiting": 0}),
        tracer_provider=tracer_provider,
    )
    assert current_offload_pool() is installed._offload
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.create_task(client.get("/wait"))
            await eventually(lambda: current_offload_pool().running == 1)
            refused = await client.get("/wait")
            gate.set()
            assert (await first).status_code == 200
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert "retry-after" in refused.headers
    server = [s for s in span_exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    offloaded = offload_spans(span_exporter)
    assert {s.parent.span_id for s in offloaded if s.parent} <= {s.context.span_id for s in server}
    assert installed._offload is not None
    assert installed._offload.closed
    assert current_offload_pool() is not installed._offload  # a fresh one after shutdown


async def test_shutdown_refuses_the_waiting_and_does_not_hang_on_a_stuck_call(
    gate: threading.Event,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "toolkit.pipelines")
    app = FastAPI()
    installed = toolkit.install(
        app,
        toolkit.ToolkitSettings(offload={"threads": 1, "shutdown_timeout": "100ms"}),
        tracer_provider=tracer_provider,
    )
    async with lifespan(app):
        stuck = asyncio.create_task(wait_for(gate, tag="stuck"))
        await eventually(lambda: current_offload_pool().running == 1)
        queued = asyncio.create_task(wait_for(gate, tag="queued"))
        await eventually(lambda: current_offload_pool().waiting == 1)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 2.0  # the 100 ms bound, not the stuck call
    with pytest.raises(toolkit.PoolClosedError):
        await queued
    assert installed._offload is not None
    with pytest.raises(toolkit.PoolClosedError):
        await installed._offload.call("late", time.time, (), {})
    assert any(
        "still running" in r.getMessage() and "db.wait" in r.getMessage() for r in caplog.records
    )
    abandoned = [
        s
        for s in offload_spans(span_exporter)
        if (s.attributes or {})[names.OFFLOAD_OUTCOME] == names.OFFLOAD_ABANDONED
    ]
    assert len(abandoned) == 1  # ended at shutdown, so it is exported
    gate.set()
    assert await stuck == "stuck"  # its caller still had it: the thread ended on its own


# --- what is refused at decoration; telemetry that breaks ----------------------------------------


def test_async_functions_generators_and_empty_names_are_refused_at_decoration() -> None:
    async def coroutine() -> None: ...

    def generator() -> Iterator[int]:
        yield 1

    with pytest.raises(toolkit.ConfigurationError, match="async function runs on the loop"):
        toolkit.offload(coroutine)  # type: ignore[arg-type]
    with pytest.raises(toolkit.ConfigurationError, match="generator"):
        toolkit.offload(generator)
    with pytest.raises(toolkit.ConfigurationError, match="name="):
        toolkit.offload(name=" ")
    assert where_am_i.name == "where_am_i"
    assert where_am_i.__wrapped__(1)[0] == 1
    assert repr(wait_for).startswith("offload(<function wait_for")


async def test_a_broken_span_processor_does_not_fail_the_call(
    span_exporter: InMemorySpanExporter, meter_provider: MeterProvider
) -> None:
    class Broken(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            raise RuntimeError("exporter down")

    provider = TracerProvider()
    provider.add_span_processor(Broken())
    pool = OffloadPool(tracer_provider=provider, meter_provider=meter_provider)
    set_current_offload_pool(pool)
    assert (await where_am_i(5))[0] == 5
    full = OffloadPool(OffloadSettings(threads=1, max_waiting=0), tracer_provider=provider)
    set_current_offload_pool(full)
    gate = threading.Event()
    first = asyncio.create_task(toolkit.run_sync(gate.wait, 5))
    await eventually(lambda: full.running == 1)
    with pytest.raises(toolkit.PoolExhaustedError):  # its refusal, recorded on a broken span
        await toolkit.run_sync(gate.wait, 5)
    gate.set()
    assert await first is True
    await full.close(1.0)
    await pool.close(1.0)


def test_the_python_snippets_of_the_blocking_calls_section_run() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "pipelines.md").read_text()
    section = page.split("\n## Blocking calls\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "docs/pipelines.md", "exec"), {"__name__": "snippet"})
