"""Circuit breakers, retries, budgets and @resilient, on the memory backend and real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import toolkit
from tests.support.otel import points
from tests.support.servers import RedisServer, require_binary
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends.redis import RedisBackend
from toolkit.errors import CircuitOpenError
from toolkit.flags import RESILIENCE, FlagStore
from toolkit.resilience import (
    BreakerRegistry,
    CircuitBreaker,
    RetryBudget,
    RetryPolicy,
    provider_errors,
    retry_after_of,
    set_current_breakers,
)
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
    await asyncio.sleep(0.05)
    assert breaker.state == "half_open"
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
    await first.start()
    await second.start()
    await asyncio.sleep(0.05)
    try:
        name = f"llm-{uuid.uuid4().hex[:6]}"
        a = first.get(name, clock=clock, minimum_calls=4)
        b = second.get(name, clock=clock, minimum_calls=4)
        for _ in range(2):
            with pytest.raises(ProviderError):
                await a.call(fail)
            with pytest.raises(ProviderError):
                await b.call(fail)  # failures from both add up to the minimum
        for _ in range(100):
            if a.state == b.state == "open":
                break
            await asyncio.sleep(0.01)
        assert (a.state, b.state) == ("open", "open")
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
    budget keeps retries in flight to a fifth of the calls in flight."""
    attempts = 0
    peak = 0
    budget = RetryBudget(0.2, minimum=0)

    async def always_fails() -> None:
        nonlocal attempts, peak
        attempts += 1
        peak = max(peak, budget.retrying)
        await asyncio.sleep(0)
        raise ProviderError(503)

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    policy = RetryPolicy(on=provider_errors, attempts=5, sleep=no_wait)

    @toolkit.resilient(retries=policy, budget=budget, timeout=None)
    async def call() -> None:
        await always_fails()

    results = await asyncio.gather(*(call() for _ in range(50)), return_exceptions=True)
    assert all(isinstance(r, ProviderError) for r in results)
    assert 50 < attempts <= 100  # unbudgeted: 250
    assert peak <= 10
    assert (budget.active, budget.retrying) == (0, 0)


async def test_cancellation_stops_retries() -> None:
    attempts = 0

    async def slow_failure() -> None:
        nonlocal attempts
        attempts += 1
        raise ProviderError(503)

    policy = RetryPolicy(on=provider_errors, attempts=10, wait_initial=3600, wait_jitter=0)
    task = asyncio.create_task(policy.run(slow_failure, (), {}))
    await asyncio.sleep(0.01)
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
        for _ in range(50):  # the backend is probed with backoff: call until it answers
            with contextlib.suppress(CircuitOpenError):
                await breaker.call(succeed)
            clock.now += 1.1  # a flush interval: successes go to the backend again
            await breaker.settle()
            if not breaker.degraded and breaker.state == "closed":
                break
            breaker._recheck_at = 0.0
            await asyncio.sleep(0.05)
        assert not breaker.degraded
        assert breaker.state == "closed"
    finally:
        await backend.close()
        server.stop()
