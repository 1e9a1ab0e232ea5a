"""Deferred work in process: ``toolkit.defer`` and ``@toolkit.background`` on the in-process
runner (hand-off, fresh context, linked span, retries, bounded queue, concurrency, drain, the
kill switch, the crash journal)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import subprocess
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
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import toolkit
from tests.support.otel import points
from tests.support.waiting import eventually
from toolkit.errors import ConfigurationError
from toolkit.pipelines.deferred._background import current_runner, lookup, set_current_runner
from toolkit.pipelines.deferred._in_process import InProcessRunner
from toolkit.pipelines.deferred._journal import Journal
from toolkit.resilience import RetryPolicy
from toolkit.settings import DeferSettings
from toolkit.telemetry import names

pytestmark = pytest.mark.anyio

NO_WAIT = {"wait_initial": 0, "wait_jitter": 0}
REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")

Make = Callable[..., InProcessRunner]


@pytest.fixture
async def make_runner(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, tmp_path: Path
) -> AsyncIterator[Make]:
    """Runners on the test's providers, made current, drained at the end of the test."""
    made: list[InProcessRunner] = []

    def make(**settings: Any) -> InProcessRunner:
        settings.setdefault("journal", str(tmp_path / "journal"))
        runner = InProcessRunner(
            DeferSettings(**settings),
            service="test",
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        made.append(runner)
        set_current_runner(runner)
        return runner

    yield make
    for runner in made:
        await runner.drain(0)


def total(reader: InMemoryMetricReader, metric: str, **attributes: str) -> float:
    wanted = {getattr(names, key): value for key, value in attributes.items()}
    return sum(
        point.value
        for point in points(reader, metric)
        if wanted.items() <= dict(point.attributes).items()
    )


# --- the hand-off -----------------------------------------------------------------------------


async def test_defer_returns_after_the_hand_off_and_the_task_runs_later(make_runner: Make) -> None:
    """``fn.defer`` returns a handle before the work ran; the work then runs with its
    arguments; calling the function directly still runs it now."""
    runner = make_runner()
    await runner.start()
    seen: list[tuple[str, str]] = []

    @toolkit.background(name="test.remember")
    async def remember(profile: str, text: str) -> str:
        seen.append((profile, text))
        return text

    handle = await remember.defer("p1", text="I moved to Lyon")
    assert seen == []  # not yet: the hand-off does not run it
    assert handle.name == "test.remember"
    assert len(handle.id) == 16
    assert not handle.inline
    await eventually(lambda: seen == [("p1", "I moved to Lyon")])
    assert await remember("p2", "now") == "now"  # called directly: runs at once, as written
    assert seen[-1] == ("p2", "now")


async def test_defer_takes_any_function_and_runs_a_sync_one_in_a_worker_thread(
    make_runner: Make,
) -> None:
    runner = make_runner()
    await runner.start()
    threads: list[int] = []

    def write_embedding(vector: list[float]) -> None:
        threads.append(threading.get_ident())

    handle = await toolkit.defer(write_embedding, [0.1, 0.2])
    assert handle.name == f"{__name__}:{write_embedding.__qualname__}"
    await eventually(lambda: len(threads) == 1)
    assert threads[0] != threading.get_ident()  # never on the event loop's thread


async def test_defer_awaits_an_object_whose_call_is_a_coroutine_function(
    make_runner: Make,
) -> None:
    runner = make_runner()
    await runner.start()
    seen: list[str] = []

    class Writer:
        async def __call__(self, text: str) -> None:
            seen.append(text)

    await toolkit.defer(Writer(), "hello")
    await eventually(lambda: seen == ["hello"])


async def test_a_plain_function_returning_a_coroutine_has_it_awaited(make_runner: Make) -> None:
    runner = make_runner()
    await runner.start()
    seen: list[str] = []

    async def write(text: str) -> None:
        seen.append(text)

    await toolkit.defer(lambda: write("from a lambda"))
    await eventually(lambda: seen == ["from a lambda"])


async def test_two_drains_at_once_both_return_when_it_stopped(make_runner: Make) -> None:
    runner = make_runner()
    await runner.start()
    gate = asyncio.Event()

    async def held() -> None:
        await gate.wait()

    await toolkit.defer(held)
    first = asyncio.create_task(runner.drain(5))
    second = asyncio.create_task(runner.drain(5))
    await asyncio.sleep(0.01)
    assert not first.done()
    assert not second.done()  # waits for the first, does not stop early
    gate.set()
    await asyncio.gather(first, second)
    assert not runner._workers


async def test_the_task_runs_in_a_fresh_context_past_the_deferring_deadline(
    make_runner: Make,
) -> None:
    """Deferred inside a 50 ms deadline with a context variable set: the task sees neither,
    and may run past the deadline."""
    runner = make_runner()
    await runner.start()
    seen: list[object] = []

    async def extract() -> None:
        seen.append((toolkit.time_left(), REQUEST.get()))
        await asyncio.sleep(0.1)  # longer than the request's deadline
        seen.append("finished")

    REQUEST.set("request-1")
    with toolkit.deadline(0.05):
        await toolkit.defer(extract)
    await eventually(lambda: "finished" in seen)
    assert seen[0] == (None, "none")


async def test_the_task_span_is_linked_to_the_deferring_span_and_is_not_its_child(
    make_runner: Make, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    runner = make_runner()
    await runner.start()

    @toolkit.background(name="memory.extract")
    async def extract() -> None:
        pass

    with tracer_provider.get_tracer("test").start_as_current_span("POST /messages") as request:
        handle = await extract.defer()
    await eventually(lambda: len(span_exporter.get_finished_spans()) == 2)
    task, deferring = sorted(
        span_exporter.get_finished_spans(),
        key=lambda s: s.name != "toolkit.deferred memory.extract",
    )
    assert task.name == "toolkit.deferred memory.extract"
    assert task.kind is SpanKind.CONSUMER
    assert task.parent is None
    assert task.context.trace_id != request.get_span_context().trace_id
    assert [link.context for link in task.links] == [request.get_span_context()]
    assert task.attributes is not None
    assert task.attributes[names.TASK_ID] == handle.id
    assert task.attributes[names.TASK_OUTCOME] == names.TASK_DONE
    assert task.attributes[names.TASK_QUEUED_TIME] >= 0
    assert not any(key.startswith("messaging.") for key in task.attributes)  # no queue here
    [event] = deferring.events
    assert event.name == names.DEFER_ACCEPTED_EVENT
    assert event.attributes == {names.TASK_NAME: "memory.extract", names.TASK_ID: handle.id}


async def test_a_failing_task_is_retried_by_its_policy_then_counted_as_failed(
    make_runner: Make,
    metric_reader: InMemoryMetricReader,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = make_runner()
    await runner.start()
    calls: list[int] = []

    @toolkit.background(name="test.flaky", retries=RetryPolicy(on=OSError, attempts=3, **NO_WAIT))
    async def flaky(fail_times: int) -> None:
        calls.append(fail_times)
        if len(calls) <= fail_times:
            raise OSError("store down")

    await flaky.defer(1)  # fails once, then succeeds
    await eventually(lambda: total(metric_reader, names.DEFERRED_TASKS) == 1)
    calls.clear()
    await flaky.defer(5)  # fails all three attempts
    await eventually(lambda: total(metric_reader, names.DEFERRED_TASKS) == 2)
    assert len(calls) == 3
    assert total(metric_reader, names.DEFERRED_RETRIES, TASK_NAME="test.flaky") == 1 + 2
    assert total(metric_reader, names.DEFERRED_TASKS, TASK_OUTCOME="done") == 1
    assert total(metric_reader, names.DEFERRED_TASKS, TASK_OUTCOME="failed") == 1
    failed = span_exporter.get_finished_spans()[-1]
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events].count(names.RETRY_ATTEMPT_EVENT) == 2
    assert "deferred task test.flaky" in caplog.text
    assert "store down" in caplog.text


async def test_the_default_retries_come_from_the_defer_settings(make_runner: Make) -> None:
    runner = make_runner(retries=0)
    await runner.start()
    calls: list[int] = []

    async def once() -> None:
        calls.append(1)
        raise RuntimeError("no retry")

    await toolkit.defer(once)
    await eventually(lambda: runner.running.get(f"{__name__}:{once.__qualname__}") == 0)
    assert calls == [1]


# --- the bounded queue and the concurrency limit ---------------------------------------------


async def test_a_full_queue_waits_the_hand_off_timeout_then_refuses_with_a_metric_and_event(
    make_runner: Make,
    metric_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    runner = make_runner(queue_size=1, concurrency=1, handoff_timeout="50ms")
    await runner.start()
    gate = asyncio.Event()

    @toolkit.background(name="test.blocked")
    async def blocked() -> None:
        await gate.wait()

    await blocked.defer()  # running
    await eventually(lambda: runner.running.get("test.blocked") == 1)
    await blocked.defer()  # queued: the queue is full
    started = time.monotonic()
    with (
        tracer_provider.get_tracer("test").start_as_current_span("POST /x"),
        pytest.raises(toolkit.DeferRefused, match=r"queue stayed full \(1 tasks") as refused,
    ):
        await blocked.defer()
    assert 0.04 <= time.monotonic() - started < 1.0
    assert refused.value.error_type == "queue_full"
    assert refused.value.task == "test.blocked"
    assert total(metric_reader, names.DEFERRED_REFUSED, ERROR_TYPE="queue_full") == 1
    assert total(metric_reader, names.DEFERRED_QUEUED, TASK_NAME="test.blocked") == 1
    [span] = span_exporter.get_finished_spans()
    assert [e.name for e in span.events] == [names.DEFER_REFUSED_EVENT]
    gate.set()


async def test_a_full_queue_waits_no_longer_than_the_deadline_left(make_runner: Make) -> None:
    runner = make_runner(queue_size=1, concurrency=1, handoff_timeout="10s")
    await runner.start()
    gate = asyncio.Event()

    async def blocked() -> None:
        await gate.wait()

    await toolkit.defer(blocked)
    await toolkit.defer(blocked)
    await eventually(lambda: runner.queued.get(f"{__name__}:{blocked.__qualname__}") == 1)
    started = time.monotonic()
    with toolkit.deadline(0.05), pytest.raises(toolkit.DeferRefused):
        await toolkit.defer(blocked)
    assert time.monotonic() - started < 1.0  # not the 10 s hand-off timeout
    with toolkit.deadline(0), pytest.raises(toolkit.DeferRefused):  # no time left: at once
        await toolkit.defer(blocked)
    gate.set()


async def test_a_hand_off_waiting_for_room_is_accepted_when_room_frees_in_time(
    make_runner: Make,
) -> None:
    runner = make_runner(queue_size=1, concurrency=1, handoff_timeout="5s")
    await runner.start()
    gate = asyncio.Event()
    ran: list[int] = []

    async def task(n: int) -> None:
        await gate.wait()
        ran.append(n)

    await toolkit.defer(task, 1)
    await toolkit.defer(task, 2)
    waiting = asyncio.create_task(toolkit.defer(task, 3))
    await asyncio.sleep(0)
    assert not waiting.done()
    gate.set()
    await waiting
    await eventually(lambda: ran == [1, 2, 3])


async def test_a_hand_off_cancelled_while_waiting_for_room_is_not_accepted(
    make_runner: Make,
) -> None:
    """The caller gives up (its request was cancelled) while the queue is full: the task
    never runs, and the counts do not include it."""
    runner = make_runner(queue_size=1, concurrency=1, handoff_timeout="5s")
    await runner.start()
    gate = asyncio.Event()
    ran: list[int] = []

    async def task(n: int) -> None:
        await gate.wait()
        ran.append(n)

    await toolkit.defer(task, 1)
    await toolkit.defer(task, 2)
    waiting = asyncio.create_task(toolkit.defer(task, 3))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.set()
    await runner.drain(5)
    assert ran == [1, 2]
    assert sum(runner.queued.values()) == 0
    assert sum(runner.running.values()) == 0


async def test_no_more_tasks_run_at_once_than_the_concurrency(make_runner: Make) -> None:
    runner = make_runner(concurrency=3)
    await runner.start()
    now = [0]
    most = [0]

    async def work() -> None:
        now[0] += 1
        most[0] = max(most[0], now[0])
        await asyncio.sleep(0.01)
        now[0] -= 1

    for _ in range(20):
        await toolkit.defer(work)
    await runner.drain(5)
    assert most[0] == 3


# --- shutdown -------------------------------------------------------------------------------------


async def test_a_clean_shutdown_runs_all_200_tasks_accepted(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, tmp_path: Path
) -> None:
    """200 tasks deferred by a request of an installed app: when its lifespan ends, each has
    run, before the app's own shutdown (which closes what the tasks use)."""
    done: list[int] = []
    closed: list[int] = []

    @toolkit.background(name="test.store")
    async def store(n: int) -> None:
        await asyncio.sleep(0.01)  # 10 at a time: 200 ms in all, longer than the request
        assert not closed, "the app's client was closed before its deferred work ran"
        done.append(n)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        closed.append(len(done))

    app = FastAPI(lifespan=lifespan)

    @app.post("/messages")
    async def messages() -> dict[str, int]:
        for n in range(200):
            await store.defer(n)
        return {"deferred": 200}

    toolkit.install(
        app,
        toolkit.ToolkitSettings(defer={"journal": str(tmp_path)}),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/messages")).json() == {"deferred": 200}
        assert len(done) < 200
    assert sorted(done) == list(range(200))
    assert closed == [200]
    with pytest.raises(toolkit.DeferRefused, match="has stopped") as refused:
        await store.defer(1)
    assert refused.value.error_type == "stopped"


async def test_at_the_end_of_the_grace_the_rest_is_cancelled_counted_and_logged(
    make_runner: Make,
    metric_reader: InMemoryMetricReader,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = make_runner(concurrency=2)
    await runner.start()

    @toolkit.background(name="test.forever")
    async def forever() -> None:
        await asyncio.Event().wait()

    for _ in range(5):
        await forever.defer()
    await eventually(lambda: runner.running.get("test.forever") == 2)
    started = time.monotonic()
    await runner.drain(0.05)
    assert time.monotonic() - started < 2.0
    assert total(metric_reader, names.DEFERRED_TASKS, TASK_OUTCOME="cancelled") == 5
    assert total(metric_reader, names.DEFERRED_RUNNING) == 0
    assert total(metric_reader, names.DEFERRED_QUEUED) == 0
    assert "cancelled 2 running tasks and 3 that never started (test.forever: 3)" in caplog.text
    spans = span_exporter.get_finished_spans()
    assert [s.attributes[names.TASK_OUTCOME] for s in spans if s.attributes] == ["cancelled"] * 2
    assert not runner._workers
    assert not runner._running
    await runner.drain(5)  # idempotent


async def test_a_hand_off_waiting_when_the_drain_ends_is_refused_and_never_runs(
    make_runner: Make,
) -> None:
    runner = make_runner(queue_size=1, concurrency=1, handoff_timeout="5s")
    await runner.start()
    ran: list[int] = []

    async def slow(n: int) -> None:
        await asyncio.Event().wait()
        ran.append(n)

    await toolkit.defer(slow, 1)
    await toolkit.defer(slow, 2)
    waiting = asyncio.create_task(toolkit.defer(slow, 3))
    await asyncio.sleep(0.01)
    await runner.drain(0.01)
    with pytest.raises(toolkit.DeferRefused, match="stopped"):
        await waiting
    assert ran == []
    assert runner._queue.empty()


async def test_a_refused_hand_off_in_a_route_is_answered_503_problem(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, tmp_path: Path
) -> None:
    app = FastAPI()

    async def nothing() -> None:
        pass

    @app.post("/x")
    async def route() -> dict[str, str]:
        await toolkit.defer(nothing)
        return {"ok": "yes"}

    installed = toolkit.install(
        app,
        toolkit.ToolkitSettings(defer={"journal": str(tmp_path)}),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    await installed.startup()
    await installed.drain_deferred()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.post("/x")
    await installed.shutdown()
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "1"
    assert "has stopped" in answer.json()["detail"]


# --- the kill switch ----------------------------------------------------------------------------


async def test_with_the_flag_off_the_work_is_awaited_inline_and_its_error_raised(
    make_runner: Make, metric_reader: InMemoryMetricReader
) -> None:
    runner = make_runner()
    await runner.start()
    ran: list[str] = []

    @toolkit.background(name="test.inline")
    async def work(text: str) -> None:
        ran.append(text)
        if text == "boom":
            raise ValueError("boom")

    with toolkit.flags.override({toolkit.flags.PIPELINES_DEFER: "off"}):
        handle = await work.defer("now")
        assert ran == ["now"]
        assert handle.inline
        with pytest.raises(ValueError, match="boom"):
            await toolkit.defer(work, "boom")
    assert runner.queued == {}
    assert total(metric_reader, names.DEFERRED_TASKS) == 0


# --- names, registry and arguments -----------------------------------------------------------


def test_background_registers_by_name_or_module_and_qualname() -> None:
    @toolkit.background
    async def plain() -> None:
        pass

    @toolkit.background(name="test.named", retries=0)
    async def named() -> None:
        pass

    assert plain.name == f"{__name__}:{plain.__qualname__}"
    assert lookup(plain.name) is plain.spec
    assert lookup("test.named") is named.spec
    assert named.__name__ == "named"
    assert named.__wrapped__.__name__ == "named"
    with pytest.raises(LookupError, match=r"no @toolkit\.background function is registered"):
        lookup("test.nobody")


def test_a_name_taken_by_another_function_is_refused() -> None:
    @toolkit.background(name="test.taken")
    async def first() -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"the name is taken by .*first"):

        @toolkit.background(name="test.taken")
        async def second() -> None:
            pass


@pytest.mark.parametrize("retries", [-1, 101, 2.5, True, "3"])
def test_bad_retries_are_refused_naming_a_valid_example(retries: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"retries=3"):
        toolkit.background(retries=retries)


async def test_without_install_the_hand_off_uses_a_default_runner_started_on_first_use(
    tmp_path: Path,
) -> None:
    ran: list[int] = []

    async def work() -> None:
        ran.append(1)

    await toolkit.defer(work)
    await eventually(lambda: ran == [1])
    runner = current_runner()
    assert isinstance(runner, InProcessRunner)
    await runner.drain(1)


# --- the crash journal -------------------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_journal_claims_only_files_of_gone_processes_of_its_service(tmp_path: Path) -> None:
    mine = Journal(str(tmp_path), "svc")
    host = mine.path.name.split(".")[1]
    gone = dead_pid()
    (tmp_path / f"svc.{host}.{gone}.json").write_text('{"pending": {"a": 2, "b": 1}}')
    (tmp_path / f"svc.{host}.{os.getppid()}.json").write_text('{"pending": {"a": 5}}')  # alive
    (tmp_path / f"other.{host}.{gone}.json").write_text('{"pending": {"a": 7}}')  # not ours
    mine.write({"a": 1})  # this pid's own: a restart under the same pid
    assert mine.claim_lost() == {"a": 3, "b": 1}
    assert mine.claim_lost() == {}  # claimed once: removed
    left = sorted(path.name.split(".")[0] for path in tmp_path.iterdir())
    assert left == ["other", "svc"]  # the live process's file and the other service's


def test_an_unwritable_or_unreadable_journal_is_logged_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    Journal(str(blocker / "sub"), "svc").write({"a": 1})  # a file where the directory goes
    assert "cannot write the crash journal" in caplog.text
    mine = Journal(str(tmp_path), "svc")
    (tmp_path / f"svc.{mine.path.name.split('.')[1]}.{dead_pid()}.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert mine.claim_lost() == {}
    assert "unreadable crash journal" in caplog.text


async def test_the_journal_follows_the_pending_count_and_is_removed_by_a_clean_drain(
    make_runner: Make, tmp_path: Path
) -> None:
    runner = make_runner()
    await runner.start()
    gate = asyncio.Event()

    @toolkit.background(name="test.pending")
    async def pending() -> None:
        await gate.wait()

    for _ in range(3):
        await pending.defer()
    journal = tmp_path / "journal"

    def says(count: int) -> bool:
        files = list(journal.glob("test.*.json"))
        return bool(files) and f'"test.pending": {count}' in files[0].read_text()

    await eventually(lambda: says(3))
    gate.set()
    await eventually(lambda: bool(list(journal.glob("test.*.json"))) and not says(3))
    await runner.drain(5)
    assert not list(journal.glob("test.*"))
