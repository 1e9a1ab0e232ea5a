"""Backends: GCRA decisions on memory and real Redis, how a failing Redis is handled, and the
storage contract: each capability asks for its own protocol only, when it is wired."""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from collections.abc import Callable, Sequence

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.cluster import key_slot
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import toolkit.backends.base
from tests.support.asgi import call, http_scope, status_of
from tests.support.otel import counter_value
from tests.support.servers import RedisServer, free_port
from tests.support.waiting import eventually, eventually_returns
from toolkit import CircuitBreaker, RateLimitMiddleware
from toolkit.backends import Backend, GcraLimit, GcraResult, MemoryBackend, backend_from_url
from toolkit.backends._deadline import LoopLag
from toolkit.backends._reconnect import Reconnect
from toolkit.backends.redis import RedisBackend
from toolkit.cache import CacheStore, cached, set_current_cache
from toolkit.cache._singleflight import SingleFlight
from toolkit.errors import BackendError, BackendUnavailable, ConfigurationError
from toolkit.flags import FlagStore
from toolkit.ratelimit.algorithms import Gcra
from toolkit.ratelimit.policies import Policy
from toolkit.resilience import BreakerRegistry
from toolkit.telemetry import names

pytestmark = pytest.mark.anyio


async def test_gcra_admits_the_burst_then_rejects_with_the_time_to_wait(backend: Backend) -> None:
    limits = [GcraLimit.of(5, 60.0)]
    results = [await backend.gcra(["k"], limits, 1) for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert [r.remaining[0] for r in results] == [4, 3, 2, 1, 0, 0]
    assert results[-1].retry_after == pytest.approx(12.0, abs=0.05)  # one unit per 60/5 s
    assert results[4].reset_after[0] == pytest.approx(60.0, abs=0.05)


async def test_gcra_charges_all_limits_or_none(backend: Backend) -> None:
    """A request refused by one limit leaves every other limit untouched."""
    limits = [GcraLimit.of(10, 60.0), GcraLimit.of(2, 60.0)]
    assert (await backend.gcra(["a", "b"], limits, 1)).allowed
    assert (await backend.gcra(["a", "b"], limits, 1)).allowed
    refused = await backend.gcra(["a", "b"], limits, 1)
    assert not refused.allowed
    assert refused.remaining == (8, 0)  # the refusal charged nothing to the first limit


async def test_gcra_weighs_requests_by_cost(backend: Backend) -> None:
    limits = [GcraLimit.of(10, 60.0)]
    assert (await backend.gcra(["k"], limits, 7)).remaining == (3,)
    refused = await backend.gcra(["k"], limits, 4)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(6.0, abs=0.05)  # one more unit takes 6 s


async def test_gcra_refills_at_the_emission_interval(backend: Backend) -> None:
    """After the burst, a unit comes back one emission interval after it was taken, and not
    before: a refused request is told the wait, and that is the wait it takes."""
    limits = [GcraLimit.of(2, 0.6)]  # a unit every 300 ms
    assert (await backend.gcra(["k"], limits, 2)).allowed
    asked = time.monotonic()
    refused = await backend.gcra(["k"], limits, 1)
    assert not refused.allowed
    assert 0 < refused.retry_after <= 0.3
    await eventually_returns(lambda: backend.gcra(["k"], limits, 1), lambda r: r.allowed)
    assert time.monotonic() - asked >= refused.retry_after - 0.001  # µs rounding


def test_memory_gcra_of_one_limit_answers_as_its_loop_over_several_does() -> None:
    """One limit takes a path of its own on the memory backend (every default policy does):
    its answers, refusals and waits included, are those of the loop over several limits for
    the same limit beside one that never binds."""
    now = [1000.0]
    alone, paired = MemoryBackend(clock=lambda: now[0]), MemoryBackend(clock=lambda: now[0])
    limit, roomy = GcraLimit.of(3, 1.0), GcraLimit.of(10**6, 1.0)

    async def both(cost: int) -> tuple[GcraResult, GcraResult]:
        return (
            await alone.gcra(["k"], [limit], cost),
            await paired.gcra(["k", "roomy"], [limit, roomy], cost),
        )

    async def run() -> list[bool]:
        admitted = []
        for step, cost in enumerate([1, 1, 2, 1, 1, 3, 1, 1, 1, 4]):
            one, many = await both(cost)
            admitted.append(one.allowed)
            assert one.allowed == many.allowed, step
            assert one.retry_after == many.retry_after, step
            assert one.remaining == many.remaining[:1], step
            assert one.reset_after == many.reset_after[:1], step
            now[0] += 0.15
        return admitted

    admitted = asyncio.run(run())
    assert True in admitted
    assert False in admitted  # refusals compared too


def test_memory_gcra_refills_exactly_at_the_emission_interval() -> None:
    """On the memory backend's injected clock: still refused a microsecond before the unit
    is back, admitted at the microsecond it is."""
    now = [1000.0]
    store = MemoryBackend(clock=lambda: now[0])
    limits = [GcraLimit.of(4, 0.2)]  # a unit every 50 ms

    async def charge() -> bool:
        return (await store.gcra(["k"], limits, 1)).allowed

    async def run() -> list[bool]:
        burst = [await charge() for _ in range(5)]
        now[0] += 0.049999
        early = await charge()
        now[0] += 0.000001
        return [*burst, early, await charge()]

    assert asyncio.run(run()) == [True] * 4 + [False, False, True]


async def test_gcra_keys_are_isolated_and_prefixed(backend: Backend) -> None:
    limits = [GcraLimit.of(1, 60.0)]
    assert (await backend.gcra(["alice"], limits, 1)).allowed
    assert (await backend.gcra(["bob"], limits, 1)).allowed
    assert not (await backend.gcra(["alice"], limits, 1)).allowed
    assert backend.key("x").startswith(backend.key_prefix + ":")


def test_memory_gcra_forgets_keys_whose_time_has_passed() -> None:
    now = [1000.0]
    store = MemoryBackend(clock=lambda: now[0])
    limits = [GcraLimit.of(10, 1.0)]

    async def fill() -> None:
        for i in range(3000):
            await store.gcra([f"k{i}"], limits, 1)
            now[0] += 0.01

    asyncio.run(fill())
    assert len(store._tats) < 1100  # keys idle for a whole period were swept


def test_multi_key_calls_stay_in_one_cluster_slot() -> None:
    """The keys of one policy share a {hash tag}, so the script runs on Redis Cluster."""
    captured: list[list[str]] = []

    class Recording(MemoryBackend):
        async def gcra(self, keys, limits, cost):  # type: ignore[no-untyped-def]
            captured.append([self.key(k) for k in keys])
            return await super().gcra(keys, limits, cost)

    policy = Policy.parse("p", "10/second;100/minute;1000/day")
    asyncio.run(Gcra(Recording()).acquire("0123abcd", policy))
    assert len({key_slot(k.encode()) for k in captured[0]}) == 1


def test_reconnect_backs_off_and_lets_one_probe_through() -> None:
    now = [0.0]
    reconnect = Reconnect(
        initial_delay=0.1, max_delay=0.4, clock=lambda: now[0], random=lambda: 1.0
    )
    assert reconnect.may_try()
    assert reconnect.failed()  # went down
    assert not reconnect.may_try()
    assert not reconnect.failed()  # a call already in flight: no further backoff
    now[0] = 0.1
    assert reconnect.may_try()  # the probe
    assert not reconnect.may_try()  # only one
    reconnect.failed()
    now[0] = 0.25
    assert not reconnect.may_try()  # backoff doubled to 0.2 s
    now[0] = 0.31
    assert reconnect.may_try()
    reconnect.failed()
    reconnect.abandon()
    now[0] = 0.31 + 0.4
    assert reconnect.may_try()  # capped at max_delay
    assert reconnect.succeeded()
    assert reconnect.may_try()
    assert not reconnect.down


async def test_redis_backend_fails_fast_counts_and_recovers(
    redis_server: RedisServer,
    metric_reader: InMemoryMetricReader,
    meter_provider: MeterProvider,
    span_exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
) -> None:
    """Redis down: calls raise BackendError within the timeout, then are skipped without
    waiting, every failure is counted and on the span; when Redis returns, calls resume."""
    server = RedisServer(redis_server.binary)
    server.start()
    now = [0.0]
    store = RedisBackend(
        server.url,
        timeout=0.5,
        meter_provider=meter_provider,
        reconnect=Reconnect(initial_delay=0.2, max_delay=0.2, clock=lambda: now[0]),
    )
    limits = [GcraLimit.of(100, 60.0)]
    assert (await store.gcra(["k"], limits, 1)).allowed
    server.stop()
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request"):
        started = time.monotonic()
        with pytest.raises(BackendError) as first:
            await store.gcra(["k"], limits, 1)
        assert first.value.error_type == "connection"
        with pytest.raises(BackendUnavailable):
            await store.gcra(["k"], limits, 1)
        assert time.monotonic() - started < 0.5
    assert counter_value(metric_reader, names.BACKEND_ERRORS, **{"error.type": "connection"}) == 1
    assert counter_value(metric_reader, names.BACKEND_ERRORS, **{"error.type": "unavailable"}) == 1
    events = [e for e in span_exporter.get_finished_spans()[0].events]
    assert [e.name for e in events] == [names.BACKEND_ERROR_EVENT] * 2
    assert events[0].attributes[names.BACKEND_OPERATION] == "ratelimit.gcra"

    server.start()
    now[0] += 0.2  # the backoff's probe is due (0.2 s at most, jitter included)
    assert (await store.gcra(["k"], limits, 1)).allowed
    await store.close()
    server.stop()


async def test_redis_backend_times_out_a_stalled_server(redis_server: RedisServer) -> None:
    store = RedisBackend(redis_server.url, timeout=0.1, key_prefix="stall")
    await store.connect()
    redis_server.pause(1.5)
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        await store.gcra(["k"], [GcraLimit.of(5, 1.0)], 1)
    assert caught.value.error_type == "timeout"
    assert time.monotonic() - started < 0.75  # the timeout, not the stall, ended the wait
    # Once the stall ends, calls go through again (after the backoff's next probe).
    answered = await eventually_returns(
        lambda: store.gcra(["k"], [GcraLimit.of(5, 1.0)], 1),
        lambda result: result.allowed,
        5.0,
        failing=BackendError,
    )
    assert answered.allowed
    await store.close()


async def test_redis_backend_connect_never_raises_when_redis_is_down() -> None:
    store = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    started = time.monotonic()
    await store.connect()
    assert time.monotonic() - started < 0.5
    await store.close()


def test_backend_urls_are_validated() -> None:
    assert isinstance(backend_from_url("memory://"), MemoryBackend)
    with pytest.raises(ConfigurationError, match="not a backend URL"):
        backend_from_url("postgres://db")


BUSY_BLOCK = 0.004  # seconds a busy request holds the loop per turn


async def busy_requests(count: int, seconds: float) -> None:
    """``count`` requests in flight, each holding the event loop for 4 ms per turn (CPU-bound
    work, a sync SDK call), for ``seconds``: forty make turns of about 160 ms."""

    async def request() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(BUSY_BLOCK)  # noqa: ASYNC251 - the point: it holds the loop
            await asyncio.sleep(0)

    await asyncio.gather(*(request() for _ in range(count)))


async def test_a_busy_event_loop_is_not_a_redis_outage(
    redis_url: str, metric_reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    """Redis is healthy and the loop saturated: forty busy requests (turns of about 160 ms,
    longer than the 100 ms timeout) while ten others read answers through the cache, half of
    them stored before the rush. The delay is the loop's: no backend call fails, the backend
    is never skipped, and the origin runs once per answer, never for a lookup that failed."""
    backend = RedisBackend(
        redis_url, timeout=0.1, key_prefix=f"busy-{uuid.uuid4().hex[:8]}",
        meter_provider=meter_provider,
    )  # fmt: skip
    set_current_cache(CacheStore(backend, meter_provider=meter_provider))
    origin_calls = 0

    @cached(ttl="1m", namespace="busy")
    async def answer(n: int) -> int:
        nonlocal origin_calls
        origin_calls += 1
        return n

    async def looking_up(n: int, seconds: float) -> int:
        deadline, lookups = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            assert await answer(n) == n
            lookups += 1
        return lookups

    try:
        for n in range(5):
            await answer(n)
        *_, lookups = await asyncio.gather(
            busy_requests(40, 2.5), asyncio.gather(*(looking_up(n, 2.5) for n in range(10)))
        )
    finally:
        await backend.close()
    assert counter_value(metric_reader, names.BACKEND_ERRORS) == 0
    hits, misses, errors = (
        counter_value(
            metric_reader, names.CACHE_REQUESTS,
            **{names.CACHE_NAME: "busy", names.CACHE_RESULT: result},
        )
        for result in (names.CACHE_HIT, names.CACHE_MISS, names.CACHE_ERROR)
    )  # fmt: skip
    assert (origin_calls, misses, errors) == (10, 10, 0)
    assert hits == sum(lookups) - 5 > 0


async def test_a_stalled_redis_still_times_out_on_a_busy_event_loop(
    redis_server: RedisServer,
) -> None:
    """Five busy requests (turns of about 20 ms) while Redis stalls for 3 s: the call fails
    with a timeout long before Redis answers again, instead of waiting the stall out (each
    turn of a busy loop counts for a twentieth of the timeout at most)."""
    store = RedisBackend(redis_server.url, timeout=0.1, key_prefix="busy-stall")
    await store.connect()
    busy = asyncio.create_task(busy_requests(5, 3.0))
    try:
        await asyncio.to_thread(redis_server.pause, 3.0)
        started = time.monotonic()
        with pytest.raises(BackendError) as caught:
            await store.gcra(["k"], [GcraLimit.of(5, 1.0)], 1)
        waited = time.monotonic() - started
    finally:
        await busy
        await store.close()
    assert caught.value.error_type == "timeout"
    assert waited < 2.0, waited  # the stall lasts 3 s


async def test_a_subscription_that_restarts_resumes_the_calls_skipped_by_the_backoff(
    redis_server: RedisServer,
) -> None:
    """Redis went down and came back: the subscription that starts again proves it answers,
    so the catch-up its cue triggers (a flag reload) is served at once instead of being
    refused until the backoff's next probe (here a minute away)."""
    server = RedisServer(redis_server.binary)
    server.start()
    store = RedisBackend(server.url, timeout=0.5, reconnect=Reconnect(initial_delay=60))
    try:
        server.stop()
        with pytest.raises(BackendError):
            await store.flags_load()
        with pytest.raises(BackendUnavailable):
            await store.flags_load()  # skipped: the next probe is due in a minute
        server.start()
        caught_up: list[dict[str, str]] = []

        async def catch_up(message: str) -> None:
            caught_up.append(await store.flags_load())

        follower = asyncio.create_task(store.follow("flags", catch_up))
        try:
            await eventually(lambda: bool(caught_up), 5)
        finally:
            follower.cancel()
            await asyncio.wait([follower])
        assert caught_up == [{}]
    finally:
        await store.close()
        server.stop()


async def test_a_deadline_does_not_count_the_time_the_loop_was_blocked() -> None:
    """A 50 ms wait under a 100 ms deadline, while the loop is blocked for 300 ms: the wait
    ends late, but within its budget of the loop's free time, so it does not time out
    (``asyncio.timeout(0.1)`` would)."""
    lag = LoopLag(asyncio.get_running_loop(), 0.1)

    async def blocker() -> None:
        await asyncio.sleep(0.01)
        time.sleep(0.3)  # noqa: ASYNC251 - the point: it holds the loop

    blocking = asyncio.create_task(blocker())
    started = time.monotonic()
    async with lag.deadline():
        await asyncio.sleep(0.05)
    assert time.monotonic() - started >= 0.3
    await blocking


async def test_a_deadline_times_out_a_wait_on_an_idle_loop_and_leaves_cancellation_alone() -> None:
    """On an idle loop the budget is wall time: TimeoutError after 100 ms. A cancellation from
    outside stays a cancellation."""
    lag = LoopLag(asyncio.get_running_loop(), 0.1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with lag.deadline():
            await asyncio.sleep(5)
    assert 0.1 <= time.monotonic() - started < 0.5

    inside = asyncio.Event()

    async def waiting() -> None:
        async with lag.deadline():
            inside.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(waiting())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class RateLimitsOnly:
    """A storage offering rate limits and nothing else: no Backend, only RateLimitStorage."""

    name = "ratelimits-only"
    in_process = True

    def __init__(self) -> None:
        self._memory = MemoryBackend()

    async def gcra(self, keys: Sequence[str], limits: Sequence[GcraLimit], cost: int) -> GcraResult:
        return await self._memory.gcra(keys, limits, cost)


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def test_a_capability_asks_only_for_its_own_protocol() -> None:
    """The rate limiter runs on a storage that offers GCRA and nothing else."""
    app = RateLimitMiddleware(
        Starlette(routes=[Route("/", ok)]), limit="1/minute", backend=RateLimitsOnly()
    )
    assert [status_of(await call(app, http_scope("/"))) for _ in range(2)] == [200, 429]


@pytest.mark.parametrize(
    ("wire", "missing"),
    [
        (
            lambda b: RateLimitMiddleware(Starlette(), backend=b, algorithm="fixed-window"),
            r"algorithm='fixed-window' needs a backend with LimitsSupport; RateLimitsOnly has "
            r"no call, limits_storage",
        ),
        (CacheStore, r"CacheStore needs a backend with CacheStorage and LeaseStorage"),
        (SingleFlight, r"SingleFlight needs a backend with LeaseStorage; .* lease_acquire"),
        (FlagStore, r"FlagStore needs a backend with FlagStorage; .* flags_load"),
        (lambda b: CircuitBreaker("llm", backend=b), r"CircuitBreaker\('llm'\) needs .*Breaker"),
        (BreakerRegistry, r"BreakerRegistry needs a backend with BreakerStorage"),
    ],
)
def test_a_capability_refuses_a_storage_without_its_protocol_when_wired(
    wire: Callable[[object], object], missing: str
) -> None:
    """At construction, not on the first request, naming the protocol and its missing
    operations."""
    with pytest.raises(ConfigurationError, match=missing):
        wire(RateLimitsOnly())


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("FLAG_HISTORY_LENGTH", "toolkit.flags._store"),
        ("FLAGS_CHANNEL", "toolkit.flags._store"),
        ("CACHE_CHANNEL", "toolkit.cache._store"),
        ("BREAKER_CHANNEL", "toolkit.resilience.breaker"),
    ],
)
def test_policy_constants_that_left_backends_base_still_import_with_a_warning(
    name: str, home: str
) -> None:
    """They live with the capability that owns them now; the old name names the new one."""
    with pytest.warns(DeprecationWarning, match=rf"use {home}\.{name}"):
        value = getattr(toolkit.backends.base, name)
    assert value == getattr(importlib.import_module(home), name)
