"""Deadlines for backend calls that count the backend's time, not the event loop's.

``asyncio.timeout`` measures wall time. On a busy event loop (many requests in flight on few
cores, a blocking call in a route, a warm-up building agents) a reply that Redis sent at once
waits in the socket until the loop gets round to it, and the timeout fires although Redis is
healthy. Counting that as a backend failure skips the backend and sends every cache lookup to
its origin, which adds load to a loop that was already too busy.

So a :class:`Deadline` gives a call its budget in the time the loop was free to read the
reply. While calls are in flight, :class:`LoopLag` samples the loop every twentieth of the
budget and adds up how late each sample ran; that lateness is the loop's, and the deadline
moves back by it. A stalled backend still times out after the budget on an idle loop. On a
saturated loop each turn counts for about a twentieth of the budget, so a call is given some
twenty turns: a command on an open connection needs two or three, a new connection (TCP, then
redis-py's handshake) about twelve.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

SAMPLES = 20
"""Samples of the loop's lateness per budget: on a saturated loop, the turns a call is given."""
MIN_TICK = 0.001
"""Seconds: the shortest interval between two samples."""


class LoopLag:
    """How late one event loop runs its callbacks, summed, measured while calls are in flight.

    Args:
        loop: the loop measured.
        budget: the calls' timeout in seconds; the loop is sampled every twentieth of it.
    """

    __slots__ = ("_calls", "_due", "_handle", "_interval", "_late", "budget", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, budget: float) -> None:
        self.loop = loop
        self.budget = budget
        self._interval = max(MIN_TICK, budget / SAMPLES)
        self._late = 0.0
        self._due = 0.0
        self._calls = 0
        self._handle: asyncio.TimerHandle | None = None

    def deadline(self) -> Deadline:
        """A context manager that times the block out after ``budget`` of the loop's free
        time, raising :class:`TimeoutError` as ``asyncio.timeout`` does."""
        return Deadline(self)

    def late(self, now: float) -> float:
        """Seconds the loop has been late so far, counting the sample overdue now."""
        if self._handle is None:
            return self._late
        return self._late + max(0.0, now - self._due)

    def _enter(self, now: float) -> float:
        self._calls += 1
        if self._handle is None:
            self._sample_at(now)
        return self.late(now)

    def _leave(self) -> None:
        self._calls -= 1

    def _sample_at(self, now: float) -> None:
        self._due = now + self._interval
        self._handle = self.loop.call_at(self._due, self._sample)

    def _sample(self) -> None:
        now = self.loop.time()
        self._late += max(0.0, now - self._due)
        if self._calls:
            self._sample_at(now)
        else:
            self._handle = None


class Deadline:
    """One call's deadline (see :meth:`LoopLag.deadline`): one timer, moved back by the loop's
    lateness each time it fires early in the loop's free time, then expiring the block."""

    __slots__ = ("_handle", "_lag", "_mark", "_started", "_timeout")

    def __init__(self, lag: LoopLag) -> None:
        self._lag = lag
        # No deadline of its own: it expires when _check says so. Its exit turns the
        # cancellation into TimeoutError, and leaves any other cancellation alone.
        self._timeout = asyncio.timeout(None)
        self._handle: asyncio.TimerHandle | None = None
        self._started = 0.0
        self._mark = 0.0

    async def __aenter__(self) -> Deadline:
        await self._timeout.__aenter__()
        lag = self._lag
        self._started = lag.loop.time()
        self._mark = lag._enter(self._started)
        self._handle = lag.loop.call_at(self._started + lag.budget, self._check)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._lag._leave()
        await self._timeout.__aexit__(exc_type, exc, traceback)

    def _check(self) -> None:
        lag = self._lag
        now = lag.loop.time()
        free = now - self._started - (lag.late(now) - self._mark)
        if free < lag.budget:
            self._handle = lag.loop.call_at(now + lag.budget - free, self._check)
        else:
            self._handle = None
            self._timeout.reschedule(now)  # expired: the task is cancelled on the next turn
