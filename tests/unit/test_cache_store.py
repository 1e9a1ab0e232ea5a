"""The cache's storage layer on memory and real Redis: entries, tags, leases, single flight."""

from __future__ import annotations

import asyncio
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.support.otel import points
from tests.support.servers import free_port
from tests.support.waiting import eventually
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends.base import CACHE_CHANNEL
from toolkit.backends.redis import RedisBackend
from toolkit.cache import CacheStore, LocalTier, SingleFlight
from toolkit.errors import BackendError
from toolkit.telemetry import names

pytestmark = pytest.mark.anyio


async def test_entries_round_trip_in_order_and_expire(backend: Backend) -> None:
    store = CacheStore(backend)
    await store.set_many([("a", b"\x00binary"), ("b", b"two")], ttl=0.3)
    assert await store.get_many(["b", "missing", "a"]) == [b"two", None, b"\x00binary"]
    await asyncio.sleep(0.4)
    assert await store.get_many(["a", "b"]) == [None, None]


async def test_invalidation_deletes_what_a_tag_covers_and_nothing_else(backend: Backend) -> None:
    store = CacheStore(backend)
    await store.set("catalog-1", b"1", ttl=60, tags=["catalog"])
    await store.set("both", b"2", ttl=60, tags=["catalog", "prices"])
    await store.set("prices-1", b"3", ttl=60, tags=["prices"])
    await store.set("untagged", b"4", ttl=60)
    assert await store.invalidate(["catalog"]) == 2
    assert await store.get_many(["catalog-1", "both", "prices-1", "untagged"]) == [
        None,
        None,
        b"3",
        b"4",
    ]
    assert await store.invalidate(["catalog"]) == 0


async def test_invalidations_are_announced_to_every_process(backend: Backend) -> None:
    heard: list[str] = []

    async def listen() -> None:
        async for message in backend.subscribe(CACHE_CHANNEL):
            heard.append(message)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.1)
    await CacheStore(backend).invalidate(["catalog"])
    await eventually(lambda: len(heard) >= 2)
    listener.cancel()
    assert heard == ["", '{"tags": ["catalog"]}']


async def test_the_local_tier_is_emptied_by_an_invalidation_anywhere(backend: Backend) -> None:
    here = CacheStore(backend, local=LocalTier(100, 60))
    elsewhere = CacheStore(backend)
    await here.start()
    await here.set("k", b"v", ttl=60, tags=["t"])
    assert here.local is not None
    assert here.local.get("k") == b"v"
    await elsewhere.invalidate(["t"])
    await eventually(lambda: here.local is not None and here.local.get("k") is None)
    assert await here.get("k") is None
    await here.stop()


async def test_leases_have_one_holder_and_only_it_renews_or_releases(backend: Backend) -> None:
    assert await backend.lease_acquire("l", "alice", 0.5)
    assert not await backend.lease_acquire("l", "bob", 0.5)
    assert not await backend.lease_renew("l", "bob", 5)
    await backend.lease_release("l", "bob")
    assert await backend.lease_held("l")
    assert await backend.lease_renew("l", "alice", 5)
    await asyncio.sleep(0.6)  # renewed past the first expiry
    assert await backend.lease_held("l")
    await backend.lease_release("l", "alice")
    assert not await backend.lease_held("l")
    assert await backend.lease_acquire("l", "bob", 0.2)
    await asyncio.sleep(0.3)
    assert await backend.lease_acquire("l", "carol", 0.2)  # an expired lease is free


async def test_single_flight_runs_once_even_past_the_lease(backend: Backend) -> None:
    """50 concurrent callers, two flights (two 'processes'), a computation three times longer
    than the lease: computed once, everyone gets the stored result."""
    store = CacheStore(backend)
    flights = [
        SingleFlight[bytes](backend, lease=0.15, wait=5),
        SingleFlight[bytes](backend, lease=0.15, wait=5),
    ]
    runs = 0

    async def compute() -> bytes:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.45)
        await store.set("answer", b"42", ttl=60)
        return b"42"

    results = await asyncio.gather(
        *(flights[i % 2].run("answer", lambda: store.get("answer"), compute) for i in range(50))
    )
    assert runs == 1
    assert set(results) == {b"42"}


async def test_a_cancelled_leader_hands_over_at_once(backend: Backend) -> None:
    store = CacheStore(backend)
    flight = SingleFlight[bytes](backend, lease=30, wait=5)
    started = asyncio.Event()

    async def slow() -> bytes:
        started.set()
        await asyncio.sleep(60)
        return b"never"

    async def quick() -> bytes:
        await store.set("k", b"quick", ttl=60)
        return b"quick"

    leader = asyncio.create_task(flight.run("k", lambda: store.get("k"), slow))
    await started.wait()
    follower = asyncio.create_task(flight.run("k", lambda: store.get("k"), quick))
    await asyncio.sleep(0.05)
    leader.cancel()
    began = time.monotonic()
    assert await asyncio.wait_for(follower, 2) == b"quick"
    assert time.monotonic() - began < 1  # not the 30 s lease
    assert not await backend.lease_held("lease:k")


async def test_memory_entries_are_bounded_and_evictions_counted(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    backend = MemoryBackend(max_cache_bytes=10_000)
    store = CacheStore(backend, meter_provider=meter_provider)
    for i in range(100):
        await store.set(f"k{i}", b"x" * 400, ttl=60)
    entries, evictions = backend.cache_stats()
    assert entries * 500 <= 10_000
    assert evictions == 100 - entries
    assert await store.get("k99") == b"x" * 400  # the newest survive
    assert await store.get("k0") is None
    (gauge,) = points(metric_reader, names.CACHE_ENTRIES)
    assert gauge.value == entries
    durations = points(metric_reader, names.CACHE_OPERATION_DURATION)
    assert {p.attributes[names.CACHE_OPERATION] for p in durations} == {"set", "get"}


@pytest.mark.redis
async def test_concurrent_reads_reach_redis_as_one_round_trip_each_caller_its_own_answer(
    redis_url: str, meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """50 lookups made at once (repeated keys among them) are one MGET; every caller gets
    the values of its own keys, in its order, and a caller cancelled meanwhile takes
    nothing from the others."""
    backend = RedisBackend(redis_url, timeout=2)
    store = CacheStore(backend, meter_provider=meter_provider)
    try:
        await store.set_many([(f"k{i}", f"v{i}".encode()) for i in range(10)], ttl=60)
        asks = [[f"k{i % 10}", "missing", f"k{(i * 7) % 10}"] for i in range(50)]
        tasks = [asyncio.ensure_future(store.get_many(keys)) for keys in asks]
        tasks[3].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert tasks[3].cancelled()
        for keys, task in zip(asks, tasks, strict=True):
            if task is not tasks[3]:
                assert task.result() == [
                    None if key == "missing" else f"v{key[1:]}".encode() for key in keys
                ]
        (reads,) = [
            p
            for p in points(metric_reader, names.CACHE_OPERATION_DURATION)
            if p.attributes[names.CACHE_OPERATION] == "get"
        ]
        assert reads.count == 1
    finally:
        await backend.close()


@pytest.mark.redis
async def test_a_failed_batched_read_fails_every_caller_with_a_backend_error() -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    store = CacheStore(backend)
    results = await asyncio.gather(*(store.get(f"k{i}") for i in range(5)), return_exceptions=True)
    assert all(isinstance(result, BackendError) for result in results), results
    await backend.close()
