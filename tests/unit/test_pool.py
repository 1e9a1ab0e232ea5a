"""AgentPool: counts stay whole under cancellation and errors, limits hold, objects recycle."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import random
import threading
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import toolkit
from tests.support.otel import points
from tests.support.waiting import eventually
from toolkit.pool import AgentPool, PoolStats
from toolkit.pool._entry import Entry
from toolkit.pool._exclusive import ExclusiveLender
from toolkit.pool._options import PoolArguments
from toolkit.pool._shared import SharedLender
from toolkit.telemetry import names

pytestmark = pytest.mark.anyio


class Resource:
    """A per-run resource that records who uses it and whether it was closed."""

    serial = itertools.count()

    def __init__(self, key: object = None) -> None:
        self.id = next(self.serial)
        self.key = key
        self.closed = False
        self.identity: str | None = None
        self.history: list[str] = []

    async def aclose(self) -> None:
        self.closed = True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settle(pool: AgentPool[Any]) -> None:
    """Let background builds land and closes finish (they run on the loop, no timers)."""
    for _ in range(1000):
        if not pool._objects.tasks:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"pool tasks still running: {pool._objects.tasks}")


def idle_objects(pool: AgentPool[Resource]) -> list[Entry[Resource]]:
    """The idle list of an exclusive pool's default key."""
    lender = pool._keys[None]
    assert isinstance(lender, ExclusiveLender)
    return lender.idle


def whole(pool: AgentPool[Any], idle: int) -> PoolStats:
    return PoolStats(idle=idle, used=0, creating=0, pending=0, holders=0)


async def test_pool_survives_5000_random_cancel_and_error_cycles() -> None:
    """A size-2 pool whose builds, checks and users are cancelled, time out and raise at
    random points ends whole (idle=2, used=0, pending=0) and still lends objects; nothing
    closed is lent again and no object is in two places."""
    rng = random.Random(5)
    built: list[Resource] = []

    async def make() -> Resource:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        if rng.random() < 0.05:
            raise RuntimeError("factory failed")
        built.append(resource := Resource())
        return resource

    async def check(resource: Resource) -> bool:
        for _ in range(rng.randrange(2)):
            await asyncio.sleep(0)
        if rng.random() < 0.05:
            raise RuntimeError("check failed")
        return rng.random() > 0.05

    async def reset(resource: Resource) -> None:
        if rng.random() < 0.5:
            await asyncio.sleep(0)
        resource.identity = None

    pool: AgentPool[Resource] = AgentPool(
        make, size=2, max_waiting=1000, acquire_timeout=30, health_check=check, reset=reset
    )
    lent: set[int] = set()

    async def cycle() -> None:
        action = rng.random()
        try:
            if action < 0.1:
                # An outer deadline that fires at once: the acquire is cut at its first await.
                async with asyncio.timeout(0):
                    async with pool.acquire():
                        pass
                return
            async with pool.acquire() as resource:
                assert not resource.closed, "a closed object was lent"
                assert resource.id not in lent, "an object was lent twice"
                lent.add(resource.id)
                try:
                    for _ in range(rng.randrange(3)):
                        await asyncio.sleep(0)
                    if action < 0.3:
                        raise ValueError("the caller's block failed")
                finally:
                    lent.discard(resource.id)
        except (ValueError, RuntimeError, TimeoutError):
            pass

    cycles = 0
    while cycles < 5000:
        batch = [asyncio.create_task(cycle()) for _ in range(8)]
        cycles += len(batch)
        for _ in range(rng.randrange(6)):
            await asyncio.sleep(0)
        for task in batch:
            if rng.random() < 0.3:
                task.cancel()
        await asyncio.gather(*batch, return_exceptions=True)
    await settle(pool)

    stats = pool.stats()
    assert stats.used == stats.creating == stats.pending == stats.holders == 0, stats
    assert stats.idle <= 2
    gate = pool._keys[None].gate
    assert gate.free == 2
    assert not gate.waiters
    idle = idle_objects(pool)
    assert len({id(entry) for entry in idle}) == len(idle)
    assert {r.id for r in built if not r.closed} == {entry.obj.id for entry in idle}
    async with pool.acquire() as a, pool.acquire() as b:
        assert a is not b
        assert not a.closed
        assert not b.closed
    await pool.close()


async def test_pool_shared_mode_survives_random_cancel_error_and_check_cycles() -> None:
    """The same in shared mode (size 3), with failing builds and checks at every checkout,
    recycling by uses and errors that retire the object: it ends whole, lends only objects
    that are open, and every object but the key's current one is closed."""
    rng = random.Random(7)
    built: list[Resource] = []

    async def make() -> Resource:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        if rng.random() < 0.05:
            raise RuntimeError("factory failed")
        built.append(resource := Resource())
        return resource

    async def check(resource: Resource) -> bool:
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        if rng.random() < 0.05:
            raise RuntimeError("check failed")
        return rng.random() > 0.1

    pool: AgentPool[Resource] = AgentPool(
        make, mode="shared", size=3, max_waiting=1000, acquire_timeout=30, health_check=check,
        check_interval=0, max_uses=7, discard_on=(ValueError,),
    )  # fmt: skip

    async def cycle() -> None:
        action = rng.random()
        try:
            if action < 0.1:
                async with asyncio.timeout(0):
                    async with pool.acquire():
                        pass
                return
            async with pool.acquire() as resource:
                for _ in range(rng.randrange(3)):
                    assert not resource.closed, "an object was closed while held"
                    await asyncio.sleep(0)
                if action < 0.3:
                    raise ValueError("the caller's block failed")
        except (ValueError, RuntimeError, TimeoutError):
            pass

    for _ in range(400):
        batch = [asyncio.create_task(cycle()) for _ in range(8)]
        for _ in range(rng.randrange(6)):
            await asyncio.sleep(0)
        for task in batch:
            if rng.random() < 0.3:
                task.cancel()
        await asyncio.gather(*batch, return_exceptions=True)
    await settle(pool)

    stats = pool.stats()
    assert stats.used == stats.creating == stats.pending == stats.holders == 0, stats
    lender = pool._keys[None]
    assert isinstance(lender, SharedLender)
    assert lender.gate.free == 3
    assert not lender.gate.waiters
    current = {lender.current.obj.id} if lender.current is not None else set()
    assert {r.id for r in built if not r.closed} == current
    async with pool.acquire() as resource:
        assert not resource.closed
    await pool.close()
    await settle(pool)
    assert all(r.closed for r in built)


def test_pool_shared_mode_lends_to_a_caller_arriving_as_the_build_ends() -> None:
    """Shared mode: a caller that comes in the turn of the loop in which the key's build
    ends (before its done callback ran) gets the new object; it used to spin without ever
    awaiting, blocking the event loop. Run in a thread, so such a spin fails the test."""
    got: list[tuple[Resource, Resource]] = []

    async def scenario() -> None:
        release = asyncio.Event()

        async def make() -> Resource:
            await release.wait()
            return Resource()

        pool: AgentPool[Resource] = AgentPool(make, mode="shared")

        async def use() -> Resource:
            async with pool.acquire() as resource:
                return resource

        first = asyncio.create_task(use())  # starts the build and waits for it
        for _ in range(2):
            await asyncio.sleep(0)
        release.set()  # the build ends on the next turn, its callbacks on the one after
        second = asyncio.create_task(use())  # runs between the two
        a, b = await asyncio.gather(first, second)
        got.append((a, b))
        await pool.close()

    thread = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the second acquire spins"
    ((a, b),) = got
    assert a is b


async def test_pool_shared_mode_closes_a_retired_object_whose_last_holder_raises() -> None:
    """Shared mode: an object retired while held (here by an error discard_on accepts) is
    closed when its last holder leaves, even if that holder's block raised too."""
    pool: AgentPool[Resource] = AgentPool(Resource, mode="shared", discard_on=(ValueError,))
    with pytest.raises(ValueError, match="bad"):
        async with pool.acquire() as first, pool.acquire():
            raise ValueError("bad run")  # the inner exit retires it; the outer one holds it
    await settle(pool)
    assert first.closed
    assert pool.stats() == whole(pool, idle=0)


async def test_pool_acquire_cancelled_while_building_keeps_the_object() -> None:
    """A caller cancelled while the factory runs loses nothing: the build lands idle and the
    next caller gets it without building again."""
    release = asyncio.Event()
    builds = 0

    async def make() -> Resource:
        nonlocal builds
        builds += 1
        await release.wait()
        return Resource()

    pool: AgentPool[Resource] = AgentPool(make, size=1, warm=0)

    async def use() -> None:
        async with pool.acquire():
            pass

    task = asyncio.create_task(use())
    await asyncio.sleep(0)
    assert pool.stats().creating == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.stats().holders == 1  # the build holds the permit now
    release.set()
    await settle(pool)
    assert pool.stats() == whole(pool, idle=1)
    async with pool.acquire():
        pass
    assert builds == 1
    await pool.close()


async def test_pool_acquire_timeout_while_waiting_leaves_counts_whole() -> None:
    """An acquire that finds every object lent past acquire_timeout raises PoolTimeoutError,
    counted, and leaves no trace in the queue."""
    pool: AgentPool[Resource] = AgentPool(Resource, size=1, acquire_timeout="20ms")
    async with pool.acquire():
        with pytest.raises(toolkit.PoolTimeoutError):
            async with pool.acquire():
                pass
        assert pool.stats().pending == 0
    assert pool.stats() == whole(pool, idle=1)
    await pool.close()


@pytest.mark.parametrize("mode", ["exclusive", "shared"])
async def test_pool_build_past_create_timeout_raises_pool_timeout_error_naming_the_setting(
    mode: str,
) -> None:
    """A factory call cut at create_timeout reaches its caller as PoolTimeoutError (install()
    answers it 503) naming the pool and the setting, not as a bare TimeoutError; a factory's
    own TimeoutError reaches the caller unchanged."""
    own = [False]

    async def make() -> Resource:
        if own[0]:
            raise TimeoutError("the sandbox API timed out")
        await asyncio.sleep(10)
        return Resource()

    pool: AgentPool[Resource] = AgentPool(
        make, name="sandbox", mode=mode, acquire_timeout="5s", create_timeout="50ms"
    )
    with pytest.raises(toolkit.PoolTimeoutError) as raised:
        async with pool.acquire():
            pass
    assert str(raised.value) == (
        "pool 'sandbox': building an object took longer than create_timeout=0.05s; the "
        "factory call was cancelled"
    )
    assert raised.value.setting == "create_timeout"
    assert raised.value.pool == "sandbox"
    own[0] = True
    with pytest.raises(TimeoutError, match="the sandbox API timed out") as factory_error:
        async with pool.acquire():
            pass
    assert not isinstance(factory_error.value, toolkit.PoolTimeoutError)
    await pool.close()


def timeouts(reader: InMemoryMetricReader) -> dict[str, float]:
    """``toolkit.pool.timeouts`` by phase."""
    return {
        str(p.attributes[names.POOL_TIMEOUT_PHASE]): p.value
        for p in points(reader, names.POOL_TIMEOUTS)
    }


@pytest.mark.parametrize("mode", ["exclusive", "shared"])
async def test_pool_build_past_create_timeout_is_counted_as_a_build_timeout_on_each_caller(
    mode: str,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """Each acquire a build past create_timeout reaches (three callers waiting on one
    shared build, or each on its own exclusive build) counts one timeout of phase build,
    never acquire, with a toolkit.pool.exhausted event on the caller's span naming the
    phase; the wait span says timeout."""

    async def make() -> Resource:
        await asyncio.sleep(10)
        return Resource()

    pool: AgentPool[Resource] = AgentPool(
        make, name="sandbox", mode=mode, size=3, acquire_timeout="5s", create_timeout="50ms",
        wait_threshold="10ms", meter_provider=meter_provider, tracer_provider=tracer_provider,
    )  # fmt: skip
    tracer = tracer_provider.get_tracer("test")

    async def caller(i: int) -> BaseException | None:
        with tracer.start_as_current_span(f"caller {i}"):
            try:
                async with pool.acquire():
                    pass
            except toolkit.PoolTimeoutError as exc:
                return exc
        return None

    raised = await asyncio.gather(*(caller(i) for i in range(3)))
    assert all(
        isinstance(e, toolkit.PoolTimeoutError) and e.setting == "create_timeout" for e in raised
    )
    assert timeouts(metric_reader) == {names.POOL_PHASE_BUILD: 3}
    spans = span_exporter.get_finished_spans()
    callers = [s for s in spans if s.name.startswith("caller")]
    events = [e for s in callers for e in s.events if e.name == names.POOL_EXHAUSTED_EVENT]
    assert [dict(e.attributes or {}) for e in events] == 3 * [
        {
            names.POOL_NAME: "sandbox",
            names.POOL_TIMEOUT_PHASE: names.POOL_PHASE_BUILD,
            names.ERROR_TYPE: names.POOL_TIMEOUT,
        }
    ]
    waits = [s for s in spans if s.name == names.POOL_WAIT_SPAN]
    assert [(s.attributes or {}).get(names.ERROR_TYPE) for s in waits] == 3 * ["timeout"]
    assert pool.stats() == whole(pool, idle=0)
    await pool.close()


async def test_pool_acquire_timeout_before_the_build_timeout_is_counted_once_as_an_acquire(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """A caller whose acquire_timeout passes while its build runs counts one acquire timeout;
    the build it left, cut later at create_timeout with nobody waiting, counts nothing more.
    Under a deadline longer than create_timeout a build timeout stays PoolTimeoutError (the
    pool's own, counted build); under a shorter one the acquire ends in DeadlineExceeded."""
    release = asyncio.Event()

    async def make() -> Resource:
        await release.wait()
        return Resource()

    pool: AgentPool[Resource] = AgentPool(
        make, size=1, acquire_timeout="30ms", create_timeout="150ms",
        meter_provider=meter_provider,
    )  # fmt: skip
    with pytest.raises(toolkit.PoolTimeoutError) as left:
        async with pool.acquire():
            pass
    assert left.value.setting == "acquire_timeout"
    await eventually(lambda: not pool._objects.tasks)  # the left build passed create_timeout
    assert timeouts(metric_reader) == {names.POOL_PHASE_ACQUIRE: 1}

    slow: AgentPool[Resource] = AgentPool(
        make, size=1, acquire_timeout="5s", create_timeout="50ms", meter_provider=meter_provider
    )
    with toolkit.deadline(5), pytest.raises(toolkit.PoolTimeoutError) as built:
        async with slow.acquire():
            pass
    assert built.value.setting == "create_timeout"
    assert timeouts(metric_reader) == {names.POOL_PHASE_ACQUIRE: 1, names.POOL_PHASE_BUILD: 1}
    with toolkit.deadline(0.02), pytest.raises(toolkit.DeadlineExceeded):
        async with slow.acquire():
            pass
    # The acquire's own wait, cut sooner by the deadline: phase acquire, as ever.
    assert timeouts(metric_reader) == {names.POOL_PHASE_ACQUIRE: 2, names.POOL_PHASE_BUILD: 1}
    release.set()
    await pool.close()
    await slow.close()


async def test_pool_full_wait_queue_refuses_at_once() -> None:
    """With every object lent and max_waiting callers queued, the next acquire fails at once
    with PoolExhaustedError, without waiting."""
    pool: AgentPool[Resource] = AgentPool(Resource, size=1, max_waiting=1, acquire_timeout=60)

    async def wait_in_line() -> None:
        async with pool.acquire():
            pass

    async with pool.acquire():
        waiter = asyncio.create_task(wait_in_line())
        await asyncio.sleep(0)
        assert pool.stats().pending == 1
        with pytest.raises(toolkit.PoolExhaustedError):
            async with pool.acquire():
                pass
    await waiter  # handed the object on release
    assert pool.stats() == whole(pool, idle=1)
    await pool.close()


async def test_pool_callers_with_distinct_identities_never_see_each_others_state() -> None:
    """100 concurrent callers through one exclusive pool each see only their own identity
    and history: objects are never shared, and reset clears them on return."""

    def reset(resource: Resource) -> None:
        resource.identity = None
        resource.history.clear()

    pool: AgentPool[Resource] = AgentPool(Resource, size=8, max_waiting=100, reset=reset)
    seen: list[tuple[str, list[str]]] = []

    async def caller(n: int) -> None:
        me = f"tenant-{n}"
        async with pool.acquire() as resource:
            assert resource.identity is None
            assert resource.history == []
            resource.identity = me
            for turn in range(3):
                resource.history.append(f"{me}:{turn}")
                await asyncio.sleep(0)
            seen.append((resource.identity, list(resource.history)))

    await asyncio.gather(*(caller(n) for n in range(100)))
    assert len(seen) == 100
    for identity, history in seen:
        assert history == [f"{identity}:{turn}" for turn in range(3)]
    stats = pool.stats()
    assert stats.used == stats.pending == 0
    assert stats.idle <= 8
    await pool.close()


async def test_pool_shared_mode_builds_once_under_concurrent_first_use() -> None:
    """Shared mode: 50 callers arriving together on a cold key get one object, built once."""
    builds = 0

    async def make(model: str) -> Resource:
        nonlocal builds
        builds += 1
        await asyncio.sleep(0)
        return Resource(model)

    pool: AgentPool[Resource] = AgentPool(make, mode="shared", size=100)

    async def use() -> Resource:
        async with pool.acquire("gpt") as agent:
            await asyncio.sleep(0)
            return agent

    agents = await asyncio.gather(*(use() for _ in range(50)))
    assert builds == 1
    assert len({id(a) for a in agents}) == 1
    assert agents[0].key == "gpt"
    assert pool.stats() == PoolStats(idle=1, used=0, creating=0, pending=0, holders=0)
    await pool.close()
    await settle(pool)
    assert agents[0].closed


async def test_pool_error_in_block_discards_the_object_in_exclusive_mode() -> None:
    """An exception inside ``async with`` closes the object (exclusive default); with
    discard_on=() it goes back to the pool."""
    pool: AgentPool[Resource] = AgentPool(Resource, size=1)
    with pytest.raises(ValueError, match="bad"):
        async with pool.acquire() as first:
            raise ValueError("bad run")
    await settle(pool)
    assert first.closed
    async with pool.acquire() as second:
        assert second is not first

    keeping: AgentPool[Resource] = AgentPool(Resource, size=1, discard_on=())
    with pytest.raises(ValueError, match="bad"):
        async with keeping.acquire() as kept:
            raise ValueError("bad run")
    async with keeping.acquire() as again:
        assert again is kept


async def test_pool_recycles_by_age_and_by_uses() -> None:
    """An object past recycle_after (on the injected clock) or max_uses is replaced."""
    clock = FakeClock()
    pool: AgentPool[Resource] = AgentPool(
        Resource, size=1, recycle_after="10m", recycle_jitter=0, clock=clock
    )
    async with pool.acquire() as first:
        pass
    clock.now += 599
    async with pool.acquire() as same:
        assert same is first
    clock.now += 2
    async with pool.acquire() as fresh:
        assert fresh is not first
    await settle(pool)
    assert first.closed

    by_uses: AgentPool[Resource] = AgentPool(Resource, size=1, max_uses=2, recycle_jitter=0)
    objects = []
    for _ in range(5):
        async with by_uses.acquire() as resource:
            objects.append(resource.id)
    assert objects[0] == objects[1] != objects[2] == objects[3] != objects[4]


async def test_pool_recycle_jitter_spreads_limits_below_the_setting() -> None:
    """Jitter shortens each object's age limit by up to the given share, never lengthens it."""
    clock = FakeClock()
    draws = iter([0.0, 1.0])
    pool: AgentPool[Resource] = AgentPool(
        Resource, size=2, recycle_after=100, recycle_jitter=0.2, clock=clock,
        random=lambda: next(draws),
    )  # fmt: skip
    async with pool.acquire() as a, pool.acquire() as b:
        pass
    expiries = sorted(entry.expires - clock.now for entry in idle_objects(pool))
    assert expiries == [80.0, 100.0]
    del a, b


async def test_pool_health_check_failure_replaces_the_object() -> None:
    """An idle object whose health check returns False or raises is closed at checkout and
    the caller gets a fresh one (check_interval=0: checked at every checkout)."""
    verdicts = iter([False, RuntimeError("ping failed"), True])

    async def check(resource: Resource) -> bool:
        verdict = next(verdicts)
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    pool: AgentPool[Resource] = AgentPool(Resource, size=1, health_check=check, check_interval=0)
    async with pool.acquire() as first:
        pass
    async with pool.acquire() as second:  # first fails its check: replaced
        assert second is not first
    async with pool.acquire() as third:  # second's check raises: replaced
        assert third is not second
    async with pool.acquire() as fourth:  # third passes
        assert fourth is third
    await settle(pool)
    assert first.closed
    assert second.closed
    assert not third.closed


async def test_pool_flag_off_builds_and_closes_per_call() -> None:
    """With the pool flag off each acquire builds its own object and closes it after."""
    pool: AgentPool[Resource] = AgentPool(Resource, size=1)
    with toolkit.flags.override({toolkit.flags.POOL: "off"}):
        async with pool.acquire() as a, pool.acquire() as b:  # no limit: the old path
            assert a is not b
    assert a.closed
    assert b.closed
    assert pool.stats() == whole(pool, idle=0)


async def test_pool_sync_factory_and_key_passed_when_the_factory_takes_one() -> None:
    """A sync factory works; factory(key) when it has a required positional parameter."""
    pool: AgentPool[Resource] = AgentPool(lambda model: Resource(model), mode="shared")
    async with pool.acquire("small") as small, pool.acquire("large") as large:
        assert (small.key, large.key) == ("small", "large")
    plain: AgentPool[Resource] = AgentPool(Resource)
    with pytest.raises(TypeError, match="takes none"):
        async with plain.acquire("small"):
            pass


async def test_pool_warm_up_builds_before_use() -> None:
    """start() builds the warm objects and returns when they are built."""
    pool: AgentPool[Resource] = AgentPool(lambda key: Resource(key), size=4, warm={"a": 3})
    await pool.start()
    assert pool.stats() == whole(pool, idle=3)
    await pool.close()
    assert pool.stats().idle == 0


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"size": 0}, "size="),
        ({"acquire_timeout": "soon"}, "acquire_timeout="),
        ({"mode": "pooled"}, "mode="),
        ({"recycle_jitter": 1.5}, "recycle_jitter="),
        ({"warm": 9, "size": 2}, "warm="),
        ({"discard_on": (str,)}, "discard_on="),
        ({"mode": "shared", "reset": lambda r: None}, "reset="),
        ({"max_keys": 0}, "max_keys="),
        ({"check_interval": -1}, "check_interval="),
        ({"warm": {"a": 1, "b": 1}, "max_keys": 1}, "max_keys="),
    ],
)
def test_pool_invalid_arguments_are_refused_at_construction(
    arguments: dict[str, Any], named: str
) -> None:
    """A bad argument raises ConfigurationError naming it, when the pool is built."""
    with pytest.raises(toolkit.ConfigurationError, match=named):
        AgentPool(Resource, **arguments)


def test_pool_signature_shows_every_argument_and_refuses_unknown_ones() -> None:
    """help() and inspect see AgentPool's keyword arguments with their defaults (they are one
    TypedDict for the type checker); an unknown one is a TypeError, as with any signature."""
    parameters = inspect.signature(AgentPool).parameters
    assert list(parameters) == ["factory", *PoolArguments.__annotations__]
    assert parameters["mode"].default == "exclusive"
    assert parameters["size"].default is toolkit.DEFAULT
    assert parameters["acquire_timeout"].default == 30.0
    assert parameters["discard_on"].default is toolkit.DEFAULT
    assert all(p.kind is p.KEYWORD_ONLY for name, p in parameters.items() if name != "factory")
    with pytest.raises(TypeError, match="unexpected keyword argument 'sise'"):
        AgentPool(Resource, sise=2)  # type: ignore[call-overload]


async def test_pooled_injects_the_object_and_hides_the_parameter() -> None:
    """@pooled passes the object first; callers and FastAPI see the rest of the signature."""
    pool: AgentPool[Resource] = AgentPool(lambda model: Resource(model), mode="shared")

    @toolkit.pooled(pool, key=lambda question, model="small": model)
    async def answer(agent: Resource, question: str, model: str = "small") -> str:
        return f"{agent.key}:{question}"

    assert await answer("why", model="large") == "large:why"
    app = FastAPI()
    app.get("/answer")(answer)
    toolkit.install(app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.get("/answer", params={"question": "how"})
    assert response.json() == "small:how"

    async def no_parameters() -> None: ...

    with pytest.raises(toolkit.ConfigurationError, match="first parameter"):
        toolkit.pooled(pool)(no_parameters)  # type: ignore[arg-type]


async def test_pool_exhaustion_answers_a_fast_503_through_install() -> None:
    """A route whose pool's queue is full answers 503 problem+json with Retry-After at once,
    with nothing but install() in the app."""
    holding = asyncio.Event()
    release = asyncio.Event()
    pool: AgentPool[Resource] = AgentPool(Resource, size=1, max_waiting=0, name="sandbox")
    app = FastAPI()

    @app.get("/run")
    async def run() -> dict[str, int]:
        async with pool.acquire() as resource:
            holding.set()
            await release.wait()
            return {"id": resource.id}

    installed = toolkit.install(app, pools=[pool])
    await installed.startup()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        first = asyncio.create_task(client.get("/run"))
        await holding.wait()
        refused = await client.get("/run")
        release.set()
        assert (await first).status_code == 200
    await installed.shutdown()
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    problem = refused.json()
    assert problem["status"] == 503
    assert "sandbox" in problem["detail"]


async def test_pool_warm_up_finishes_in_the_lifespan_before_serving() -> None:
    """install(app, pools=[...]): the app's lifespan returns only once the pool is warm, and
    shutdown closes its objects."""
    built: list[Resource] = []

    async def make() -> Resource:
        await asyncio.sleep(0.01)
        built.append(resource := Resource())
        return resource

    pool: AgentPool[Resource] = AgentPool(make, size=2, warm=2)
    app = FastAPI()
    toolkit.install(app, pools=[pool])
    async with app.router.lifespan_context(app):
        assert len(built) == 2
        assert pool.stats() == whole(pool, idle=2)
    assert all(resource.closed for resource in built)


async def test_pool_metrics_and_wait_span(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    """Counts by state, waits, timeouts and discards are reported with the pool's name; a
    wait past the threshold gets a toolkit.pool.wait span."""
    pool: AgentPool[Resource] = AgentPool(
        Resource, name="sandbox", size=1, acquire_timeout="30ms", wait_threshold="10ms",
        meter_provider=meter_provider, tracer_provider=tracer_provider,
    )  # fmt: skip
    async with pool.acquire():
        with pytest.raises(toolkit.PoolTimeoutError):
            async with pool.acquire():
                pass
    with pytest.raises(ValueError, match="bad"):
        async with pool.acquire():
            raise ValueError("bad")
    await settle(pool)
    counts = {
        p.attributes[names.POOL_STATE]: p.value for p in points(metric_reader, names.POOL_COUNT)
    }
    assert counts == {"idle": 0, "used": 0}
    assert [(p.attributes, p.value) for p in points(metric_reader, names.POOL_TIMEOUTS)] == [
        ({names.POOL_NAME: "sandbox", names.POOL_TIMEOUT_PHASE: names.POOL_PHASE_ACQUIRE}, 1)
    ]
    discards = points(metric_reader, names.POOL_DISCARDS)
    assert [(p.attributes[names.POOL_DISCARD_REASON], p.value) for p in discards] == [("error", 1)]
    waits = points(metric_reader, names.POOL_WAIT_TIME)
    assert waits[0].count == 3
    assert waits[0].attributes == {names.POOL_NAME: "sandbox"}
    spans = [s for s in span_exporter.get_finished_spans() if s.name == names.POOL_WAIT_SPAN]
    assert len(spans) == 1
    assert spans[0].attributes == {names.POOL_NAME: "sandbox", names.ERROR_TYPE: "timeout"}


async def test_pool_health_check_runs_only_once_check_interval_has_passed() -> None:
    """Exclusive mode: an object given back without error is trusted for check_interval;
    past it, the next checkout checks it first."""
    clock = FakeClock()
    checked: list[float] = []

    def check(resource: Resource) -> bool:
        checked.append(clock.now)
        return True

    pool: AgentPool[Resource] = AgentPool(
        Resource, size=1, health_check=check, check_interval="30s", clock=clock
    )
    for step in (0, 10, 10, 29.5):  # built, then given back: known good each time
        clock.now += step
        async with pool.acquire():
            pass
    assert checked == []
    clock.now += 31
    async with pool.acquire():
        pass
    assert checked == [clock.now]


async def test_pool_shared_mode_checks_in_the_background_and_never_holds_callers() -> None:
    """Shared mode: a due check runs beside the callers (they get the object at once); when
    it fails, the object is lent no more, its replacement is built, and it is closed once its
    last holder gives it back."""
    clock = FakeClock()
    verdict: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    checks = 0

    async def check(resource: Resource) -> bool:
        nonlocal checks
        checks += 1
        return await verdict

    pool: AgentPool[Resource] = AgentPool(
        Resource, mode="shared", health_check=check, check_interval=30, clock=clock
    )
    async with pool.acquire() as first:
        pass
    clock.now += 60
    async with pool.acquire() as again, pool.acquire() as third:
        assert again is third is first  # lent while its check is pending
        await asyncio.sleep(0)
        assert checks == 1  # one check, however many callers came
        verdict.set_result(False)
        await asyncio.sleep(0)
        async with pool.acquire() as fresh:
            assert fresh is not first
        assert not first.closed  # still held by the two callers above
    await settle(pool)
    assert first.closed
    assert pool.stats() == PoolStats(idle=1, used=0, creating=0, pending=0, holders=0)


async def test_pool_shared_mode_recycles_in_the_background() -> None:
    """Shared mode: a worn object goes on being lent while its replacement builds; callers
    never wait for the rebuild, and the replacement takes over when it is ready."""
    clock = FakeClock()
    release = asyncio.Event()
    builds = 0

    async def make() -> Resource:
        nonlocal builds
        builds += 1
        if builds > 1:
            await release.wait()
        return Resource()

    pool: AgentPool[Resource] = AgentPool(
        make, mode="shared", recycle_after="10m", recycle_jitter=0, clock=clock
    )
    async with pool.acquire() as first:
        pass
    clock.now += 601
    for _ in range(3):
        async with pool.acquire() as worn:  # no wait: the old one, while the new one builds
            assert worn is first
            await asyncio.sleep(0)  # the replacement's build runs meanwhile
    assert builds == 2  # one replacement, however many callers
    release.set()
    await settle(pool)
    async with pool.acquire() as replacement:
        assert replacement is not first
    await settle(pool)
    assert first.closed
    assert not replacement.closed


async def test_pool_exclusive_mode_builds_a_recycled_objects_replacement_in_the_background() -> (
    None
):
    """Exclusive mode: an object closed for age or uses when given back is replaced at
    once by a build the pool owns, so the next caller finds one ready."""
    pool: AgentPool[Resource] = AgentPool(Resource, size=1, max_uses=1, recycle_jitter=0)
    async with pool.acquire() as first:
        pass
    await settle(pool)
    assert first.closed
    assert pool.stats() == whole(pool, idle=1)  # the replacement, built already
    (ready,) = idle_objects(pool)
    async with pool.acquire() as second:
        assert second is ready.obj


async def test_pool_keys_are_bounded_and_the_least_recently_used_idle_key_goes_first() -> None:
    """Past max_keys a new key evicts the least recently used idle key (its objects closed,
    counted as evicted); when every key is busy the new key is refused with a 503-class error;
    300 client-chosen keys leave at most max_keys objects alive."""
    pool: AgentPool[Resource] = AgentPool(lambda key: Resource(key), max_keys=2)
    async with pool.acquire("a") as a:
        pass
    async with pool.acquire("b"):
        pass
    async with pool.acquire("a"):  # a is now the most recently used
        pass
    async with pool.acquire("c"):  # evicts b, not a
        pass
    assert set(pool._keys) == {"a", "c"}
    async with pool.acquire("a") as again:
        assert again is a
    async with pool.acquire("a"), pool.acquire("c"):
        with pytest.raises(toolkit.PoolExhaustedError, match="max_keys=2"):
            async with pool.acquire("d"):
                pass

    many: AgentPool[Resource] = AgentPool(lambda model: Resource(model), mode="shared", max_keys=8)
    made: list[Resource] = []
    for i in range(300):
        async with many.acquire(f"model-{i}") as agent:
            made.append(agent)
    await settle(many)
    assert sum(not agent.closed for agent in made) <= 8
    assert len(many._keys) == 8


async def test_pool_shared_mode_does_not_throttle_callers_by_default() -> None:
    """Shared mode with size unset: 200 callers use the one object at once, nobody waits;
    with size set, that many at once and the rest queue."""
    pool: AgentPool[Resource] = AgentPool(Resource, mode="shared")
    inside = 0
    most = 0
    gate = asyncio.Event()

    async def use() -> None:
        nonlocal inside, most
        async with pool.acquire():
            inside += 1
            most = max(most, inside)
            await gate.wait()
            inside -= 1

    tasks = [asyncio.create_task(use()) for _ in range(200)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert most == 200
    assert pool.stats().pending == 0
    gate.set()
    await asyncio.gather(*tasks)

    capped: AgentPool[Resource] = AgentPool(Resource, mode="shared", size=8)
    gate.clear()
    most = inside = 0
    pool = capped
    tasks = [asyncio.create_task(use()) for _ in range(20)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert (most, capped.stats().pending) == (8, 12)
    gate.set()
    await asyncio.gather(*tasks)


async def test_pool_flag_of_one_pool_turns_off_that_pool_only() -> None:
    """Each pool declares ``pool.<name>``: off, that pool builds per call; the others keep
    pooling; the global ``pool`` flag still turns every one off."""
    alpha: AgentPool[Resource] = AgentPool(Resource, name="Alpha Agent")
    beta: AgentPool[Resource] = AgentPool(Resource, name="beta")
    assert (alpha.flag, beta.flag) == ("pool.alpha-agent", "pool.beta")
    with toolkit.flags.override({alpha.flag: "off"}):
        async with alpha.acquire() as a1:
            pass
        async with alpha.acquire() as a2:
            assert a2 is not a1
        async with beta.acquire() as b1:
            pass
        async with beta.acquire() as b2:
            assert b2 is b1
    assert a1.closed
    with toolkit.flags.override({toolkit.flags.POOL: "off"}):
        async with beta.acquire() as b3:
            assert b3 is not b1
