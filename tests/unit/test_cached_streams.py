"""@cached on an async generator function, on memory and real Redis: chunks stored once the
stream ended normally, replayed with the same chunking; never a partial stream; bounded in
bytes; tags and invalidation as for coroutines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import toolkit
from tests.support.otel import counter_value
from tests.support.waiting import eventually_returns
from tests.unit.conftest import StoppableCache
from toolkit.backends import Backend
from toolkit.cache import CacheStore, cached, set_current_cache
from toolkit.cache._function_stream import HEADER, pack, unpack
from toolkit.flags import CACHE_FUNCTION, override
from toolkit.settings import CacheSettings
from toolkit.telemetry import names

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture
def store(backend: Backend, meter_provider: MeterProvider) -> CacheStore:
    settings = CacheSettings.model_validate({"max_body_bytes": 4096})
    store = CacheStore(backend, meter_provider=meter_provider, settings=settings)
    set_current_cache(store)
    return store


def requests(reader: InMemoryMetricReader, result: str) -> float:
    return counter_value(
        reader, names.CACHE_REQUESTS, **{names.CACHE_NAME: "streams", names.CACHE_RESULT: result}
    )


async def read(stream: AsyncIterator[Any], into: list[Any] | None = None) -> list[Any]:
    """Every chunk of ``stream``; kept in ``into`` as they come when given."""
    chunks = [] if into is None else into
    async for chunk in stream:
        chunks.append(chunk)
    return chunks


class Tokens:
    """A model's answer, streamed: records each run and whether it ran to its end."""

    def __init__(self, chunks: list[Any], *, fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.runs = 0
        self.ends = 0

    async def stream(self, prompt: str) -> AsyncIterator[Any]:
        self.runs += 1
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_after:
                raise ConnectionError("the provider hung up")
            await asyncio.sleep(0)
            yield chunk
        self.ends += 1


async def test_a_cached_stream_is_replayed_chunk_for_chunk(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    """The first call streams from the function; later ones replay the same chunks, cut
    the same way (an empty chunk and a dict chunk included), without calling it."""
    tokens = Tokens(["Hel", "lo", "", {"delta": " world", "n": 2}, "!"])
    answer = cached(ttl="1m", namespace="streams")(tokens.stream)
    first = await read(answer("hi"))
    assert first == ["Hel", "lo", "", {"delta": " world", "n": 2}, "!"]
    assert await read(answer("hi")) == first
    assert await read(answer("hi")) == first
    assert tokens.runs == 1
    assert await read(answer("other")) == first
    assert tokens.runs == 2
    assert (requests(metric_reader, "miss"), requests(metric_reader, "hit")) == (2, 2)


@pytest.mark.parametrize("how", ["error", "break", "aclose"])
async def test_a_stream_that_failed_or_was_closed_early_stores_nothing(
    store: CacheStore, how: str
) -> None:
    """Never a partial stream: after an error mid-stream, or a consumer that stopped early,
    the next call streams from the function again, and its complete stream is the one
    stored."""
    tokens = Tokens(["a", "b", "c", "d"], fail_after=2 if how == "error" else None)
    answer = cached(ttl="1m", namespace="streams")(tokens.stream)
    received: list[str] = []
    if how == "error":
        with pytest.raises(ConnectionError):
            await read(answer("p"), received)
        assert received == ["a", "b"]
        tokens.fail_after = None
    elif how == "break":
        async for chunk in answer("p"):
            received.append(chunk)
            break
    else:
        stream = answer("p")
        received.append(await anext(stream))  # type: ignore[arg-type]
        await stream.aclose()  # type: ignore[attr-defined]
    assert await read(answer("p")) == ["a", "b", "c", "d"]
    assert await read(answer("p")) == ["a", "b", "c", "d"]
    assert tokens.runs == 2


async def test_a_stream_over_the_size_cap_is_served_in_full_and_not_stored(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    """4 KiB cap: a 10 KiB stream reaches its caller whole, is counted as ``bypass``, and the
    next call streams again; a small one is stored."""
    big = Tokens(["x" * 100] * 100)
    answer = cached(ttl="1m", namespace="streams")(big.stream)
    assert await read(answer("p")) == ["x" * 100] * 100
    assert await read(answer("p")) == ["x" * 100] * 100
    assert big.runs == 2
    assert requests(metric_reader, "bypass") == 2


async def test_a_chunk_the_serializer_cannot_store_leaves_the_stream_unstored(
    store: CacheStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "toolkit.cache")
    tokens = Tokens(["a", {1, 2}, "c"])  # a set: not JSON
    answer = cached(ttl="1m", namespace="streams")(tokens.stream)
    assert await read(answer("p")) == ["a", {1, 2}, "c"]
    assert await read(answer("p")) == ["a", {1, 2}, "c"]
    assert tokens.runs == 2
    assert "cannot be stored" in caplog.text


async def test_concurrent_misses_of_a_stream_each_stream_from_the_function(
    store: CacheStore,
) -> None:
    """No single flight for streams: two callers arriving together each get their chunks
    as the function produces them (neither waits for the other's whole stream); later
    callers get the stored one."""
    gate = asyncio.Event()
    runs: list[int] = []

    @cached(ttl="1m", namespace="streams")
    async def answer(prompt: str) -> AsyncIterator[str]:
        runs.append(1)
        yield "first"
        await gate.wait()
        yield "second"

    one, two = answer("p"), answer("p")
    assert await anext(one) == "first"  # type: ignore[arg-type]
    assert await anext(two) == "first"  # type: ignore[arg-type]
    gate.set()
    assert [await anext(one), await anext(two)] == ["second", "second"]  # type: ignore[arg-type]
    for stream in (one, two):
        with pytest.raises(StopAsyncIteration):
            await anext(stream)  # type: ignore[arg-type]
    assert await read(answer("p")) == ["first", "second"]
    assert len(runs) == 2


async def test_a_stream_computed_before_an_invalidation_of_its_tags_is_never_stored_after_it(
    store: CacheStore,
) -> None:
    """The coroutines' race, for a stream: it starts from version 1; the data changes and its
    tag is invalidated while it streams. Its caller gets what it streamed, but that old
    stream is not stored: the next call streams version 2, and only that one is replayed."""
    version = 1
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    @cached(ttl="1m", namespace="streams", tags=["catalog"])
    async def describe(item: str) -> AsyncIterator[str]:
        seen = version
        runs.append(seen)
        yield f"v{seen}"
        started.set()
        await release.wait()
        yield "end"

    first = asyncio.create_task(read(describe("a")))
    await started.wait()
    version = 2
    await toolkit.cache.invalidate(tags=["catalog"])
    release.set()
    assert await first == ["v1", "end"]
    assert await read(describe("a")) == ["v2", "end"]
    assert await read(describe("a")) == ["v2", "end"]
    assert runs == [1, 2]


async def test_stream_tags_computed_from_the_arguments_invalidate_one_profile(
    store: CacheStore,
) -> None:
    runs: list[str] = []

    @cached(ttl="1m", namespace="streams", tags=lambda profile_id, **_: [f"profile:{profile_id}"])
    async def recall(profile_id: str, *, query: str) -> AsyncIterator[str]:
        runs.append(profile_id)
        yield f"{profile_id}:{query}"

    for _ in range(2):
        await read(recall("1", query="q"))
        await read(recall("2", query="q"))
    assert runs == ["1", "2"]
    assert await toolkit.cache.invalidate(tags=["profile:1"]) == 1
    await read(recall("1", query="q"))
    await read(recall("2", query="q"))
    assert runs == ["1", "2", "1"]


async def test_a_stream_a_fallback_answered_is_not_stored(store: CacheStore) -> None:
    """@cached over @resilient: while the provider fails before its first chunk the
    fallback's chunks are served, never stored; once it answers, its stream is."""
    failing = [True]

    async def canned(prompt: str) -> AsyncIterator[str]:
        yield "try again later"

    @cached(ttl="1m", namespace="streams")
    @toolkit.resilient(fallback=canned, timeout=None)
    async def answer(prompt: str) -> AsyncIterator[str]:
        if failing[0]:
            raise ConnectionError("down")
        yield "the"
        yield " answer"

    assert await read(answer("p")) == ["try again later"]
    assert await read(answer("p")) == ["try again later"]
    failing[0] = False
    assert await read(answer("p")) == ["the", " answer"]
    failing[0] = True
    assert await read(answer("p")) == ["the", " answer"]  # stored: a hit


async def test_a_cached_stream_with_the_flag_off_is_the_bare_stream(
    store: CacheStore, metric_reader: InMemoryMetricReader
) -> None:
    tokens = Tokens(["a", "b"])
    answer = cached(ttl="1m", namespace="streams")(tokens.stream)
    with override({CACHE_FUNCTION: "off"}):
        assert await read(answer("p")) == ["a", "b"]
        assert await read(answer("p")) == ["a", "b"]
    assert tokens.runs == 2
    assert requests(metric_reader, "bypass") == 2
    assert await read(answer("p")) == ["a", "b"]
    assert tokens.runs == 3


def test_stored_streams_round_trip_and_refuse_what_is_not_one() -> None:
    parts = [b'"a"', b"", b'{"b":1}']
    assert unpack(pack(parts)) == parts
    assert unpack(pack([])) == []
    assert unpack(b'["a","b"]') is None  # a value stored before the function streamed
    assert unpack(HEADER + b"\x00\x00\x00\x09abc") is None  # cut short
    assert unpack(HEADER + b"\x00\x00") is None


@pytest.mark.redis
async def test_a_cached_stream_is_served_whole_while_redis_stops_and_restarts(
    stoppable_cache: StoppableCache, metric_reader: InMemoryMetricReader
) -> None:
    """Redis stopped before the lookup, or stopped while a miss streams (its write fails):
    every caller gets the whole stream, without an error from the cache; once Redis is back,
    streams are stored and replayed again."""
    server = stoppable_cache.server
    gate = asyncio.Event()
    runs: list[int] = []

    @cached(ttl="1m", namespace="streams")
    async def answer(prompt: str) -> AsyncIterator[str]:
        runs.append(1)
        yield "a"
        await gate.wait()
        yield "b"

    stream = answer("mid")
    assert await anext(stream) == "a"  # type: ignore[arg-type]  # looked up: a miss
    server.stop()
    gate.set()
    assert await read(stream) == ["b"]  # the write failed; the caller has it all
    assert await read(answer("down")) == ["a", "b"]
    assert requests(metric_reader, "error") == 1
    server.start()

    async def replayed() -> bool:
        before = len(runs)
        assert await read(answer("up")) == ["a", "b"]
        return len(runs) == before

    await eventually_returns(replayed, bool, 5)  # stored once Redis was back, then a hit
