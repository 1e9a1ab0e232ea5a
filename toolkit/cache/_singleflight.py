"""Single flight: on a miss, one caller in the whole fleet computes; the others wait for it.

Within a process, callers of one key queue behind a single coroutine. Across processes, that
coroutine takes a lease in the backend and renews it while the computation runs, so an LLM
call longer than the lease never lets a second caller start; the others poll the cache with
backoff and take the result when it lands. A follower waits at most ``wait`` seconds in all
(behind a leader in its process, then one elsewhere), or what is left of the current deadline
when that is sooner, and tells its caller which of the two ran out (``gave_up``: the cache
counts it and puts it on the span). Past ``wait`` it computes itself, as when the leader is
too slow; past the deadline it raises
``DeadlineExceeded``, since a computation started with no time left could only fail (its
``@resilient`` calls would not even be made), while the leader goes on and stores the result
for the callers after it. When the leader ends without storing anything
(the response was not cacheable, it failed, it was cancelled, its process died and the lease
ran out), the next caller leads, one at a time. A leader that knows before it returns that
there is nothing more to wait for (it has stored the result, or it will store nothing) ends
its :class:`Turn` there, and the others go on at once. A caller that becomes the leader looks
once more before it computes: one that led before it, here or elsewhere, may have stored the
result between its last look and its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, TypeVar

from toolkit._deadlines import bounded, time_left
from toolkit.backends import LeaseStorage, require
from toolkit.errors import BackendError, DeadlineExceeded
from toolkit.telemetry import names

T = TypeVar("T")

DEFAULT_LEASE = 10.0
DEFAULT_WAIT = 60.0
_FIRST_POLL = 0.01
_LAST_POLL = 0.25

# Lease releases that outlive a cancelled caller: referenced until done, as asyncio asks.
_releases: set[asyncio.Task[None]] = set()


class Turn:
    """A leader's hold on its key, handed to its computation.

    ``end()`` gives the hold up before the computation returns: the lease is released and
    the callers waiting in this process look again (one of them leads if there is still
    nothing to take). The computation goes on, holding nothing. The flight ends the turn
    itself when the computation returns, fails or is cancelled.
    """

    __slots__ = ("_backend", "_ended", "_lease_key", "_local", "_renewal", "_token")

    def __init__(
        self,
        backend: LeaseStorage,
        lease_key: str,
        token: str,
        local: Callable[[], None],
        renewal: asyncio.Task[None],
    ) -> None:
        self._backend = backend
        self._lease_key = lease_key
        self._token = token
        self._local = local
        self._renewal = renewal
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    async def end(self) -> None:
        """Release the lease, then let this process's waiting callers go on. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self._renewal.cancel()
        release = asyncio.ensure_future(self._backend.lease_release(self._lease_key, self._token))
        _releases.add(release)
        release.add_done_callback(_retire)
        try:
            # Released even when our caller is cancelled meanwhile: followers elsewhere must
            # not wait out the lease. Shielded, so that cancellation cannot skip it.
            with contextlib.suppress(BackendError):
                await asyncio.shield(release)
        finally:
            self._local()


@contextlib.contextmanager
def _reported_if_the_deadline_cancels(
    reason: str, gave_up: Callable[[str], None] | None
) -> Iterator[None]:
    """Around a follower's wait: a cancellation once the current deadline has passed is the
    deadline cutting the wait (a request budget's timer fires as the wait ends, and may win
    the race with it), reported as such before it goes on up."""
    try:
        yield
    except asyncio.CancelledError:
        if reason == names.CACHE_WAIT_DEADLINE and gave_up is not None and time_left() == 0:
            gave_up(reason)
        raise


def _retire(task: asyncio.Task[None]) -> None:
    _releases.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a failed release is counted by the backend already


class SingleFlight(Generic[T]):
    """Coalesces computations of the same key.

    Args:
        backend: where leases live (shared by every instance on Redis); ConfigurationError
            when it lacks :class:`~toolkit.backends.LeaseStorage`.
        lease: seconds a leader holds the lease between renewals (renewed every third).
        wait: seconds a follower waits for the leader before computing itself (less when
            the current deadline leaves less).
        sleep / clock: for tests.
    """

    def __init__(
        self,
        backend: LeaseStorage,
        *,
        lease: float = DEFAULT_LEASE,
        wait: float = DEFAULT_WAIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        require(backend, LeaseStorage, user="SingleFlight")
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
        *,
        gave_up: Callable[[str], None] | None = None,
    ) -> T:
        """``lookup()`` when another caller has produced it, else ``compute()`` (which
        stores what it produces). ``lookup`` is asked again once this caller leads, before it
        computes. Backend failures degrade to computing without a lease.

        Args:
            gave_up: called when this caller stopped waiting for another's computation:
                with ``names.CACHE_WAIT_TIMEOUT`` when ``wait`` ran out (``compute()``
                follows), ``names.CACHE_WAIT_DEADLINE`` when the current deadline cut the
                wait (``DeadlineExceeded`` follows, and ``compute()`` is not called).

        Raises:
            DeadlineExceeded: the current deadline passed while this caller waited for
                another's computation.
        """
        return await self.run_turn(key, lookup, lambda turn: compute(), gave_up=gave_up)

    async def run_turn(
        self,
        key: str,
        lookup: Callable[[], Awaitable[T | None]],
        compute: Callable[[Turn | None], Awaitable[T]],
        *,
        gave_up: Callable[[str], None] | None = None,
    ) -> T:
        """As :meth:`run`, with the leader's :class:`Turn` passed to ``compute`` (None when
        it computes without a lease: the backend failed, or it waited long enough)."""
        # One wait per caller: the end set here also bounds its wait for a leader elsewhere
        # once it leads in this process, so that queueing here first never doubles it.
        deadline, reason = self._wait_end()
        while (head := self._local.get(key)) is not None:
            # Another coroutine of this process leads for this key: wait for its turn to end
            # (shielded: our cancellation must not cancel the leader), then look again. As
            # long as a follower in another process would wait, and no longer.
            remaining = deadline - self._clock()
            if remaining <= 0:
                # Waited long enough for a leader that never stores.
                return await self._give_up(reason, gave_up, compute)
            with _reported_if_the_deadline_cancels(reason, gave_up):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(head), remaining)
                found = await lookup()
            if found is not None:
                return found
        head = asyncio.get_running_loop().create_future()
        self._local[key] = head

        def step_down() -> None:
            if self._local.get(key) is head:
                del self._local[key]
            if not head.done():
                head.set_result(None)

        try:
            return await self._across_processes(
                key, lookup, compute, step_down, gave_up, deadline, reason
            )
        finally:
            step_down()

    def _wait_end(self) -> tuple[float, str]:
        """When a follower stops waiting (on ``clock``), and what it reports then: the
        current deadline when it leaves less than ``wait``."""
        wait = bounded(self._wait)
        reason = names.CACHE_WAIT_DEADLINE if wait < self._wait else names.CACHE_WAIT_TIMEOUT
        return self._clock() + wait, reason

    @staticmethod
    async def _give_up(
        reason: str,
        gave_up: Callable[[str], None] | None,
        compute: Callable[[Turn | None], Awaitable[T]],
    ) -> T:
        if gave_up is not None:
            gave_up(reason)
        if reason == names.CACHE_WAIT_DEADLINE:
            # No time left to compute in; the leader goes on and stores for the next callers.
            raise DeadlineExceeded(
                "the deadline of this work passed while it waited for another caller's "
                "computation of the same key"
            )
        return await compute(None)

    async def run_if_idle(
        self,
        key: str,
        compute: Callable[[], Awaitable[T]],
        lookup: Callable[[], Awaitable[T | None]] | None = None,
    ) -> T | None:
        """``compute()`` under the lease when no caller in the fleet is computing ``key``;
        None, without computing, when one is or the backend cannot tell. For work that can
        wait for its next chance, such as refreshing a stale entry in the background. Once
        the lease is held, ``lookup()`` (when given) is asked first: what it finds is
        returned instead of computing (someone did the work while this caller waited)."""
        if key in self._local:
            return None
        head = asyncio.get_running_loop().create_future()
        self._local[key] = head
        try:
            lease_key = f"lease:{key}"
            token = uuid.uuid4().hex
            try:
                if not await self._backend.lease_acquire(lease_key, token, self._lease):
                    return None
            except BackendError:
                return None
            return await self._lead(lease_key, token, lookup, lambda turn: compute(), lambda: None)
        finally:
            del self._local[key]
            head.set_result(None)

    async def _across_processes(
        self,
        key: str,
        lookup: Callable[[], Awaitable[T | None]],
        compute: Callable[[Turn | None], Awaitable[T]],
        step_down: Callable[[], None],
        gave_up: Callable[[str], None] | None,
        deadline: float,
        reason: str,
    ) -> T:
        lease_key = f"lease:{key}"
        token = uuid.uuid4().hex
        poll = _FIRST_POLL
        while True:
            try:
                leader = await self._backend.lease_acquire(lease_key, token, self._lease)
            except BackendError:
                return await compute(None)  # no coordination without the backend
            if leader:
                return await self._lead(lease_key, token, lookup, compute, step_down)
            with _reported_if_the_deadline_cancels(reason, gave_up):
                # Never past the wait's end: a deadline may leave less than one poll.
                await self._sleep(max(0.0, min(poll, deadline - self._clock())))
                poll = min(_LAST_POLL, poll * 2)
                found = await lookup()
            if found is not None:
                return found
            if self._clock() >= deadline:
                # Waited long enough for a leader that never stores.
                return await self._give_up(reason, gave_up, compute)

    async def _lead(
        self,
        lease_key: str,
        token: str,
        lookup: Callable[[], Awaitable[T | None]] | None,
        compute: Callable[[Turn | None], Awaitable[T]],
        step_down: Callable[[], None],
    ) -> T:
        renewal = asyncio.create_task(self._renew(lease_key, token))
        turn = Turn(self._backend, lease_key, token, step_down, renewal)
        try:
            if lookup is not None:
                # Leading now; a caller that led before us, here or in another process, may
                # have stored it between our last look and our lease.
                found = await lookup()
                if found is not None:
                    return found
            return await compute(turn)
        finally:
            # Ended even when the computation was cancelled: followers must not wait out the
            # lease. A second cancellation while it ends is the one thing that may cut it short.
            with contextlib.suppress(asyncio.CancelledError):
                await turn.end()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal

    async def _renew(self, lease_key: str, token: str) -> None:
        while True:
            await self._sleep(self._lease / 3)
            with contextlib.suppress(BackendError):
                await self._backend.lease_renew(lease_key, token, self._lease)
