"""Single flight: on a miss, one caller in the whole fleet computes; the others wait for it.

Within a process, callers of one key queue behind a single coroutine. Across processes, that
coroutine takes a lease in the backend and renews it while the computation runs, so an LLM
call longer than the lease never lets a second caller start; the others poll the cache with
backoff and take the result when it lands. When the leader ends without storing anything
(the response was not cacheable, it failed, it was cancelled, its process died and the lease
ran out), the next caller leads, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from toolkit.backends import Backend
from toolkit.errors import BackendError

T = TypeVar("T")

DEFAULT_LEASE = 10.0
DEFAULT_WAIT = 60.0
_FIRST_POLL = 0.01
_LAST_POLL = 0.25


class SingleFlight(Generic[T]):
    """Coalesces computations of the same key.

    Args:
        backend: where leases live (shared by every instance on Redis).
        lease: seconds a leader holds the lease between renewals (renewed every third).
        wait: seconds a follower waits for the leader before computing itself.
        sleep / clock: for tests.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        lease: float = DEFAULT_LEASE,
        wait: float = DEFAULT_WAIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self._lease = lease
        self._wait = wait
        self._sleep = sleep
        self._clock = clock
        self._local: dict[str, asyncio.Future[None]] = {}

    async def run(
        self,
        key: str,
        lookup: Callable[[], Awaitable[T | None]],
        compute: Callable[[], Awaitable[T]],
    ) -> T:
        """``lookup()`` when another caller has produced it, else ``compute()`` (which
        stores what it produces). Backend failures degrade to computing without a lease."""
        deadline = self._clock() + self._wait
        while (turn := self._local.get(key)) is not None:
            # Another coroutine of this process leads for this key: wait for its turn to end
            # (shielded: our cancellation must not cancel the leader), then look again. As
            # long as a follower in another process would wait, and no longer.
            remaining = deadline - self._clock()
            if remaining <= 0:
                return await compute()  # waited long enough for a leader that never stores
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(turn), remaining)
            found = await lookup()
            if found is not None:
                return found
        turn = asyncio.get_running_loop().create_future()
        self._local[key] = turn
        try:
            return await self._across_processes(key, lookup, compute)
        finally:
            del self._local[key]
            turn.set_result(None)

    async def run_if_idle(self, key: str, compute: Callable[[], Awaitable[T]]) -> T | None:
        """``compute()`` under the lease when no caller in the fleet is computing ``key``;
        None, without computing, when one is or the backend cannot tell. For work that can
        wait for its next chance, such as refreshing a stale entry in the background."""
        if key in self._local:
            return None
        turn = asyncio.get_running_loop().create_future()
        self._local[key] = turn
        try:
            lease_key = f"lease:{key}"
            token = uuid.uuid4().hex
            try:
                if not await self._backend.lease_acquire(lease_key, token, self._lease):
                    return None
            except BackendError:
                return None
            return await self._lead(lease_key, token, compute)
        finally:
            del self._local[key]
            turn.set_result(None)

    async def _across_processes(
        self,
        key: str,
        lookup: Callable[[], Awaitable[T | None]],
        compute: Callable[[], Awaitable[T]],
    ) -> T:
        lease_key = f"lease:{key}"
        token = uuid.uuid4().hex
        deadline = self._clock() + self._wait
        poll = _FIRST_POLL
        while True:
            try:
                leader = await self._backend.lease_acquire(lease_key, token, self._lease)
            except BackendError:
                return await compute()  # no coordination without the backend
            if leader:
                return await self._lead(lease_key, token, compute)
            await self._sleep(poll)
            poll = min(_LAST_POLL, poll * 2)
            found = await lookup()
            if found is not None:
                return found
            if self._clock() >= deadline:
                return await compute()  # waited long enough for a leader that never stores

    async def _lead(self, lease_key: str, token: str, compute: Callable[[], Awaitable[T]]) -> T:
        renewal = asyncio.create_task(self._renew(lease_key, token))
        try:
            return await compute()
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            # Released even when the computation was cancelled: followers must not wait out
            # the lease. Shielded so that our own cancellation cannot skip it.
            with contextlib.suppress(BackendError, asyncio.CancelledError):
                await asyncio.shield(self._backend.lease_release(lease_key, token))

    async def _renew(self, lease_key: str, token: str) -> None:
        while True:
            await self._sleep(self._lease / 3)
            with contextlib.suppress(BackendError):
                await self._backend.lease_renew(lease_key, token, self._lease)
