"""Gate: ``size`` permits per key, a bounded first-come queue, and handover on release.

A released permit goes straight to the oldest waiter (its future gets the result), so a
newcomer can never take it in between and a waiter's place in line is kept. Nothing here
awaits except :meth:`Gate.wait`, and every change of the counts is synchronous, so it is
atomic on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class Gate:
    """Permits for one key of a pool.

    Invariant: ``free + permits held == size``, where a permit is held from a successful
    :meth:`try_enter` or :meth:`wait` until the matching :meth:`leave`; ``waiters`` holds only
    futures that are not done. A waiter cancelled at the very moment a permit was handed to it
    passes the permit on (:meth:`wait`), so no permit is ever lost.
    """

    __slots__ = ("free", "size", "waiters")

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.waiters: deque[asyncio.Future[None]] = deque()

    def try_enter(self) -> bool:
        """Take a permit without waiting; only when nobody is queued (no barging)."""
        if self.free and not self.waiters:
            self.free -= 1
            return True
        return False

    async def wait(self, within: float) -> bool:
        """Queue for a permit for at most ``within`` seconds: True with a permit, False
        without one. Raises what was set on the waiter (the pool closed), or CancelledError
        with no permit held."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            if within > 0:
                # asyncio.wait never cancels the future it watches: only this code resolves it.
                await asyncio.wait((fut,), timeout=within)
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Handed a permit between the handover and this task's resumption.
                self.leave()
            else:
                self._withdraw(fut)
            raise
        if not fut.done():
            self._withdraw(fut)
            return False
        fut.result()  # raises PoolClosedError when the pool closed
        return True

    def leave(self) -> None:
        """Give a permit back: to the oldest waiter, else to the free count."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1

    def fail_waiters(self, exc: BaseException) -> None:
        """Wake every waiter with ``exc`` (the pool is closing); none of them gets a permit."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)

    def _withdraw(self, fut: asyncio.Future[None]) -> None:
        fut.cancel()
        with contextlib.suppress(ValueError):  # already popped by leave() or fail_waiters()
            self.waiters.remove(fut)
