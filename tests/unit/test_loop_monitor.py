"""The loop monitor: lag on a free and a blocked loop, blocked-loop spans dated back to the
block with the blocking line, what explains a block, rate limits, kill switches, lifecycle.

Every block here is real (a sleep, a busy loop, a garbage collection, the process stopped by
a signal, a slow sqlite3 write) and every wait is for a condition.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import toolkit
from tests.support.asgi import lifespan
from tests.support.otel import counter_value, points
from tests.support.waiting import eventually
from toolkit.flags import TRACING, TRACING_LOOP, FlagStore
from toolkit.pipelines.offloading._decorator import current_offload_pool
from toolkit.telemetry import _loop_watchdog, names
from toolkit.telemetry._loop_alarm import PolledAlarm, TimerAlarm
from toolkit.telemetry._loop_causes import cause_of
from toolkit.telemetry._loop_report import OFFLOAD_HINT, RECENT_BLOCKS, PerMinute, Reporter
from toolkit.telemetry.counts import Counts
from toolkit.telemetry.loop import BlockedLoop, StackFrame

pytestmark = pytest.mark.anyio

HERE = str(Path(__file__).resolve())
INTERVAL = 0.02
"""The probe interval of these tests (the default): a block is dated to within it."""
SLACK = 0.05
"""Scheduling noise on a shared machine, on top of the interval."""


@pytest.fixture
def flags() -> FlagStore:
    return FlagStore()


@pytest.fixture(params=["timer", "polled"])
def alarm(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The watchdog's alarm: the kernel timer where Linux has one, and the polled one every
    other platform gets (here by choice)."""
    if request.param == "polled":
        monkeypatch.setattr(_loop_watchdog, "new_alarm", PolledAlarm)
    elif sys.platform != "linux":
        pytest.skip("timerfd is Linux's (CI runs on Linux, where this never skips)")
    return str(request.param)


@pytest.fixture
async def monitor(
    alarm: str, flags: FlagStore, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> AsyncIterator[toolkit.LoopMonitor]:
    """A running monitor with a 50 ms threshold on the test's loop, with either alarm."""
    async with toolkit.LoopMonitor(
        blocked_threshold="50ms",
        probe_interval=INTERVAL,
        flags=flags,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    ) as running:
        kind = TimerAlarm if alarm == "timer" else PolledAlarm
        assert running._watchdog is not None
        assert isinstance(running._watchdog._alarm, kind)
        yield running


def line_after(function: Callable[..., Any], marker: str) -> int:
    """The line of ``function``'s source that holds ``marker``."""
    lines, first = inspect.getsourcelines(function)
    return first + next(i for i, text in enumerate(lines) if marker in text)


def blocked_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == names.EVENT_LOOP_BLOCKED_SPAN]


async def run_blocking(block: Callable[[], object], name: str = "blocker") -> tuple[float, float]:
    """Run ``block`` in a task named ``name``; (Unix time before, after)."""

    async def blocking() -> None:
        block()

    started = time.time()
    await asyncio.create_task(blocking(), name=name)
    return started, time.time()


def busy(seconds: float) -> None:
    """Python code on the CPU for ``seconds``."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


async def busy_loop(seconds: float, tasks: int = 50) -> None:
    """The loop at full CPU for ``seconds``, its tasks doing a little work each turn and
    yielding: a loop that turns all the time, never blocked."""
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            sum(range(200))
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(tasks)))


def watchdog_cpu(monitor: toolkit.LoopMonitor) -> float:
    """The CPU seconds the monitor's watchdog thread has used."""
    assert monitor._watchdog is not None
    ident = monitor._watchdog._thread.ident
    assert ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


# --- lag and the running-task count ------------------------------------------------------------


async def test_lag_is_small_on_a_free_loop_and_as_long_as_the_block_on_a_blocked_one(
    monitor: toolkit.LoopMonitor, metric_reader: InMemoryMetricReader
) -> None:
    def lag() -> Any:
        (point,) = points(metric_reader, names.EVENT_LOOP_LAG)
        return point

    await eventually(lambda: bool(points(metric_reader, names.EVENT_LOOP_LAG)))
    await eventually(lambda: lag().count >= 10)
    free = lag()
    assert free.sum / free.count < 0.01  # a free loop runs the probe about on time
    await run_blocking(lambda: time.sleep(0.3))
    await eventually(lambda: lag().max >= 0.3 - INTERVAL)
    assert lag().max < 0.3 + SLACK
    assert list(lag().explicit_bounds) == list(names.EVENT_LOOP_LAG_BUCKETS)


async def test_the_lag_summary_covers_the_recent_window_and_lets_an_old_block_go(
    flags: FlagStore, meter_provider: MeterProvider
) -> None:
    """Every probe lands in the sliding window: a block is its longest until the window has
    slid past it; with the kill switch off, no probe is counted."""
    async with toolkit.LoopMonitor(
        lag_window="1s", probe_interval=INTERVAL, flags=flags, meter_provider=meter_provider
    ) as monitor:
        assert monitor.lag_window == 1.0
        await eventually(lambda: monitor.lag_summary().count >= 10)
        free = monitor.lag_summary()
        assert free.p50 is not None
        assert free.p50 < 0.01
        await run_blocking(lambda: time.sleep(0.3))
        await eventually(lambda: (monitor.lag_summary().max or 0) >= 0.3 - INTERVAL)
        blocked = monitor.lag_summary()
        assert blocked.p99 is not None
        assert blocked.max is not None
        assert blocked.max < 0.3 + SLACK
        assert blocked.count <= 1 / INTERVAL + 1  # at most a window of probes
        await eventually(lambda: (monitor.lag_summary().max or 1) < 0.1, seconds=3)
        await flags.set(TRACING_LOOP, "off", by="test")
        await eventually(lambda: not monitor.recording, seconds=3)
        await eventually(lambda: monitor.lag_summary().count == 0, seconds=3)


def test_the_lag_window_is_bounded() -> None:
    for bad in ("0s", "2h", "soon", -1):
        with pytest.raises(toolkit.ConfigurationError, match="lag_window="):
            toolkit.LoopMonitor(lag_window=bad)
    assert toolkit.LoopMonitor(lag_window="10m").lag_window == 600


async def test_the_task_gauge_counts_the_loops_tasks(
    monitor: toolkit.LoopMonitor, metric_reader: InMemoryMetricReader
) -> None:
    release = asyncio.Event()
    waiting = [asyncio.create_task(release.wait()) for _ in range(5)]
    before = len(asyncio.all_tasks())

    def gauge() -> float:
        found = points(metric_reader, names.EVENT_LOOP_TASKS)
        return found[0].value if found else -1

    await eventually(lambda: gauge() == before)  # counted about once a second
    release.set()
    await asyncio.gather(*waiting)
    await eventually(lambda: gauge() == before - 5)


# --- the blocked-loop report -------------------------------------------------------------------


async def test_a_blocked_loop_is_a_span_dated_back_to_the_block_naming_the_blocking_line(
    monitor: toolkit.LoopMonitor,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "toolkit.telemetry.loop")

    def block() -> None:
        time.sleep(0.3)  # the blocking line

    before, after = await run_blocking(block)
    await eventually(lambda: bool(blocked_spans(span_exporter)))
    (span,) = blocked_spans(span_exporter)
    assert span.start_time is not None
    assert span.end_time is not None
    start, end = span.start_time / 1e9, span.end_time / 1e9
    # The loop stopped turning when the sleep began, or at the latest when the probe was
    # due after that; it turned again when the sleep ended.
    assert before <= start <= before + INTERVAL + SLACK
    assert after - SLACK <= end <= after + SLACK
    line = line_after(block, "the blocking line")
    attributes = span.attributes or {}
    assert attributes[names.CODE_FILE_PATH] == HERE
    assert attributes[names.CODE_LINE_NUMBER] == line
    assert attributes[names.CODE_FUNCTION_NAME] == "block"
    assert f'"{HERE}", line {line}, in block' in str(attributes[names.CODE_STACKTRACE])
    assert attributes[names.EVENT_LOOP_TASK] == "blocker (run_blocking.<locals>.blocking)"
    duration = attributes[names.EVENT_LOOP_BLOCKED_DURATION]
    assert isinstance(duration, float)
    if attributes[names.EVENT_LOOP_BLOCKED_CAUSE] == names.EVENT_LOOP_DESCHEDULED:
        # A crowded machine kept the thread off the CPU after its sleep for half the block:
        # then that is the truer account, and the figure beside it must say so.
        descheduled = attributes[names.EVENT_LOOP_BLOCKED_DESCHEDULED_TIME]
        assert isinstance(descheduled, float)
        assert descheduled >= duration / 2
    else:
        assert attributes[names.EVENT_LOOP_BLOCKED_CAUSE] == names.EVENT_LOOP_WAITING
    assert duration == pytest.approx(end - start, abs=1e-6)
    (record,) = [r for r in caplog.records if r.name == "toolkit.telemetry.loop"]
    assert record.levelno == logging.WARNING
    assert f"at {HERE}:{line} in block" in record.getMessage()
    assert "task blocker" in record.getMessage()
    (report,) = monitor.recent_blocks()
    assert report.blocking is not None
    assert report.blocking.line == line
    assert report.blocking.source == "time.sleep(0.3)  # the blocking line"


async def test_the_stack_is_the_applications_frames_bounded_by_the_depth(
    flags: FlagStore, tracer_provider: TracerProvider
) -> None:
    def inner() -> None:
        time.sleep(0.2)

    def middle() -> None:
        inner()

    def outer() -> None:
        middle()

    async with toolkit.LoopMonitor(
        blocked_threshold="50ms", stack_depth=2, flags=flags, tracer_provider=tracer_provider
    ) as monitor:
        await run_blocking(outer)
        await eventually(lambda: monitor.blocked == 1)
    (report,) = monitor.recent_blocks()
    assert [frame.function for frame in report.stack] == ["middle", "inner"]
    assert all(frame.file == HERE for frame in report.stack)  # no asyncio, no toolkit frame


@pytest.mark.parametrize(
    ("block", "cause"),
    [
        (lambda: time.sleep(0.25), names.EVENT_LOOP_WAITING),
        (lambda: busy(0.25), names.EVENT_LOOP_CODE),
    ],
    ids=["sleep", "busy"],
)
async def test_a_block_on_the_loop_thread_is_waiting_off_cpu_or_code_on_it(
    monitor: toolkit.LoopMonitor, block: Callable[[], None], cause: str
) -> None:
    await run_blocking(block)
    await eventually(lambda: monitor.blocked == 1)
    (report,) = monitor.recent_blocks()
    assert report.cause == cause
    could_run = report.duration - report.descheduled_time  # a crowded machine shares its CPUs
    if cause == names.EVENT_LOOP_CODE:
        assert report.cpu_time >= 0.5 * could_run
    else:
        assert report.cpu_time < 0.5 * could_run


async def test_on_a_busy_loop_the_watchdog_sleeps_and_a_block_there_is_still_caught(
    monitor: toolkit.LoopMonitor, alarm: str
) -> None:
    """The probe moves the watchdog's deadline on every run: the thread does not wake while
    the loop turns, however busy (each wake-up would have to win the GIL from it)."""
    await eventually(lambda: monitor.recording)
    before = watchdog_cpu(monitor) if alarm == "timer" else 0.0
    await busy_loop(1.0)
    if alarm == "timer":  # the polled one wakes about once a threshold: milliseconds a second
        assert watchdog_cpu(monitor) - before < 0.002

    def block() -> None:
        time.sleep(0.2)  # the block on a busy loop

    async def blocking_soon() -> None:
        await asyncio.sleep(0.2)
        block()

    line = line_after(block, "the block on a busy loop")

    def caught() -> list[BlockedLoop]:  # not others: a shared machine may stall the loop too
        return [b for b in monitor.recent_blocks() if b.blocking and b.blocking.line == line]

    await asyncio.gather(busy_loop(0.6), blocking_soon())
    await eventually(lambda: bool(caught()))
    (report,) = caught()
    assert report.cause == names.EVENT_LOOP_WAITING


async def test_a_forced_collection_of_a_big_heap_is_reported_as_a_gc_pause(
    flags: FlagStore,
) -> None:
    gc.disable()  # no automatic collection while the heap is built
    try:
        heap = [[i] for i in range(1_500_000)]
    finally:
        gc.enable()
    async with toolkit.LoopMonitor(blocked_threshold="20ms", flags=flags) as monitor:
        await eventually(lambda: monitor.lag < 0.01)

        def collect() -> None:
            gc.collect()  # the collection

        await run_blocking(collect)
        line = line_after(collect, "the collection")

        def collected() -> list[BlockedLoop]:
            return [b for b in monitor.recent_blocks() if b.blocking and b.blocking.line == line]

        await eventually(lambda: bool(collected()))
    (report,) = collected()
    del heap
    assert report.cause == names.EVENT_LOOP_GC
    assert report.gc_time >= 0.5 * report.duration


async def test_a_process_that_was_not_scheduled_is_reported_descheduled(
    monitor: toolkit.LoopMonitor,
) -> None:
    """The process is stopped by a signal for 300 ms, then continued: no thread ran."""
    pid = os.getpid()
    signals = f"sleep 0.05; kill -STOP {pid}; sleep 0.3; kill -CONT {pid}"
    sender = await asyncio.create_subprocess_exec("sh", "-c", signals)
    await eventually(lambda: monitor.blocked == 1, seconds=5)
    assert await sender.wait() == 0
    (report,) = monitor.recent_blocks()
    assert report.duration >= 0.2
    assert report.cause == names.EVENT_LOOP_DESCHEDULED
    assert report.descheduled_time >= 0.5 * report.duration


def test_a_thread_not_scheduled_for_the_whole_block_ran_no_code() -> None:
    """Stopped throughout, the loop thread could run for none of the block: not code,
    however little CPU it used; a computation that got a fifth of a crowded CPU is code."""
    stopped = {"duration": 0.3, "gc_time": 0.0, "descheduled": 0.3}
    assert cause_of(cpu=0.0, **stopped) == names.EVENT_LOOP_DESCHEDULED
    assert cause_of(cpu=0.001, **stopped) == names.EVENT_LOOP_DESCHEDULED
    assert cause_of(cpu=0.06, **stopped) == names.EVENT_LOOP_CODE
    assert cause_of(duration=0.3, gc_time=0.0, cpu=0.0, descheduled=0.0) == (
        names.EVENT_LOOP_WAITING
    )


# --- bounds ------------------------------------------------------------------------------------


async def test_spans_and_warnings_are_bounded_per_minute_but_every_block_is_counted(
    flags: FlagStore,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "toolkit.telemetry.loop")
    async with toolkit.LoopMonitor(
        blocked_threshold="30ms",
        spans_per_minute=2,
        logs_per_minute=1,
        flags=flags,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    ) as monitor:
        for blocks in range(1, RECENT_BLOCKS + 3):
            await run_blocking(lambda: time.sleep(0.08))
            await eventually(lambda: monitor.blocked == blocks)  # noqa: B023
    assert len(blocked_spans(span_exporter)) == 2
    assert len([r for r in caplog.records if r.name == "toolkit.telemetry.loop"]) == 1
    assert counter_value(metric_reader, names.EVENT_LOOP_BLOCKED) == RECENT_BLOCKS + 2
    assert len(monitor.recent_blocks()) == RECENT_BLOCKS  # the last ones only


def test_the_per_minute_bound_refills_and_counts_what_it_refused() -> None:
    now = [0.0]
    bound = PerMinute(2, clock=lambda: now[0])
    assert [bound.allow() for _ in range(3)] == [True, True, False]
    assert bound.suppressed == 1
    now[0] += 30  # one more a minute / 2
    assert bound.allow()
    assert not PerMinute(0).allow()


# --- switches and lifecycle --------------------------------------------------------------------


@pytest.mark.parametrize("switch", [TRACING_LOOP, TRACING])
async def test_either_kill_switch_stops_recording_at_run_time(
    monitor: toolkit.LoopMonitor,
    flags: FlagStore,
    span_exporter: InMemorySpanExporter,
    switch: str,
) -> None:
    await eventually(lambda: monitor.recording)
    await flags.set(switch, "off", by="test")
    await eventually(lambda: not monitor.recording, seconds=3)

    def unseen() -> None:
        time.sleep(0.15)  # not recorded

    await run_blocking(unseen)
    await flags.set(switch, "on", by="test")
    await eventually(lambda: monitor.recording, seconds=3)

    def seen() -> None:
        time.sleep(0.15)  # recorded

    await run_blocking(seen)
    await eventually(lambda: monitor.blocked >= 1)
    assert monitor.blocked == 1
    (span,) = blocked_spans(span_exporter)
    assert (span.attributes or {})[names.CODE_FUNCTION_NAME] == "seen"


def watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "toolkit-loop-watchdog"]


def open_files() -> set[str]:
    return set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()


async def test_stop_ends_the_watchdog_thread_the_probe_and_the_gc_timer(
    flags: FlagStore, alarm: str
) -> None:
    callbacks = list(gc.callbacks)
    files = open_files()
    monitor = toolkit.LoopMonitor(flags=flags)
    monitor.start()
    monitor.start()  # again: nothing more
    assert monitor.running
    assert len(watchdogs()) == 1
    assert len(gc.callbacks) == len(callbacks) + 1
    monitor.stop()
    assert not monitor.running
    assert watchdogs() == []  # exited before stop() returned
    assert gc.callbacks == callbacks
    assert open_files() == files  # the timer's file closed
    lag = monitor.lag
    probes = [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert all("_tick" not in repr(h) for h in probes)
    monitor.stop()  # again: nothing
    assert monitor.lag == lag


async def test_install_starts_the_monitor_with_the_app_and_stops_it_with_the_app() -> None:
    app = FastAPI()
    installed = toolkit.install(app, toolkit.ToolkitSettings())
    assert installed.loop_monitor is not None
    assert installed.loop_monitor.settings.blocked_threshold == 0.1  # the default
    async with lifespan(app):
        assert installed.loop_monitor.running
        assert len(watchdogs()) == 1
    assert not installed.loop_monitor.running
    assert watchdogs() == []
    off = toolkit.install(FastAPI(), toolkit.ToolkitSettings(event_loop={"enabled": False}))
    assert off.loop_monitor is None


def test_start_needs_the_running_loop() -> None:
    with pytest.raises(toolkit.ConfigurationError, match="needs a running event loop"):
        toolkit.LoopMonitor().start()


def test_arguments_are_checked_against_the_settings_bounds() -> None:
    with pytest.raises(toolkit.ConfigurationError, match="blocked_threshold="):
        toolkit.LoopMonitor(blocked_threshold="1ms")
    with pytest.raises(toolkit.ConfigurationError, match="stack_depth="):
        toolkit.LoopMonitor(stack_depth=0)
    settings = toolkit.settings.EventLoopSettings(spans_per_minute=3)
    monitor = toolkit.LoopMonitor(settings=settings, logs_per_minute=0)
    assert (monitor.settings.spans_per_minute, monitor.settings.logs_per_minute) == (3, 0)


# --- what a user sees: a synchronous sqlite3 write in an async route ---------------------------


def sqlite_app(path: Path) -> FastAPI:
    app = FastAPI()
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.create_function("pause", 1, time.sleep)  # a slow write, as on a busy disk
    connection.execute("create table notes (text text)")

    @app.post("/notes")
    async def add_note() -> dict[str, str]:
        with connection:
            connection.execute("insert into notes values (pause(0.25))")  # sync in async
        return {"status": "saved"}

    return app


async def test_a_sync_sqlite_write_in_an_async_route_is_reported_at_its_line(
    tmp_path: Path,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "toolkit.telemetry.loop")
    app = sqlite_app(tmp_path / "notes.db")
    installed = toolkit.install(app, toolkit.ToolkitSettings(), tracer_provider=tracer_provider)
    line = line_after(sqlite_app, "sync in async")
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/notes")).status_code == 200
        assert installed.loop_monitor is not None
        await eventually(lambda: bool(blocked_spans(span_exporter)))
    (span,) = blocked_spans(span_exporter)
    attributes = span.attributes or {}
    assert (attributes[names.CODE_FILE_PATH], attributes[names.CODE_LINE_NUMBER]) == (HERE, line)
    assert attributes[names.CODE_FUNCTION_NAME] == "add_note"
    assert attributes[names.EVENT_LOOP_BLOCKED_HINT] == OFFLOAD_HINT
    messages = [r.getMessage() for r in caplog.records if r.name == "toolkit.telemetry.loop"]
    call = 'connection.execute("insert into notes values (pause(0.25))")'
    (message,) = [m for m in messages if f"{HERE}:{line} in add_note: {call}" in m]
    assert f"fix: {OFFLOAD_HINT}" in message
    assert "@toolkit.offload" in message
    assert "toolkit.run_sync" in message


def offloaded_sqlite_app(path: Path) -> FastAPI:
    """The same write, moved off the loop as the report says."""
    app = FastAPI()
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.create_function("pause", 1, time.sleep)
    connection.execute("create table notes (text text)")

    @toolkit.offload
    def save_note() -> None:
        with connection:
            connection.execute("insert into notes values (pause(0.25))")

    @app.post("/notes")
    async def add_note() -> dict[str, str]:
        await save_note()
        return {"status": "saved"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def test_the_same_write_offloaded_blocks_nothing_and_is_not_reported(
    tmp_path: Path, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    app = offloaded_sqlite_app(tmp_path / "notes.db")
    installed = toolkit.install(app, toolkit.ToolkitSettings(), tracer_provider=tracer_provider)
    async with lifespan(app):
        monitor = installed.loop_monitor
        assert monitor is not None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            write = asyncio.create_task(client.post("/notes"))
            await eventually(lambda: current_offload_pool().running == 1)
            health = await client.get("/health")  # answered while the write runs
            assert not write.done()
            assert (await write).status_code == 200
        assert health.status_code == 200
        probes = monitor.lag_summary().count
        await eventually(lambda: monitor.lag_summary().count >= probes + 3)
    writes = [
        b for b in monitor.recent_blocks() if b.blocking and "save_note" in b.blocking.function
    ]
    assert writes == []
    assert not [
        s for s in blocked_spans(span_exporter)
        if (s.attributes or {}).get(names.CODE_FUNCTION_NAME) in {"add_note", "save_note"}
    ]  # fmt: skip
    assert [s.name for s in span_exporter.get_finished_spans() if "offload" in s.name] == [
        "toolkit.offload offloaded_sqlite_app.<locals>.save_note"
    ]


def test_a_report_points_at_offload_only_for_a_block_in_the_applications_call() -> None:
    frame = StackFrame(HERE, 10, "add_note", "connection.execute(...)")
    for cause, hint in [
        (names.EVENT_LOOP_WAITING, OFFLOAD_HINT),
        (names.EVENT_LOOP_CODE, OFFLOAD_HINT),
        (names.EVENT_LOOP_GC, None),
        (names.EVENT_LOOP_DESCHEDULED, None),
    ]:
        block = BlockedLoop(time.time(), 0.2, cause, 0.0, 0.0, 0.0, None, (frame,))
        assert block.hint == hint, cause
    unsampled = BlockedLoop(time.time(), 0.2, names.EVENT_LOOP_WAITING, 0, 0, 0, None, ())
    assert unsampled.hint is None
    library = StackFrame(sqlite3.__file__, 1, "connect")  # no frame of the application's
    in_library = BlockedLoop(time.time(), 0.2, names.EVENT_LOOP_CODE, 0, 0, 0, None, (library,))
    assert in_library.hint is None
    assert (
        "in add_note: connection.execute(...)"
        in BlockedLoop(
            time.time(), 0.2, names.EVENT_LOOP_WAITING, 0, 0, 0, None, (frame,)
        ).describe()
    )


def test_the_next_span_after_a_refused_one_says_how_many_were_left_out(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    now = [0.0]
    reporter = Reporter(
        tracer_provider.get_tracer("test"),
        Counts(),
        spans_per_minute=1,
        logs_per_minute=0,
        on_loop=lambda work: work(),
        clock=lambda: now[0],
    )
    block = BlockedLoop(time.time(), 0.2, names.EVENT_LOOP_WAITING, 0.0, 0.0, 0.0, None, ())
    for _ in range(3):
        reporter.report(block)
    now[0] += 60  # a minute later: room for one more
    reporter.report(block)
    spans = blocked_spans(span_exporter)
    assert [(s.attributes or {})[names.EVENT_LOOP_BLOCKED_SUPPRESSED] for s in spans] == [0, 2]
    assert reporter.blocked == 4
