"""@cached on memory and real Redis: keys, serializers, single flight, failures, telemetry."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import toolkit
from tests.support.otel import counter_value
from tests.unit.conftest import StoppableCache
from toolkit.backends import Backend, MemoryBackend
from toolkit.cache import CacheStore, LocalTier, cached, set_current_cache
from toolkit.errors import ConfigurationError
from toolkit.flags import CACHE_FUNCTION, override
from toolkit.settings import CacheSettings
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
    await asyncio.sleep(0.05)
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


async def test_cached_refuses_a_sync_function_and_invalid_arguments_at_decoration() -> None:
    def classify(query: str) -> str:
        return query

    with pytest.raises(ConfigurationError, match=r"async function.*classify"):
        cached(ttl="1m")(classify)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="below @classmethod"):
        cached(ttl="1m")(classmethod(classify))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl='soon'"):
        cached(ttl="soon")
    with pytest.raises(ConfigurationError, match="positive"):
        cached(ttl=0)
    with pytest.raises(ConfigurationError, match="tags='intent'"):
        cached(ttl="1m", tags="intent")
    with pytest.raises(ConfigurationError, match="serializer='yaml'"):
        cached(ttl="1m", serializer="yaml")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="namespace=''"):
        cached(ttl="1m", namespace="")


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
