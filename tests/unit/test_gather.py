"""Fan-out: ``toolkit.gather`` and ``toolkit.branch``. Outcomes, deadlines that nest,
fallbacks, early returns, cancellation from every side, nothing left running, the spans and
the metric, and the kill switch."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import toolkit
from tests.support.otel import points
from tests.support.waiting import eventually
from toolkit.errors import ConfigurationError
from toolkit.pipelines.fanout._telemetry import FanoutTelemetry, set_current_fanout_telemetry
from toolkit.telemetry import names

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def telemetry(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[None]:
    set_current_fanout_telemetry(
        FanoutTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    )
    yield
    set_current_fanout_telemetry(None)


async def answer(value: Any, delay: float = 0.0) -> Any:
    await asyncio.sleep(delay)
    return value


async def fail(message: str) -> Any:
    raise ConnectionError(message)


def others() -> set[asyncio.Task[Any]]:
    """The tasks running besides the test's own."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


# --- outcomes ------------------------------------------------------------------------------------


async def test_gather_returns_every_outcome_with_values_errors_and_durations() -> None:
    """ok, fallback (after a failure and after a timeout), failed, timeout: all in one result,
    in the branches' order, with no exception: partial results are normal."""
    result = await toolkit.gather(
        toolkit.branch("vector", answer, ["v"]),
        toolkit.branch("graph", fail, "graph down", fallback=[]),
        toolkit.branch("docs", answer, ["d"], 5, deadline="50ms", fallback=["cached"]),
        toolkit.branch("web", fail, "web down"),
        toolkit.branch("slow", answer, "late", 5, deadline=0.05),
    )
    assert list(result) == ["vector", "graph", "docs", "web", "slow"]
    assert {n: result[n].outcome for n in result} == {
        "vector": "ok",
        "graph": "fallback",
        "docs": "fallback",
        "web": "failed",
        "slow": "timeout",
    }
    assert result.values() == {"vector": ["v"], "graph": [], "docs": ["cached"]}
    assert result.failed == ("web", "slow")
    assert isinstance(result["web"].error, ConnectionError)
    assert isinstance(result["graph"].error, ConnectionError)  # why it fell back
    assert isinstance(result["slow"].error, TimeoutError)
    assert result["slow"].value is None
    assert 0.04 < result["slow"].duration < 1.0
    assert result["vector"].answered
    assert not result["web"].answered


async def test_every_branch_failing_is_still_a_result_not_an_exception() -> None:
    result = await toolkit.gather(
        toolkit.branch("a", fail, "a"), toolkit.branch("b", answer, 1, 5, deadline=0.02)
    )
    assert result.failed == ("a", "b")
    assert result.values() == {}


async def test_an_async_fallback_gets_the_branch_arguments_and_its_own_failure_is_the_outcome() -> (
    None
):
    async def from_cache(query: str, *, k: int) -> list[str]:
        return [f"cached {query} {k}"]

    async def broken(query: str, *, k: int) -> list[str]:
        raise KeyError("cache down")

    async def search(query: str, *, k: int) -> list[str]:
        raise ConnectionError("store down")

    result = await toolkit.gather(
        toolkit.branch("a", search, "q", k=3, fallback=from_cache),
        toolkit.branch("b", search, "q", k=3, fallback=broken),
    )
    assert result["a"].outcome == "fallback"
    assert result["a"].value == ["cached q 3"]
    assert result["b"].outcome == "failed"
    assert isinstance(result["b"].error, KeyError)
    assert isinstance(result["b"].error.__context__, ConnectionError)


async def test_a_slow_async_fallback_is_cut_by_the_fan_outs_deadline() -> None:
    async def slow_fallback() -> str:
        await asyncio.sleep(5)
        return "never"

    async def slow() -> str:
        await asyncio.sleep(5)
        return "never"

    started = time.monotonic()
    result = await toolkit.gather(
        toolkit.branch("a", slow, deadline=0.03, fallback=slow_fallback), deadline=0.1
    )
    assert result["a"].outcome == "timeout"
    assert time.monotonic() - started < 1.0


# --- deadlines ---------------------------------------------------------------------------------


async def test_a_branch_has_the_smallest_of_its_deadline_the_fan_outs_and_the_current_one() -> None:
    async def left() -> float | None:
        return toolkit.time_left()

    with toolkit.deadline(0.5):
        result = await toolkit.gather(
            toolkit.branch("own", left, deadline=0.1),
            toolkit.branch("fanout", left, deadline=10),
            deadline=0.3,
        )
        outer = await toolkit.gather(toolkit.branch("outer", left, deadline=10), deadline=10)
    assert 0.05 < result["own"].value <= 0.1
    assert 0.2 < result["fanout"].value <= 0.3
    assert 0.3 < outer["outer"].value <= 0.5
    assert toolkit.time_left() is None


async def test_a_resilient_timeout_inside_a_branch_fits_in_the_branch() -> None:
    """``@resilient(timeout="5s")`` of a slow call inside a 0.1 s branch ends at 0.1 s, and
    its fallback value answers."""

    @toolkit.resilient(timeout="5s")
    async def search(query: str) -> list[str]:
        await asyncio.sleep(5)
        return [query]

    started = time.monotonic()
    result = await toolkit.gather(toolkit.branch("vector", search, "q", deadline=0.1, fallback=[]))
    elapsed = time.monotonic() - started
    assert result["vector"].outcome == "fallback"
    assert isinstance(result["vector"].error, toolkit.DeadlineExceeded)  # a TimeoutError
    assert 0.09 < elapsed < 1.0


async def test_stragglers_are_cancelled_at_the_fan_outs_deadline_and_none_is_left() -> None:
    ended: list[str] = []

    async def straggler(name: str) -> str:
        try:
            await asyncio.sleep(10)
        finally:
            ended.append(name)
        return name

    before = others()
    started = time.monotonic()
    result = await toolkit.gather(
        toolkit.branch("fast", answer, "f"),
        toolkit.branch("s1", straggler, "s1"),
        toolkit.branch("s2", straggler, "s2", fallback="default"),
        deadline=0.1,
    )
    assert time.monotonic() - started < 1.0
    assert sorted(ended) == ["s1", "s2"]
    assert result["fast"].outcome == "ok"
    assert result["s1"].outcome == "timeout"
    assert result["s2"].outcome == "fallback"
    assert result["s2"].value == "default"
    assert others() <= before


async def test_a_branch_that_swallows_its_cancellation_is_cancelled_again_and_awaited() -> None:
    swallowed = []

    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            swallowed.append(True)  # a driver that turned the cancellation into a retry
            await asyncio.sleep(10)
        return "never"

    before = others()
    started = time.monotonic()
    result = await toolkit.gather(toolkit.branch("stubborn", stubborn), deadline=0.1)
    assert swallowed == [True]
    assert result["stubborn"].outcome == "timeout"
    assert time.monotonic() - started < 2.0
    assert others() <= before


# --- early returns -----------------------------------------------------------------------------


async def test_first_returns_once_n_branches_answered_and_cancels_the_rest() -> None:
    cancelled: list[str] = []

    async def slow(name: str) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        return name

    before = others()
    started = time.monotonic()
    result = await toolkit.gather(
        toolkit.branch("a", answer, "a", 0.01),
        toolkit.branch("broken", fail, "x"),  # a failure is not an answer
        toolkit.branch("b", answer, "b", 0.02),
        toolkit.branch("c", slow, "c"),
        toolkit.branch("d", slow, "d"),
        first=2,
    )
    assert time.monotonic() - started < 1.0
    assert result.values() == {"a": "a", "b": "b"}
    assert result.cancelled == ("c", "d")
    assert sorted(cancelled) == ["c", "d"]
    assert result["broken"].outcome == "failed"
    assert others() <= before


async def test_first_waits_for_every_branch_when_too_few_can_answer() -> None:
    result = await toolkit.gather(
        toolkit.branch("a", answer, 1, 0.01), toolkit.branch("b", fail, "b"), first=2
    )
    assert result["a"].outcome == "ok"
    assert result["b"].outcome == "failed"


async def test_enough_cancels_the_rest_once_one_answer_satisfies_it() -> None:
    result = await toolkit.gather(
        toolkit.branch("weak", answer, {"confidence": 0.3}, 0.01),
        toolkit.branch("strong", answer, {"confidence": 0.95}, 0.03),
        toolkit.branch("slow", answer, {"confidence": 1.0}, 10),
        enough=lambda found: found["confidence"] > 0.9,
    )
    assert result["weak"].outcome == "ok"
    assert result["strong"].outcome == "ok"
    assert result["slow"].outcome == "cancelled"


async def test_an_enough_predicate_that_raises_counts_as_not_satisfied(
    span_exporter: InMemorySpanExporter,
) -> None:
    def judge(value: Any) -> bool:
        raise ValueError("bad predicate")

    result = await toolkit.gather(
        toolkit.branch("a", answer, 1), toolkit.branch("b", answer, 2, 0.02), enough=judge
    )
    assert [result[n].outcome for n in result] == ["ok", "ok"]
    (fanout,) = [
        s for s in span_exporter.get_finished_spans() if s.name.startswith("toolkit.gather")
    ]
    assert any(event.name == "exception" for event in fanout.events)


# --- cancellation ------------------------------------------------------------------------------


async def test_cancelling_the_caller_cancels_and_awaits_every_branch() -> None:
    running: list[str] = []
    ended: list[str] = []

    async def work(name: str) -> str:
        running.append(name)
        try:
            await asyncio.sleep(10)
        finally:
            ended.append(name)
        return name

    before = others()
    caller = asyncio.create_task(
        toolkit.gather(*(toolkit.branch(n, work, n) for n in "abc"), deadline=5)
    )
    await eventually(lambda: len(running) == 3)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert sorted(ended) == ["a", "b", "c"]  # ended before the caller saw its cancellation
    assert others() <= before


async def test_random_races_of_deadlines_failures_early_returns_and_cancellation() -> None:
    """Whatever the mix, every branch has an outcome that fits what it did, and nothing the
    fan-out started is still running when it returns or raises."""
    rng = random.Random(11)
    before = others()
    for _ in range(60):
        count = rng.randint(1, 6)
        kinds = [rng.choice(["fast", "slow", "fail", "stubborn"]) for _ in range(count)]

        async def run(kind: str) -> str:
            if kind == "fail":
                await asyncio.sleep(rng.random() * 0.01)
                raise ConnectionError(kind)
            if kind == "stubborn":
                try:
                    await asyncio.sleep(1)
                except asyncio.CancelledError:
                    await asyncio.sleep(0.01)
                return kind
            await asyncio.sleep(0.002 if kind == "fast" else 1)
            return kind

        branches = [
            toolkit.branch(
                f"b{i}",
                run,
                kind,
                deadline=rng.choice([None, 0.01, 0.05]),
                fallback=rng.choice([None, "fb"]),
            )
            for i, kind in enumerate(kinds)
        ]
        first = rng.choice([None, 1])
        fanout = asyncio.create_task(toolkit.gather(*branches, deadline=0.04, first=first))
        if rng.random() < 0.3:
            await asyncio.sleep(rng.random() * 0.03)
            fanout.cancel()
        try:
            result = await fanout
        except asyncio.CancelledError:
            assert others() <= before
            continue
        assert others() <= before
        for i, kind in enumerate(kinds):
            outcome = result[f"b{i}"].outcome
            if kind == "fast" and outcome != "cancelled":
                assert outcome in ("ok", "timeout", "fallback")
            if kind == "fail":
                assert outcome in ("failed", "fallback", "cancelled", "timeout")
            if kind == "slow":
                assert outcome in ("timeout", "fallback", "cancelled")


# --- telemetry ---------------------------------------------------------------------------------


async def test_each_branch_is_a_span_under_the_fan_out_under_the_callers(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    with tracer_provider.get_tracer("test").start_as_current_span("chat") as caller:
        await toolkit.gather(
            toolkit.branch("vector", answer, 1),
            toolkit.branch("graph", fail, "down", fallback=[]),
            toolkit.branch("docs", answer, 1, 5, deadline=0.03),
            name="memory.search",
            deadline=1,
        )
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    fanout = spans["toolkit.gather memory.search"]
    assert fanout.kind is SpanKind.INTERNAL
    assert fanout.parent is not None
    assert fanout.parent.span_id == caller.get_span_context().span_id
    assert fanout.attributes is not None
    assert fanout.attributes[names.FANOUT_NAME] == "memory.search"
    assert fanout.attributes[names.FANOUT_BRANCHES] == 3
    assert fanout.attributes[names.FANOUT_ANSWERED] == 2
    assert tuple(fanout.attributes[names.FANOUT_FAILED]) == ("docs",)  # type: ignore[arg-type]
    assert fanout.attributes[names.FANOUT_STOPPED] == "all"
    assert 0.9 < float(fanout.attributes[names.DEADLINE_BUDGET]) <= 1  # type: ignore[arg-type]
    for name, outcome in [("vector", "ok"), ("graph", "fallback"), ("docs", "timeout")]:
        span = spans[f"toolkit.branch {name}"]
        assert span.kind is SpanKind.INTERNAL
        assert span.parent is not None
        assert span.parent.span_id == fanout.context.span_id
        assert span.attributes is not None
        assert span.attributes[names.FANOUT_OUTCOME] == outcome
        assert span.attributes[names.FANOUT_BRANCH] == name
    docs = spans["toolkit.branch docs"]
    assert docs.attributes is not None
    assert docs.attributes[names.ERROR_TYPE] == "timeout"
    assert 0.02 < float(docs.attributes[names.DEADLINE_BUDGET]) <= 0.03  # type: ignore[arg-type]
    assert docs.status.status_code is StatusCode.ERROR
    graph = spans["toolkit.branch graph"]
    assert graph.attributes is not None
    assert graph.attributes[names.ERROR_TYPE] == "connection"
    assert graph.status.status_code is not StatusCode.ERROR  # it answered, with its fallback


async def test_branch_durations_are_recorded_by_fan_out_branch_and_outcome(
    metric_reader: InMemoryMetricReader,
) -> None:
    await toolkit.gather(
        toolkit.branch("vector", answer, 1),
        toolkit.branch("graph", fail, "down"),
        name="memory.search",
    )
    recorded = {
        (
            p.attributes[names.FANOUT_NAME],
            p.attributes[names.FANOUT_BRANCH],
            p.attributes[names.FANOUT_OUTCOME],
        ): p.count
        for p in points(metric_reader, names.FANOUT_BRANCH_DURATION)
    }
    assert recorded == {
        ("memory.search", "vector", "ok"): 1,
        ("memory.search", "graph", "failed"): 1,
    }


async def test_branch_names_on_metrics_are_bounded(metric_reader: InMemoryMetricReader) -> None:
    from toolkit.pipelines.fanout._telemetry import MAX_LABEL_VALUES

    await toolkit.gather(
        *(toolkit.branch(f"b{i}", answer, i) for i in range(MAX_LABEL_VALUES + 20))
    )
    labels = {
        p.attributes[names.FANOUT_BRANCH]
        for p in points(metric_reader, names.FANOUT_BRANCH_DURATION)
    }
    assert len(labels) == MAX_LABEL_VALUES + 1
    assert names.GEN_AI_OTHER in labels


# --- the kill switch ---------------------------------------------------------------------------


async def test_the_flag_off_runs_the_branches_as_a_plain_asyncio_gather(
    span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    with toolkit.flags.override({toolkit.flags.PIPELINES_GATHER: "off"}):
        result = await toolkit.gather(
            toolkit.branch("slow", answer, "late", 0.1, deadline=0.01, fallback="fb"),
            toolkit.branch("broken", fail, "down", fallback="fb"),
            toolkit.branch("other", answer, "x", 0.05),
            deadline=0.02,
            first=1,
        )
    assert result["slow"].outcome == "ok"
    assert result["slow"].value == "late"
    assert result["broken"].outcome == "failed"  # no fallback
    assert result["other"].outcome == "ok"  # no early return
    assert result.failed == ("broken",)
    assert span_exporter.get_finished_spans() == ()
    assert points(metric_reader, names.FANOUT_BRANCH_DURATION) == []


# --- arguments ---------------------------------------------------------------------------------


def sync_fallback() -> list[str]:
    return []


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: toolkit.branch("", answer), "a name"),
        (lambda: toolkit.branch("a", "not callable"), "an async function"),  # type: ignore[arg-type]
        (lambda: toolkit.branch("a", answer, deadline=0), "positive"),
        (lambda: toolkit.branch("a", answer, deadline=-1), "negative"),
        (lambda: toolkit.branch("a", answer, deadline="soon"), "not a duration"),
        (lambda: toolkit.branch("a", answer, fallback=sync_fallback), "a value, or an async"),
    ],
)
def test_a_branch_that_cannot_work_is_refused_when_built(build: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"first": 0}, r"1 to 2"),
        ({"first": 3}, r"1 to 2"),
        ({"first": True}, r"1 to 2"),
        ({"deadline": 0}, "positive"),
        ({"deadline": "1 sec"}, "not a duration"),
        ({"name": ""}, "a name"),
        ({"enough": 3}, "predicate"),
    ],
)
async def test_a_fan_out_that_cannot_work_is_refused_before_any_branch_runs(
    options: dict[str, Any], message: str
) -> None:
    ran: list[int] = []

    async def work() -> None:
        ran.append(1)

    with pytest.raises(ConfigurationError, match=message):
        await toolkit.gather(toolkit.branch("a", work), toolkit.branch("b", work), **options)
    assert ran == []


async def test_two_branches_of_one_name_or_a_bare_function_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="two branches named 'a'"):
        await toolkit.gather(toolkit.branch("a", answer, 1), toolkit.branch("a", answer, 2))
    with pytest.raises(ConfigurationError, match=r"toolkit\.branch"):
        await toolkit.gather(answer)  # type: ignore[arg-type]


async def test_no_branches_is_an_empty_result() -> None:
    result = await toolkit.gather()
    assert len(result) == 0
    assert result.values() == {}
    assert result.failed == ()


@pytest.mark.parametrize(
    ("options", "stopped"),
    [
        ({}, "all"),
        ({"first": 1}, "first"),
        ({"enough": lambda value: value == "fast"}, "enough"),
        ({"deadline": 0.05}, "deadline"),
    ],
)
async def test_the_fan_out_span_says_why_it_returned(
    span_exporter: InMemorySpanExporter, options: dict[str, Any], stopped: str
) -> None:
    slow = 0.1 if not options else 5
    await toolkit.gather(
        toolkit.branch("fast", answer, "fast"),
        toolkit.branch("slow", answer, "slow", slow),
        **options,
    )
    (fanout,) = [s for s in span_exporter.get_finished_spans() if s.name == "toolkit.gather gather"]
    assert fanout.attributes is not None
    assert fanout.attributes[names.FANOUT_STOPPED] == stopped


@pytest.mark.parametrize(
    ("graph", "kept"),
    [
        ({"fallback": []}, False),  # fell back: a partial answer
        ({}, False),  # failed, no fallback: partial too
        (None, True),  # every branch answered
    ],
)
async def test_an_enclosing_cache_keeps_a_fan_out_only_when_every_branch_answered(
    graph: dict[str, Any] | None, kept: bool
) -> None:
    """A partial answer cached for ten minutes would outlive the outage that made it."""
    calls = 0

    async def failing() -> list[str]:
        raise ConnectionError("graph store down")

    @toolkit.cached(ttl="10m")
    async def search(query: str) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        branches = [toolkit.branch("vector", answer, [query])]
        if graph is not None:
            branches.append(toolkit.branch("graph", failing, **graph))
        return (await toolkit.gather(*branches)).values()

    await search("lyon")
    await search("lyon")
    assert calls == (1 if kept else 2)
