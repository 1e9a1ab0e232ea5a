"""Followers (the flag store, the cache store, the breaker registry): start() returns once
their subscription is live, or at once when the backend is down; stop() is bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.support.servers import free_port
from tests.support.waiting import eventually
from toolkit._tasks import stop_tasks
from toolkit.backends import Backend, MemoryBackend
from toolkit.backends._following import start_following
from toolkit.backends.redis import RedisBackend
from toolkit.cache import CacheStore, LocalTier
from toolkit.errors import BackendError
from toolkit.flags import RATELIMIT, FlagStore
from toolkit.resilience import BreakerRegistry

pytestmark = pytest.mark.anyio


async def test_following_starts_live_so_the_next_message_arrives(backend: Backend) -> None:
    """Whatever is published once start_following returned reaches the follower: no sleep
    between the two, on either backend."""
    heard: list[str] = []

    async def on_message(message: str) -> None:
        heard.append(message)

    task = await start_following(backend, "test", on_message, name="test.follow")
    try:
        assert heard == [""]  # the cue, handled before start_following returned
        await backend.publish("test", "hello")
        await eventually(lambda: heard == ["", "hello"])
    finally:
        await stop_tasks([task])
    assert task.done()


async def test_every_follower_is_live_when_its_start_returns(backend: Backend) -> None:
    """A change made right after the other instance's start() reaches it: a flag, a cache
    invalidation (its local tier emptied), a breaker transition."""
    flags, writer = FlagStore(backend), FlagStore(backend)
    cache = CacheStore(backend, local=LocalTier(10, 60))
    breakers = BreakerRegistry(backend)
    await flags.start()
    await cache.start()
    await breakers.start()
    try:
        await writer.set(RATELIMIT, "shadow", by="test")
        await eventually(lambda: flags.variant(RATELIMIT) == "shadow")

        assert cache.local is not None
        cache.local.put("k", b"v", 60)
        await CacheStore(backend).invalidate(["any"])
        await eventually(lambda: cache.local is not None and cache.local.get("k") is None)

        here = breakers.get("test-following", minimum_calls=1)
        await here.refresh()
        await BreakerRegistry(backend).get("test-following").force_open()
        await eventually(lambda: here.forced == "open")
    finally:
        await breakers.stop()
        await cache.stop()
        await flags.stop()


@pytest.mark.parametrize("follower", ["flags", "cache", "breakers"])
async def test_a_follower_starts_at_once_when_redis_is_down(follower: str) -> None:
    """No Redis at startup: start() returns within the backend timeout (the app starts
    on what it has), and stop() ends the retrying subscription."""
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}", timeout=0.2)
    starts: dict[str, Callable[[], FlagStore | CacheStore | BreakerRegistry]] = {
        "flags": lambda: FlagStore(backend),
        "cache": lambda: CacheStore(backend),
        "breakers": lambda: BreakerRegistry(backend),
    }
    running = starts[follower]()
    began = time.monotonic()
    await running.start()
    assert time.monotonic() - began < 0.5
    began = time.monotonic()
    await running.stop()
    assert time.monotonic() - began < 1.0
    await backend.close()


class _SwallowingBackend(MemoryBackend):
    """Reading the cache's entry counts turns a cancellation into a backend error, as
    redis-py may do mid-call."""

    in_process = False

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def refresh_cache_stats(self) -> None:
        self.reads += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise BackendError(
                "cancelled mid-call", operation="cache.stats", error_type="connection"
            ) from None


async def test_stop_ends_a_task_whose_cancellation_a_driver_swallowed() -> None:
    """The cache's count reader ignores errors and reads again: a cancellation turned into
    an error must still end it, and stop() must not return with it still running."""
    backend = _SwallowingBackend()
    store = CacheStore(backend)
    await store.start()
    await eventually(lambda: backend.reads == 1)
    tasks = list(store._tasks)
    began = time.monotonic()
    await store.stop()
    assert time.monotonic() - began < 1.0
    assert all(task.done() for task in tasks)


async def test_stop_tasks_cancels_again_a_task_that_ignored_it() -> None:
    """A task that swallows one cancellation is cancelled again, within the bound."""
    cancelled = 0
    started = asyncio.Event()

    async def stubborn() -> None:
        nonlocal cancelled
        started.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled += 1
                if cancelled > 1:
                    raise

    task = asyncio.create_task(stubborn())
    await started.wait()
    await stop_tasks([task], within=2.0)
    assert task.done()
    assert cancelled == 2
