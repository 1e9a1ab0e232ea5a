"""Skip a backend that just failed, then let a single call probe it: exponential backoff."""

from __future__ import annotations

import time
from collections.abc import Callable

from toolkit._random import RANDOM

DEFAULT_INITIAL_DELAY = 0.05
DEFAULT_MAX_DELAY = 1.0


class Reconnect:
    """Connection health of one backend.

    While up, every call goes through. After a connectivity failure the backend is down: calls
    are refused at once (so requests take their failure path without waiting out a timeout)
    until a retry time; then exactly one call probes. Its success brings the backend up, its
    failure doubles the delay, up to ``max_delay``. Each delay is jittered to 50-100 % so a
    fleet of instances does not probe in step.

    Args:
        initial_delay: seconds before the first probe after going down.
        max_delay: cap of the delay; bounds how long recovery can go unnoticed.
        clock: monotonic seconds. random: a float in [0, 1). Both for tests.
    """

    __slots__ = ("_clock", "_delay", "_initial", "_max", "_probing", "_random", "_retry_at", "down")

    def __init__(
        self,
        *,
        initial_delay: float = DEFAULT_INITIAL_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = RANDOM.random,
    ) -> None:
        self._initial = initial_delay
        self._max = max_delay
        self._clock = clock
        self._random = random
        self._delay = initial_delay
        self._retry_at = 0.0
        self._probing = False
        self.down = False

    def may_try(self) -> bool:
        """Whether a call may go to the backend now (while down: only the one probe)."""
        if not self.down:
            return True
        if self._probing or self._clock() < self._retry_at:
            return False
        self._probing = True
        return True

    def succeeded(self) -> bool:
        """Record a successful call; True if it brought the backend back up."""
        self._probing = False
        if not self.down:
            return False
        self.down = False
        self._delay = self._initial
        return True

    def failed(self) -> bool:
        """Record a connectivity failure; True if it took the backend down.

        While down, only the probe's failure moves the retry time; calls that were already
        in flight when the backend went down fail too, and must not stretch the backoff.
        """
        if self.down:
            if self._probing:
                self._probing = False
                self._delay = min(self._max, self._delay * 2)
                self._schedule_retry()
            return False
        self.down = True
        self._delay = self._initial
        self._schedule_retry()
        return True

    def abandon(self) -> None:
        """The call was cancelled before it could tell: let another call probe."""
        self._probing = False

    def _schedule_retry(self) -> None:
        self._retry_at = self._clock() + self._delay * (0.5 + self._random() / 2)
