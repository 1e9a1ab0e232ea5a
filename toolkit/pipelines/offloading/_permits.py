"""The offload pool's admission: a permit per thread, and a bounded line of callers waiting
for one, shared by every event loop of the process.

A permit is taken at once when one is free and nobody waits, else after waiting in line
within the current deadline; it is given back from any thread (a worker, when its function
ends) straight to the first waiter, through that waiter's own loop
(``call_soon_threadsafe``). A waiter that gives up (deadline, cancellation) after a permit
was handed to it passes the permit on, so none is ever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from toolkit import _deadlines
from toolkit.errors import DeadlineExceeded, PoolClosedError, PoolExhaustedError

POOL_NAME = "offload"
"""The pool name its refusals carry (``PoolError.pool``): ``install()`` answers them 503."""


class _Waiter:
    """A caller waiting for a permit, on its own loop; ``granted`` once one was handed to it."""

    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False


class Permits:
    """``limit`` permits and a line of at most ``max_waiting`` callers."""

    def __init__(self, limit: int, max_waiting: int) -> None:
        self._limit = limit
        self._max_waiting = max_waiting
        self._lock = threading.Lock()
        self._taken = 0
        self._line: OrderedDict[_Waiter, None] = OrderedDict()
        self._closed = False
        self._drained: Callable[[], object] | None = None

    @property
    def taken(self) -> int:
        """Permits held: by calls whose function has not ended (abandoned ones included)."""
        return self._taken

    @property
    def waiting(self) -> int:
        return len(self._line)

    @property
    def closed(self) -> bool:
        return self._closed

    async def take(self) -> None:
        """Take a permit, waiting in line at most until the current deadline.

        Raises:
            DeadlineExceeded: the deadline passed before (or while waiting in line).
            PoolExhaustedError: none free and ``max_waiting`` callers already wait.
            PoolClosedError: closed, before or while waiting.
        """
        with self._lock:
            if self._closed:
                raise PoolClosedError("the offload pool is closed", pool=POOL_NAME)
            left = _deadlines.bounded(None)
            if left is not None and left <= 0:
                raise DeadlineExceeded("the deadline passed before the offloaded call")
            if self._taken < self._limit and not self._line:
                self._taken += 1
                return
            if len(self._line) >= self._max_waiting:
                raise PoolExhaustedError(
                    f"every offload thread is busy and {self._max_waiting} calls already "
                    "wait (offload.threads, offload.max_waiting)",
                    pool=POOL_NAME,
                )
            waiter = _Waiter(asyncio.get_running_loop())
            self._line[waiter] = None
        try:
            async with asyncio.timeout(left) as timeout:
                await waiter.future
        except BaseException as exc:
            with self._lock:
                granted = waiter.granted
                self._line.pop(waiter, None)
            if granted:  # handed a permit while it gave up: the next one has it
                self.give_back()
            if isinstance(exc, TimeoutError) and timeout.expired():
                raise DeadlineExceeded(
                    "the deadline passed while the call waited for an offload thread"
                ) from None
            raise

    def give_back(self) -> None:
        """Return a permit (from any thread): to the first waiter whose loop still runs."""
        with self._lock:
            while self._line:
                waiter, _ = self._line.popitem(last=False)
                waiter.granted = True
                if _wake(waiter, None):
                    return
            self._taken -= 1
            drained = self._drained if self._taken == 0 else None
        if drained is not None:
            with contextlib.suppress(RuntimeError):  # the closing loop is gone: nobody waits
                drained()

    def close(self) -> asyncio.Event:
        """Refuse every caller from now on, those in line too (``PoolClosedError``); the event
        (of the running loop) is set once every permit is back."""
        loop = asyncio.get_running_loop()
        drained = asyncio.Event()
        with self._lock:
            self._closed = True
            line = list(self._line)
            self._line.clear()
            if self._taken == 0:
                drained.set()
            else:
                self._drained = lambda: loop.call_soon_threadsafe(drained.set)
        for waiter in line:
            _wake(waiter, PoolClosedError("the offload pool is closed", pool=POOL_NAME))
        return drained


def _wake(waiter: _Waiter, error: BaseException | None) -> bool:
    """Resolve ``waiter`` on its loop; False when that loop is closed."""

    def resolve() -> None:
        if waiter.future.done():
            return
        if error is None:
            waiter.future.set_result(None)
        else:
            waiter.future.set_exception(error)

    try:
        waiter.loop.call_soon_threadsafe(resolve)
    except RuntimeError:
        return False
    return True
