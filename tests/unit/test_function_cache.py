"""@cached on memory and real Redis: keys, serializers, single flight, failures, telemetry."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import toolkit
from tests.support.asgi import serving
from tests.support.otel import counter_value
from tests.support.waiting import eventually
from tests.unit.conftest import StoppableCache
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends.redis import RedisBackend
from toolkit.cache import CacheStore, LocalTier, cached, set_current_cache
from toolkit.errors import ConfigurationError, NoRequestError
from toolkit.flags import CACHE_FUNCTION, override
from toolkit.settings import CacheSettings, ToolkitSettings
from toolkit.telemetry import names

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def cache_settings(**values: Any) -> CacheSettings:
    return CacheSettings.model_validate(values)


@pytest.fixture
def store(backend: Backend, meter_provider: MeterProvider) -> CacheStore:
    """The store the decorators use, on the parametrised backend, with a short lease."""
    store = CacheStore(backend, meter_provider=meter_provider, settings=cache_settings(lease=0.2))
    set_current_cache(store)
    return store


def requests(reader: InMemoryMetricReader, result: str, name: str = "test") -> float:
    return counter_value(
        reader, names.CACHE_REQUESTS, **{names.CACHE_NAME: name, names.CACHE_RESULT: result}
    )


class Calls:
    """Records every call of the origin function."""

    def __init__(self) -> None:
        self.arguments: list[Any] = []

    def __len__(self) -> int:
        return len(self.arguments)


async def test_cached_runs_the_function_once_and_serves_later_calls_from_the_cache(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    """Three calls with the same argument: one computation, the same answer three times,
    counted as one miss and two hits."""
    calls = Calls()

    @cached(ttl="1m", namespace="test")
    async def classify(query: str) -> dict[str, str]:
        calls.arguments.append(query)
        return {"intent": f"intent:{query}"}

    answers = [await classify("refund") for _ in range(3)]
    assert answers == [{"intent": "intent:refund"}] * 3
    assert await classify("cancel") == {"intent": "intent:cancel"}
    assert calls.arguments == ["refund", "cancel"]
    assert requests(metric_reader, names.CACHE_MISS) == 2
    assert requests(metric_reader, names.CACHE_HIT) == 2


async def test_cached_keys_apply_defaults_and_ignore_how_arguments_are_passed(
    store: CacheStore,
) -> None:
    """Positional, keyword and defaulted spellings of one call share an entry; a different
    value of any argument, a default one included, is a different entry."""
    calls = Calls()

    @cached(ttl="1m")
    async def classify(query: str, locale: str = "en", *, options: dict[str, int]) -> str:
        calls.arguments.append((query, locale, options))
        return f"{query}/{locale}"

    await classify("refund", options={"a": 1, "b": 2})
    await classify(query="refund", options={"b": 2, "a": 1})
    await classify("refund", "en", options={"a": 1, "b": 2})
    assert len(calls) == 1
    assert await classify("refund", "de", options={"a": 1, "b": 2}) == "refund/de"
    await classify("refund", options={"a": 1, "b": 3})
    assert len(calls) == 3

    @cached(ttl="1m")
    async def assemble(system: str, /, *parts: str, **options: int) -> str:
        calls.arguments.append(parts)
        return system + "".join(parts)

    await assemble("s", "a", "b", temperature=0)
    await assemble("s", "a", "b", temperature=0)
    await assemble("s", "a", "b", temperature=1)
    await assemble("s", "b", "a", temperature=1)
    assert len(calls) == 6
    with pytest.raises(TypeError):
        await classify()  # type: ignore[call-arg]  # a wrong call fails as it would uncached


async def test_cached_methods_leave_self_out_of_the_key(store: CacheStore) -> None:
    """Two instances of a class share the entries of a cached method."""
    calls = Calls()

    class Retriever:
        @cached(ttl="1m")
        async def search(self, query: str) -> list[str]:
            calls.arguments.append(query)
            return [f"doc about {query}"]

    assert await Retriever().search("refund") == ["doc about refund"]
    assert await Retriever().search("refund") == ["doc about refund"]
    assert len(calls) == 1


async def test_cached_first_caller_gets_the_return_value_later_callers_the_json_round_trip(
    store: CacheStore,
) -> None:
    """Under JSON (the default) a tuple is stored as a list: the caller that computed it gets
    the tuple, every later caller a list."""

    @cached(ttl="1m")
    async def pair(a: int) -> tuple[int, int]:
        return (a, a + 1)

    first: object = await pair(1)
    later: object = await pair(1)
    assert first == (1, 2)
    assert later == [1, 2]


@pytest.mark.parametrize("serializer", ["json", "msgpack", "pickle"])
async def test_cached_serializers_round_trip_their_types(
    store: CacheStore, serializer: Any
) -> None:
    """aiocache's serializers: JSON and msgpack keep plain data, pickle keeps Python types."""
    value = {"intent": "refund", "score": 0.5, "tags": ["a"], "n": None, "t": ("x", 1)}

    @cached(ttl="1m", serializer=serializer)
    async def classify(query: str) -> dict[str, Any]:
        return value

    await classify("q")
    loaded = await classify("q")
    if serializer == "pickle":
        assert loaded == value
    else:
        assert loaded == {**value, "t": ["x", 1]}


async def test_cached_pickle_is_used_only_when_configured_and_warns(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """The cache.serializer setting is the default (JSON unless set); pickle, chosen by the
    decorator or by the setting, logs a warning (at decoration, or at first use)."""
    caplog.set_level(logging.WARNING, "toolkit.cache")

    class Intent:
        def __init__(self, name: str) -> None:
            self.name = name

    @cached(ttl="1m")
    async def classify(query: str) -> Intent:
        return Intent(query)

    assert not caplog.records
    set_current_cache(CacheStore(backend, settings=cache_settings(serializer="pickle")))
    await classify("refund")
    assert isinstance(await classify("refund"), Intent)  # pickled, since the setting says so
    assert "pickle" in caplog.text
    caplog.clear()

    @cached(ttl="1m", serializer="pickle")
    async def explicit(query: str) -> str:
        return query

    assert "pickle" in caplog.text
    assert "explicit" in caplog.text


async def test_cached_entries_of_another_serializer_are_never_read_as_this_one(
    backend: Backend,
) -> None:
    """Changing cache.serializer starts from empty entries instead of misreading old ones
    (msgpack would read the JSON text "5" as the number 53)."""
    calls = Calls()

    @cached(ttl="1m")
    async def five() -> int:
        calls.arguments.append(None)
        return 5

    set_current_cache(CacheStore(backend, settings=cache_settings(serializer="json")))
    assert await five() == 5
    set_current_cache(CacheStore(backend, settings=cache_settings(serializer="msgpack")))
    assert await five() == 5
    assert await five() == 5
    assert len(calls) == 2


async def test_cached_argument_that_is_not_json_bypasses_with_one_warning_naming_it_and_the_fix(
    store: CacheStore, metric_reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    """An object argument (a client) cannot be keyed: every call goes to the function,
    counted as bypass, and one warning names the parameter and a key= that would work."""
    caplog.set_level(logging.WARNING, "toolkit.cache")
    calls = Calls()

    class Client:
        pass

    @cached(ttl="1m", namespace="test")
    async def classify(client: Client, query: str) -> str:
        calls.arguments.append(query)
        return query

    assert await classify(Client(), "refund") == "refund"
    assert await classify(Client(), "refund") == "refund"
    assert len(calls) == 2
    assert requests(metric_reader, names.CACHE_BYPASS) == 2
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "'client' (Client)" in message
    assert "key=lambda client, query: query" in message


async def test_cached_key_function_chooses_the_key_material(store: CacheStore) -> None:
    """key= receives the call's arguments; calls whose material is equal share an entry."""
    calls = Calls()

    class Client:
        pass

    @cached(ttl="1m", key=lambda client, query, locale="en": [query.lower(), locale])
    async def classify(client: Client, query: str, locale: str = "en") -> str:
        calls.arguments.append(query)
        return query.lower()

    assert await classify(Client(), "Refund") == "refund"
    assert await classify(Client(), "REFUND") == "refund"
    assert len(calls) == 1
    await classify(Client(), "refund", locale="de")
    assert len(calls) == 2


async def test_cached_key_function_that_fails_bypasses_instead_of_failing_the_call(
    store: CacheStore, metric_reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "toolkit.cache")

    @cached(ttl="1m", key=lambda query: query["missing"], namespace="test")
    async def classify(query: str) -> str:
        return query

    assert await classify("refund") == "refund"
    assert await classify("refund") == "refund"
    assert requests(metric_reader, names.CACHE_BYPASS) == 2
    assert len(caplog.records) == 1
    assert "key= raised TypeError" in caplog.text


async def test_cached_exceptions_of_the_function_propagate_unchanged_and_are_not_cached(
    store: CacheStore,
) -> None:
    attempts = Calls()

    class ModelDown(Exception):
        pass

    @cached(ttl="1m")
    async def classify(query: str) -> str:
        attempts.arguments.append(query)
        if len(attempts) == 1:
            raise ModelDown("upstream 503")
        return "refund"

    with pytest.raises(ModelDown, match="upstream 503"):
        await classify("q")
    assert await classify("q") == "refund"
    assert await classify("q") == "refund"
    assert len(attempts) == 2


async def test_cached_none_is_a_value_and_is_cached(store: CacheStore) -> None:
    calls = Calls()

    @cached(ttl="1m")
    async def lookup(user: str) -> str | None:
        calls.arguments.append(user)
        return None

    assert await lookup("u") is None
    assert await lookup("u") is None
    assert len(calls) == 1


async def test_cached_result_that_cannot_be_serialized_is_returned_uncached_with_one_warning(
    store: CacheStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "toolkit.cache")
    calls = Calls()

    class Intent:
        pass

    @cached(ttl="1m")
    async def classify(query: str) -> Intent:
        calls.arguments.append(query)
        return Intent()

    assert isinstance(await classify("a"), Intent)
    assert isinstance(await classify("a"), Intent)
    assert len(calls) == 2
    assert len(caplog.records) == 1
    assert "Intent" in caplog.text
    assert "serializer='pickle'" in caplog.text


async def test_cached_entries_expire_after_their_ttl(store: CacheStore) -> None:
    calls = Calls()

    @cached(ttl="200ms")
    async def classify(query: str) -> str:
        calls.arguments.append(query)
        return query

    await classify("a")
    await classify("a")
    await asyncio.sleep(0.3)
    await classify("a")
    assert len(calls) == 2


async def test_cached_tags_invalidate_entries(store: CacheStore) -> None:
    """toolkit.cache.invalidate(tags=...) drops the tagged functions' entries, only theirs."""
    calls = Calls()

    @cached(ttl="1m", tags=["intent"])
    async def classify(query: str) -> str:
        calls.arguments.append(("classify", query))
        return query

    @cached(ttl="1m", tags=["retrieval"])
    async def search(query: str) -> str:
        calls.arguments.append(("search", query))
        return query

    for _ in range(2):
        await classify("a")
        await classify("b")
        await search("a")
    assert len(calls) == 3
    assert await toolkit.cache.invalidate(tags=["intent"]) == 2
    await classify("a")
    await search("a")
    assert calls.arguments[3:] == [("classify", "a")]


async def test_cached_concurrent_callers_of_a_cold_key_run_a_function_slower_than_the_lease_once(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    """50 concurrent callers; the function takes three lease periods (0.2 s): it runs once,
    everyone gets its value, counted as 1 miss and 49 hits."""
    calls = Calls()

    @cached(ttl="1m", namespace="test")
    async def classify(query: str) -> dict[str, str]:
        calls.arguments.append(query)
        await asyncio.sleep(0.6)
        return {"intent": query}

    answers = await asyncio.gather(*(classify("refund") for _ in range(50)))
    assert answers == [{"intent": "refund"}] * 50
    assert len(calls) == 1
    assert requests(metric_reader, names.CACHE_MISS) == 1
    assert requests(metric_reader, names.CACHE_HIT) == 49


async def test_cached_two_stores_on_one_backend_compute_once(
    backend: Backend, meter_provider: MeterProvider
) -> None:
    """Two stores on one backend (as two processes on one Redis): the second waits for the
    first's lease and reads its result instead of computing."""
    calls = Calls()
    settings = cache_settings(lease=0.1)
    first, second = CacheStore(backend, settings=settings), CacheStore(backend, settings=settings)

    @cached(ttl="1m")
    async def classify(query: str) -> str:
        calls.arguments.append(query)
        await asyncio.sleep(0.4)
        return query

    # Each call takes the current store when it starts and keeps it.
    set_current_cache(first)
    leader = asyncio.create_task(classify("refund"))
    await eventually(lambda: len(calls) == 1)  # it leads: it holds the lease
    set_current_cache(second)
    assert await classify("refund") == "refund"
    assert await leader == "refund"
    assert len(calls) == 1


async def test_cached_flag_off_goes_straight_to_the_function_and_counts_bypass(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    calls = Calls()

    @cached(ttl="1m", namespace="test")
    async def classify(query: str) -> str:
        calls.arguments.append(query)
        return query

    await classify("a")
    with override({CACHE_FUNCTION: "off"}):
        await classify("a")
        await classify("a")
    await classify("a")
    assert len(calls) == 3
    assert requests(metric_reader, names.CACHE_BYPASS) == 2
    assert requests(metric_reader, names.CACHE_HIT) == 1


async def test_cached_decisions_are_events_on_the_current_span(
    store: CacheStore, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    @cached(ttl="1m", namespace="test")
    async def classify(query: str) -> str:
        return query

    with tracer_provider.get_tracer("test").start_as_current_span("request"):
        await classify("a")
        await classify("a")
    (span,) = span_exporter.get_finished_spans()
    events = [e for e in span.events if e.name == names.CACHE_LOOKUP_EVENT]
    assert [e.attributes[names.CACHE_RESULT] for e in events] == ["miss", "hit"]  # type: ignore[index]
    assert {e.attributes[names.CACHE_NAME] for e in events} == {"test"}  # type: ignore[index]
    key = str(events[0].attributes[names.CACHE_KEY])  # type: ignore[index]
    assert re.fullmatch(r"test:test_cached_decisions_.*\.<locals>\.classify:[0-9a-f]{32}", key)


@pytest.mark.parametrize("deadline", [None, 5.0])
async def test_cached_follower_whose_wait_runs_out_computes_itself_and_says_so_on_its_span(
    backend: Backend,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    deadline: float | None,
) -> None:
    """A follower of a leader that stores nothing within ``cache.wait`` (with no deadline, or
    one longer than the wait) computes itself; its decision is counted as wait_timeout, and
    is the result of its lookup event."""
    store = CacheStore(backend, meter_provider=meter_provider, settings=cache_settings(wait=0.1))
    set_current_cache(store)
    gate = asyncio.Event()
    started = asyncio.Event()

    @toolkit.cached(ttl="1m", namespace="test")
    async def answer(question: str) -> str:
        if not started.is_set():
            started.set()
            await gate.wait()  # the leader, stuck
        return question.upper()

    leader = asyncio.create_task(answer("q"))
    await started.wait()
    with (
        tracer_provider.get_tracer("test").start_as_current_span("follower"),
        toolkit.deadline(deadline),
    ):
        assert await answer("q") == "Q"
    assert requests(metric_reader, names.CACHE_WAIT_TIMEOUT) == 1
    assert requests(metric_reader, names.CACHE_MISS) == 0  # the leader has not finished
    (span,) = span_exporter.get_finished_spans()
    lookups = [e for e in span.events if e.name == names.CACHE_LOOKUP_EVENT]
    assert [e.attributes[names.CACHE_RESULT] for e in lookups] == [names.CACHE_WAIT_TIMEOUT]
    gate.set()
    assert await leader == "Q"


@pytest.mark.parametrize("where", ["same store", "another store"])
async def test_cached_follower_cut_by_the_deadline_raises_without_calling_the_function(
    backend: Backend,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    where: str,
) -> None:
    """A follower whose deadline ends before a slow leader stores (sooner than
    ``cache.wait``), queued in this process or polling the lease as another process does,
    raises DeadlineExceeded at once and never calls the function; its decision is counted as
    wait_deadline, on the metric and its span. The leader goes on and stores its value, which
    the next caller is served."""
    settings = cache_settings(wait=30.0)
    leading = CacheStore(backend, meter_provider=meter_provider, settings=settings)
    following = (
        leading
        if where == "same store"
        else CacheStore(backend, meter_provider=meter_provider, settings=settings)
    )
    gate = asyncio.Event()
    calls = Calls()

    @toolkit.cached(ttl="1m", namespace="test")
    async def answer(question: str) -> str:
        calls.arguments.append(question)
        await gate.wait()  # a slow leader
        return question.upper()

    set_current_cache(leading)
    leader = asyncio.create_task(answer("q"))
    await eventually(lambda: len(calls) == 1)
    set_current_cache(following)
    started = time.monotonic()
    with (
        tracer_provider.get_tracer("test").start_as_current_span("follower"),
        toolkit.deadline(0.2),
        pytest.raises(toolkit.DeadlineExceeded, match="another caller's computation"),
    ):
        await answer("q")
    assert time.monotonic() - started < 5  # at the deadline, not at cache.wait
    assert len(calls) == 1  # the follower never called it
    assert requests(metric_reader, names.CACHE_WAIT_DEADLINE) == 1
    assert requests(metric_reader, names.CACHE_WAIT_TIMEOUT) == 0
    (span,) = span_exporter.get_finished_spans()
    lookups = [e for e in span.events if e.name == names.CACHE_LOOKUP_EVENT]
    assert [e.attributes[names.CACHE_RESULT] for e in lookups] == [names.CACHE_WAIT_DEADLINE]
    assert not leader.done()  # the follower's deadline is not the leader's
    gate.set()
    assert await leader == "Q"
    assert await answer("q") == "Q"
    assert len(calls) == 1  # stored by the leader: a hit
    assert requests(metric_reader, names.CACHE_HIT) == 1


async def test_cached_follower_arriving_with_no_time_left_raises_at_once(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    """A follower whose deadline has already passed when it finds a leader computing its key
    raises DeadlineExceeded without waiting or calling the function."""
    gate = asyncio.Event()
    calls = Calls()

    @toolkit.cached(ttl="1m", namespace="test")
    async def answer(question: str) -> str:
        calls.arguments.append(question)
        await gate.wait()
        return question.upper()

    leader = asyncio.create_task(answer("q"))
    await eventually(lambda: len(calls) == 1)
    with toolkit.deadline(0), pytest.raises(toolkit.DeadlineExceeded):
        await answer("q")
    assert len(calls) == 1
    assert requests(metric_reader, names.CACHE_WAIT_DEADLINE) == 1
    gate.set()
    assert await leader == "Q"


async def test_cached_follower_cut_by_the_deadline_while_the_leader_fails_leaves_no_lease(
    store: CacheStore,
) -> None:
    """Many followers cut by their deadlines while the leader fails: each raises
    DeadlineExceeded, none is left holding the key, and the next caller computes at once."""
    gate = asyncio.Event()
    calls = Calls()

    @toolkit.cached(ttl="1m", namespace="test")
    async def answer(question: str) -> str:
        calls.arguments.append(question)
        if len(calls) == 1:
            await gate.wait()
            raise RuntimeError("the leader failed")
        return question.upper()

    leader = asyncio.create_task(answer("q"))
    await eventually(lambda: len(calls) == 1)

    async def follow(seconds: float) -> str:
        with toolkit.deadline(seconds):
            return await answer("q")

    followers = [asyncio.create_task(follow(random.uniform(0.01, 0.2))) for _ in range(20)]
    outcomes = await asyncio.gather(*followers, return_exceptions=True)
    assert all(isinstance(o, toolkit.DeadlineExceeded) for o in outcomes)
    assert len(calls) == 1
    gate.set()
    with pytest.raises(RuntimeError, match="the leader failed"):
        await leader
    async with asyncio.timeout(5):  # not the lease: nobody holds it
        assert await answer("q") == "Q"
    assert len(calls) == 2


async def test_cached_keeps_backend_hits_in_the_in_process_tier(backend: Backend) -> None:
    """With a local tier, a value read from the backend is served from memory next time."""
    writer = CacheStore(backend)
    reader = CacheStore(backend, local=LocalTier(100, 60))

    @cached(ttl="1m")
    async def classify(query: str) -> str:
        return query

    set_current_cache(writer)
    await classify("a")
    set_current_cache(reader)
    assert reader.local is not None
    assert len(reader.local) == 0
    assert await classify("a") == "a"
    assert len(reader.local) == 1


async def test_cached_refuses_invalid_arguments_at_decoration() -> None:
    def classify(query: str) -> str:
        return query

    with pytest.raises(ConfigurationError, match="below @classmethod"):
        cached(ttl="1m")(classmethod(classify))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl='soon'"):
        cached(ttl="soon")
    with pytest.raises(ConfigurationError, match="positive"):
        cached(ttl=0)
    with pytest.raises(ConfigurationError, match="tags='intent'"):
        cached(ttl="1m", tags="intent")
    with pytest.raises(ConfigurationError, match="at most 32 tags"):
        cached(ttl="1m", tags=[f"t{i}" for i in range(33)])
    with pytest.raises(ConfigurationError, match="at most 200 characters"):
        cached(ttl="1m", tags=["x" * 201])
    with pytest.raises(ConfigurationError, match="serializer='yaml'"):
        cached(ttl="1m", serializer="yaml")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="namespace=''"):
        cached(ttl="1m", namespace="")
    with pytest.raises(ConfigurationError, match="per_caller='yes'"):
        cached(ttl="1m", per_caller="yes")  # type: ignore[arg-type]


async def test_cached_refuses_a_sync_generator_function_at_decoration() -> None:
    """Its call returns a generator object, which could never be stored: refused, never
    silently uncached. An async generator function is the way to cache a stream."""

    def chunks(query: str) -> Iterator[str]:
        yield query

    class Chunks:
        def __call__(self, query: str) -> Iterator[str]:
            yield query

    for function in (chunks, Chunks()):
        with pytest.raises(ConfigurationError, match=r"sync generator function.*async generator"):
            cached(ttl="1m")(function)


async def test_cached_keeps_the_function_signature_and_name() -> None:
    async def classify(query: str, *, locale: str = "en") -> str:
        """Classify a query."""
        return query

    wrapped = cached(ttl="1m")(classify)
    assert wrapped.__name__ == "classify"
    assert wrapped.__doc__ == "Classify a query."
    assert wrapped.__wrapped__ is classify  # type: ignore[attr-defined]


async def test_cached_calls_the_function_without_raising_while_redis_is_down_and_recovers(
    stoppable_cache: StoppableCache, metric_reader: InMemoryMetricReader
) -> None:
    """Redis stopped: every call reaches the function and returns its value, no exception
    from the cache, counted as error and within the backend timeout; when Redis is back,
    caching resumes by itself."""
    server = stoppable_cache.server
    calls = Calls()

    @cached(ttl="1m", namespace="test")
    async def classify(query: str) -> str:
        calls.arguments.append(query)
        return f"intent:{query}"

    assert await classify("a") == "intent:a"
    assert await classify("a") == "intent:a"
    assert len(calls) == 1
    server.stop()
    started = time.monotonic()
    for query in ["a", "b", "a"]:
        assert await classify(query) == f"intent:{query}"
    assert time.monotonic() - started < 1.0
    assert len(calls) == 4
    assert requests(metric_reader, names.CACHE_ERROR) == 3

    server.start()
    deadline = time.monotonic() + 5
    while requests(metric_reader, names.CACHE_HIT) < 2 and time.monotonic() < deadline:
        await classify("c")
        await asyncio.sleep(0.05)
    assert requests(metric_reader, names.CACHE_HIT) >= 2  # stored, then served again


async def test_cached_memory_store_is_used_before_install() -> None:
    """Without install(), the decorators use an in-process store."""
    set_current_cache(None)
    calls = Calls()

    @cached(ttl="1m")
    async def classify(query: str) -> str:
        calls.arguments.append(query)
        return query

    await classify("a")
    await classify("a")
    assert len(calls) == 1
    assert isinstance(toolkit.cache.current_cache().backend, MemoryBackend)


# --- invalidation races --------------------------------------------------------------------------


async def test_cached_value_computed_before_an_invalidation_of_its_tags_is_never_stored_after_it(
    store: CacheStore,
) -> None:
    """A call computes from version 1; the data changes and its tag is invalidated while it
    runs. Its own caller gets what it computed, but that old value is not stored: the next
    call computes version 2, and only that one is served afterwards."""
    version = 1
    started, release = asyncio.Event(), asyncio.Event()
    calls = Calls()

    @cached(ttl="1m", tags=["catalog"])
    async def price(item: str) -> int:
        seen = version
        calls.arguments.append(seen)
        started.set()
        await release.wait()
        return seen

    first = asyncio.create_task(price("a"))
    await started.wait()
    version = 2
    await toolkit.cache.invalidate(tags=["catalog"])
    release.set()
    assert await first == 1
    assert await price("a") == 2
    assert await price("a") == 2
    assert calls.arguments == [1, 2]


async def test_cached_invalidation_of_another_tag_does_not_keep_a_value_from_being_stored(
    store: CacheStore,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    calls = Calls()

    @cached(ttl="1m", tags=["catalog"])
    async def price(item: str) -> int:
        calls.arguments.append(item)
        started.set()
        await release.wait()
        return 1

    first = asyncio.create_task(price("a"))
    await started.wait()
    await toolkit.cache.invalidate(tags=["prices"])
    release.set()
    await first
    await price("a")
    assert len(calls) == 1


@pytest.mark.parametrize("seed", range(3))
async def test_cached_after_invalidate_returns_no_call_serves_a_value_older_than_it(
    store: CacheStore, seed: int
) -> None:
    """Callers and invalidations race at random points: whenever invalidate() has returned,
    a call made next returns a value computed from the data as it was when invalidate() was
    called, or later; never an older one, although older computations finish afterwards."""
    rng = random.Random(seed)
    version = 0

    @cached(ttl="1m", tags=["items"])
    async def read(item: str) -> int:
        seen = version
        await asyncio.sleep(rng.random() * 0.02)
        return seen

    callers: list[asyncio.Task[int]] = []
    for _ in range(30):
        callers += [asyncio.create_task(read("a")) for _ in range(rng.randrange(1, 4))]
        await asyncio.sleep(rng.random() * 0.02)
        version += 1
        changed = version
        await toolkit.cache.invalidate(tags=["items"])
        assert await read("a") >= changed
    await asyncio.gather(*callers)
    assert await read("a") == version


# --- tags computed from the arguments ------------------------------------------------------------


async def test_cached_tags_computed_from_the_arguments_invalidate_one_profile(
    store: CacheStore,
) -> None:
    """tags= as a function of the call's arguments: invalidating one profile's tag drops
    every entry of that profile, and only those."""
    calls = Calls()

    @cached(ttl="1m", tags=lambda profile_id, **_: [f"profile:{profile_id}", "summaries"])
    async def summary(profile_id: str, *, days: int = 7) -> str:
        calls.arguments.append((profile_id, days))
        return f"{profile_id}/{days}"

    for _ in range(2):
        await summary("1")
        await summary("1", days=30)
        await summary(profile_id="2")
    assert len(calls) == 3
    assert await toolkit.cache.invalidate(tags=["profile:1"]) == 2
    await summary("2")
    await summary("1", days=30)
    assert calls.arguments[3:] == [("1", 30)]
    assert await toolkit.cache.invalidate(tags=["summaries"]) == 2


async def test_cached_computed_tags_that_fail_or_are_not_tags_bypass_with_one_warning(
    store: CacheStore, metric_reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    """A tags= function that raises, returns a string, too many tags or an empty one: the
    call goes to the function uncached (never stored untagged, where no invalidation could
    reach it), counted as bypass, with one warning per function."""
    caplog.set_level(logging.WARNING, "toolkit.cache")
    answers: dict[str, Any] = {
        "raises": lambda: 1 / 0,
        "string": lambda: "profile:1",
        "too-many": lambda: [f"t{i}" for i in range(40)],
        "empty": lambda: [""],
        "long": lambda: ["x" * 300],
        "number": lambda: [7],
    }
    calls = Calls()

    @cached(ttl="1m", namespace="test", tags=lambda kind: answers[kind]())
    async def compute(kind: str) -> str:
        calls.arguments.append(kind)
        return kind

    for kind in answers:
        assert await compute(kind) == kind
        assert await compute(kind) == kind
    assert len(calls) == 2 * len(answers)
    assert requests(metric_reader, names.CACHE_BYPASS) == 2 * len(answers)
    assert len(caplog.records) == 1
    assert "tags= raised ZeroDivisionError" in caplog.records[0].getMessage()


# --- per caller ----------------------------------------------------------------------------------


def installed(backend: Backend, **cache: Any) -> FastAPI:
    """An app with install() on the test's backend, whose route calls a per-caller helper."""
    app = FastAPI()
    app.state.calls = []

    @cached(ttl="1m", per_caller=True, namespace="test")
    async def remember(question: str) -> str:
        app.state.calls.append(question)
        return f"answer {len(app.state.calls)}"

    @app.get("/ask")
    async def ask(q: str) -> dict[str, str]:
        return {"answer": await remember(q)}

    url = backend.url if isinstance(backend, RedisBackend) else "memory://"
    toolkit.install(
        app,
        ToolkitSettings(
            backend={"url": url, "key_prefix": backend.key_prefix, "timeout": "2s"},
            cache=cache,
            telemetry={"prometheus": False},
        ),
    )
    return app


async def ask(http: httpx.AsyncClient, question: str, **headers: str) -> str:
    response = await http.get("/ask", params={"q": question}, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["answer"])


async def test_cached_follower_cut_by_its_request_budget_is_answered_504_without_calling_it(
    backend: Backend,
) -> None:
    """In an installed app, a request whose budget (``Request-Timeout``) ends while a slow
    leader computes its key is answered 504 at its deadline, without calling the function;
    the leader's answer is stored and served to the next request."""
    app = FastAPI()
    calls: list[str] = []
    gate = asyncio.Event()

    @cached(ttl="1m", namespace="test")
    async def answer(question: str) -> str:
        calls.append(question)
        await gate.wait()
        return question.upper()

    @app.get("/ask")
    async def ask_route(q: str) -> dict[str, str]:
        return {"answer": await answer(q)}

    url = backend.url if isinstance(backend, RedisBackend) else "memory://"
    toolkit.install(
        app,
        ToolkitSettings(
            backend={"url": url, "key_prefix": backend.key_prefix, "timeout": "2s"},
            telemetry={"prometheus": False},
        ),
    )
    async with serving(app) as http:
        leader = asyncio.create_task(http.get("/ask", params={"q": "q"}))
        await eventually(lambda: len(calls) == 1)
        follower = await http.get("/ask", params={"q": "q"}, headers={"request-timeout": "0.2"})
        assert follower.status_code == 504
        assert follower.headers["content-type"] == "application/problem+json"
        assert calls == ["q"]
        gate.set()
        assert (await leader).json() == {"answer": "Q"}
        assert await ask(http, "q") == "Q"
        assert calls == ["q"]


async def test_cached_per_caller_entries_do_not_leak_between_identities(backend: Backend) -> None:
    """per_caller=True keys on the request's credentials as the response cache does (its
    default: Authorization and Cookie): each caller computes once and gets only its own
    answers; another caller's same question computes again."""
    app = installed(backend)
    async with serving(app) as http:
        alice = await ask(http, "q", authorization="Bearer alice")
        bob = await ask(http, "q", authorization="Bearer bob")
        carol = await ask(http, "q", cookie="session=carol")
        assert len({alice, bob, carol}) == 3
        assert await ask(http, "q", authorization="Bearer alice") == alice
        assert await ask(http, "q", authorization="Bearer bob") == bob
        assert await ask(http, "q", cookie="session=carol") == carol
        assert await ask(http, "q", authorization="Bearer alice", cookie="x=1") not in {
            alice,
            bob,
            carol,
        }
    assert len(app.state.calls) == 4


async def test_cached_per_caller_uses_the_response_cache_caller_setting(
    backend: Backend,
) -> None:
    """With cache.caller = header:X-User-Id, that header alone tells callers apart."""
    app = installed(backend, caller="header:X-User-Id")
    async with serving(app) as http:
        first = await ask(http, "q", **{"x-user-id": "1", "authorization": "Bearer a"})
        assert await ask(http, "q", **{"x-user-id": "1", "authorization": "Bearer b"}) == first
        assert await ask(http, "q", **{"x-user-id": "2"}) != first
    assert len(app.state.calls) == 2


async def test_cached_per_caller_outside_a_request_fails_loudly(store: CacheStore) -> None:
    """No request, no caller: the call raises NoRequestError naming the function, instead of
    sharing one entry between everyone."""

    @cached(ttl="1m", per_caller=True)
    async def remember(question: str) -> str:
        return question

    @cached(ttl="1m", per_caller=True)
    def remember_sync(question: str) -> str:
        return question

    with pytest.raises(NoRequestError, match=r"remember.*outside a request"):
        await remember("q")
    with pytest.raises(NoRequestError, match=r"remember_sync.*outside a request"):
        remember_sync("q")


# --- sync functions ------------------------------------------------------------------------------


async def test_cached_sync_function_is_cached_in_process_and_invalidated_by_its_tags(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    """A def works as lru_cache would, plus a time to live, tags, the flag and the metrics,
    whatever the store's backend: the entries live in this process."""
    calls = Calls()

    @cached(ttl="1m", tags=lambda account, **_: [f"account:{account}"], namespace="test")
    def plan(account: str, *, tier: int = 1) -> dict[str, int]:
        calls.arguments.append(account)
        return {"tier": tier}

    assert plan("a") == {"tier": 1}
    assert plan("a") == {"tier": 1}
    assert plan("a", tier=2) == {"tier": 2}
    assert plan("b") == {"tier": 1}
    assert calls.arguments == ["a", "a", "b"]
    assert await anyio.to_thread.run_sync(plan, "b") == {"tier": 1}  # from a worker thread
    assert await toolkit.cache.invalidate(tags=["account:a"]) == 2
    plan("a")
    plan("b")
    with override({CACHE_FUNCTION: "off"}):
        plan("b")
    assert calls.arguments == ["a", "a", "b", "a", "b"]
    assert requests(metric_reader, names.CACHE_MISS) == 4
    assert requests(metric_reader, names.CACHE_HIT) == 3
    assert requests(metric_reader, names.CACHE_BYPASS) == 1
    assert (await store.get_many([plan.__qualname__])) == [None]  # nothing reached the backend


async def test_cached_sync_function_computed_in_a_thread_across_an_invalidation_is_not_stored(
    store: CacheStore,
) -> None:
    """The race on threads: a sync function runs in a worker thread, its tag is invalidated
    on the event loop meanwhile; its old value is not stored."""
    version = 1
    started, release = threading.Event(), threading.Event()

    @cached(ttl="1m", tags=["plans"])
    def plan(account: str) -> int:
        seen = version
        started.set()
        release.wait(10)
        return seen

    first = asyncio.ensure_future(anyio.to_thread.run_sync(plan, "a"))
    await anyio.to_thread.run_sync(started.wait, 10)
    version = 2
    await toolkit.cache.invalidate(tags=["plans"])
    release.set()
    assert await first == 1
    assert plan("a") == 2
    assert plan("a") == 2


async def test_cached_sync_entries_are_invalidated_from_another_process(
    backend: Backend, meter_provider: MeterProvider
) -> None:
    """An invalidation announced by another process (another store on the backend) reaches
    the sync function's in-process entries."""
    here = CacheStore(backend, meter_provider=meter_provider)
    elsewhere = CacheStore(backend, meter_provider=meter_provider)
    await here.start()
    set_current_cache(here)
    calls = Calls()

    @cached(ttl="1m", tags=["plans"])
    def plan(account: str) -> str:
        calls.arguments.append(account)
        return account

    plan("a")
    plan("a")
    assert len(calls) == 1
    await elsewhere.invalidate(["plans"])
    try:
        await eventually(lambda: (plan("a"), len(calls))[1] == 2)
    finally:
        await here.stop()


def test_the_serializers_load_when_a_function_is_decorated_not_at_its_first_call() -> None:
    """aiocache's import (~80 ms, its redis backend too) happens while the app's modules load,
    never on the event loop in the middle of the first request; ``import toolkit`` alone does
    not pay it."""
    script = (
        "import sys, toolkit\n"
        "before = 'aiocache.serializers' in sys.modules\n"
        "@toolkit.cached(ttl='1m')\n"
        "async def answer(question: str) -> str:\n"
        "    return question\n"
        "print(before, 'aiocache.serializers' in sys.modules)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert ran.stdout.split() == ["False", "True"]
