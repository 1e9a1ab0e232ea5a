"""When the watchdog thread wakes: at a deadline the loop keeps pushing back, or at once.

Every time the watchdog thread wakes while the loop runs Python code it has to take the GIL
from the loop thread, and on a busy loop that is not cheap: asyncio and uvloop let the GIL go
and take it back on every turn (their poll for I/O), so a waiting thread is woken over and
over, and loses the race, until it gets in: ten wake-ups a second cost up to 1-4 % of a CPU
on a loaded machine (docs/performance.md). So on Linux the deadline lives in the kernel (a
``timerfd``): the probe moves it on each run, and the watchdog thread sleeps in ``read()``
and wakes only when the loop missed it, or is rung. Elsewhere (:class:`PolledAlarm`) the
thread wakes at the deadline and sleeps again if the loop moved it meanwhile: about once a
``blocked_threshold`` on a busy loop.

Each wake-up that comes later than planned is a stall (:class:`~._loop_causes.Stalls`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from toolkit.telemetry._loop_causes import Stalls

logger = logging.getLogger("toolkit.telemetry.loop")

_CLOCK_MONOTONIC: Final = 1
_TFD_TIMER_ABSTIME: Final = 1
_RING: Final = (0, 1)
"""An absolute deadline long past (0 would disarm the timer): it expires at once."""


class Alarm(Protocol):
    at: float
    """The deadline (``time.monotonic()`` seconds) the watchdog means to wake at."""

    def set(self, at: float) -> None:
        """Wake the watchdog at ``at`` instead (from any thread)."""

    def ring(self) -> None:
        """Wake the watchdog now (from any thread); the deadline stays planned."""

    def wait(self) -> None:
        """Sleep until the deadline passes or the alarm rings (the watchdog thread)."""

    def close(self) -> None:
        """Release what it holds; it is not used again."""


class TimerAlarm:
    """The deadline in a Linux ``timerfd`` on ``CLOCK_MONOTONIC`` (the clock of
    ``time.monotonic()``): moving it is one system call, and the thread sleeping on it
    wakes only when it passes. The calls hold the GIL (a microsecond each) so that the
    probe does not let the GIL go, and the timer and :attr:`at` change together."""

    def __init__(self, stalls: Stalls, at: float) -> None:
        import ctypes  # here: only this needs it, and it takes milliseconds to import

        libc = ctypes.PyDLL(None, use_errno=True)
        create = libc.timerfd_create
        create.argtypes = [ctypes.c_int, ctypes.c_int]
        create.restype = ctypes.c_int
        settime = libc.timerfd_settime
        settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        settime.restype = ctypes.c_int
        self._settime: Callable[..., int] = settime
        # struct itimerspec: the interval (none), then the deadline, in seconds and nanoseconds
        self._spec: Callable[[int, int, int, int], Any] = ctypes.c_long * 4
        self._errno = ctypes.get_errno
        self._fd: int = create(_CLOCK_MONOTONIC, os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(self._errno(), "timerfd_create failed")
        self._stalls = stalls
        self.at = at
        self.set(at)

    def set(self, at: float) -> None:
        self.at = at
        self._arm(*divmod(int(at * 1e9), 1_000_000_000))

    def ring(self) -> None:
        self._arm(*_RING)

    def _arm(self, seconds: int, nanoseconds: int) -> None:
        if self._settime(
            self._fd, _TFD_TIMER_ABSTIME, self._spec(0, 0, seconds, nanoseconds), None
        ):
            raise OSError(self._errno(), "timerfd_settime failed")

    def wait(self) -> None:
        os.read(self._fd, 8)  # the number of expiries: one, or more if it rang meanwhile
        self._stalls.woke(self.at, time.monotonic())

    def close(self) -> None:
        os.close(self._fd)


class PolledAlarm:
    """The deadline in an attribute: the thread sleeps until it, and again if it moved."""

    def __init__(self, stalls: Stalls, at: float) -> None:
        self._stalls = stalls
        self._rung = threading.Event()
        self.at = at

    def set(self, at: float) -> None:
        self.at = at

    def ring(self) -> None:
        self._rung.set()

    def wait(self) -> None:
        while True:
            at = self.at
            remaining = at - time.monotonic()
            rung = remaining > 0 and self._rung.wait(remaining)
            self._stalls.woke(at, time.monotonic())
            if rung:
                self._rung.clear()
                return
            if self.at <= at:  # not moved meanwhile: it has passed
                return

    def close(self) -> None:
        pass


def new_alarm(stalls: Stalls, at: float) -> Alarm:
    """A :class:`TimerAlarm` where Linux has one, else a :class:`PolledAlarm`."""
    if time.get_clock_info("monotonic").implementation == "clock_gettime(CLOCK_MONOTONIC)":
        try:
            return TimerAlarm(stalls, at)
        except (OSError, AttributeError) as exc:  # no timerfd here (AttributeError: no such symbol)
            logger.debug("no timerfd (%s): the loop watchdog polls", exc)
    return PolledAlarm(stalls, at)
