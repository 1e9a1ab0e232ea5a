"""Circuit breakers, retries, budgets and @resilient, on the memory backend and real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import toolkit
from tests.support.otel import points
from tests.support.servers import RedisServer, require_binary
from tests.support.waiting import eventually, eventually_returns
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends.redis import RedisBackend
from toolkit.cache import CacheStore, set_current_cache
from toolkit.errors import CircuitOpenError
from toolkit.flags import RESILIENCE, FlagStore
from toolkit.resilience import (
    BreakerRegistry,
    CircuitBreaker,
    RetryBudget,
    RetryPolicy,
    model_breaker_name,
    provider_errors,
    retry_after_of,
    set_current_breakers,
)
from toolkit.resilience._naming import ModelBreakerNames
from toolkit.telemetry import names

pytestmark = pytest.mark.anyio


class Clock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class ProviderError(Exception):
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"status {status}")
        self.status_code = status
        self.headers = headers or {}


async def fail() -> None:
    raise ProviderError(503)


async def succeed() -> str:
    return "ok"


def breaker_for(backend: Backend, clock: Clock, **options: Any) -> CircuitBreaker:
    options = {"minimum_calls": 10, "failure_rate": 0.5, "open_duration": 10, **options}
    return CircuitBreaker(f"b-{uuid.uuid4().hex[:6]}", backend=backend, clock=clock, **options)


async def test_breaker_trips_on_failure_rate_only_after_the_minimum_number_of_calls(
    backend: Backend,
) -> None:
    """Below minimum_calls even 100 % failures do not trip; at the minimum a 50 % rate does."""
    clock = Clock()
    breaker = breaker_for(backend, clock)
    for _ in range(4):
        await breaker.call(succeed)
    for _ in range(5):
        with pytest.raises(ProviderError):
            await breaker.call(fail)
    assert breaker.state == "closed"  # 9 calls: under the minimum of 10
    with pytest.raises(ProviderError):
        await breaker.call(fail)
    assert breaker.state == "open"  # 6 of 10 failed
    with pytest.raises(CircuitOpenError):
        await breaker.call(succeed)


async def test_breaker_successful_calls_in_closed_state_make_no_backend_call(
    backend: Backend,
) -> None:
    """Successes are counted in process; the backend hears of them at the next flush. (A
    shared breaker reads the fleet's state once, before its first call.)"""
    clock = Clock()
    breaker = breaker_for(backend, clock)
    calls: list[str] = []
    original = backend.call

    async def counting(operation: str, fn: Any) -> Any:
        calls.append(operation)
        return await original(operation, fn)

    backend.call = counting  # type: ignore[method-assign]
    for _ in range(100):
        await breaker.call(succeed)
    shared = not isinstance(backend, MemoryBackend)
    assert [c for c in calls if c.startswith("breaker")] == ["breaker.read"] * shared


async def test_half_open_lets_exactly_k_of_50_concurrent_callers_probe(backend: Backend) -> None:
    """With 50 callers arriving together after the open period, exactly 3 run; the rest are
    refused at once; 3 successes close the breaker."""
    clock = Clock()
    breaker = breaker_for(backend, clock, probes=3)
    for _ in range(10):
        with pytest.raises(ProviderError):
            await breaker.call(fail)
    assert breaker.state == "open"
    clock.now += 11
    ran = 0
    release = asyncio.Event()

    async def probe() -> str:
        nonlocal ran
        ran += 1
        await release.wait()
        return "ok"

    async def caller() -> str:
        try:
            return await breaker.call(probe)
        except CircuitOpenError:
            return "rejected"

    tasks = [asyncio.create_task(caller()) for _ in range(50)]
    while sum(t.done() for t in tasks) < 47:  # noqa: ASYNC110 - tasks, not an event
        await asyncio.sleep(0.001)
    release.set()
    results = await asyncio.gather(*tasks)
    assert ran == 3
    assert results.count("ok") == 3
    assert results.count("rejected") == 47
    assert breaker.state == "closed"


async def test_failed_probe_reopens_for_longer(backend: Backend) -> None:
    """A failing probe opens the breaker again, for twice the open duration."""
    clock = Clock()
    breaker = breaker_for(backend, clock, probes=1)
    for _ in range(10):
        with pytest.raises(ProviderError):
            await breaker.call(fail)
    clock.now += 11
    with pytest.raises(ProviderError):
        await breaker.call(fail)
    assert breaker.state == "open"
    clock.now += 11
    with pytest.raises(CircuitOpenError):  # 20 s this time
        await breaker.call(succeed)
    clock.now += 10
    assert await breaker.call(succeed) == "ok"
    assert breaker.state == "closed"


async def test_cancelled_call_leaves_the_counters_unchanged_and_frees_the_probe(
    backend: Backend,
) -> None:
    """A cancellation is neither failure nor success: the window is untouched, and a
    cancelled probe's permit goes to the next caller."""
    clock = Clock()
    breaker = breaker_for(backend, clock, probes=1)
    for _ in range(9):
        with pytest.raises(ProviderError):
            await breaker.call(fail)
    stuck = asyncio.create_task(breaker.call(asyncio.sleep, 3600))
    await asyncio.sleep(0)
    stuck.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stuck
    await breaker._flush()
    view = await backend.breaker_record(
        breaker.name, int(clock() * 1000), 0, 0, 0, False, breaker.config
    )
    assert (view.calls, view.failures) == (9, 9)
    assert breaker.state == "closed"
    with pytest.raises(ProviderError):
        await breaker.call(fail)
    assert breaker.state == "open"

    clock.now += 11
    probe = asyncio.create_task(breaker.call(asyncio.sleep, 3600))
    await eventually(lambda: breaker.state == "half_open")
    with pytest.raises(CircuitOpenError):
        await breaker.call(succeed)  # the one permit is taken
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    await breaker.settle()
    breaker._recheck_at = 0.0
    assert await breaker.call(succeed) == "ok"  # the permit came back
    assert breaker.state == "closed"


async def test_a_breaker_first_used_while_the_fleet_has_it_open_follows_from_its_first_call(
    backend: Backend,
) -> None:
    """An instance that starts (or first needs the breaker) while the fleet has it open
    refuses its first call; one that first needs it in half-open takes part in the fleet's
    K probes instead of letting every caller through as if it were closed."""
    clock = Clock()
    name = f"llm-{uuid.uuid4().hex[:6]}"
    options = {"clock": clock, "minimum_calls": 4, "open_duration": 10, "probes": 3}
    tripping = BreakerRegistry(backend).get(name, **options)
    for _ in range(4):
        with pytest.raises(ProviderError):
            await tripping.call(fail)
    assert tripping.state == "open"

    ran = 0

    async def probe() -> str:
        nonlocal ran
        ran += 1
        await asyncio.sleep(0.05)
        return "ok"

    with pytest.raises(CircuitOpenError):
        await BreakerRegistry(backend).get(name, **options).call(probe)
    clock.now += 11
    late = BreakerRegistry(backend).get(name, **options)
    results = await asyncio.gather(*(late.call(probe) for _ in range(10)), return_exceptions=True)
    assert ran == 3
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 7
    assert late.state == "closed"


async def test_forced_open_and_closed_and_disabled(backend: Backend) -> None:
    clock = Clock()
    breaker = breaker_for(backend, clock)
    await breaker.force_open()
    with pytest.raises(CircuitOpenError):
        await breaker.call(succeed)
    await breaker.force_closed()
    for _ in range(20):
        with pytest.raises(ProviderError):
            await breaker.call(fail)
    assert breaker.state == "closed"
    await breaker.disable()
    assert await breaker.call(succeed) == "ok"
    await breaker.reset()
    assert (breaker.state, breaker.forced) == ("closed", "")


async def test_shadow_breaker_records_but_never_refuses(
    backend: Backend, meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """It opens as it would, and the calls it would refuse run, counted shadow_rejected."""
    clock = Clock()
    breaker = breaker_for(backend, clock, shadow=True, meter_provider=meter_provider)
    for _ in range(10):
        with pytest.raises(ProviderError):
            await breaker.call(fail)
    assert breaker.state == "open"
    assert await breaker.call(succeed) == "ok"
    outcomes = {
        p.attributes[names.CIRCUIT_BREAKER_OUTCOME]: p.value
        for p in points(metric_reader, names.CIRCUIT_BREAKER_CALLS)
    }
    assert outcomes.get(names.CIRCUIT_SHADOW_REJECTED) == 1
    assert names.CIRCUIT_REJECTED not in outcomes


async def test_slow_calls_trip_the_breaker(backend: Backend) -> None:
    clock = Clock()
    breaker = breaker_for(backend, clock, slow_call_duration=1, slow_call_rate=0.8, minimum_calls=5)

    async def slow() -> str:
        clock.now += 2
        return "late"

    for _ in range(5):
        await breaker.call(slow)
        await breaker._flush()
    await breaker.settle()  # each call (the clock moved) also flushed in the background
    assert breaker.state == "open"


async def test_count_based_window_trips_from_the_last_n_calls(backend: Backend) -> None:
    clock = Clock()
    breaker = breaker_for(backend, clock, window_calls=10, minimum_calls=10)
    for _ in range(50):
        await breaker.call(succeed)
    for _ in range(5):
        with pytest.raises(ProviderError):
            await breaker.call(fail)
    assert breaker.state == "open"  # 5 of the last 10


async def test_instances_follow_each_other_through_the_registry(backend: Backend) -> None:
    """Two registries on one backend (two instances): one trips, the other follows."""
    clock = Clock()
    first, second = BreakerRegistry(backend), BreakerRegistry(backend)
    await first.start()  # each returns once it follows the others
    await second.start()
    try:
        name = f"llm-{uuid.uuid4().hex[:6]}"
        a = first.get(name, clock=clock, minimum_calls=4)
        b = second.get(name, clock=clock, minimum_calls=4)
        for _ in range(2):
            with pytest.raises(ProviderError):
                await a.call(fail)
            with pytest.raises(ProviderError):
                await b.call(fail)  # failures from both add up to the minimum
        await eventually(lambda: a.state == b.state == "open")
    finally:
        await first.stop()
        await second.stop()


# --- retries --------------------------------------------------------------------------------


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_retry_honours_retry_after_and_stops_on_errors_it_must_not_retry() -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(
        on=provider_errors, attempts=4, wait_initial=0.1, wait_jitter=0, sleep=sleeps
    )
    attempts = 0

    async def limited() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ProviderError(429, {"retry-after": "7"})
        return "ok"

    assert await policy.run(limited, (), {}) == "ok"
    assert sleeps.waits == [7.0, 7.0]

    attempts = 0

    async def invalid() -> None:
        nonlocal attempts
        attempts += 1
        raise ProviderError(400)

    with pytest.raises(ProviderError):
        await policy.run(invalid, (), {})
    assert attempts == 1


def test_retry_after_reads_httpx_errors_and_http_dates() -> None:
    request = httpx.Request("POST", "https://api.example/v1")
    response = httpx.Response(429, headers={"Retry-After": "3"}, request=request)
    error = httpx.HTTPStatusError("rate limited", request=request, response=response)
    assert provider_errors(error)
    assert retry_after_of(error) == 3.0
    dated = ProviderError(503, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after_of(dated, now=lambda: 1445412470.0) == 10.0
    assert provider_errors(httpx.ConnectError("refused"))
    assert provider_errors(httpx.ReadTimeout("slow"))
    assert not provider_errors(ProviderError(422))
    assert not provider_errors(asyncio.CancelledError())  # type: ignore[arg-type]


async def test_retry_budget_caps_attempts_against_a_dependency_that_always_fails() -> None:
    """50 concurrent calls with 5 attempts each: unbudgeted that is 250 attempts; a 20 %
    budget (no minimum) allows 10 retries for the 50 calls."""
    attempts = 0
    budget = RetryBudget(0.2, minimum=0)

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    policy = RetryPolicy(on=provider_errors, attempts=5, sleep=no_wait)

    @toolkit.resilient(retries=policy, budget=budget, timeout=None)
    async def call() -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        raise ProviderError(503)

    results = await asyncio.gather(*(call() for _ in range(50)), return_exceptions=True)
    assert all(isinstance(r, ProviderError) for r in results)
    assert attempts == 60  # unbudgeted: 250
    assert budget.available < 1


async def test_a_retry_cancelled_during_its_backoff_is_given_back_to_the_budget() -> None:
    budget = RetryBudget(0.0, minimum=0.1, window=10)  # one retry in 10 s
    waiting = asyncio.Event()

    async def long_backoff(seconds: float) -> None:
        waiting.set()
        await asyncio.sleep(3600)

    policy = RetryPolicy(on=provider_errors, attempts=2, sleep=long_backoff)
    task = asyncio.create_task(policy.run(fail, (), {}, budget=budget))
    await waiting.wait()
    assert budget.available < 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.available == pytest.approx(1)


async def test_cancellation_stops_retries() -> None:
    attempts = 0

    async def slow_failure() -> None:
        nonlocal attempts
        attempts += 1
        raise ProviderError(503)

    policy = RetryPolicy(on=provider_errors, attempts=10, wait_initial=3600, wait_jitter=0)
    task = asyncio.create_task(policy.run(slow_failure, (), {}))
    await eventually(lambda: attempts == 1)  # now in its hour-long backoff
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts == 1


# --- @resilient -----------------------------------------------------------------------------


async def test_resilient_deadline_counts_as_failure_and_fallback_answers(backend: Backend) -> None:
    clock = Clock()
    breaker = breaker_for(backend, clock, minimum_calls=2)

    async def canned(prompt: str) -> str:
        return "canned"

    @toolkit.resilient(breaker=breaker, timeout=0.01, fallback=canned)
    async def answer(prompt: str) -> str:
        await asyncio.sleep(3600)
        return prompt

    await breaker.refresh()  # the first call would read the stored state within its 10 ms
    assert await answer("hi") == "canned"
    assert await answer("hi") == "canned"
    await breaker.settle()
    assert breaker.state == "open"
    assert await answer("hi") == "canned"  # refused, answered by the fallback


async def test_resilient_with_the_flag_off_is_the_bare_call() -> None:
    store = FlagStore()
    await store.set(RESILIENCE, "off", by="test")
    breaker = CircuitBreaker("flag-off", minimum_calls=1)
    await breaker.force_open()

    @toolkit.resilient(breaker=breaker, flags=store)
    async def answer() -> str:
        return "bare"

    assert await answer() == "bare"
    await store.set(RESILIENCE, "on", by="test")
    with pytest.raises(CircuitOpenError):
        await answer()


async def test_resilient_named_breaker_comes_from_the_current_registry(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    registry = BreakerRegistry(meter_provider=meter_provider)
    set_current_breakers(registry)
    try:

        @toolkit.resilient(breaker="openai", timeout=None)
        async def call() -> None:
            raise ProviderError(500)

        for _ in range(20):
            with pytest.raises(ProviderError):
                await call()
        with pytest.raises(CircuitOpenError):
            await call()
        assert registry.get("openai").state == "open"
        outcomes = {
            p.attributes[names.CIRCUIT_BREAKER_OUTCOME]: p.value
            for p in points(metric_reader, names.CIRCUIT_BREAKER_CALLS)
        }
        assert outcomes == {"failure": 20, "rejected": 1}
        state = points(metric_reader, names.CIRCUIT_BREAKER_STATE)
        assert [p.value for p in state] == [2]
    finally:
        set_current_breakers(None)


@pytest.mark.redis
async def test_breaker_falls_back_to_local_state_when_redis_is_down_and_recovers() -> None:
    """Redis stopped: calls never see a backend error, the breaker trips on local counts;
    Redis back: the fleet's state (closed, nothing stored) returns."""
    server = RedisServer(require_binary("redis-server"))
    server.start()
    backend = RedisBackend(server.url, timeout=0.2)
    clock = Clock()
    try:
        breaker = breaker_for(backend, clock, minimum_calls=5)
        await breaker.call(succeed)
        server.stop()
        for _ in range(4):  # with the success: 4 of 5 failed
            with pytest.raises(ProviderError):
                await breaker.call(fail)
        assert breaker.degraded
        assert breaker.state == "open"
        with pytest.raises(CircuitOpenError):
            await breaker.call(succeed)
        server.start()
        clock.now += 11

        async def recovered() -> bool:
            with contextlib.suppress(CircuitOpenError):
                await breaker.call(succeed)
            clock.now += 1.1  # a flush interval: successes go to the backend again
            await breaker.settle()
            breaker._recheck_at = 0.0
            return not breaker.degraded and breaker.state == "closed"

        # The backend is probed with backoff: call until it answers.
        await eventually_returns(recovered, bool, 5.0)
    finally:
        await backend.close()
        server.stop()


# --- the retry budget ----------------------------------------------------------------------


async def test_retry_budget_lets_every_call_of_a_quiet_service_retry() -> None:
    """10 concurrent calls that each fail once all get their retry under the default budget,
    however long their backoffs overlap (they wait here until all ten have failed)."""
    attempts: dict[int, int] = {}
    all_failed = asyncio.Event()

    async def backoff(seconds: float) -> None:
        await all_failed.wait()

    @toolkit.resilient(
        retries=RetryPolicy(on=provider_errors, attempts=3, sleep=backoff), timeout=None
    )
    async def call(i: int) -> str:
        attempts[i] = attempts.get(i, 0) + 1
        if attempts[i] == 1:
            if len(attempts) == 10:
                all_failed.set()
            raise ProviderError(503)
        return "ok"

    results = await asyncio.gather(*(call(i) for i in range(10)), return_exceptions=True)
    assert results == ["ok"] * 10


async def test_retry_budget_refusal_is_counted_and_put_on_the_span(
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A retry the budget refuses is counted in toolkit.retry.budget_exhausted (by function)
    and leaves a span event naming the attempt refused; the first refusal is logged."""
    set_current_breakers(BreakerRegistry(meter_provider=meter_provider))
    policy = RetryPolicy(on=provider_errors, attempts=3, sleep=Sleeps())

    @toolkit.resilient(retries=policy, budget=RetryBudget(0.0, minimum=0), timeout=None)
    async def call() -> None:
        raise ProviderError(503)

    with caplog.at_level(logging.WARNING, logger="toolkit.resilience"):
        with (
            tracer_provider.get_tracer("test").start_as_current_span("work"),
            pytest.raises(ProviderError),
        ):
            await call()
        with pytest.raises(ProviderError):
            await call()
    refused = points(metric_reader, "toolkit.retry.budget_exhausted")
    assert [(p.attributes[names.RESILIENCE_FUNCTION], p.value) for p in refused] == [
        (call.__qualname__, 2)
    ]
    logged = [r.getMessage() for r in caplog.records if "retry budget" in r.getMessage()]
    assert len(logged) == 1  # the first refusal; the metric has the rest
    assert call.__qualname__ in logged[0]
    (span,) = span_exporter.get_finished_spans()
    (event,) = [e for e in span.events if e.name == "toolkit.retry.budget_exhausted"]
    assert event.attributes[names.RETRY_ATTEMPT_NUMBER] == 2
    assert event.attributes[names.ERROR_TYPE] == "503"


async def test_retries_made_and_fallbacks_are_counted_by_function_and_reason(
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """Each retry made is counted in toolkit.retry.attempts; each fallback in
    toolkit.resilience.fallbacks by reason (error, its own timeout, the current deadline, an
    open breaker), with or without a breaker, and the reason is on the span event."""
    set_current_breakers(BreakerRegistry(meter_provider=meter_provider))
    failures = [2]

    @toolkit.resilient(retries=RetryPolicy(on=provider_errors, attempts=3, sleep=Sleeps()))
    async def flaky() -> str:
        if failures[0]:
            failures[0] -= 1
            raise ProviderError(503)
        return "ok"

    async def canned(delay: float) -> str:
        return "canned"

    @toolkit.resilient(timeout=0.02, fallback=canned)
    async def slow(delay: float) -> str:
        if delay < 0:
            raise ProviderError(400)
        await asyncio.sleep(delay)
        return "slow"

    guard = CircuitBreaker(f"b-{uuid.uuid4().hex[:6]}", meter_provider=meter_provider)
    guarded = toolkit.resilient(breaker=guard, fallback=canned)(slow.__wrapped__)

    with tracer_provider.get_tracer("test").start_as_current_span("work"):
        assert await flaky() == "ok"
        assert await slow(0) == "slow"  # no fallback, nothing counted
        assert await slow(-1) == "canned"
        assert await slow(5) == "canned"  # its own timeout
        with toolkit.deadline(0.01):
            assert await slow(5) == "canned"  # the current deadline, sooner
        await guard.force_open()
        assert await guarded(0) == "canned"
    retried = points(metric_reader, names.RETRY_ATTEMPTS)
    assert [(p.attributes[names.RESILIENCE_FUNCTION], p.value) for p in retried] == [
        (flaky.__qualname__, 2)
    ]
    fell_back = {
        (
            p.attributes[names.RESILIENCE_FUNCTION],
            p.attributes[names.RESILIENCE_FALLBACK_REASON],
        ): p.value
        for p in points(metric_reader, names.RESILIENCE_FALLBACKS)
    }
    function = slow.__qualname__
    assert fell_back == {
        (function, "error"): 1,
        (function, "timeout"): 1,
        (function, "deadline"): 1,
        (function, "circuit_open"): 1,  # the guarded twin: the same function's name
    }
    (span,) = span_exporter.get_finished_spans()
    events = [e for e in span.events if e.name == names.RESILIENCE_FALLBACK_EVENT]
    assert [e.attributes[names.RESILIENCE_FALLBACK_REASON] for e in events] == [
        "error", "timeout", "deadline", "circuit_open"
    ]  # fmt: skip


def test_retry_budget_is_a_share_of_the_calls_over_its_window_plus_a_minimum() -> None:
    """20 % of the last window's calls, plus the minimum per second; calls and retries older
    than the window stop counting."""
    clock = Clock()
    budget = RetryBudget(0.2, minimum=0, window=10, clock=clock)
    for _ in range(50):
        budget.record_call()
    assert sum(budget.try_retry() for _ in range(20)) == 10
    clock.now += 11
    assert not budget.try_retry()  # the 50 calls left the window
    quiet = RetryBudget(0.2, minimum=1, window=10, clock=clock)
    assert sum(quiet.try_retry() for _ in range(20)) == 10  # 1 a second, over 10 s
    clock.now += 5
    assert not quiet.try_retry()  # the 10 retries taken count for 10 s...
    clock.now += 6
    assert sum(quiet.try_retry() for _ in range(20)) == 10  # ...then leave the window
    for bad in ({"window": 0}, {"window": float("inf")}, {"window": "soon"}):
        with pytest.raises(toolkit.ConfigurationError, match="window"):
            RetryBudget(0.2, **bad)
    for ratio in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(toolkit.ConfigurationError, match="ratio"):
            RetryBudget(ratio)
    for minimum in (-1, float("inf"), float("nan")):
        with pytest.raises(toolkit.ConfigurationError, match="minimum"):
            RetryBudget(0.2, minimum=minimum)


async def test_functions_sharing_a_breaker_have_retry_budgets_of_their_own() -> None:
    """Two functions behind one breaker, a budget of one retry at a time in the old scheme:
    each function's default budget is its own, so both get their retry."""
    set_current_breakers(
        BreakerRegistry(
            settings=toolkit.ToolkitSettings(
                resilience={"retry_budget": 0.0, "retry_budget_minimum": 1}
            ).resilience
        )
    )
    failed: set[str] = set()
    both_failed = asyncio.Event()

    async def backoff(seconds: float) -> None:
        await both_failed.wait()

    def failing_once(name: str) -> Any:
        @toolkit.resilient(
            breaker="shared-store",
            retries=RetryPolicy(on=provider_errors, attempts=2, sleep=backoff),
            timeout=None,
        )
        async def call() -> str:
            if name not in failed:
                failed.add(name)
                if len(failed) == 2:
                    both_failed.set()
                raise ProviderError(503)
            return name

        return call

    search, upsert = failing_once("search"), failing_once("upsert")
    assert await asyncio.gather(search(), upsert()) == ["search", "upsert"]


# --- CircuitOpenError over HTTP -------------------------------------------------------------


async def test_circuit_open_error_is_answered_503_with_the_breakers_remaining_open_time() -> None:
    """An unhandled CircuitOpenError is a 503 problem+json whose Retry-After is the time the
    breaker stays open, not a 500."""
    app = FastAPI()
    installed = toolkit.install(app)
    clock = Clock()
    breaker = installed.breakers.get("payments", clock=clock, open_duration=30, minimum_calls=1)

    @toolkit.resilient(breaker="payments", timeout=None)
    async def charge() -> str:
        raise ProviderError(503)

    @app.get("/charge")
    async def route() -> str:
        return await charge()

    await installed.startup()
    try:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/charge")).status_code == 500  # the provider's error
            await breaker.settle()
            assert breaker.state == "open"
            clock.now += 12.5
            refused = await client.get("/charge")
    finally:
        await installed.shutdown()
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "18"  # 17.5 s left, rounded up
    assert refused.headers["cache-control"] == "no-store"
    problem = refused.json()
    assert problem["status"] == 503
    assert "payments" in problem["detail"]


async def test_an_apps_own_circuit_open_handler_is_kept() -> None:
    app = FastAPI()

    @app.exception_handler(CircuitOpenError)
    async def mine(request: Any, exc: Exception) -> JSONResponse:
        return JSONResponse({"degraded": True}, status_code=200)

    @app.get("/x")
    async def route() -> None:
        raise CircuitOpenError("refused", breaker="x", retry_after=3)

    installed = toolkit.install(app)
    await installed.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/x")
    finally:
        await installed.shutdown()
    assert (response.status_code, response.json()) == (200, {"degraded": True})


# --- composition ----------------------------------------------------------------------------


async def test_cached_outside_resilient_serves_hits_while_open_and_never_stores_the_fallback(
    backend: Backend,
) -> None:
    """@cached over @resilient(fallback=): while the breaker is open a cached answer is still
    served, and the fallback's answer is returned but not stored."""
    set_current_cache(CacheStore(backend))
    breaker = breaker_for(backend, Clock())
    origin: list[str] = []

    async def canned(question: str) -> str:
        return "busy"

    @toolkit.cached(ttl="1m", namespace=f"compose-{uuid.uuid4().hex[:6]}")
    @toolkit.resilient(breaker=breaker, fallback=canned, timeout=None)
    async def answer(question: str) -> str:
        origin.append(question)
        return f"answer to {question}"

    assert await answer("a") == "answer to a"
    await breaker.force_open()
    assert await answer("a") == "answer to a"  # a hit: the breaker is not asked
    assert await answer("b") == "busy"  # refused, answered by the fallback...
    await breaker.reset()
    assert await answer("b") == "answer to b"  # ...which was not stored
    assert origin == ["a", "b"]


async def test_resilient_outside_cached_refuses_even_cached_answers_while_open(
    backend: Backend,
) -> None:
    """The other order: the breaker is asked before the cache, so while it is open every call
    gets the fallback, cached or not (the order docs/resilience.md warns against)."""
    set_current_cache(CacheStore(backend))
    breaker = breaker_for(backend, Clock())

    async def canned(question: str) -> str:
        return "busy"

    @toolkit.resilient(breaker=breaker, fallback=canned, timeout=None)
    @toolkit.cached(ttl="1m", namespace=f"compose-{uuid.uuid4().hex[:6]}")
    async def answer(question: str) -> str:
        return f"answer to {question}"

    assert await answer("a") == "answer to a"
    await breaker.force_open()
    assert await answer("a") == "busy"


async def test_a_nested_breakers_failures_do_not_open_the_outer_breaker(backend: Backend) -> None:
    """400 searches, each embedding its query (its own breaker) inside the store's
    @resilient. The embedding API fails for 30 of them: its breaker may open, the store's
    never does, and every search whose embedding worked gets its results."""
    clock = Clock()
    store = breaker_for(backend, clock, minimum_calls=20, window=5)
    embeddings = breaker_for(backend, clock, minimum_calls=20, window=5, open_duration=1)

    async def no_results(query: str) -> list[str]:
        return []

    outage = (clock.now + 10, clock.now + 13)  # searches 100 to 129

    @toolkit.resilient(breaker=embeddings, timeout=None)
    async def embed(query: str) -> list[float]:
        if outage[0] <= clock.now < outage[1]:
            raise ProviderError(503)
        return [1.0]

    @toolkit.resilient(breaker=store, fallback=no_results, timeout=None)
    async def search(query: str) -> list[str]:
        await embed(query)
        return [f"doc for {query}"]

    lost = 0
    for i in range(400):
        if not await search(f"q{i}"):
            lost += 1
        clock.now += 0.1
        await asyncio.sleep(0)  # the breakers' background flushes run, as under real traffic
    await store.settle()
    assert store.state == "closed"
    assert lost <= 30 + 15  # the failed embeddings, and those refused while its breaker was open


async def test_an_outer_deadline_cutting_a_nested_retry_is_no_failure_of_either_breaker(
    backend: Backend,
) -> None:
    """The outer call's deadline passes while the inner call waits to retry: the store was not
    slow and the embedding API did not fail that call, so neither breaker counts a failure."""
    clock = Clock()
    store = breaker_for(backend, clock, minimum_calls=1)
    embeddings = breaker_for(backend, clock, minimum_calls=2)
    waiting = asyncio.Event()

    async def long_backoff(seconds: float) -> None:
        waiting.set()
        await asyncio.sleep(3600)

    @toolkit.resilient(
        breaker=embeddings,
        retries=RetryPolicy(on=provider_errors, attempts=3, sleep=long_backoff),
        timeout=None,
    )
    async def embed() -> list[float]:
        raise ProviderError(503)

    @toolkit.resilient(breaker=store, timeout=0.2)
    async def search() -> list[float]:
        return await embed()

    await store.refresh()
    await embeddings.refresh()
    with pytest.raises(TimeoutError):
        await search()
    assert waiting.is_set()
    await store.settle()
    await embeddings.settle()
    assert (store.state, embeddings.state) == ("closed", "closed")
    with pytest.raises(ProviderError):  # the store does count its own failures
        await store.call(fail)
    assert store.state == "open"


async def test_an_error_an_inner_call_already_retried_is_not_retried_again_by_the_outer_call() -> (
    None
):
    """Retries at one layer only: the inner call made its 3 attempts; the outer call's own
    retries do not multiply them to 9. An inner call with a breaker but no retries is still
    retried by the outer call."""
    attempts = 0
    sleeps = Sleeps()

    def policy() -> RetryPolicy:
        return RetryPolicy(on=provider_errors, attempts=3, sleep=sleeps)

    async def failing() -> None:
        nonlocal attempts
        attempts += 1
        raise ProviderError(503)

    retried_inside = toolkit.resilient(
        breaker=CircuitBreaker(f"inner-{uuid.uuid4().hex[:6]}"), retries=policy(), timeout=None
    )(failing)
    guarded_only = toolkit.resilient(
        breaker=CircuitBreaker(f"inner-{uuid.uuid4().hex[:6]}"), timeout=None
    )(failing)

    for inner in (retried_inside, guarded_only):

        @toolkit.resilient(retries=policy(), timeout=None)
        async def outer() -> None:
            await inner()  # noqa: B023 - called within the iteration

        attempts = 0
        with pytest.raises(ProviderError):
            await outer()
        assert attempts == 3


# --- settings per breaker -------------------------------------------------------------------


def test_a_named_breaker_takes_its_own_settings_over_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """resilience.breakers.<name> sets one breaker's open time and window; unset fields and
    other breakers keep the resilience defaults, and arguments in code still win."""
    monkeypatch.setenv("TOOLKIT_RESILIENCE__OPEN_DURATION", "30s")
    monkeypatch.setenv(
        "TOOLKIT_RESILIENCE__BREAKERS", '{"openai": {"open_duration": "5s", "window": "10s"}}'
    )
    registry = BreakerRegistry(settings=toolkit.ToolkitSettings().resilience)
    openai = registry.get("openai")
    assert (openai.settings.open_duration, openai.settings.window) == (5.0, 10.0)
    assert openai.config.open_ms == 5000
    assert openai.settings.minimum_calls == 20
    other = registry.get("anthropic")
    assert (other.settings.open_duration, other.settings.window) == (30.0, 60.0)
    explicit = BreakerRegistry(settings=registry.settings).get("openai", open_duration=2)
    assert explicit.settings.open_duration == 2.0


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ('{"openai": {"open_duration": "0s"}}', "entry openai.open_duration"),
        ('{"openai": {"failure_rate": 2}}', "entry openai.failure_rate"),
        ('{"openai": {"open_durations": "5s"}}', "entry openai.open_durations"),
        ('{"open ai": {"open_duration": "5s"}}', "TOOLKIT_RESILIENCE__BREAKERS"),
    ],
)
def test_a_bad_breaker_setting_stops_startup_naming_it(
    monkeypatch: pytest.MonkeyPatch, entry: str, named: str
) -> None:
    monkeypatch.setenv("TOOLKIT_RESILIENCE__BREAKERS", entry)
    with pytest.raises(toolkit.ConfigurationError, match=re.escape(named)):
        toolkit.ToolkitSettings()


# --- SDK clients that retry on their own -----------------------------------------------------


class OverloadedAPI:
    """A real HTTP server on a loopback port that answers every request 503 (an overloaded
    provider), asking for a 1 ms wait, and counts the requests."""

    def __init__(self) -> None:
        self.requests = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                api.requests += 1
                self.rfile.read(int(self.headers.get("content-length", 0)))
                body = b'{"error": {"type": "overloaded_error", "message": "overloaded"}}'
                self.send_response(503)
                self.send_header("content-type", "application/json")
                self.send_header("retry-after-ms", "1")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def overloaded_api() -> Iterator[OverloadedAPI]:
    api = OverloadedAPI()
    thread = threading.Thread(target=api.server.serve_forever, daemon=True)
    thread.start()
    yield api
    api.server.shutdown()
    api.server.server_close()
    thread.join()


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_resilient_around_a_client_that_retries_itself_warns_once_naming_max_retries(
    sdk: str, overloaded_api: OverloadedAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """3 attempts of @resilient around a client with its default max_retries=2 make 9 HTTP
    requests: the first retry logs one warning naming the client's setting. With
    max_retries=0 the 3 attempts are 3 requests, and nothing is logged."""
    module = importlib.import_module(sdk)

    def client(**options: Any) -> Any:
        if sdk == "openai":
            return module.AsyncOpenAI(
                api_key="test", base_url=f"{overloaded_api.url}/v1", **options
            )
        return module.AsyncAnthropic(api_key="test", base_url=overloaded_api.url, **options)

    def resilient_call(api: Any) -> Any:
        @toolkit.resilient(
            retries=RetryPolicy(
                on=provider_errors, attempts=3, wait_initial=0, wait_jitter=0, max_retry_after=0
            ),
            timeout=None,
        )
        async def call_llm() -> Any:
            message = [{"role": "user", "content": "hello"}]
            if sdk == "openai":
                return await api.chat.completions.create(model="m", messages=message)
            return await api.messages.create(model="m", max_tokens=8, messages=message)

        return call_llm

    retrying_itself, retrying_once = resilient_call(client()), resilient_call(client(max_retries=0))
    with caplog.at_level(logging.WARNING, logger="toolkit.resilience"):
        for _ in range(2):
            with pytest.raises(module.APIStatusError):
                await retrying_itself()
        assert overloaded_api.requests == 2 * 9
        warned = [r.getMessage() for r in caplog.records if "max_retries" in r.getMessage()]
        assert len(warned) == 1
        assert f"the {sdk} client had already retried this request 2 times" in warned[0]
        assert "max_retries=0" in warned[0]
        caplog.clear()
        overloaded_api.requests = 0
        with pytest.raises(module.APIStatusError):
            await retrying_once()
    assert overloaded_api.requests == 3
    assert not [r for r in caplog.records if "max_retries" in r.getMessage()]


# --- the breaker of a provider's model ------------------------------------------------------


def test_a_models_breaker_is_provider_colon_model_with_what_a_name_cannot_hold_replaced() -> None:
    assert model_breaker_name("openai", "gpt-4o") == "openai:gpt-4o"
    assert model_breaker_name("openai", "gpt-4o") == "openai:gpt-4o"  # the same breaker again
    odd = model_breaker_name("azure.ai.openai", "my deployment@eu+1")
    assert odd == "azure.ai.openai:my_deployment_eu_1"
    toolkit.CircuitBreaker(odd)  # a name a breaker takes
    assert len(model_breaker_name("openai", "m" * 1000)) <= 200


def test_breaker_names_past_the_bound_share_their_providers_then_one() -> None:
    names_of = ModelBreakerNames(max_models=2, max_others=1)
    assert names_of("openai", "a") == "openai:a"
    assert names_of("openai", "b") == "openai:b"
    assert names_of("openai", "c") == "openai:other"  # past the bound: the provider's share
    assert names_of("openai", "d") == "openai:other"
    assert names_of("openai", "a") == "openai:a"  # the first ones keep theirs
    assert names_of("groq", "e") == "other"  # past both bounds: one for all
    kept = {names_of(f"p{i}", f"m{j}") for i in range(50) for j in range(50)}
    assert kept == {"other"}


def test_breaker_names_asked_from_many_threads_stay_within_the_bound() -> None:
    names_of = ModelBreakerNames(max_models=8, max_others=2)
    handed: list[str] = []

    def ask(thread: int) -> None:
        handed.extend(names_of(f"p{thread % 3}", f"m{i}") for i in range(200))

    threads = [threading.Thread(target=ask, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    own = {name for name in handed if not name.endswith("other")}
    assert len(own) == 8
    assert len(set(handed) - own) <= 3  # two providers' shares and "other"
