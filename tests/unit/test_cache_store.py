"""The cache's storage layer on memory and real Redis: entries, tags, leases, single flight."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable

import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.support.otel import points
from tests.support.servers import RedisServer, free_port, require_binary
from tests.support.waiting import eventually
from toolkit import deadline
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends._cache_table import MAX_INVALIDATED_TAGS, CacheTable
from toolkit.backends.redis import RedisBackend
from toolkit.cache import (
    CacheStore,
    LocalTier,
    SingleFlight,
    cache_embeddings,
    cached,
    set_current_cache,
)
from toolkit.cache._keys import canonical_query
from toolkit.cache._store import CACHE_CHANNEL
from toolkit.errors import BackendError, DeadlineExceeded
from toolkit.identity import ClientAddress, digest
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
    await eventually(lambda: heard == [""])  # subscribed
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


async def test_single_flight_leader_looks_again_before_computing(backend: Backend) -> None:
    """A caller that missed and then got the lease looks once more before it computes:
    another process may have stored the value in between. So does a refresh (run_if_idle)."""
    store = CacheStore(backend)
    flight = SingleFlight[bytes](backend, lease=5, wait=5)
    looks = 0

    async def lookup() -> bytes | None:
        nonlocal looks
        looks += 1
        return await store.get("k")

    async def compute() -> bytes:
        raise AssertionError("computed what another caller had stored")

    await store.set("k", b"stored meanwhile", ttl=60)  # after this caller's own miss
    assert await flight.run("k", lookup, compute) == b"stored meanwhile"
    assert await flight.run_if_idle("k", compute, lookup) == b"stored meanwhile"
    assert looks == 2
    assert not await backend.lease_held("lease:k")


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


@pytest.mark.parametrize(("wait", "budget"), [(5.0, 0.2), (0.2, 5.0)], ids=["deadline", "wait"])
@pytest.mark.parametrize("processes", [1, 2], ids=["same-process", "across-processes"])
async def test_a_follower_waits_the_smaller_of_its_wait_and_the_deadline(
    backend: Backend, wait: float, budget: float, processes: int
) -> None:
    """A leader that never stores: its follower (in its process, or in another one, polling
    the backend) gives up at the sooner of ``wait`` and the current deadline. Past ``wait``
    it computes itself, as when the leader is too slow; past the deadline it raises
    DeadlineExceeded without computing (there is no time left to compute in)."""
    store = CacheStore(backend)
    flights = [SingleFlight[bytes](backend, lease=30, wait=wait) for _ in range(processes)]
    started = asyncio.Event()
    computed: list[str] = []

    async def stuck() -> bytes:
        started.set()
        await asyncio.sleep(60)
        return b"never"

    async def own() -> bytes:
        computed.append("own")
        return b"own"

    reasons: list[str] = []
    leader = asyncio.create_task(flights[0].run("k", lambda: store.get("k"), stuck))
    await started.wait()
    began = time.monotonic()
    with deadline(budget):
        follower = flights[-1].run("k", lambda: store.get("k"), own, gave_up=reasons.append)
        if budget < wait:
            with pytest.raises(DeadlineExceeded):
                await follower
        else:
            assert await follower == b"own"
    assert 0.15 < time.monotonic() - began < 1.5
    # Which bound ran out, told to the cache (it counts it).
    assert reasons == [names.CACHE_WAIT_DEADLINE if budget < wait else names.CACHE_WAIT_TIMEOUT]
    assert computed == ([] if budget < wait else ["own"])
    assert not leader.done()  # the leader is left to its work
    leader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await leader


async def test_a_follower_waits_once_in_all_behind_a_leader_here_then_one_elsewhere(
    backend: Backend,
) -> None:
    """A follower queued behind a leader of its process that ends without storing, and then
    leads in its process but meets a leader elsewhere holding the lease, waits ``wait`` in
    all, not once for each: it gives up (``wait_timeout``) and computes when the wait it
    started with runs out."""
    wait = 1.0
    store = CacheStore(backend)
    here, elsewhere = (SingleFlight[bytes](backend, lease=30, wait=wait) for _ in range(2))
    started = asyncio.Event()
    computed: list[str] = []

    async def stuck() -> bytes:
        started.set()
        await asyncio.sleep(60)
        return b"never"

    def unstored(name: str) -> Callable[[], Awaitable[bytes]]:
        async def compute() -> bytes:
            computed.append(name)
            return name.encode()  # not stored: the next caller has nothing to take

        return compute

    holder = asyncio.create_task(elsewhere.run("k", lambda: store.get("k"), stuck))
    await started.wait()
    reasons: list[str] = []
    began = time.monotonic()
    # The first caller here leads in its process, waits out ``wait`` against the holder
    # elsewhere and computes without storing; the second, queued behind it, then leads here.
    first, second = await asyncio.gather(
        here.run("k", lambda: store.get("k"), unstored("first"), gave_up=reasons.append),
        here.run("k", lambda: store.get("k"), unstored("second"), gave_up=reasons.append),
    )
    took = time.monotonic() - began
    assert (first, second) == (b"first", b"second")
    assert computed == ["first", "second"]
    assert reasons == [names.CACHE_WAIT_TIMEOUT, names.CACHE_WAIT_TIMEOUT]
    # A second full wait would take at least 2 x wait; one takes wait and a few polls.
    assert wait * 0.9 < took < wait * 1.75
    assert await backend.lease_held("lease:k")  # the leader elsewhere is left to its work
    holder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder


@pytest.mark.parametrize("processes", [1, 2], ids=["same-process", "across-processes"])
async def test_a_follower_cancelled_as_its_deadline_passes_reports_the_deadline(
    backend: Backend, processes: int
) -> None:
    """A request budget's timer fires as the follower's wait ends and may win the race: the
    follower, cancelled once the deadline has passed, still reports that the deadline cut
    its wait (the cache counts it) and never computes. A follower cancelled before its
    deadline (its client went away) reports nothing."""
    store = CacheStore(backend)
    # A clock at half speed puts the flight's own end of the wait past the deadline, so the
    # budget's timer always wins here, as it sometimes does in a request.
    flights = [
        SingleFlight[bytes](backend, lease=30, wait=30, clock=lambda: time.monotonic() / 2)
        for _ in range(processes)
    ]
    started = asyncio.Event()

    async def stuck() -> bytes:
        started.set()
        await asyncio.sleep(60)
        return b"never"

    async def own() -> bytes:
        raise AssertionError("a follower with no time left computed")

    leader = asyncio.create_task(flights[0].run("k", lambda: store.get("k"), stuck))
    await started.wait()
    reasons: list[str] = []
    with deadline(0.2), pytest.raises(TimeoutError) as cut:
        async with asyncio.timeout(0.2):  # the budget's timer, as the deadline middleware sets
            await flights[-1].run("k", lambda: store.get("k"), own, gave_up=reasons.append)
    assert cut.type is TimeoutError  # the timer's cancellation, not the flight's own raise
    assert reasons == [names.CACHE_WAIT_DEADLINE]

    reasons.clear()
    with deadline(5):
        early = asyncio.create_task(
            flights[-1].run("k", lambda: store.get("k"), own, gave_up=reasons.append)
        )
        await asyncio.sleep(0.05)
        early.cancel()
        with pytest.raises(asyncio.CancelledError):
            await early
    assert reasons == []
    assert not leader.done()
    leader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await leader


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


# --- the invalidation clock ---------------------------------------------------------------------


async def test_a_write_computed_before_an_invalidation_of_its_tags_is_refused(
    backend: Backend,
) -> None:
    """With the clock read before computing: refused when one of its tags was invalidated
    since, stored when another tag was, or when the clock was read after."""
    store = CacheStore(backend)
    before = await store.generation()
    await store.invalidate(["catalog"])
    assert await store.set("k", b"old", 60, ["catalog", "prices"], before) == 0
    assert await store.get("k") is None
    assert await store.set("k", b"other", 60, ["prices"], before) == 1
    assert await store.set("u", b"untagged", 60, (), before) == 1
    after = await store.generation()
    assert after > before
    assert await store.set_many([("k", b"new"), ("j", b"new")], 60, ["catalog"], after) == 2
    assert await store.get_many(["k", "j", "u"]) == [b"new", b"new", b"untagged"]
    assert await store.set("k", b"any", 60, ["catalog"]) == 1  # no clock: unconditional


async def test_invalidated_tags_are_bounded_and_a_forgotten_one_still_refuses_older_writes(
    backend: Backend,
) -> None:
    """Past 10,000 invalidated tags the oldest are forgotten into a floor: a write read
    before any of them is refused (never stored stale), one read after is stored."""
    store = CacheStore(backend)
    before = await store.generation()
    tags = [f"profile:{i}" for i in range(MAX_INVALIDATED_TAGS + 5)]
    await store.invalidate(tags)
    await store.invalidate(["newest"])
    assert await store.set("k", b"v", 60, ["profile:0"], before) == 0  # forgotten: the floor
    assert await store.set("k", b"v", 60, ["never-invalidated"], before) == 0  # the floor, too
    assert await store.set("k", b"v", 60, ["profile:0"], await store.generation()) == 1
    if isinstance(backend, MemoryBackend):
        assert len(backend.cache._invalidated) == MAX_INVALIDATED_TAGS
    else:
        with redis.Redis.from_url(backend.url) as client:
            assert client.zcard(backend.key("cache", "invalidated")) == MAX_INVALIDATED_TAGS


@pytest.mark.redis
async def test_the_clock_moves_past_every_earlier_reading_after_redis_restarts_empty(
    redis_url: str,
) -> None:
    """A computation that read the clock, then Redis lost everything, then its tag was
    invalidated: its write is refused (the clock restarts from the server's time, not 0)."""
    backend = RedisBackend(redis_url, timeout=2)
    store = CacheStore(backend)
    try:
        await store.invalidate(["warm-up"])
        before = await store.generation()
        with redis.Redis.from_url(redis_url) as client:
            client.flushall()
        await store.invalidate(["catalog"])
        assert await store.generation() > before
        assert await store.set("k", b"old", 60, ["catalog"], before) == 0
    finally:
        await backend.close()


# --- bounded per-key structures ---------------------------------------------------------------


def listed_in_tag_indexes(backend: Backend) -> int:
    if isinstance(backend, MemoryBackend):
        return backend.cache.tag_index_size()
    assert isinstance(backend, RedisBackend)
    with redis.Redis.from_url(backend.url) as client:
        indexes = client.scan_iter(match=backend.key("cache", "tagged", "*"))
        return sum(client.zcard(index) for index in indexes)


async def test_the_tag_index_lists_only_live_entries(backend: Backend) -> None:
    """Rounds of short-lived entries under one tag that a long-lived entry keeps alive: what
    the index lists stays what is alive (it grew by every entry ever written, 16,000 for
    2,000 live, before)."""
    store = CacheStore(backend)
    await store.set("keeper", b"v", 60, ["intent"])
    for round_ in range(5):
        await store.set_many([(f"r{round_}-{i}", b"v") for i in range(200)], 0.15, ["intent"])
        await asyncio.sleep(0.2)  # this round expires
    await store.set_many([(f"last-{i}", b"v") for i in range(200)], 60, ["intent"])
    assert listed_in_tag_indexes(backend) == 201
    assert await store.invalidate(["intent"]) == 201
    assert listed_in_tag_indexes(backend) == 0


async def test_the_memory_tag_index_forgets_evicted_and_overwritten_entries() -> None:
    backend = MemoryBackend(max_cache_bytes=100_000)
    store = CacheStore(backend)
    for i in range(1_000):
        await store.set(f"k{i}", b"x" * 100, 60, [f"profile:{i}", "all"])
    entries, evictions = backend.cache_stats()
    assert evictions == 1_000 - entries
    assert backend.cache.tag_index_size() == 2 * entries
    assert len(backend.cache._tagged) == entries + 1
    await store.set("k999", b"y", 60, ["other"])  # retagged: no longer under its old tags
    assert await store.invalidate(["profile:999"]) == 0
    assert await store.invalidate(["other"]) == 1


def test_the_local_tier_is_bounded_in_bytes_as_well_as_entries() -> None:
    tier = LocalTier(max_entries=1_000, ttl=60, max_bytes=1_000_000)
    for i in range(100):
        tier.put(f"k{i}", b"x" * 100_000, 60)
    assert len(tier) <= 10
    assert tier.evictions == 100 - len(tier)
    for i in range(5_000):
        tier.put(f"small{i}", b"x", 60)
    assert len(tier) == 1_000


async def test_memory_stays_flat_over_100k_unique_keys(meter_provider: MeterProvider) -> None:
    """100,000 unique keys, each through one of the structures the toolkit keeps per key in
    process (cache entries with their tags and tag index, invalidated tags, the local tier,
    sync functions' entries, the identity digest's memo with 4 KiB API keys, the canonical
    query's and the proxy-hop parser's), and one in a hundred also through @cached (async and
    sync) and @cache_embeddings. Traced memory (tracemalloc, on from the start) grows by
    less than 256 KiB from the 50,000th key to the 100,000th."""
    backend = MemoryBackend(max_cache_bytes=512 * 1024, meter_provider=meter_provider)
    store = CacheStore(
        backend, local=LocalTier(1_000, 60, max_bytes=256 * 1024), meter_provider=meter_provider
    )
    store.sync_entries = CacheTable(256 * 1024, time.monotonic)
    set_current_cache(store)
    client = ClientAddress(["10.0.0.0/8"])
    value = b"v" * 100

    @cached(ttl="1h", tags=lambda i: [f"profile:{i}"])
    async def profile(i: int) -> str:
        return "p" * 100

    @cached(ttl="1h", tags=lambda i: [f"plan:{i}"])
    def plan(i: int) -> str:
        return "p" * 100

    @cache_embeddings(model="m", tags=["corpus"])
    async def embed(texts: list[str]) -> list[list[float]]:
        return [[0.5] * 8 for _ in texts]

    async def keys(start: int, stop: int) -> None:
        for i in range(start, stop):
            key, tag = f"k{i}", f"profile:{i}"
            match i % 5:
                case 0:
                    await store.set(key, value, 3600, [tag, "all"], await store.generation())
                case 1:
                    store.remember(key, value, 3600)
                    store.sync_entries.set_many([(key, value)], 3600, [tag])
                case 2:
                    digest("api_key:" + f"{i:08d}" * 512)
                case 3:
                    canonical_query(b"q=%d&a=" % i + b"x" * 800)
                case _:
                    hops = [(b"x-forwarded-for", b"%d" % i * 40)]
                    client({"client": ("10.0.0.1", 1), "headers": hops})
            if i % 10 == 0:
                await store.invalidate([f"profile:{i - 10}", f"gone:{i}", f"gone:{i + 1}"])
            if i % 100 == 0:
                await profile(i)
                plan(i)
                await embed([f"text {i}", f"text {i + 1}"])

    gc.collect()
    tracemalloc.start()
    try:
        await keys(0, 50_000)
        gc.collect()
        half = tracemalloc.get_traced_memory()[0]
        await keys(50_000, 100_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - half
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, f"{grown / 1024:.0f} KiB more after 50,000 more keys"
    assert len(backend.cache._invalidated) == MAX_INVALIDATED_TAGS


def test_memos_of_request_text_are_bounded_in_bytes() -> None:
    """Unique long API keys, query strings and forwarded hops (what clients choose) are not
    remembered: 10,000 of 4 KiB each add less than 1 MiB (the memos bounded only by their
    entry count held 67 MiB of them)."""
    client = ClientAddress(["10.0.0.0/8"])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            digest("api_key:" + f"{i:08d}" * 512)
            canonical_query(b"q=%d&a=" % i + b"x" * 4000)
            client({"client": ("10.0.0.1", 1), "headers": [(b"x-forwarded-for", b"%d" % i * 40)]})
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1024 * 1024, f"{grown / 1024:.0f} KiB for 10,000 unique inputs"
    assert digest("api_key:short") == digest("api_key:short")  # short ones still memoized


async def test_cache_entries_and_evictions_are_reported_on_redis_too(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """On Redis the entry and eviction gauges report Redis's own counts (INFO), read in the
    background while the store runs: entries held, and keys evicted under maxmemory."""
    server = RedisServer(require_binary("redis-server"), port=free_port())
    server.start()
    backend = RedisBackend(server.url, timeout=2, meter_provider=meter_provider)
    store = CacheStore(backend, meter_provider=meter_provider)
    try:
        with server.client() as client:
            client.config_set("maxmemory", "4mb")
            client.config_set("maxmemory-policy", "allkeys-lru")
        await backend.connect()
        for i in range(40):  # 40 x 256 KiB through a 4 MiB Redis: it evicts
            await store.set(f"entry-{i}", bytes(256 * 1024), ttl=60)
        await store.start()

        def reported(name: str) -> float | None:
            found = [
                p.value
                for p in points(metric_reader, name)
                if p.attributes.get(names.CACHE_BACKEND) == "redis"
            ]
            return found[0] if found else None

        await eventually(lambda: reported(names.CACHE_EVICTIONS) is not None, 5.0)
        entries, evictions = reported(names.CACHE_ENTRIES), reported(names.CACHE_EVICTIONS)
        assert entries is not None
        assert 0 < entries < 40
        assert evictions is not None
        assert evictions > 0
    finally:
        await store.stop()
        await backend.close()
        server.stop()
